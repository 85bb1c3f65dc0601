//! Keeping a lease that was taken: the keep-alives, the fence when they go unconfirmed,
//! and the release when the endpoint closes; and what each lease taken is doing.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use iroh::Endpoint;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use super::{RETRY, members::Members};
use crate::{Error, guard::lease::Held};

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
    own: Arc<std::sync::Mutex<State>>,
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
            own: Arc::new(std::sync::Mutex::new(state)),
            latest: Arc::clone(latest),
            taken,
        }
    }

    fn get(&self) -> State {
        self.own
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, state: State) {
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
        reason: String,
    },
}

/// How long before the lease could expire the holder closes its endpoint: a fifth of the
/// TTL, 500 ms at least.
pub(super) fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(500))
}

/// A lease this process holds, until its keeper is given the endpoint.
pub(super) struct EtcdHeld {
    pub(super) key: String,
    pub(super) record: Record,
    /// Dropped without sending: the keeper releases the lease.
    pub(super) to_keeper: mpsc::UnboundedSender<Endpoint>,
}

impl Held for EtcdHeld {
    fn check(&self) -> Result<(), Error> {
        match self.record.get() {
            State::Lost { key, reason } => Err(Error::LeaseLost { key, reason }),
            State::Free | State::Held { .. } => Ok(()),
        }
    }

    fn hold_until_closed(self: Box<Self>, endpoint: &Endpoint) {
        if self.to_keeper.send(endpoint.clone()).is_err() {
            // The keeper is gone: the lease was lost before the bind finished.
            warn!(key = %self.key, "the identity's lease was lost while binding; closing");
            let endpoint = endpoint.clone();
            tokio::spawn(async move { endpoint.close().await });
        }
    }
}

impl fmt::Debug for EtcdHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdHeld")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The background task that keeps a lease alive, releases it when the endpoint closes,
/// and closes the endpoint when the lease may be lost.
pub(super) struct Keeper {
    pub(super) members: Members,
    pub(super) lease: i64,
    pub(super) key: String,
    pub(super) ttl: Duration,
    /// When the last keep-alive that etcd confirmed was sent.
    pub(super) confirmed: Instant,
    pub(super) record: Record,
}

impl Keeper {
    pub(super) async fn run(mut self, mut endpoints: mpsc::UnboundedReceiver<Endpoint>) {
        let interval = self.ttl / 3;
        let mut next_renewal = self.confirmed + interval;
        // Renewals that failed in a row: each goes to the next member at once, and only
        // when every member failed in turn is there a pause.
        let mut failures = 0;
        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut endpoint: Option<Endpoint> = None;
        let mut closed = None;
        loop {
            let fence_at = self.confirmed + self.ttl - fence_margin(self.ttl);
            let endpoint_closed = async {
                match &mut closed {
                    Some(closed) => closed.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(fence_at.into()) => {
                    let silence = self.confirmed.elapsed();
                    let reason = format!(
                        "etcd confirmed no keep-alive for {silence:.1?} (TTL {:?})", self.ttl
                    );
                    return self.lose(endpoint, endpoints, reason).await;
                }
                received = endpoints.recv(), if endpoint.is_none() => match received {
                    Some(bound) => {
                        closed = Some(Box::pin(bound.closed()));
                        endpoint = Some(bound);
                    }
                    // Dropped before binding: let it go.
                    None => return self.release().await,
                },
                () = endpoint_closed => return self.release().await,
                () = tokio::time::sleep_until(next_renewal.into()) => {
                    let sent = Instant::now();
                    // One member that hangs must leave time to try the next, and a close
                    // must not wait long for an attempt to end.
                    let limit = (fence_at.saturating_duration_since(sent) / 2)
                        .min(super::REQUEST_TIMEOUT);
                    let failed = match tokio::time::timeout(limit, self.renew(&mut stream)).await {
                        Ok(Ok(ttl)) if ttl > 0 => {
                            self.confirmed = sent;
                            false
                        }
                        Ok(Ok(_)) => {
                            let reason = "etcd says the lease expired".into();
                            return self.lose(endpoint, endpoints, reason).await;
                        }
                        Ok(Err(Renewal::Gone)) => {
                            let reason = "etcd no longer knows the lease".into();
                            return self.lose(endpoint, endpoints, reason).await;
                        }
                        Ok(Err(Renewal::Failed(err))) => {
                            warn!(key = %self.key, %err, "cannot renew the identity's lease");
                            true
                        }
                        Err(_) => {
                            warn!(
                                key = %self.key, ?limit,
                                "etcd did not answer a keep-alive of the identity's lease in time"
                            );
                            true
                        }
                    };
                    next_renewal = if !failed {
                        failures = 0;
                        self.confirmed + interval
                    } else {
                        stream = None;
                        self.members.next();
                        failures += 1;
                        if failures % self.members.count() == 0 {
                            Instant::now() + RETRY
                        } else {
                            Instant::now()
                        }
                    };
                }
            }
        }
    }

    /// Sends one keep-alive and returns the TTL etcd answers with (0: expired).
    async fn renew(
        &mut self,
        stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    ) -> Result<i64, Renewal> {
        let (keeper, responses) = match stream {
            Some(open) => open,
            None => stream.insert(
                self.members
                    .client()
                    .lease_keep_alive(self.lease)
                    .await
                    .map_err(Renewal::from)?,
            ),
        };
        keeper.keep_alive().await.map_err(Renewal::from)?;
        match responses.message().await.map_err(Renewal::from)? {
            Some(response) => Ok(response.ttl()),
            None => Err(Renewal::Failed("the keep-alive stream ended".into())),
        }
    }

    /// The endpoint closed: revokes the lease, so that a standby takes it at once.
    async fn release(mut self) {
        match self.members.revoke(self.lease).await {
            Ok(()) => debug!(key = %self.key, "released the identity's lease"),
            Err(err) => {
                warn!(key = %self.key, %err, "cannot revoke the identity's lease; it expires after its TTL")
            }
        }
        self.record.set(State::Free);
    }

    /// The lease may be gone: closes the endpoint first, then says so. An endpoint that
    /// a bind hands over from now on finds the keeper gone and closes itself; one handed
    /// over already but not yet received is closed here.
    async fn lose(
        mut self,
        endpoint: Option<Endpoint>,
        mut endpoints: mpsc::UnboundedReceiver<Endpoint>,
        reason: String,
    ) {
        error!(
            key = %self.key, %reason,
            "the identity's lease may be lost; closing the endpoint so that two never run it"
        );
        endpoints.close();
        let late = std::iter::from_fn(|| endpoints.try_recv().ok());
        for endpoint in endpoint.into_iter().chain(late.collect::<Vec<_>>()) {
            endpoint.close().await;
        }
        self.record.set(State::Lost {
            key: self.key.clone(),
            reason,
        });
        let _ = self.members.revoke(self.lease).await;
    }
}

/// Why a keep-alive was not confirmed.
enum Renewal {
    /// etcd does not know the lease (any more).
    Gone,
    Failed(String),
}

impl From<etcd_client::Error> for Renewal {
    fn from(err: etcd_client::Error) -> Self {
        let gone = match &err {
            etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
            etcd_client::Error::GRpcStatus(status) => status.message().contains("not found"),
            _ => false,
        };
        if gone {
            Self::Gone
        } else {
            Self::Failed(err.to_string())
        }
    }
}
