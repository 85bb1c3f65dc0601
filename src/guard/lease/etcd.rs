//! The identity's lease in etcd: a key named for the `EndpointId`, bound to an etcd lease
//! and created only if absent, in one transaction.
//!
//! - **Taking it.** A lease of the TTL is granted, then `put KEY` runs if the key's
//!   create revision is 0 (it does not exist); the revision of that transaction is the
//!   fencing token. When the key exists, the lease is revoked and the key watched until
//!   it is deleted, then taken again; the wait ends at the caller's deadline.
//! - **Keeping it.** A keep-alive is sent every third of the TTL. etcd counts the TTL
//!   from when it receives one, so a keep-alive confirmed by a response keeps the lease
//!   at least until its *sending* plus the TTL. When none has been confirmed for the TTL
//!   less a margin ([`fence_margin`](keeper::fence_margin)), measured on the monotonic
//!   clock, the lease may be about to expire: the holder closes its endpoint
//!   (self-fencing) and reports the loss ([`keeper`]).
//! - **Talking to etcd.** One member at a time ([`members`]).
//! - **Letting go.** When the endpoint closes, the lease is revoked: etcd deletes the key
//!   and a waiting standby takes it at once. A crashed holder's lease expires after the
//!   TTL.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use iroh::EndpointId;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

mod keeper;
mod members;

use self::{
    keeper::{EtcdHeld, Keeper, Latest, Record, State},
    members::Members,
};
use super::{Held, Lease, Pending};
use crate::{Error, wait::Deadline};

/// The lease's time to live unless [`EtcdLease::ttl`] sets another: how long a crashed
/// holder keeps the identity from a standby.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The shortest TTL: etcd raises shorter ones to its minimum anyway.
const MIN_TTL: Duration = Duration::from_secs(2);

/// The longest TTL: a day.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Where the keys are, unless [`EtcdLease::prefix`] sets another.
const DEFAULT_PREFIX: &str = "/iroh-identity/";

/// How long a connection to etcd may take to open, and a request to be answered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a standby looks at the key again when its watch says nothing (a watch on an
/// unresponsive member may hang silently), and how soon it tries again after an error.
const RECHECK: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(200);

/// One live endpoint per identity across machines: a lease in etcd (feature `etcd`).
///
/// Give it to [`Builder::lease`](crate::Builder::lease). Opening then takes the
/// identity's lease after the host's locks, waiting for another holder (on any machine)
/// for up to the [lock wait](crate::Builder::lock_wait) (`Duration::MAX`: a hot standby
/// that waits for ever). The endpoint binds only once it holds the lease; the lease is
/// kept alive in the background and revoked when the endpoint closes. When etcd has
/// confirmed no keep-alive for the TTL less a margin (etcd unreachable), the endpoint is
/// closed before the lease can expire, [`lost`](Self::lost) says why, and an error is
/// logged. A process that was paused past the TTL (SIGSTOP, a long GC pause, a VM
/// migrated or suspended) cannot act while paused: it closes its endpoint when it
/// resumes, possibly after a standby has taken over (see
/// [*Limitations*](crate#limitations)).
///
/// The endpoint is held by the lease until it is closed, so that it can be closed on a
/// loss: close it to let the identity go (dropping its clones does not), and await
/// [`released`](Self::released) before the process ends, so that a standby takes over at
/// once rather than after the TTL.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use iroh_identity::{EtcdLease, PersistentEndpoint};
///
/// let lease = EtcdLease::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
/// let endpoint = PersistentEndpoint::builder()
///     .key_path("/run/secrets/endpoint.key")
///     .lease(lease.clone())
///     .lock_wait(std::time::Duration::MAX) // a standby waits for its turn
///     .bind()
///     .await?;
/// println!("fencing token {:?}", lease.fencing_token());
/// let err = lease.lost().await; // the endpoint is closed already
/// eprintln!("{err}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EtcdLease {
    endpoints: Vec<String>,
    prefix: String,
    ttl: Duration,
    on_wait: Option<Arc<dyn Fn() + Send + Sync>>,
    /// What the last lease taken with this value (or a clone) is doing.
    latest: Arc<watch::Sender<Latest>>,
}

