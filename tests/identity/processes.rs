//! Guarantees 4 and 7 across processes: racing first runs settle on one identity, a
//! second process is kept out while the identity is in use, and a killed holder leaves
//! no stale lock.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use iroh_identity::{Error, load_or_generate};

use crate::support::{
    builder,
    child::{self, Holder, outcome, run_to_end},
    list, temp_dir,
};

const RACERS: usize = 16;

/// Starts `RACERS` children doing `action` on one missing path at the same instant and
/// returns the ids they report.
fn race(action: &str) -> (tempfile::TempDir, BTreeSet<String>) {
    let dir = temp_dir();
    let path = dir.path().join("new").join("endpoint.key");
    let start_at = child::start_at(Duration::from_millis(500));
    let children: Vec<_> = (0..RACERS)
        .map(|_| {
            let mut command = child::command(action, &path);
            command.env(child::START_AT_MS, &start_at);
            command.spawn().expect("spawn racer")
        })
        .collect();
    let ids = children
        .into_iter()
        .map(|racer| outcome(racer).expect_id().to_owned())
        .collect();
    (dir, ids)
}

#[test]
fn racing_first_runs_all_get_the_same_key() -> anyhow::Result<()> {
    let (dir, ids) = race("key");
    assert_eq!(
        ids.len(),
        1,
        "{RACERS} racers ended with {} identities",
        ids.len()
    );
    let path = dir.path().join("new").join("endpoint.key");
    assert!(ids.contains(&load_or_generate(&path)?.public().to_string()));
    assert_eq!(list(&dir.path().join("new")), ["endpoint.key"]);
    Ok(())
}

#[test]
fn racing_endpoint_opens_all_get_the_same_identity() -> anyhow::Result<()> {
    // Each one holds the identity for a moment; the others wait their turn.
    let (dir, ids) = race("open");
    assert_eq!(
        ids.len(),
        1,
        "{RACERS} racers ended with {} identities",
        ids.len()
    );
    assert_eq!(list(&dir.path().join("new")), ["endpoint.key"]);
    Ok(())
}

#[tokio::test]
async fn another_process_is_kept_out_while_the_identity_is_in_use() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let endpoint = builder(&path).bind().await?;

    let mut second = child::command("open", &path);
    second.env(child::LOCK_WAIT_MS, "500");
    let start = Instant::now();
    let refused = tokio::task::spawn_blocking(move || run_to_end(second)).await?;
    let error = refused.expect_error();
    assert!(error.contains("in use"), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(
        refused.status.success(),
        "the child reports errors itself: {refused:?}"
    );

    endpoint.close().await;
    let mut after = child::command("open", &path);
    after.env(child::LOCK_WAIT_MS, "0");
    let admitted = tokio::task::spawn_blocking(move || run_to_end(after)).await?;
    assert_eq!(admitted.expect_id(), endpoint.id().to_string());
    Ok(())
}

#[tokio::test]
async fn a_killed_holder_leaves_no_stale_lock() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    for _ in 0..3 {
        let holder = Holder::start(child::command("hold", &path));
        let id = holder.id.clone();
        let in_use = builder(&path).lock_wait(Duration::ZERO).bind().await;
        assert!(matches!(in_use, Err(Error::InUse { .. })), "{in_use:?}");
        holder.kill();
        // SIGKILL: no close, no clean-up. The next open succeeds at once.
        let start = Instant::now();
        let endpoint = builder(&path).lock_wait(Duration::ZERO).bind().await?;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(endpoint.id().to_string(), id);
        endpoint.close().await;
    }
    assert_eq!(list(dir.path()), ["endpoint.key"]);
    Ok(())
}
