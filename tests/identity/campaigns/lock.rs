//! Lock faults (guarantee 7): a holder killed with SIGKILL leaves no stale lock, and while
//! the holder lives a second open fails with the in-use error after the configured wait,
//! within 100 ms of it.

use std::time::{Duration, Instant};

use iroh_identity::{Error, load_key};

use super::{figure, size};
use crate::support::{
    LogCapture, assert_no_secret, builder,
    child::{Action, Holder, Task},
    list, temp_dir,
};

#[tokio::test]
async fn a_killed_holder_leaves_no_stale_lock() -> anyhow::Result<()> {
    let rounds = size(5, 200);
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let mut slowest = Duration::ZERO;
    let (logs, _guard) = LogCapture::start();
    for _ in 0..rounds {
        let holder = Holder::start(Task::new(Action::Hold, &path).command());
        let id = holder.id.clone();
        let in_use = builder(&path).lock_wait(Duration::ZERO).bind().await;
        assert!(matches!(in_use, Err(Error::InUse { .. })), "{in_use:?}");
        holder.kill();
        // SIGKILL: no close, no clean-up. The next open succeeds at once.
        let start = Instant::now();
        let endpoint = builder(&path).lock_wait(Duration::ZERO).bind().await?;
        slowest = slowest.max(start.elapsed());
        assert_eq!(endpoint.id().to_string(), id);
        endpoint.close().await;
    }
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert_eq!(list(dir.path()), ["endpoint.key"]);
    let key = load_key(&path)?;
    assert_no_secret(&logs.bytes(), &key.to_bytes(), "the logs");
    figure(
        "lock killed holder",
        format_args!(
            "{rounds} holders SIGKILLed: 0 stale locks; every next open with a zero wait \
             succeeded, the slowest in {slowest:?}"
        ),
    );
    Ok(())
}

#[tokio::test]
async fn the_in_use_error_comes_within_100_ms_of_the_wait() -> anyhow::Result<()> {
    let rounds = size(1, 10);
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let holder = builder(&path).bind().await?;
    let (mut opens, mut latest) = (0, Duration::ZERO);
    for _ in 0..rounds {
        for wait_ms in [0, 50, 300, 1000] {
            let wait = Duration::from_millis(wait_ms);
            let start = Instant::now();
            let err = builder(&path)
                .lock_wait(wait)
                .bind()
                .await
                .expect_err("the identity is in use");
            let waited = start.elapsed();
            assert!(matches!(err, Error::InUse { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(&holder.id().to_string()), "{message}");
            assert!(waited >= wait, "gave up after {waited:?} of {wait:?}");
            latest = latest.max(waited - wait);
            opens += 1;
        }
    }
    assert!(
        latest < Duration::from_millis(100),
        "an in-use error came {latest:?} after its wait"
    );
    holder.close().await;
    assert_eq!(load_key(&path)?.public(), holder.id());
    figure(
        "lock in use",
        format_args!(
            "{opens} refused opens with waits of 0, 50, 300 and 1000 ms: each error came \
             at most {latest:?} after its wait"
        ),
    );
    Ok(())
}
