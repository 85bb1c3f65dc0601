//! Keeping a lease that was taken: the keep-alives, the watch on its key, and the
//! release when the endpoint closes.
//!
//! The keeper talks to one member at a time, in sessions. A session opens a keep-alive
//! stream and reads the key (both at once), checks that the key is still the lease's and
//! etcd's history still has it, then watches the key from there. It sends a keep-alive
//! every sixth of the TTL on the stream, without waiting for the answers: etcd answers a
//! stream's keep-alives in order, so each answer confirms the oldest one unanswered, and
//! the fence counts from when that one was sent. A renewal costs one message and one
//! round trip. A session ends on a failure, or when a keep-alive goes unanswered for
//! [`patience`]: the next member gets the rest of the time.
//!
//! The watch fences the holder within one round trip of an operator's `etcdctl del`, a
//! revoke of its lease (which deletes the key), or a put that binds the key to another
//! lease; a keep-alive answered with a TTL of 0 (etcd no longer knows the lease) fences it
//! too. Silence fences it from the fence's own thread ([`super::fence`]).

use std::{
    collections::VecDeque,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{EventType, LeaseKeepAliveStream, LeaseKeeper, WatchOptions, WatchStream};
use iroh::Endpoint;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    RETRY,
    fence::{Fence, margin},
    members::{Failure, Members},
    state::{Record, State},
};
use crate::{
    error::Error,
    guard::lease::{Held, Pending, problem::LeaseLoss},
};

/// How often a keep-alive is sent: a sixth of the TTL (see [`patience`] for why).
pub(super) fn renewal_interval(ttl: Duration) -> Duration {
    ttl / 6
}

/// How long a keep-alive may go unanswered before the member is given up for the next:
/// half of what the fence leaves after a renewal interval.
///
/// The arithmetic, at the shortest TTL (5 s): the fence closes the endpoint 4 s after the
/// last confirmed keep-alive was sent. A round trip of a quarter of the TTL (1.25 s)
/// confirms each keep-alive 1.25 s after it was sent, so the oldest confirmation is at
/// most a renewal interval and a round trip old (2.1 s), and [`patience`] (1.58 s) waits
/// for it. A leader change with etcd's default election timeout (1 s) leaves etcd without
/// a leader for one to two seconds, three when a first vote is refused: the keep-alives
/// sent meanwhile are answered once there is one, and the last one confirmed before is at
/// most a renewal interval (0.83 s) old when it starts: 0.83 + 3 s is within the 4 s. A
/// TTL below 5 s cannot hold both.
pub(super) fn patience(ttl: Duration) -> Duration {
    (ttl - margin(ttl) - renewal_interval(ttl)) / 2
}

/// A lease this process holds, until its keeper is given the endpoint.
pub(super) struct EtcdHeld {
    pub(super) key: String,
    pub(super) record: Record,
    pub(super) fence: Arc<Fence>,
    /// Dropped without sending: the keeper releases the lease.
    pub(super) to_keeper: mpsc::UnboundedSender<Endpoint>,
}

impl Held for EtcdHeld {
    fn check(&self) -> Result<(), Error> {
        match self.record.get() {
            State::Lost { key, cause } => Err(Error::LeaseLost { key, cause }),
            State::Free | State::Held { .. } => Ok(()),
        }
    }

