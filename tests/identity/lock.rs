//! Guarantee 7 within one process: one live endpoint per identity. The lock follows the
//! endpoint and its clones, and closing or dropping releases it. How long a refused open
//! waits, and killed holders, are a campaign (`campaigns::lock`).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use iroh::{Endpoint, endpoint::presets, protocol::Router};
use iroh_identity::{DEFAULT_LOCK_WAIT, Error, Identity};

use crate::support::{builder, loopback, temp_dir};

async fn open(path: &Path, wait: Duration) -> Result<Endpoint, Error> {
    builder(path).lock_wait(wait).bind().await
}

#[tokio::test]
async fn by_default_a_second_open_waits_a_few_seconds() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let first = open(&path, Duration::ZERO).await?;
    let start = Instant::now();
    let second = builder(&path).bind().await;
    let waited = start.elapsed();
    assert!(matches!(second, Err(Error::InUse { .. })), "{second:?}");
    assert_eq!(DEFAULT_LOCK_WAIT, Duration::from_secs(5));
    assert!(
        waited >= DEFAULT_LOCK_WAIT && waited < DEFAULT_LOCK_WAIT + Duration::from_millis(500),
        "{waited:?}"
    );
    first.close().await;
    Ok(())
}

#[tokio::test]
async fn a_waiting_open_succeeds_once_the_holder_closes() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let first = open(&path, Duration::ZERO).await?;
    let id = first.id();
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.close().await;
    });
    // The restart case: the old endpoint is still closing when the new one opens.
    let second = open(&path, Duration::from_secs(5)).await?;
    assert_eq!(second.id(), id);
    closer.await?;
    second.close().await;
    Ok(())
}

/// Closing releases the identity by the time `close()` returns, or within `wait` of it.
async fn close_then_reopen(wait: Duration) -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    for _ in 0..20 {
        let endpoint = open(&path, wait).await?;
        endpoint.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn close_releases_at_once_on_a_current_thread_runtime() -> anyhow::Result<()> {
    close_then_reopen(Duration::ZERO).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_within_milliseconds_on_a_multi_thread_runtime() -> anyhow::Result<()> {
    // The identity is released by a task that the start of the close wakes; on another
    // worker thread it may run just after `close()` returns (seen about once in 20 runs
    // of 20 reopens with no wait, on a loaded machine).
    close_then_reopen(Duration::from_millis(100)).await
}

#[tokio::test]
async fn the_lock_follows_every_clone_of_the_endpoint() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let endpoint = open(&path, Duration::ZERO).await?;
    let router = Router::builder(endpoint.clone()).spawn();
    drop(endpoint);
    // The router's clone is open: the identity is still taken.
    let err = open(&path, Duration::from_millis(50))
        .await
        .expect_err("in use");
    assert!(matches!(err, Error::InUse { .. }), "{err:?}");
    // Shutting the router down closes its endpoint, which releases the identity.
    router.shutdown().await?;
    open(&path, Duration::from_secs(1)).await?.close().await;
    Ok(())
}

#[tokio::test]
async fn dropping_the_last_clone_releases_the_identity() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let endpoint = open(&path, Duration::ZERO).await?;
    let clone = endpoint.clone();
    drop(endpoint);
    assert!(
        open(&path, Duration::ZERO).await.is_err(),
        "a clone is still alive"
    );
    // Without `close()`: iroh logs an error about it, and the identity is released.
    drop(clone);
    open(&path, Duration::from_secs(1)).await?.close().await;
    Ok(())
}

#[tokio::test]
async fn an_identity_is_held_until_the_endpoint_it_binds_closes() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let identity = Identity::open(&path).await?;
    let file = iroh_identity::KeySource::File { path: path.clone() };
    assert_eq!(identity.source(), &file);
    assert!(matches!(
        open(&path, Duration::ZERO).await,
        Err(Error::InUse { .. })
    ));
    let id = identity.id();
    // Any iroh builder: the identity goes with the endpoint it binds.
    let endpoint = identity
        .bind(loopback(Endpoint::builder(presets::Minimal)))
        .await?;
    assert_eq!(endpoint.id(), id);
    assert!(matches!(
        open(&path, Duration::ZERO).await,
        Err(Error::InUse { .. })
    ));
    endpoint.close().await;
    open(&path, Duration::from_secs(1)).await?.close().await;
    Ok(())
}

#[tokio::test]
async fn an_identity_that_is_dropped_unbound_is_released() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let identity = builder(&path).open().await?;
    assert!(matches!(
        builder(&path).lock_wait(Duration::ZERO).open().await,
        Err(Error::InUse { .. })
    ));
    drop(identity);
    builder(&path).lock_wait(Duration::ZERO).open().await?;
    Ok(())
}