impl EtcdLease {
    /// A lease in the etcd cluster at `endpoints` (`http://HOST:PORT`; give every member,
    /// so that losing one is no outage), under the prefix `/iroh-identity/` with a TTL of
    /// [`DEFAULT_LEASE_TTL`].
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: DEFAULT_LEASE_TTL,
            on_wait: None,
            latest: Arc::new(watch::Sender::new(Latest {
                taken: 0,
                state: State::Free,
            })),
        }
    }

    /// The key is `PREFIX` followed by the `EndpointId`; `/iroh-identity/` unless set.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The lease's time to live, in whole seconds, 2 s at least and a day at most: a
    /// crashed holder keeps a standby waiting this long, and a holder that cannot reach
    /// etcd closes its endpoint after it, less a margin (a fifth of it, 500 ms at least).
    /// [`DEFAULT_LEASE_TTL`] unless set.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Duration::from_secs(ttl.as_secs_f64().ceil() as u64).clamp(MIN_TTL, MAX_TTL);
        self
    }

    /// Calls `waiting` once when an open finds the lease held by another and starts
    /// waiting for it (to tell a user, say).
    pub fn on_wait(mut self, waiting: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_wait = Some(Arc::new(waiting));
        self
    }

    /// The fencing token of the lease held now: the etcd revision at which it was taken,
    /// larger for every later holder. `None` while none is held.
    pub fn fencing_token(&self) -> Option<i64> {
        match &self.latest.borrow().state {
            State::Held { token } => Some(*token),
            State::Free | State::Lost { .. } => None,
        }
    }

    /// Waits until the lease taken with this value (or a clone of it) has been let go
    /// of: revoked after its endpoint was closed, so that a standby takes it at once
    /// (etcd not answering the revoke, it expires after its TTL), or lost. It lets go
    /// in the background when the endpoint closes: a program that ends right after
    /// closing should await this first, or the lease may be left to expire. It waits
    /// at most a couple of seconds per etcd member after the close.
    pub async fn released(&self) {
        let mut latest = self.latest.subscribe();
        loop {
            if let State::Free | State::Lost { .. } = latest.borrow_and_update().state {
                return;
            }
            if latest.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the lease taken with this value (or a clone of it) is lost, and says
    /// why: [`Error::LeaseLost`]. By then the endpoint has been closed. A lease that is
    /// released because its endpoint closed is not lost: this then waits on.
    pub async fn lost(&self) -> Error {
        let mut latest = self.latest.subscribe();
        loop {
            if let State::Lost { key, reason } = &latest.borrow_and_update().state {
                return Error::LeaseLost {
                    key: key.clone(),
                    reason: reason.clone(),
                };
            }
            if latest.changed().await.is_err() {
                // The sender lives as long as `self`: never.
                std::future::pending::<()>().await;
            }
        }
    }

    fn key(&self, id: EndpointId) -> String {
        format!("{}{id}", self.prefix)
    }

    async fn take(&self, id: EndpointId, deadline: Deadline) -> Result<Box<dyn Held>, Error> {
        let key = self.key(id);
        let start = Instant::now();
        let unavailable = |reason: String| Error::LeaseUnavailable {
            endpoints: self.endpoints.join(","),
            waited: waited(start),
            reason,
        };
        let mut members = Members::connect(&self.endpoints)
            .await
            .map_err(|err| unavailable(err.to_string()))?;
        let mut announced = false;
        let mut failures = 0;
        let mut orphans = Vec::new();
        loop {
            let sent = Instant::now();
            match try_take(&mut members, &key, self.ttl, &mut orphans).await {
                Ok(Taken::Ours { lease, token }) => {
                    info!(%key, token, "took the identity's lease");
                    let record = Record::new(&self.latest, token);
                    let (to_keeper, endpoints) = mpsc::unbounded_channel();
                    let keeper = Keeper {
                        members,
                        lease,
                        key: key.clone(),
                        ttl: self.ttl,
                        confirmed: sent,
                        record: record.clone(),
                    };
                    tokio::spawn(keeper.run(endpoints));
                    return Ok(Box::new(EtcdHeld {
                        key,
                        record,
                        to_keeper,
                    }));
                }
                Ok(Taken::Theirs { holder, revision }) => {
                    failures = 0;
                    if deadline.left() == Some(Duration::ZERO) {
                        members.revoke_in_background(orphans);
                        return Err(Error::LeaseHeld {
                            key,
                            holder,
                            waited: waited(start),
                        });
                    }
                    if !announced {
                        announced = true;
                        info!(%key, %holder, "the identity's lease is held; waiting for it");
                        if let Some(waiting) = &self.on_wait {
                            waiting();
                        }
                    }
                    wait_for_delete(&mut members, &key, revision, deadline).await;
                }
                Err(err) => {
                    debug!(%key, %err, "cannot take the identity's lease yet");
                    members.next();
                    failures += 1;
                    match deadline.left() {
                        Some(Duration::ZERO) => {
                            members.revoke_in_background(orphans);
                            return Err(unavailable(err.to_string()));
                        }
                        // Every member failed in turn: give them a moment.
                        left if failures % members.count() == 0 => {
                            tokio::time::sleep(left.map_or(RETRY, |left| left.min(RETRY))).await
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

impl Lease for EtcdLease {
    fn acquire(
        &self,
        id: EndpointId,
        deadline: Deadline,
    ) -> Pending<'_, Result<Box<dyn Held>, Error>> {
        Box::pin(self.take(id, deadline))
    }
}

impl fmt::Debug for EtcdLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLease")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("state", &self.latest.borrow().state)
            .finish_non_exhaustive()
    }
}

/// Who has the key after an attempt to take it.
enum Taken {
    Ours { lease: i64, token: i64 },
    Theirs { holder: String, revision: i64 },
}

/// Grants a lease and creates the key with it if the key is absent; revokes the lease
/// when it is not.
///
/// A transaction that etcd carried out but whose answer was lost leaves the key bound to
/// a lease of ours that no one keeps alive; when its revoke fails too, the lease is kept
/// in `orphans`, and a key found bound to one of them is let go of and taken again at
/// once, instead of being waited for as another holder's.
async fn try_take(
    members: &mut Members,
    key: &str,
    ttl: Duration,
    orphans: &mut Vec<i64>,
) -> Result<Taken, etcd_client::Error> {
    let client = members.client();
    let grant = client.lease_grant(ttl.as_secs() as i64, None).await?;
    let lease = grant.id();
    if grant.ttl() > ttl.as_secs() as i64 {
        warn!(
            %key, asked = ttl.as_secs(), granted = grant.ttl(),
            "etcd granted a longer TTL than asked: a crashed holder keeps the lease that long"
        );
    }
    let put = PutOptions::new().with_lease(lease);
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, holder(), Some(put))])
        .or_else([TxnOp::get(key, None)]);
    let response = match client.txn(txn).await {
        Ok(response) => response,
        Err(err) => {
            if members.revoke(lease).await.is_err() {
                orphans.push(lease);
            }
            return Err(err);
        }
    };
    let revision = response
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| {
            etcd_client::Error::InvalidArgs("etcd answered without a revision".into())
        })?;
    if response.succeeded() {
        return Ok(Taken::Ours {
            lease,
            token: revision,
        });
    }
    let _ = members.client().lease_revoke(lease).await;
    let existing = response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    });
    Ok(match existing {
        Some(kv) if orphans.contains(&kv.lease()) => {
            let orphan = kv.lease();
            members
                .revoke(orphan)
                .await
                .map_err(etcd_client::Error::InvalidArgs)?;
            orphans.retain(|&lease| lease != orphan);
            Taken::Theirs {
                holder: "this process, in an attempt whose answer was lost".to_owned(),
                revision: 0,
            }
        }
        // Watched from the revision of this answer, which etcd keeps until it compacts.
        Some(kv) => Taken::Theirs {
            holder: String::from_utf8_lossy(kv.value())
                .escape_debug()
                .to_string(),
            revision,
        },
        // Deleted in between: look again at once.
        None => Taken::Theirs {
            holder: "a holder that has just let go".to_owned(),
            revision: 0,
        },
    })
}