    fn hold_until_closed(self: Box<Self>, endpoint: &Endpoint) {
        if !self.fence.hand_over(endpoint) {
            // Closed by the fence already: the lease was lost while binding.
            warn!(key = %self.key, "the identity's lease was lost while binding; closed");
            return;
        }
        let _ = self.to_keeper.send(endpoint.clone());
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
/// and fences the holder when the lease is lost.
pub(super) struct Keeper {
    pub(super) members: Members,
    pub(super) lease: i64,
    pub(super) key: String,
    pub(super) token: i64,
    pub(super) ttl: Duration,
    /// The cluster the lease was taken in.
    pub(super) cluster: Option<u64>,
    pub(super) fence: Arc<Fence>,
    pub(super) record: Record,
}

/// How a session ended.
enum Ended {
    /// The endpoint closed, or was never handed over: let the lease go.
    Released,
    /// The lease is lost: fence.
    Lost(LeaseLoss),
    /// The fence's thread fenced already.
    Fenced,
    /// The member failed: try the next.
    Failed(String),
}

/// The endpoint, once it is handed over, and a future of its close.
#[derive(Default)]
struct Handover {
    received: bool,
    closed: Option<std::pin::Pin<Box<iroh::endpoint::EndpointClosed>>>,
}

impl Keeper {
    pub(super) async fn run(mut self, mut endpoints: mpsc::UnboundedReceiver<Endpoint>) {
        let mut handover = Handover::default();
        // Sessions that failed in a row: each goes to the next member at once, and only
        // when every member failed in turn is there a pause.
        let mut failures = 0;
        loop {
            let ended = self.session(&mut endpoints, &mut handover).await;
            match ended {
                Ended::Released => return self.release().await,
                Ended::Lost(cause) => {
                    self.fence.lose(cause);
                    return self.revoke().await;
                }
                Ended::Fenced => return self.revoke().await,
                Ended::Failed(reason) => {
                    warn!(
                        key = %self.key, endpoint = self.members.endpoint(), %reason,
                        "cannot keep the identity's lease alive through this etcd member; \
                         trying the next"
                    );
                    self.members.next();
                    failures += 1;
                    if failures % self.members.count() == 0 {
                        let fence = Arc::clone(&self.fence);
                        let pause = tokio::time::sleep(RETRY);
                        if let Step::Ended(ended) =
                            between(&fence, &mut endpoints, &mut handover, pause).await
                        {
                            match ended {
                                Ended::Released => return self.release().await,
                                _ => return self.revoke().await,
                            }
                        }
                    }
                }
            }
            if matches!(self.record.get(), State::Held { .. }) {
                continue;
            }
            return self.revoke().await;
        }
    }

    /// One session on the current member, until it fails or the keeping ends.
    ///
    /// The keep-alive stream and the read of the key start at once: the stream's first
    /// answer confirms the lease without waiting for the rest. The watch starts once the
    /// read has shown the key still the lease's. Each of them must be answered within
    /// [`patience`].
    async fn session(
        &mut self,
        endpoints: &mut mpsc::UnboundedReceiver<Endpoint>,
        handover: &mut Handover,
    ) -> Ended {
        let patience = patience(self.ttl);
        let interval = renewal_interval(self.ttl);
        let fence = Arc::clone(&self.fence);
        let sent = Instant::now();
        // Connecting (and logging in) is part of the first keep-alive's round.
        let connecting = tokio::time::timeout(patience, self.members.client());
        let client = match between(&fence, endpoints, handover, connecting).await {
            Step::Done(Ok(Ok(client))) => client.clone(),
            Step::Done(Ok(Err(failure))) => return Ended::Failed(failure.reason()),
            Step::Done(Err(_)) => {
                return Ended::Failed(format!("no connection within {patience:?}"));
            }
            Step::Ended(ended) => return ended,
        };
        let endpoint = self.members.endpoint().to_owned();
        let failed = |err: etcd_client::Error| Ended::Failed(Failure::of(&endpoint, &err).reason());
        let lease = self.lease;
        let mut opening = {
            let mut client = client.clone();
            Some(Box::pin(
                async move { client.lease_keep_alive(lease).await },
            ))
        };
        let mut reading = {
            let (mut client, key) = (client.clone(), self.key.clone());
            Some(Box::pin(async move { client.get(key, None).await }))
        };
        let mut starting: Option<Pending<'static, Result<WatchStream, etcd_client::Error>>> = None;
        let mut keeper: Option<LeaseKeeper> = None;
        let mut responses: Option<LeaseKeepAliveStream> = None;
        let mut watch: Option<WatchStream> = None;
        let mut unanswered = VecDeque::from([sent]);
        let mut next_renewal = sent + interval;
        // The read, then the watch's start, each within patience.
        let mut answer_by = Some(sent + patience);
        loop {
            let overdue = unanswered.front().map(|sent| *sent + patience);
            let closed = async {
                match &mut handover.closed {
                    Some(closed) => closed.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = fence.fenced() => return Ended::Fenced,
                received = endpoints.recv(), if !handover.received => match received {
                    Some(endpoint) => {
                        handover.received = true;
                        handover.closed = Some(Box::pin(endpoint.closed()));
                    }
                    None => return Ended::Released,
                },
                () = closed => return Ended::Released,
                opened = until_done(&mut opening) => match opened {
                    Ok((sender, stream)) => {
                        unanswered.pop_front();
                        fence.confirm(sent);
                        keeper = Some(sender);
                        responses = Some(stream);
                    }
                    // etcd-client's words when the first answer has a TTL of 0.
                    Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                        return Ended::Lost(LeaseLoss::Revoked);
                    }
                    Err(err) => return failed(err),
                },
                read = until_done(&mut reading) => {
                    let read = match read {
                        Ok(read) => read,
                        Err(err) => return failed(err),
                    };
                    if let Some(loss) = self.check(&read) {
                        return Ended::Lost(loss);
                    }
                    let revision = read.header().map_or(0, |header| header.revision());
                    let (mut client, key) = (client.clone(), self.key.clone());
                    let options = WatchOptions::new().with_start_revision(revision + 1);
                    starting = Some(Box::pin(async move { client.watch(key, Some(options)).await }));
                    answer_by = Some(Instant::now() + patience);
                },
                started = until_done(&mut starting) => match started {
                    Ok(stream) => {
                        watch = Some(stream);
                        answer_by = None;
                    }
                    Err(err) => return failed(err),
                },
                event = next(&mut watch, WatchStream::message) => match event {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            return Ended::Failed(format!(
                                "etcd canceled the watch of the key: {}",
                                response.cancel_reason()
                            ));
                        }
                        for event in response.events() {
                            match (event.event_type(), event.kv()) {
                                (EventType::Delete, _) => return Ended::Lost(LeaseLoss::Deleted),
                                (EventType::Put, Some(kv)) if kv.lease() != self.lease => {
                                    return Ended::Lost(LeaseLoss::Replaced);
                                }
                                (EventType::Put, _) => {}
                            }
                        }
                    }
                    Ok(None) => return Ended::Failed("etcd ended the watch of the key".into()),
                    Err(err) => return failed(err),
                },
                answer = next(&mut responses, LeaseKeepAliveStream::message) => match answer {
                    Ok(Some(answer)) if answer.ttl() <= 0 => return Ended::Lost(LeaseLoss::Revoked),
                    Ok(Some(_)) => {
                        if let Some(sent) = unanswered.pop_front() {
                            fence.confirm(sent);
                        }
                    }
                    Ok(None) => return Ended::Failed("etcd ended the keep-alive stream".into()),
                    Err(err) => return failed(err),
                },
                () = sleep_until(overdue) => {
                    return Ended::Failed(format!("a keep-alive went unanswered for {patience:?}"));
                }
                () = sleep_until(answer_by) => {
                    return Ended::Failed(format!("the key's read or watch went unanswered for {patience:?}"));
                }
                () = tokio::time::sleep_until(next_renewal.into()), if keeper.is_some() => {
                    let Some(sender) = keeper.as_mut() else { continue };
                    if let Err(err) = sender.keep_alive().await {
                        return failed(err);
                    }
                    let now = Instant::now();
                    unanswered.push_back(now);
                    next_renewal = now + interval;
                }
            }
            // A fence whose thread could not start is the keeper's own.
            if Instant::now() >= fence.deadline() {
                return Ended::Lost(LeaseLoss::Unconfirmed {
                    silence: self.ttl - margin(self.ttl),
                    ttl: self.ttl,
                });
            }
        }
    }

