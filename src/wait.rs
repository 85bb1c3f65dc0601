//! Waiting with an end. The waits of an open (for the identity lock, the directory lock
//! while creating, a busy remembered port) try again at an interval until a deadline
//! that the caller's [`lock_wait`](crate::Builder::lock_wait) set, and never block a
//! runtime thread on anything they do not control. Code that is not async
//! (`store_new_key`, the secret store's creation lock, on a blocking thread) waits the
//! same way with [`blocking_until`], the thread sleeping. The etcd lease waits on etcd's
//! watch, until the same deadline.

use std::time::{Duration, Instant};

/// When a wait ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `wait` from now; never, if that is beyond what a clock can hold
    /// (`Duration::MAX`).
    pub(crate) fn after(wait: Duration) -> Self {
        Self(Instant::now().checked_add(wait))
    }

    /// This deadline, or `limit` from now if that is sooner.
    pub(crate) fn at_most(self, limit: Duration) -> Self {
        let soon = Instant::now() + limit;
        Self(Some(self.0.map_or(soon, |deadline| deadline.min(soon))))
    }

    /// This deadline, or `floor` from now if that is later.
    #[cfg(feature = "keyring")]
    pub(crate) fn at_least(self, floor: Duration) -> Self {
        let floor = Instant::now() + floor;
        Self(self.0.map(|deadline| deadline.max(floor)))
    }

    /// How long is left, or `None` for no end.
    pub(crate) fn left(self) -> Option<Duration> {
        self.0
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum Waited<T> {
    /// The attempt succeeded.
    Done(T),
    /// The deadline passed first, after this long, to the millisecond.
    TimedOut(Duration),
}

/// Tries `attempt` until it gives `Some`, or fails, or `deadline` passes, sleeping
/// `interval` in between. `waiting` is called once, when the first attempt finds the
/// thing busy.
pub(crate) async fn until<T, E>(
    deadline: Deadline,
    interval: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
    waiting: impl FnOnce(),
) -> Result<Waited<T>, E> {
    let mut wait = Wait::new(deadline, interval, waiting);
    loop {
        if let Some(done) = attempt()? {
            return Ok(Waited::Done(done));
        }
        match wait.next_sleep() {
            Some(sleep) => tokio::time::sleep(sleep).await,
            None => return Ok(Waited::TimedOut(wait.waited())),
        }
    }
}

/// [`until`] for code that is not async: the calling thread sleeps.
pub(crate) fn blocking_until<T, E>(
    deadline: Deadline,
    interval: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
    waiting: impl FnOnce(),
) -> Result<Waited<T>, E> {
    let mut wait = Wait::new(deadline, interval, waiting);
    loop {
        if let Some(done) = attempt()? {
            return Ok(Waited::Done(done));
        }
        match wait.next_sleep() {
            Some(sleep) => std::thread::sleep(sleep),
            None => return Ok(Waited::TimedOut(wait.waited())),
        }
    }
}

/// The bookkeeping both loops share.
struct Wait<F> {
    deadline: Deadline,
    interval: Duration,
    start: Instant,
    waiting: Option<F>,
}

impl<F: FnOnce()> Wait<F> {
    fn new(deadline: Deadline, interval: Duration, waiting: F) -> Self {
        Self {
            deadline,
            interval,
            start: Instant::now(),
            waiting: Some(waiting),
        }
    }

    /// How long to sleep before the next attempt; `None` once the deadline has passed.
    fn next_sleep(&mut self) -> Option<Duration> {
        let left = self.deadline.left();
        if left == Some(Duration::ZERO) {
            return None;
        }
        if let Some(waiting) = self.waiting.take() {
            waiting();
        }
        Some(left.map_or(self.interval, |left| left.min(self.interval)))
    }

    fn waited(&self) -> Duration {
        Duration::from_millis(self.start.elapsed().as_millis() as u64)
    }
}
