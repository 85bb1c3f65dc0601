//! Guarantee 7 across processes: a second process is kept out while the identity is in
//! use, and let in once it is closed. Races and killed holders are campaigns
//! (`campaigns::race`, `campaigns::lock`).

use std::time::{Duration, Instant};

use crate::support::{
    builder,
    child::{Action, Task, run_to_end},
    temp_dir,
};

#[tokio::test]
async fn another_process_is_kept_out_while_the_identity_is_in_use() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let endpoint = builder(&path).bind().await?;
    let id = endpoint.id().to_string();

    let second = Task::new(Action::Open, &path).lock_wait_ms(500).command();
    let start = Instant::now();
    let refused = tokio::task::spawn_blocking(move || run_to_end(second)).await?;
    let error = refused.expect_error();
    assert!(error.contains("in use"), "{error}");
    assert!(error.contains(&id), "the error names the identity: {error}");
    // The holder is named where the lock tells it: Linux's socket, whose listener the
    // kernel names.
    #[cfg(target_os = "linux")]
    {
        let holder = format!(
            "(process {}, uid {})",
            std::process::id(),
            crate::support::uid()
        );
        assert!(
            error.contains(&holder),
            "the error names its holder: {error}"
        );
    }
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(
        refused.status.success(),
        "the child reports errors itself: {refused:?}"
    );

    endpoint.close().await;
    let after = Task::new(Action::Open, &path).lock_wait_ms(0).command();
    let admitted = tokio::task::spawn_blocking(move || run_to_end(after)).await?;
    assert_eq!(admitted.expect_id(), endpoint.id().to_string());
    Ok(())
}