/// Waits until `key` is deleted after `revision`, the deadline passes, or a while passes
/// (to look at the key again).
async fn wait_for_delete(members: &mut Members, key: &str, revision: i64, deadline: Deadline) {
    if revision == 0 {
        return;
    }
    let client = members.client();
    let watch = async {
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = client.watch(key, Some(options)).await?;
        while let Some(response) = stream.message().await? {
            if response.canceled() {
                // Compacted past the revision, say: look again after a pause.
                return Ok(false);
            }
            if response
                .events()
                .iter()
                .any(|event| event.event_type() == EventType::Delete)
            {
                return Ok(true);
            }
        }
        Ok::<_, etcd_client::Error>(false)
    };
    let limit = deadline.left().map_or(RECHECK, |left| left.min(RECHECK));
    match tokio::time::timeout(limit, watch).await {
        Ok(Ok(true)) | Err(_) => {}
        Ok(Ok(false)) => tokio::time::sleep(RETRY.min(limit)).await,
        Ok(Err(err)) => {
            debug!(%key, %err, "the watch of the identity's lease failed");
            members.next();
            tokio::time::sleep(RETRY.min(limit)).await;
        }
    }
}

/// What the key holds: who took it, for the error of the next one who tries.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "an unnamed host".to_owned());
    format!("process {} on {host}", std::process::id())
}

fn waited(start: Instant) -> Duration {
    Duration::from_millis(start.elapsed().as_millis() as u64)
}
