//! Tickets that survive a restart. With stable addressing a restarted server binds the
//! ports of its last run, so the direct addresses in the tickets it handed out reach it
//! again: no relay, no address lookup needed. Through a relay, the ticket's home relay
//! reaches it whatever its ports.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use iroh::{
    Endpoint,
    endpoint::{self, presets},
    protocol::Router,
};
use iroh_identity::PersistentEndpoint;
use iroh_tickets::endpoint::EndpointTicket;

use crate::support::{
    LogCapture,
    child::{Action, Holder, Task},
    echo, echo_within, list, loopback, loopback_ticket, relay_only, stable_builder, temp_dir,
    write_private,
};
#[cfg(unix)]
use crate::support::{NOBODY, SERVICE_USER, Site, child::run_to_end, make_dir};

/// How soon the old ticket must reach a restarted server.
const WITHIN: Duration = Duration::from_secs(1);

/// The IPv4 port in the ports file at `path`.
fn remembered_ipv4(path: &std::path::Path) -> u16 {
    let text = fs::read_to_string(path).expect("a ports file");
    text.lines()
        .find_map(|line| line.strip_prefix("ipv4 "))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 port in {text}"))
}

/// Runs an open of `key` on all interfaces in another process, as a last run, and
/// returns the IPv4 port it remembered.
fn last_run_elsewhere(key: &std::path::Path) -> u16 {
    Task::new(Action::Open, key)
        .all_interfaces()
        .run()
        .expect_id();
    let mut ports = key.as_os_str().to_owned();
    ports.push(".ports");
    remembered_ipv4(std::path::Path::new(&ports))
}

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
#[cfg_attr(
    windows,
    ignore = "Wine 8 keeps a killed process's UDP socket open in wineserver while receives are \
              pending (seen for over 5 s after 1 in about 8 kills), so the next start must take \
              a new port"
)]
async fn an_old_ticket_reaches_the_server_after_a_crash_and_after_a_graceful_restart()
-> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("server.key");
    let first = Holder::start(Task::new(Action::Serve { relay: None }, &key).command());
    let ticket = first.ticket().to_owned();
    let id = first.id.clone();
    echo_within(&ticket, b"before", WITHIN).await?;

    first.kill();
    let second = Holder::start(Task::new(Action::Serve { relay: None }, &key).command());
    assert_eq!(second.id, id);
    assert_eq!(second.ticket(), ticket, "the ticket changed after a crash");
    let after_crash = echo_within(&ticket, b"after a crash", WITHIN).await?;

    // The next server starts while this one is still closing: it waits for the identity,
    // then for the ports, which the old process holds a little longer. (A graceful close
    // is asked for with SIGTERM, which Windows does not have: there, the crash is what
    // runs.)
    #[cfg(unix)]
    {
        second.terminate();
        let third = Holder::start(Task::new(Action::Serve { relay: None }, &key).command());
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
    }
    #[cfg(windows)]
    {
        second.kill();
        eprintln!("old ticket to first echo: {after_crash:?} after a crash");
    }
    assert_eq!(list(dir.path()), ["server.key", "server.key.ports"]);
    Ok(())
}

// A graceful close is asked for with SIGTERM, which Windows does not have.
#[tokio::test]
#[cfg(unix)]
async fn a_graceful_restart_keeps_the_port_while_a_vanished_peer_holds_up_the_close()
-> anyhow::Result<()> {
    // A closing endpoint releases the identity at once but keeps its sockets while its
    // connections drain; a peer that vanished never answers, so that takes longest.
    let dir = temp_dir();
    let key = dir.path().join("server.key");
    let server = Holder::start(Task::new(Action::Serve { relay: None }, &key).command());
    let ticket = server.ticket().to_owned();
    let dial = Task::new(
        Action::Dial {
            ticket: ticket.clone(),
        },
        &key,
    );
    Holder::start(dial.command()).kill();

    let start = Instant::now();
    server.terminate();
    let next = Holder::start(Task::new(Action::Serve { relay: None }, &key).command());
    let restart = start.elapsed();
    assert_eq!(next.ticket(), ticket, "the port was not kept");
    assert!(server.exits_within(Duration::from_secs(10)).success());
    echo_within(&ticket, b"after the drain", WITHIN).await?;
    eprintln!("graceful restart with a vanished peer: ready after {restart:?}");
    Ok(())
}