    /// What a read of the key says of the lease: lost, if etcd's history went back
    /// below it (its revision, which only that can lower) or another cluster answers, or
    /// the key is gone or bound to another lease.
    fn check(&self, read: &etcd_client::GetResponse) -> Option<LeaseLoss> {
        let revision = read.header().map_or(0, |header| header.revision());
        let cluster = read.header().map(|header| header.cluster_id());
        let other_cluster = self.cluster.is_some() && cluster != self.cluster;
        if revision < self.token || other_cluster {
            return Some(LeaseLoss::Rewound {
                revision,
                token: self.token,
            });
        }
        match read.kvs().first() {
            None => Some(LeaseLoss::Deleted),
            Some(kv) if kv.lease() != self.lease || kv.create_revision() != self.token => {
                Some(LeaseLoss::Replaced)
            }
            Some(_) => None,
        }
    }

    /// The endpoint closed: revokes the lease, so that a standby takes it at once.
    async fn release(mut self) {
        if !self.fence.release() {
            // Lost, and fenced: the endpoint closed because of it. Only the lease is left
            // to let go.
            return self.revoke().await;
        }
        match self.members.revoke(self.lease).await {
            Ok(()) => debug!(key = %self.key, "released the identity's lease"),
            Err(err) => {
                warn!(key = %self.key, %err, "cannot revoke the identity's lease; it expires after its TTL")
            }
        }
        self.record.set(State::Free);
    }

    /// After a loss: lets the lease go, if etcd still knows it.
    async fn revoke(mut self) {
        let _ = self.members.revoke(self.lease).await;
    }
}

/// How work done while the keeping may end went.
enum Step<T> {
    Done(T),
    Ended(Ended),
}

/// Runs `work` while watching for the endpoint's hand-over and close and for the fence:
/// [`Step::Ended`] when one of those ends the keeping first.
async fn between<T>(
    fence: &Fence,
    endpoints: &mut mpsc::UnboundedReceiver<Endpoint>,
    handover: &mut Handover,
    work: impl Future<Output = T>,
) -> Step<T> {
    tokio::pin!(work);
    loop {
        let closed = async {
            match &mut handover.closed {
                Some(closed) => closed.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = fence.fenced() => return Step::Ended(Ended::Fenced),
            received = endpoints.recv(), if !handover.received => match received {
                Some(endpoint) => {
                    handover.received = true;
                    handover.closed = Some(Box::pin(endpoint.closed()));
                }
                // Dropped before binding: let it go.
                None => return Step::Ended(Ended::Released),
            },
            () = closed => return Step::Ended(Ended::Released),
            done = &mut work => return Step::Done(done),
        }
    }
}

/// Awaits the future in `slot`, then empties it; never ends while it is empty.
async fn until_done<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    let output = match slot.as_mut() {
        Some(future) => future.await,
        None => std::future::pending().await,
    };
    *slot = None;
    output
}

/// The next message of the stream in `slot`; never ends while it is empty.
async fn next<S, T>(
    slot: &mut Option<S>,
    message: impl AsyncFnOnce(&mut S) -> Result<Option<T>, etcd_client::Error>,
) -> Result<Option<T>, etcd_client::Error> {
    match slot.as_mut() {
        Some(stream) => message(stream).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
