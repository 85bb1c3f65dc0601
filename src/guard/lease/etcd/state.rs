//! What each lease taken with an [`EtcdLease`](super::EtcdLease) is doing: held (with its
//! token), lost (and why) or free. The keeper and the fence write it; the `EtcdLease` and
//! its clones read the latest.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::guard::lease::problem::LeaseLoss;

/// The last lease taken with an [`EtcdLease`](super::EtcdLease): which one (a count), and
/// its state.
#[derive(Debug)]
pub(super) struct Latest {
    pub(super) taken: u64,
    pub(super) state: State,
}

/// The state of one lease taken, and of the [`EtcdLease`](super::EtcdLease)'s latest while
/// it is the last taken: a keeper that is still letting an older lease go never overwrites
/// a newer one.
#[derive(Debug, Clone)]
pub(super) struct Record {
    own: Arc<Mutex<State>>,
    latest: Arc<watch::Sender<Latest>>,
    taken: u64,
}

impl Record {
    /// Records a new lease as the value's latest.
    pub(super) fn new(latest: &Arc<watch::Sender<Latest>>, token: i64) -> Self {
        let state = State::Held { token };
        let mut taken = 0;
        latest.send_modify(|latest| {
            latest.taken += 1;
            latest.state = state.clone();
            taken = latest.taken;
        });
        Self {
            own: Arc::new(Mutex::new(state)),
            latest: Arc::clone(latest),
            taken,
        }
    }

    pub(super) fn get(&self) -> State {
        self.own
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(super) fn set(&self, state: State) {
        *self
            .own
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state.clone();
        self.latest.send_if_modified(|latest| {
            let ours = latest.taken == self.taken;
            if ours {
                latest.state = state;
            }
            ours
        });
    }
}

/// What a lease taken with an [`EtcdLease`](super::EtcdLease) is doing.
#[derive(Debug, Clone)]
pub(super) enum State {
    /// Not held: not yet taken, or released.
    Free,
    Held {
        token: i64,
    },
    Lost {
        key: String,
        cause: LeaseLoss,
    },
}