#[tokio::test]
async fn without_stable_addressing_the_old_ticket_is_dead() -> anyhow::Result<()> {
    // The control for the test above: what users of iroh get without it.
    let dir = temp_dir();
    let key = dir.path().join("server.key");
    let serve = || async {
        let endpoint = stable_builder(&key).stable_addressing(false).bind().await?;
        anyhow::Ok(
            Router::builder(endpoint)
                .accept(echo::ALPN, echo::Echo)
                .spawn(),
        )
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

// Multi-threaded: the relay server runs on the runtime while this thread waits for the
// servers, which are child processes.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_relay_the_old_ticket_reaches_a_server_restarted_after_a_crash_and_gracefully()
-> anyhow::Result<()> {
    let (relay_map, relay_url, _relay) = iroh::test_utils::run_relay_server().await?;
    let dir = temp_dir();
    let key = dir.path().join("server.key");
    let serve = Task::new(
        Action::Serve {
            relay: Some(relay_url.to_string()),
        },
        &key,
    );
    let serve = || serve.command();
    let first = Holder::start(serve());
    let ticket: EndpointTicket = first.ticket().parse()?;
    let addr = ticket.endpoint_addr();
    assert_eq!(addr.ip_addrs().count(), 0, "{addr:?}");
    assert_eq!(addr.relay_urls().collect::<Vec<_>>(), [&relay_url]);

    let client = relay_only(relay_map)(Endpoint::builder(presets::Minimal))
        .bind()
        .await?;
    let limit = Duration::from_secs(10);
    first.kill();
    let second = Holder::start(serve());
    let after_crash = echo::echo(&client, addr, b"after a crash", limit).await?;
    // A graceful close is asked for with SIGTERM, which Windows does not have.
    #[cfg(unix)]
    {
        second.terminate();
        let third = Holder::start(serve());
        assert!(second.exits_within(Duration::from_secs(10)).success());
        let after_close = echo::echo(&client, addr, b"after a graceful restart", limit).await?;
        eprintln!(
            "old ticket to first echo through the relay: {after_crash:?} after a crash, \
             {after_close:?} after a graceful restart"
        );
        drop(third);
    }
    #[cfg(windows)]
    {
        second.kill();
        eprintln!("old ticket to first echo through the relay: {after_crash:?} after a crash");
    }
    client.close().await;
    Ok(())
}

/// The warning about a remembered port that was not kept, from captured logs.
fn port_warning(logs: &LogCapture) -> String {
    let logs = String::from_utf8(logs.bytes()).expect("UTF-8 logs");
    logs.lines()
        .find(|line| line.contains("WARN") && line.contains("old_port="))
        .unwrap_or_else(|| panic!("no warning in {logs}"))
        .to_owned()
}

#[tokio::test]
async fn a_port_taken_by_another_program_is_waited_for_then_replaced_and_remembered()
-> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    // The last run was another process.
    let old_port = last_run_elsewhere(&key);

    // Taken: by this socket or, if another program just took it, by that one.
    let squatter = UdpSocket::bind(("0.0.0.0", old_port));
    let wait = Duration::from_millis(300);
    let (logs, _guard) = LogCapture::start();
    let start = Instant::now();
    let endpoint = stable_builder(&key).lock_wait(wait).bind().await?;
    let took = start.elapsed();
    let new_port = ipv4_port(&endpoint);
    assert_ne!(new_port, old_port);
    assert!(took >= wait && took < wait * 3, "opened in {took:?}");
    let warning = port_warning(&logs);
    assert!(warning.contains("in use by another program"), "{warning}");
    assert!(
        warning.contains(&format!("old_port={old_port} new_port={new_port}")),
        "{warning}"
    );
    endpoint.close().await;
    drop(endpoint);
    drop(squatter);

    // The new port is the one remembered now.
    let next = stable_builder(&key).bind().await?;
    assert_eq!(ipv4_port(&next), new_port);
    next.close().await;
    Ok(())
}

#[tokio::test]
async fn a_port_released_while_waiting_is_kept() -> anyhow::Result<()> {
    // Closing releases the identity at once, but the sockets live until the last clone
    // of the endpoint is dropped: here, by a task 100 ms later.
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let first = stable_builder(&key).bind().await?;
    let port = ipv4_port(&first);
    first.close().await;
    let clone = first.clone();
    drop(first);
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(clone);
    });
    let start = Instant::now();
    let second = stable_builder(&key).bind().await?;
    assert_eq!(ipv4_port(&second), port);
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    release.await?;
    second.close().await;
    Ok(())
}

