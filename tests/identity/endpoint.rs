//! Binding: the same id across restarts, a peer that reconnects to the restarted
//! endpoint, the N0 default offline, and iroh options passed through.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use iroh::{Endpoint, EndpointAddr, SecretKey, endpoint::presets, protocol::Router};
use iroh_identity::{Error, PersistentEndpoint};

use crate::support::{addr_of, builder, temp_dir};

const ALPN: &[u8] = b"iroh-identity-test/echo/0";
/// Every connect in these tests is bounded: a dead address would take ~30 s to fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn open_server(path: &Path) -> Result<Endpoint, Error> {
    builder(path)
        .configure(|builder| builder.alpns(vec![ALPN.to_vec()]))
        .bind()
        .await
}

/// Answers one connection with what it sent.
async fn echo_once(server: Endpoint) -> anyhow::Result<()> {
    let incoming = server
        .accept()
        .await
        .ok_or_else(|| anyhow::anyhow!("closed"))?;
    let connection = incoming.await?;
    let (mut send, mut recv) = connection.accept_bi().await?;
    let message = recv.read_to_end(1024).await?;
    send.write_all(&message).await?;
    send.finish()?;
    connection.closed().await;
    Ok(())
}

/// Sends `message` to `addr` and returns the reply and the peer's id.
async fn ask(
    client: &Endpoint,
    addr: EndpointAddr,
    message: &[u8],
) -> anyhow::Result<(Vec<u8>, iroh::EndpointId)> {
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let connection = client.connect(addr, ALPN).await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(message).await?;
        send.finish()?;
        let reply = recv.read_to_end(1024).await?;
        let peer = connection.remote_id();
        connection.close(0u32.into(), b"bye");
        Ok((reply, peer))
    })
    .await?
}

#[tokio::test]
async fn the_id_is_the_same_after_close_and_reopen() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let first = open_server(&path).await?;
    let id = first.id();
    first.close().await;
    for _ in 0..3 {
        let again = open_server(&path).await?;
        assert_eq!(again.id(), id);
        again.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_peer_reconnects_to_the_restarted_endpoint() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let client = Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")?
        .bind()
        .await?;

    let server = open_server(&path).await?;
    let id = server.id();
    let serving = tokio::spawn(echo_once(server.clone()));
    let (reply, peer) = ask(&client, addr_of(&server), b"before").await?;
    assert_eq!((reply.as_slice(), peer), (&b"before"[..], id));
    serving.await??;
    server.close().await;
    drop(server);

    // The restarted server has a new port but the same id, which the peer checks in TLS.
    let restarted = open_server(&path).await?;
    assert_eq!(restarted.id(), id);
    let serving = tokio::spawn(echo_once(restarted.clone()));
    let (reply, peer) = ask(&client, addr_of(&restarted), b"after").await?;
    assert_eq!((reply.as_slice(), peer), (&b"after"[..], id));
    serving.await??;
    restarted.close().await;
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn open_binds_with_n0_and_closes_promptly_offline() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let start = Instant::now();
    let endpoint = PersistentEndpoint::open(&path).await?;
    let opened = start.elapsed();
    endpoint.close().await;
    let total = start.elapsed();
    eprintln!("N0 open (first run) {opened:?}, open + close {total:?}");
    assert!(
        total < Duration::from_secs(3),
        "open + close took {total:?}"
    );

    let start = Instant::now();
    let endpoint = PersistentEndpoint::open(&path).await?;
    endpoint.close().await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn configure_cannot_replace_the_identity() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let expected = iroh_identity::load_or_generate(&path)?.public();
    let endpoint = builder(&path)
        .configure(|builder| builder.secret_key(SecretKey::generate()))
        .bind()
        .await?;
    assert_eq!(endpoint.id(), expected);
    endpoint.close().await;
    Ok(())
}

#[tokio::test]
async fn the_endpoint_works_with_a_router() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let endpoint = open_server(&path).await?;
    // A plain iroh::Endpoint: it goes into a Router as it is.
    let router = Router::builder(endpoint).spawn();
    assert!(!router.endpoint().is_closed());
    router.shutdown().await?;
    assert!(router.endpoint().is_closed());
    Ok(())
}

#[tokio::test]
async fn a_builder_without_a_key_location_is_an_error() {
    let result = PersistentEndpoint::builder()
        .preset(presets::Minimal)
        .bind()
        .await;
    assert!(matches!(result, Err(Error::NoKeyPath)), "{result:?}");
}
