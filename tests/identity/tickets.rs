//! Tickets that survive a restart. With stable addressing a restarted server binds the
//! ports of its last run, so the direct addresses in the tickets it handed out reach it
//! again: no relay, no address lookup needed. Through a relay, the ticket's home relay
//! reaches it whatever its ports.

use std::{fs, net::UdpSocket, time::Duration, time::Instant};

use iroh::{
    Endpoint, RelayMode,
    endpoint::{self, presets},
    protocol::Router,
    tls::CaTlsConfig,
};
use iroh_identity::PersistentEndpoint;
use iroh_tickets::endpoint::EndpointTicket;

use crate::support::{
    ECHO_ALPN, Echo, LogCapture, child, child::Holder, echo_within, list, loopback,
    loopback_ticket, stable_builder, temp_dir, write_private,
};

/// How soon the old ticket must reach a restarted server.
const WITHIN: Duration = Duration::from_secs(1);

/// The port of an endpoint's IPv4 socket on all interfaces.
fn ipv4_port(endpoint: &Endpoint) -> u16 {
    endpoint
        .bound_sockets()
        .iter()
        .find(|socket| socket.is_ipv4() && socket.ip().is_unspecified())
        .expect("an IPv4 socket on all interfaces")
        .port()
}

#[tokio::test]
async fn an_old_ticket_reaches_the_server_after_a_crash_and_after_a_graceful_restart()
-> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("server.key");
    let first = Holder::start(child::command("serve", &key));
    let ticket = first.ticket().to_owned();
    let id = first.id.clone();
    echo_within(&ticket, b"before", WITHIN).await?;

    first.kill();
    let second = Holder::start(child::command("serve", &key));
    assert_eq!(second.id, id);
    assert_eq!(second.ticket(), ticket, "the ticket changed after a crash");
    let after_crash = echo_within(&ticket, b"after a crash", WITHIN).await?;

    // The next server starts while this one is still closing: it waits for the identity,
    // then for the ports, which the old process holds a little longer.
    second.terminate();
    let third = Holder::start(child::command("serve", &key));
    assert!(second.exits_within(Duration::from_secs(10)).success());
    assert_eq!(
        third.ticket(),
        ticket,
        "the ticket changed after a graceful restart"
    );
    let after_close = echo_within(&ticket, b"after a graceful restart", WITHIN).await?;
    eprintln!(
        "old ticket to first echo: {after_crash:?} after a crash, {after_close:?} after a graceful restart"
    );
    assert_eq!(list(dir.path()), ["server.key", "server.key.ports"]);
    Ok(())
}

#[tokio::test]
async fn without_stable_addressing_the_old_ticket_is_dead() -> anyhow::Result<()> {
    // The control for the test above: what users of iroh get without it.
    let dir = temp_dir();
    let key = dir.path().join("server.key");
    let serve = || async {
        let endpoint = stable_builder(&key).stable_addressing(false).bind().await?;
        anyhow::Ok(Router::builder(endpoint).accept(ECHO_ALPN, Echo).spawn())
    };
    let first = serve().await?;
    let ticket = loopback_ticket(first.endpoint()).to_string();
    echo_within(&ticket, b"before", WITHIN).await?;
    first.shutdown().await?;
    drop(first);
    let second = serve().await?;
    assert_ne!(loopback_ticket(second.endpoint()).to_string(), ticket);
    let err = echo_within(&ticket, b"after", WITHIN).await.unwrap_err();
    assert!(err.to_string().contains("no echo within"), "{err:#}");
    assert_eq!(list(dir.path()), ["server.key"]);
    second.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn through_a_relay_the_old_ticket_reaches_a_restarted_server() -> anyhow::Result<()> {
    let (relay_map, relay_url, _relay) = iroh::test_utils::run_relay_server().await?;
    // Relay only: no IP sockets at all, so there is no direct path to take.
    let relay_only = move |builder: endpoint::Builder| {
        builder
            .clear_ip_transports()
            .relay_mode(RelayMode::Custom(relay_map.clone()))
            .ca_tls_config(CaTlsConfig::insecure_skip_verify())
    };
    let dir = temp_dir();
    let key = dir.path().join("server.key");
    let serve = || async {
        let endpoint = PersistentEndpoint::builder()
            .key_path(&key)
            .preset(presets::Minimal)
            .configure(relay_only.clone())
            .bind()
            .await?;
        tokio::time::timeout(Duration::from_secs(10), endpoint.online()).await?;
        anyhow::Ok(Router::builder(endpoint).accept(ECHO_ALPN, Echo).spawn())
    };
    let first = serve().await?;
    let ticket = EndpointTicket::new(first.endpoint().addr());
    assert_eq!(ticket.endpoint_addr().ip_addrs().count(), 0, "{ticket:?}");
    assert_eq!(
        ticket.endpoint_addr().relay_urls().collect::<Vec<_>>(),
        [&relay_url]
    );
    let ticket = ticket.to_string();
    first.shutdown().await?;
    drop(first);

    let second = serve().await?;
    let client = relay_only(Endpoint::builder(presets::Minimal))
        .bind()
        .await?;
    let start = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        let ticket: EndpointTicket = ticket.parse()?;
        let connection = client
            .connect(ticket.endpoint_addr().clone(), ECHO_ALPN)
            .await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(b"through the relay").await?;
        send.finish()?;
        let reply = recv.read_to_end(1024).await?;
        connection.close(0u32.into(), b"done");
        anyhow::Ok(reply)
    })
    .await??;
    eprintln!(
        "old ticket to first echo through the relay: {:?}",
        start.elapsed()
    );
    assert_eq!(reply, b"through the relay");
    client.close().await;
    second.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_port_taken_by_another_program_is_replaced_with_a_warning_and_remembered()
-> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let wait = Duration::from_millis(200);
    let first = stable_builder(&key).bind().await?;
    let old_port = ipv4_port(&first);
    first.close().await;
    drop(first);

    let squatter = UdpSocket::bind(("0.0.0.0", old_port))?;
    let (logs, _guard) = LogCapture::start();
    let start = Instant::now();
    let second = stable_builder(&key).lock_wait(wait).bind().await?;
    let took = start.elapsed();
    let new_port = ipv4_port(&second);
    assert_ne!(new_port, old_port);
    assert!(took >= wait && took < wait * 3, "opened in {took:?}");
    let logs = String::from_utf8(logs.bytes())?;
    let warning = logs
        .lines()
        .find(|line| line.contains("WARN") && line.contains("port of the last run is in use"))
        .unwrap_or_else(|| panic!("no warning in {logs}"));
    assert!(
        warning.contains(&format!("old_port={old_port}")),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("new_port={new_port}")),
        "{warning}"
    );
    second.close().await;
    drop(second);
    drop(squatter);

    // The new port is the one remembered now.
    let third = stable_builder(&key).bind().await?;
    assert_eq!(ipv4_port(&third), new_port);
    third.close().await;
    Ok(())
}

#[tokio::test]
async fn a_port_released_while_waiting_is_kept() -> anyhow::Result<()> {
    // Closing releases the identity at once, but the sockets live until the last clone
    // of the endpoint is dropped: here, 200 ms later.
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let first = stable_builder(&key).bind().await?;
    let port = ipv4_port(&first);
    first.close().await;
    let clone = first.clone();
    drop(first);
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(clone);
    });
    let start = Instant::now();
    let second = stable_builder(&key).bind().await?;
    assert_eq!(ipv4_port(&second), port);
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    release.await?;
    second.close().await;
    Ok(())
}

#[tokio::test]
async fn a_bad_ports_file_never_fails_an_open() -> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let ports = dir.path().join("endpoint.key.ports");
    let bad_contents: [&[u8]; 4] = [b"ipv4 not-a-port\n", b"\xff\xfe binary", &[b'#'; 4096], b""];
    for content in bad_contents {
        write_private(&ports, content);
        let endpoint = stable_builder(&key).bind().await?;
        let port = ipv4_port(&endpoint);
        endpoint.close().await;
        let remembered = fs::read_to_string(&ports)?;
        assert!(
            remembered.contains(&format!("ipv4 {port}\n")),
            "{remembered}"
        );
    }

    // Something that cannot be replaced: the open still works, and it stays as it was.
    fs::remove_file(&ports)?;
    fs::create_dir(&ports)?;
    let endpoint = stable_builder(&key).bind().await?;
    endpoint.close().await;
    assert!(ports.is_dir());
    assert_eq!(list(dir.path()), ["endpoint.key", "endpoint.key.ports"]);
    Ok(())
}

#[tokio::test]
async fn sockets_bound_in_configure_are_left_alone() -> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let first = stable_builder(&key).bind().await?;
    let remembered = ipv4_port(&first);
    first.close().await;
    drop(first);
    let own = stable_builder(&key).configure(loopback).bind().await?;
    let sockets = own.bound_sockets();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert!(sockets[0].ip().is_loopback(), "{sockets:?}");
    own.close().await;
    assert!(
        fs::read_to_string(dir.path().join("endpoint.key.ports"))?
            .contains(&format!("ipv4 {remembered}\n")),
        "the ports file was changed"
    );
    Ok(())
}