#[tokio::test]
async fn an_endpoint_closed_but_not_dropped_costs_a_quarter_second_and_a_warning()
-> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let first = PersistentEndpoint::open(&key).await?;
    let old_port = ipv4_port(&first);
    first.close().await;
    // `first` stays in scope: its sockets stay bound, with the default lock wait of 5 s.
    let (logs, _guard) = LogCapture::start();
    let start = Instant::now();
    let second = PersistentEndpoint::open(&key).await?;
    let took = start.elapsed();
    assert_ne!(ipv4_port(&second), old_port);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(1),
        "opened in {took:?}"
    );
    let warning = port_warning(&logs);
    assert!(warning.contains("closed but not dropped"), "{warning}");
    second.close().await;
    drop(first);
    Ok(())
}

#[tokio::test]
async fn a_bad_ports_file_never_fails_an_open_and_is_left_as_it_was() -> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let ports = dir.path().join("endpoint.key.ports");
    let bad_contents: [&[u8]; 5] = [
        b"ipv4 not-a-port\n",
        b"ipv4 40000\n", // no header line: not written by this crate
        b"\xff\xfe binary",
        &[b'#'; 4096],
        b"",
    ];
    for content in bad_contents {
        write_private(&ports, content);
        let endpoint = stable_builder(&key).bind().await?;
        assert_ne!(ipv4_port(&endpoint), 40000);
        endpoint.close().await;
        assert_eq!(
            fs::read(&ports)?,
            content,
            "a file that is not ours was changed"
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

/// A ports file as this crate writes it, remembering `port` for IPv4.
#[cfg(unix)]
fn ports_file(port: u16) -> String {
    format!(
        "# UDP ports of the iroh endpoint whose key is beside this file, bound again\n\
         # on its next start so that its tickets stay valid (iroh-identity).\nipv4 {port}\n"
    )
}

/// A UDP port that is free right now on all interfaces, in `range`.
fn free_port(range: std::ops::Range<u16>) -> u16 {
    range
        .into_iter()
        .find(|&port| UdpSocket::bind(("0.0.0.0", port)).is_ok())
        .expect("a free port")
}

// Unix owners, modes and links; on Windows the ports file's folder is the key's, where
// no one else may add or change a file.
#[tokio::test]
#[cfg(unix)]
async fn the_ports_file_is_ours_or_it_is_left_alone() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;

    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let ports = dir.path().join("endpoint.key.ports");
    // What is there, as a rename over it or a write through it would change it.
    let state = |path: &std::path::Path| {
        let metadata = fs::symlink_metadata(path).expect("something at the path");
        let target = fs::read(path).ok();
        (
            metadata.ino(),
            metadata.uid(),
            metadata.file_type().is_symlink(),
            target,
        )
    };

    // Another key that happens to be named KEY.ports.
    let other_key = iroh_identity::encode_key(
        &iroh::SecretKey::generate(),
        iroh_identity::KeyFormat::Pkcs8Pem,
    );
    write_private(&ports, &other_key);
    let before = state(&ports);
    let endpoint = stable_builder(&key).bind().await?;
    endpoint.close().await;
    assert_eq!(
        state(&ports),
        before,
        "another file named like the ports file was replaced"
    );
    fs::remove_file(&ports)?;

    // A link to a ports file elsewhere: not followed, not replaced.
    let elsewhere = dir.path().join("elsewhere");
    let linked_port = free_port(41000..42000);
    write_private(&elsewhere, ports_file(linked_port).as_bytes());
    std::os::unix::fs::symlink(&elsewhere, &ports)?;
    let before = (state(&ports), state(&elsewhere));
    let endpoint = stable_builder(&key).bind().await?;
    assert_ne!(ipv4_port(&endpoint), linked_port, "the link was followed");
    endpoint.close().await;
    assert_eq!((state(&ports), state(&elsewhere)), before);
    fs::remove_file(&ports)?;

    // A ports file of ours that others may write: anyone could have put ports in it.
    let writable_port = free_port(43000..44000);
    write_private(&ports, ports_file(writable_port).as_bytes());
    fs::set_permissions(&ports, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    let before = state(&ports);
    let endpoint = stable_builder(&key).bind().await?;
    assert_ne!(
        ipv4_port(&endpoint),
        writable_port,
        "a writable file's ports were bound"
    );
    endpoint.close().await;
    assert_eq!(state(&ports), before);
    fs::remove_file(&ports)?;

    if crate::support::is_root() {
        // A ports file of another user's: ignored and left alone.
        let foreign_port = free_port(42000..43000);
        write_private(&ports, ports_file(foreign_port).as_bytes());
        let nobody = crate::support::NOBODY;
        std::os::unix::fs::chown(&ports, Some(nobody), Some(nobody))?;
        let before = state(&ports);
        let endpoint = stable_builder(&key).bind().await?;
        assert_ne!(
            ipv4_port(&endpoint),
            foreign_port,
            "another user's ports were bound"
        );
        endpoint.close().await;
        assert_eq!(state(&ports), before);
        fs::remove_file(&ports)?;

        // A port of a system service (below 1024), which root could bind: ignored, and
        // the file, ours, is replaced with the port bound instead.
        let low_port = free_port(1000..1024);
        write_private(&ports, ports_file(low_port).as_bytes());
        let endpoint = stable_builder(&key).bind().await?;
        let bound = ipv4_port(&endpoint);
        assert_ne!(bound, low_port, "a port below 1024 was bound");
        endpoint.close().await;
        let remembered = fs::read_to_string(&ports)?;
        assert!(
            remembered.contains(&format!("\nipv4 {bound}\n")),
            "{remembered}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_unbounded_lock_wait_does_not_wait_for_ever_for_a_squatted_port() -> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    // The last run was another process.
    let old_port = last_run_elsewhere(&key);
    // Taken by another program (this socket, or whoever took it first), for ever.
    let squatter = UdpSocket::bind(("0.0.0.0", old_port));
    // The longest wait for a remembered port, whatever the lock wait (the crate docs').
    let limit = Duration::from_secs(10);
    let start = Instant::now();
    let endpoint = tokio::time::timeout(
        limit + Duration::from_secs(5),
        stable_builder(&key).lock_wait(Duration::MAX).bind(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("lock_wait(MAX) waited for ever for a squatted port"))??;
    let took = start.elapsed();
    assert_eq!(limit, Duration::from_secs(10));
    assert!(
        took >= limit && took < limit + Duration::from_secs(2),
        "{took:?}"
    );
    assert_ne!(ipv4_port(&endpoint), old_port);
    endpoint.close().await;
    drop(squatter);
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

/// A `configure` step, shareable between the runs of a test.
type Step = std::sync::Arc<dyn Fn(endpoint::Builder) -> endpoint::Builder + Send + Sync>;

/// A step that binds `addr`, after clearing iroh's IP sockets if `clear`.
fn binds(addr: SocketAddr, clear: bool) -> Step {
    std::sync::Arc::new(move |builder: endpoint::Builder| {
        let builder = if clear {
            builder.clear_ip_transports()
        } else {
            builder
        };
        builder.bind_addr(addr).expect("a valid address")
    })
}

#[tokio::test]
async fn a_server_that_binds_its_own_address_works_on_every_run() -> anyhow::Result<()> {
    let fixed = free_port(44000..45000);
    let loopback_fixed = free_port(45000..46000);
    let all = |port| SocketAddr::from(([0, 0, 0, 0], port));
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let cases = [
        ("a fixed port on all interfaces", all(fixed), false),
        ("port 0 on all interfaces", all(0), false),
        ("a fixed port on loopback", local(loopback_fixed), false),
        ("port 0 on loopback", local(0), false),
        (
            "a fixed port on all interfaces, IP sockets cleared",
            all(fixed),
            true,
        ),
        ("port 0 on loopback, IP sockets cleared", local(0), true),
    ];
    for (case, addr, clear) in cases {
        let dir = temp_dir();
        let key = dir.path().join("endpoint.key");
        let mut ipv6_ports = Vec::new();
        for run in 1..=3 {
            let step = binds(addr, clear);
            let endpoint = stable_builder(&key)
                .configure(move |builder| step(builder))
                .bind()
                .await
                .map_err(|err| anyhow::anyhow!("{case}, run {run}: {err:#}"))?;
            let sockets = endpoint.bound_sockets();
            // The server's own address wins.
            let own: Vec<_> = sockets.iter().filter(|s| s.is_ipv4()).collect();
            assert_eq!(own.len(), 1, "{case}, run {run}: {sockets:?}");
            assert_eq!(own[0].ip(), addr.ip(), "{case}, run {run}: {sockets:?}");
            if addr.port() != 0 {
                assert_eq!(own[0].port(), addr.port(), "{case}, run {run}");
            }
            // The family it binds none for keeps iroh's socket, on the remembered port;
            // with the IP sockets cleared, there is none.
            let ipv6: Vec<_> = sockets.iter().filter(|s| s.is_ipv6()).collect();
            if clear {
                assert!(ipv6.is_empty(), "{case}, run {run}: {sockets:?}");
            } else if let [socket] = ipv6.as_slice() {
                assert!(socket.ip().is_unspecified(), "{case}: {sockets:?}");
                ipv6_ports.push(socket.port());
            }
            endpoint.close().await;
        }
        assert!(
            ipv6_ports.windows(2).all(|pair| pair[0] == pair[1]),
            "{case}: the IPv6 port changed: {ipv6_ports:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_identity_binds_any_builder_of_its_user_on_every_run() -> anyhow::Result<()> {
    let fixed = free_port(46000..47000);
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    for run in 1..=3 {
        let identity = iroh_identity::Identity::open(&key).await?;
        let id = identity.id();
        let builder = Endpoint::builder(presets::Minimal).bind_addr(("0.0.0.0", fixed))?;
        let endpoint = identity
            .bind(builder)
            .await
            .map_err(|err| anyhow::anyhow!("run {run}: {err:#}"))?;
        assert_eq!(endpoint.id(), id);
        assert_eq!(ipv4_port(&endpoint), fixed, "run {run}");
        endpoint.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_socket_of_its_own_beside_irohs_on_all_interfaces_works_on_every_run()
-> anyhow::Result<()> {
    // A step that adds a socket on all interfaces that is no default route, beside
    // iroh's: its port must never be taken for iroh's, which would bind it twice.
    let fixed = free_port(47000..48000);
    let extra = |port| {
        move |builder: endpoint::Builder| {
            let options = endpoint::BindOpts::default().set_is_default_route(false);
            builder
                .bind_addr_with_opts(SocketAddr::from(([0, 0, 0, 0], port)), options)
                .expect("a valid address")
        }
    };
    for (case, port) in [("a fixed port", fixed), ("port 0", 0)] {
        let dir = temp_dir();
        let key = dir.path().join("endpoint.key");
        for run in 1..=3 {
            let endpoint = stable_builder(&key)
                .configure(extra(port))
                .bind()
                .await
                .map_err(|err| anyhow::anyhow!("{case}, run {run}: {err:#}"))?;
            let ipv4: Vec<u16> = endpoint
                .bound_sockets()
                .iter()
                .filter(|socket| socket.is_ipv4() && socket.ip().is_unspecified())
                .map(SocketAddr::port)
                .collect();
            assert_eq!(ipv4.len(), 2, "{case}, run {run}: {ipv4:?}");
            if port != 0 {
                assert!(ipv4.contains(&fixed), "{case}, run {run}: {ipv4:?}");
            }
            endpoint.close().await;
        }
        // Which of the two is iroh's cannot be told from outside, so no IPv4 port is
        // remembered; the step's own port is never taken for iroh's.
        let ports = fs::read_to_string(dir.path().join("endpoint.key.ports")).unwrap_or_default();
        assert!(!ports.contains("ipv4"), "{case}: {ports}");
    }
    Ok(())
}

#[tokio::test]
async fn a_remembered_port_that_cannot_be_bound_is_replaced_not_an_error() -> anyhow::Result<()> {
    // The bind fails with the remembered port (here: because a step binds that very port
    // beside it; in the wild: another program took it in the instant after the check).
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let first = stable_builder(&key).bind().await?;
    let remembered = ipv4_port(&first);
    first.close().await;
    drop(first);
    assert_eq!(
        remembered_ipv4(&dir.path().join("endpoint.key.ports")),
        remembered
    );
    let (logs, _guard) = LogCapture::start();
    let second = stable_builder(&key)
        .configure(move |builder| {
            let options = endpoint::BindOpts::default().set_is_default_route(false);
            builder
                .bind_addr_with_opts(SocketAddr::from(([0, 0, 0, 0], remembered)), options)
                .expect("a valid address")
        })
        .bind()
        .await?;
    let logs = String::from_utf8_lossy(&logs.bytes()).into_owned();
    assert!(
        logs.contains("cannot bind the endpoint's ports of the last run"),
        "{logs}"
    );
    second.close().await;
    Ok(())
}

#[tokio::test]
async fn identity_bind_never_waits_for_ports_it_does_not_ask_for() -> anyhow::Result<()> {
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    // The last run was another process; another program holds its port now.
    let remembered = last_run_elsewhere(&key);
    let squatter = UdpSocket::bind(("0.0.0.0", remembered))?;
    let start = std::time::Instant::now();
    let identity = iroh_identity::Identity::open(&key).await?;
    let endpoint = identity.bind(Endpoint::builder(presets::Minimal)).await?;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "Identity::bind took {took:?}"
    );
    endpoint.close().await;
    drop(squatter);
    Ok(())
}

// Another user, and the owner of a port as `/proc/net/udp` tells it.
#[test]
#[cfg(target_os = "linux")]
fn a_remembered_port_another_user_took_costs_no_wait() {
    if crate::support::skip_unless_root("act as several users") {
        return;
    }
    // Another user reads the service's ports from /proc/net/udp and binds them while it
    // restarts: the restart gets fresh ports at once, instead of waiting for them.
    let site = Site::new();
    let home = site.path("home");
    make_dir(&home, SERVICE_USER, SERVICE_USER, 0o700);
    let key = home.join("endpoint.key");
    let run = |wait_ms| {
        let task = Task::new(Action::Open, &key)
            .all_interfaces()
            .lock_wait_ms(wait_ms)
            .trace();
        run_to_end(site.child(&task, SERVICE_USER, &[]))
    };
    run(0).expect_id();
    let old_port = remembered_ipv4(&home.join("endpoint.key.ports"));
    let squat = Task::new(
        Action::BindUdp {
            ports: vec![old_port],
        },
        "/nonexistent",
    );
    let squatter = Holder::until_ready(site.child(&squat, NOBODY, &[]));
    let start = Instant::now();
    let restarted = run(10_000);
    let took = start.elapsed();
    restarted.expect_id();
    assert!(took < Duration::from_secs(2), "the restart took {took:?}");
    assert!(
        restarted
            .stderr
            .contains("taken by a program of another user"),
        "{restarted}"
    );
    assert!(restarted.stderr.contains("uid=65534"), "{restarted}");
    drop(squatter);
    crate::campaigns::figure(
        "stable addressing",
        format_args!(
            "a remembered port taken by another user: the restart, with a lock wait of 10 s, \
             bound fresh ports in {took:?}"
        ),
    );
}
