//! The fence: closing the endpoint when the lease may be lost, before another holder can
//! take it. Its timer is a thread of its own, outside the application's runtime.
//!
//! The lease may expire once etcd has confirmed no keep-alive for its TTL (etcd counts
//! from a keep-alive's arrival, which is after its sending); the holder closes its
//! endpoint a margin before that. A timer on the application's runtime fires only when
//! the runtime gets to it: a task that never yields on a runtime of one thread kept two
//! holders for 9.7 s. A thread that sleeps until the deadline needs only the CPU, and its
//! first act needs no runtime: the first poll of [`Endpoint::close`] makes the endpoint
//! refuse new connections and start closing its own at once; the rest of the close is
//! handed to the runtime. A process starved of CPU is another matter: the kernel wakes
//! this thread as late as any other (RELIABILITY.md measures how late); only the margin
//! covers that.

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard},
    task::{Context, Waker},
    time::{Duration, Instant},
};

use iroh::Endpoint;
use tokio::{runtime::Handle, sync::Notify};
use tracing::error;

use super::state::{Record, State};
use crate::guard::lease::problem::LeaseLoss;

/// How long before the lease could expire the holder closes its endpoint: a fifth of the
/// TTL, 500 ms at least.
pub(super) fn margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(500))
}

/// What the keeper (on the runtime) and the fence's thread share about one lease held.
pub(super) struct Fence {
    key: String,
    ttl: Duration,
    record: Record,
    runtime: Handle,
    state: Mutex<Shared>,
    /// Wakes the thread: a keep-alive confirmed, or the lease let go of.
    wake: Condvar,
    /// Tells the keeper that the thread fenced.
    fenced: Notify,
}

struct Shared {
    /// When the last keep-alive that etcd confirmed was sent.
    confirmed: Instant,
    /// The endpoint, once it is bound.
    endpoint: Option<Endpoint>,
    /// Lost (and the endpoint closed), or let go of: the thread ends.
    over: bool,
}

impl Fence {
    /// A fence for the lease at `key`, whose first keep-alive was sent at `confirmed`, and
    /// its thread.
    pub(super) fn start(
        key: String,
        ttl: Duration,
        record: Record,
        confirmed: Instant,
    ) -> Arc<Self> {
        let fence = Arc::new(Self {
            key,
            ttl,
            record,
            runtime: Handle::current(),
            state: Mutex::new(Shared {
                confirmed,
                endpoint: None,
                over: false,
            }),
            wake: Condvar::new(),
            fenced: Notify::new(),
        });
        let watching = Arc::clone(&fence);
        let spawned = std::thread::Builder::new()
            .name("iroh-identity-fence".into())
            .spawn(move || watching.run());
        if let Err(err) = spawned {
            // Without a thread the keeper's own timer fences, on the runtime.
            error!(key = %fence.key, %err, "cannot start the lease's fence thread");
        }
        fence
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the endpoint is to be closed unless another keep-alive is confirmed first.
    pub(super) fn deadline(&self) -> Instant {
        self.lock().confirmed + self.ttl - margin(self.ttl)
    }

    /// A keep-alive sent at `sent` was confirmed.
    pub(super) fn confirm(&self, sent: Instant) {
        let mut state = self.lock();
        if sent > state.confirmed {
            state.confirmed = sent;
        }
    }

    /// Gives the fence the endpoint to close. `false` if the lease is lost already (the
    /// endpoint was then closed here) or let go of.
    pub(super) fn hand_over(&self, endpoint: &Endpoint) -> bool {
        let mut state = self.lock();
        if state.over {
            drop(state);
            self.close(endpoint.clone());
            return false;
        }
        state.endpoint = Some(endpoint.clone());
        true
    }

    /// Whether the lease was lost or let go of.
    fn is_over(&self) -> bool {
        self.lock().over
    }

    /// Waits until the thread has fenced.
    pub(super) async fn fenced(&self) {
        let notified = self.fenced.notified();
        if self.is_over() {
            return;
        }
        notified.await;
    }

    /// The lease is let go of, its endpoint closed: the thread ends without fencing.
    /// `false` if it was lost first: a close by the fence looks like any other close to
    /// whoever watches the endpoint, and the loss must stand.
    pub(super) fn release(&self) -> bool {
        let mut state = self.lock();
        if state.over {
            return false;
        }
        state.over = true;
        state.endpoint = None;
        drop(state);
        self.wake.notify_all();
        true
    }

    /// The lease is lost, or may be: closes the endpoint first, then records and logs the
    /// loss. Only the first call, or [`release`](Self::release), does anything: the one
    /// that sets `over`.
    pub(super) fn lose(&self, cause: LeaseLoss) {
        let mut state = self.lock();
        if state.over {
            return;
        }
        state.over = true;
        let endpoint = state.endpoint.take();
        drop(state);
        self.wake.notify_all();
        if let Some(endpoint) = endpoint {
            self.close(endpoint);
        }

        error!(
            key = %self.key, %cause,
            "the identity's lease is lost; closing the endpoint so that two never run it"
        );
        self.record.set(State::Lost {
            key: self.key.clone(),
            cause,
        });
        self.fenced.notify_waiters();
    }

    /// Starts closing `endpoint` here and now, and leaves the rest of the close to the
    /// runtime.
    fn close(&self, endpoint: Endpoint) {
        // iroh's close uses the runtime's timers: it must run inside it, even here.
        let _inside = self.runtime.enter();
        let mut closing = Box::pin(async move { endpoint.close().await });
        // The first poll refuses new connections and starts closing the open ones, with
        // no runtime thread needed; the poll after it is the runtime's.
        let mut context = Context::from_waker(Waker::noop());
        if closing.as_mut().poll(&mut context).is_pending() {
            self.runtime.spawn(closing);
        }
    }

    /// The thread: sleeps until the deadline, which each confirmation moves on, then
    /// fences.
    fn run(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            if state.over {
                return;
            }
            let deadline = state.confirmed + self.ttl - margin(self.ttl);
            let now = Instant::now();
            if now >= deadline {
                let silence = now - state.confirmed;
                drop(state);
                self.lose(LeaseLoss::Unconfirmed {
                    silence,
                    ttl: self.ttl,
                });
                return;
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}
