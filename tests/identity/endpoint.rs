//! Binding: the same id across restarts, a peer that reconnects to the restarted
//! endpoint, the N0 default offline, and iroh options passed through.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use iroh::{Endpoint, SecretKey, endpoint::presets, protocol::Router};
use iroh_identity::{Error, PersistentEndpoint};

use crate::support::{addr_of, builder, echo, temp_dir};

/// Every connect in these tests is bounded: a dead address would take ~30 s to fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An echo server with the identity at `path`, on loopback.
async fn open_server(path: &Path) -> Result<Router, Error> {
    let endpoint = builder(path).bind().await?;
    Ok(Router::builder(endpoint)
        .accept(echo::ALPN, echo::Echo)
        .spawn())
}

#[tokio::test]
async fn the_id_is_the_same_after_close_and_reopen() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let first = builder(&path).bind().await?;
    let id = first.id();
    first.close().await;
    for _ in 0..3 {
        let again = builder(&path).bind().await?;
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
    let id = server.endpoint().id();
    // The address holds the id, which the client checks in TLS.
    echo::echo(
        &client,
        &addr_of(server.endpoint()),
        b"before",
        CONNECT_TIMEOUT,
    )
    .await?;
    server.shutdown().await?;
    drop(server);

    // The restarted server has a new port but the same id.
    let restarted = open_server(&path).await?;
    assert_eq!(restarted.endpoint().id(), id);
    echo::echo(
        &client,
        &addr_of(restarted.endpoint()),
        b"after",
        CONNECT_TIMEOUT,
    )
    .await?;
    restarted.shutdown().await?;
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
    let expected = iroh_identity::Identity::open(&path).await?.id();
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
    // A plain iroh::Endpoint: it goes into a Router as it is.
    let router = open_server(&path).await?;
    assert!(!router.endpoint().is_closed());
    router.shutdown().await?;
    assert!(router.endpoint().is_closed());
    Ok(())
}
