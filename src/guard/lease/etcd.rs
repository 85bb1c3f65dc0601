//! The identity's lease in etcd: a key named for the `EndpointId`, bound to an etcd lease
//! and created only if absent, in one transaction.
//!
//! - **Taking it.** A lease of the TTL is granted, then `put KEY` runs if the key's
//!   create revision is 0 (it does not exist); the revision of that transaction is the
//!   fencing token. When the key exists, the lease is revoked and the key watched until
//!   it is deleted, then taken again; the wait ends at the caller's deadline. A refusal
//!   that waiting does not mend ends it at once ([`members::Failure`]).
//! - **Keeping it.** One keep-alive stream, a keep-alive every sixth of the TTL, and a
//!   watch on the key ([`keeper`]). etcd counts the TTL from when it receives a
//!   keep-alive, so one that etcd confirmed keeps the lease at least until its *sending*
//!   plus the TTL. When none has been confirmed for the TTL less a margin, measured on the
//!   monotonic clock, the lease may be about to expire: the holder closes its endpoint
//!   (self-fencing) from a thread of its own ([`fence`]). A deleted key, a revoked lease
//!   or a key bound to another lease fences it as soon as the watch or a keep-alive says
//!   so.
//! - **Talking to etcd.** One member at a time ([`members`]).
//! - **History.** Revisions grow while etcd keeps its data. A take that finds them gone
//!   back (a member wiped, a snapshot restored) holds the lease for a TTL before it binds:
//!   a holder of the lost history cannot renew in the new one, and has fenced itself by
//!   then.
//! - **Letting go.** When the endpoint closes, the lease is revoked: etcd deletes the key
//!   and a waiting standby takes it at once. A crashed holder's lease expires after the
//!   TTL.
//! - **What it is doing.** Held with its token, lost and why, or free ([`state`]): the
//!   keeper and the fence write it, every clone of the `EtcdLease` reads the latest.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{
    Compare, CompareOp, ConnectOptions, EventType, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use iroh::EndpointId;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

mod fence;
mod keeper;
mod members;
mod state;

use self::{
    fence::Fence,
    keeper::{EtcdHeld, Keeper},
    members::{Failure, History, Members, Seen},
    state::{Latest, Record, State},
};
use super::{Held, Lease, Pending, problem::LeaseRefusal};
use crate::{error::Error, wait::Deadline};

/// The lease's time to live unless [`EtcdLease::ttl`] sets another, and the shortest
/// there is: how long a crashed holder keeps the identity from a standby.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The shortest TTL: what a leader change with etcd's default election timeout and a
/// round trip of a quarter of the TTL need (see [`keeper::patience`]).
const MIN_TTL: Duration = Duration::from_secs(5);

/// The longest TTL: a day.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Where the keys are, unless [`EtcdLease::prefix`] sets another.
const DEFAULT_PREFIX: &str = "/iroh-identity/";

/// How long a connection to etcd may take to open (and log in), and a request to be
/// answered, while taking the lease.
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
/// kept alive in the background and revoked when the endpoint closes.
///
/// # Connecting
///
/// [`new`](Self::new) takes every member's client URL;
/// [`connect_options`](Self::connect_options) takes etcd-client's own [`ConnectOptions`]
/// (re-exported as [`crate::etcd_client`]): TLS with a CA and a client certificate (`https://` URLs), a
/// user and password. TLS is rustls with ring, the crypto library iroh uses. The lease
/// bounds each of its requests itself, and talks to one member at a time, turning to the
/// next when one fails or hangs.
///
/// What waiting does not mend fails the open at once, whatever the lock wait, with
/// [`Error::LeaseRefused`]: a refused user or password, a user whose roles may not write
/// the key, a TLS failure (a certificate refused either way), endpoints of two clusters.
/// What may pass (a member down, no leader yet, a timeout) is tried again until the lock
/// wait ends ([`Error::LeaseUnavailable`]); meanwhile it is logged and
/// [`on_wait`](Self::on_wait) is told, so that even a wait without end is never silent.
///
/// # Keeping
///
/// A keep-alive goes out every sixth of the TTL on one long-lived stream; each costs one
/// round trip. When etcd has confirmed none for the TTL less a margin (a fifth of it), the
/// lease may be about to expire: the endpoint is closed before it can, from a thread of
/// the lease's own (a runtime busy with other work does not delay it), [`lost`](Self::lost)
/// says why, and an error is logged. The holder also watches its key: an operator's
/// `etcdctl del KEY` or `etcdctl lease revoke ID` (the documented way to force a
/// failover), or a put that binds the key to another lease, closes the endpoint within a
/// round trip, before a standby can bind. A TTL of 5 s (the shortest) holds through a
/// round trip of 1.25 s to etcd, and through a leader change with etcd's default election
/// timeout of 1 s.
///
/// # What a lease cannot do
///
/// It cannot stop a process that does not run. A holder paused past the TTL (SIGSTOP, a
/// long GC pause, a VM migrated or suspended) has lost its lease when it resumes, and a
/// standby may hold it; the holder closes its endpoint as its first act, but until then
/// the endpoint is open. A system suspended as a whole stops the monotonic clock the
/// holder measures with: it learns of the loss from its watch or its next keep-alive,
/// within a sixth of the TTL, or after the TTL less the margin when etcd does not answer.
/// A holder starved of CPU (a container's CPU limit with busy threads beside it) closes
/// late by as long as the kernel keeps the fence's thread from the CPU: the thread makes
/// the fence independent of the application's runtime, not of the CPU. In those windows
/// a packet already queued for the endpoint may be answered, and a relay, which keeps the
/// newest connection for an id, may route the id to it for an instant. Measured in
/// RELIABILITY.md: closed within milliseconds of the resume; starved to 1 ms of CPU per
/// 100 ms, closed up to seconds after a standby bound, which the margin of a TTL five
/// times that long covers. Work that must never run twice should check the
/// [fencing token](Self::fencing_token) where it lands, as with any lease. A network
/// partition that cuts a holder off from etcd but not from its peers ends the same way,
/// within the TTL. Clocks need not agree between machines: each holder measures its own.
/// Tested with etcd 3.4.23 (Debian's).
///
/// The endpoint is held by the lease until it is closed, so that it can be closed on a
/// loss: close it to let the identity go (dropping its clones does not), and await
/// [`released`](Self::released) before the process ends, so that a standby takes over at
/// once rather than after the TTL.
///
/// Every machine must use the same endpoints' cluster and the same
/// [`prefix`](Self::prefix): the key is the prefix and the id, and two keys are two
/// leases.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use iroh_identity::{
///     EtcdLease, Identity,
///     etcd_client::{self, Certificate, ConnectOptions, TlsOptions},
/// };
///
/// let tls = TlsOptions::new()
///     .ca_certificate(Certificate::from_pem(std::fs::read("/etc/etcd/ca.pem")?))
///     .identity(etcd_client::Identity::from_pem(
///         std::fs::read("/etc/etcd/client.pem")?,
///         std::fs::read("/etc/etcd/client.key")?,
///     ));
/// let password = std::env::var("ETCD_PASSWORD")?;
/// let lease = EtcdLease::new(["https://10.0.0.1:2379", "https://10.0.0.2:2379"])
///     .connect_options(ConnectOptions::new().with_tls(tls).with_user("iroh", password));
/// let endpoint = Identity::builder("/run/secrets/endpoint.key")
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
    /// Never shown: it may hold a password.
    options: Option<ConnectOptions>,
    prefix: String,
    ttl: Duration,
    on_wait: Option<Arc<OnWait>>,
    /// What the last lease taken with this value (or a clone) is doing.
    latest: Arc<watch::Sender<Latest>>,
}

/// What [`EtcdLease::on_wait`] calls.
type OnWait = dyn Fn(&LeaseWait) + Send + Sync;

/// Why an open waits for the identity's lease: what [`EtcdLease::on_wait`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseWait {
    /// Another endpoint holds the lease. `holder` is what it wrote into the key: its
    /// process and host.
    Held {
        /// Who holds it.
        holder: String,
    },
    /// etcd could not be asked, or answered with an error that may pass (a member down,
    /// no leader yet, a timeout): the open tries the next member, then again.
    Unavailable {
        /// The member that failed.
        endpoint: String,
        /// Its error, in etcd's (or the connection's) words.
        reason: String,
    },
    /// etcd's history went back (its data lost, or restored from a snapshot): the lease,
    /// taken in the new history, is held for a TTL before the endpoint binds, so that a
    /// holder of the old history has closed its own by then.
    Rewound,
}

impl fmt::Display for LeaseWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Held { holder } => write!(f, "the identity's lease is held by {holder}"),
            Self::Unavailable { endpoint, reason } => {
                write!(f, "etcd at {endpoint} is unavailable: {reason}")
            }
            Self::Rewound => f.write_str(
                "etcd's history went back; the lease is held a TTL before the endpoint binds",
            ),
        }
    }
}

impl EtcdLease {
    /// A lease in the etcd cluster at `endpoints` (`http://HOST:PORT`, or `https://` with
    /// TLS [options](Self::connect_options); give every member, so that losing one is no
    /// outage), under the prefix `/iroh-identity/` with a TTL of [`DEFAULT_LEASE_TTL`].
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            options: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: DEFAULT_LEASE_TTL,
            on_wait: None,
            latest: Arc::new(watch::Sender::new(Latest {
                taken: 0,
                state: State::Free,
            })),
        }
    }

    /// How to connect to every member: etcd-client's own options, for TLS
    /// ([`with_tls`](etcd_client::ConnectOptions::with_tls): a CA, a client certificate)
    /// and a user ([`with_user`](etcd_client::ConnectOptions::with_user)). Timeouts may be
    /// left unset: the lease bounds each request itself. A user is logged in again when a
    /// member has forgotten its token (a restart).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// The key is `PREFIX` followed by the `EndpointId`; `/iroh-identity/` unless set. It
    /// must end in `/` (an open fails with [`Error::LeasePrefix`] otherwise), and be the
    /// same on every machine: another prefix is another key, which another machine holds
    /// at the same time. A user's role must be allowed to read and write it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The lease's time to live, in whole seconds, 5 s at least and a day at most: a
    /// crashed holder keeps a standby waiting this long, and a holder that cannot reach
    /// etcd closes its endpoint after it, less a fifth. [`DEFAULT_LEASE_TTL`] (5 s) unless
    /// set. Below 5 s, a leader change with etcd's default election timeout (1 s), which
    /// leaves etcd without a leader for up to three seconds, would fence a healthy holder.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Duration::from_secs(ttl.as_secs_f64().ceil() as u64).clamp(MIN_TTL, MAX_TTL);
        self
    }

    /// Calls `waiting` when an open starts waiting for the lease, and each time the
    /// reason changes: held by another, etcd unavailable (with its error), or the
    /// history gone back. Each is logged too.
    pub fn on_wait(mut self, waiting: impl Fn(&LeaseWait) + Send + Sync + 'static) -> Self {
        self.on_wait = Some(Arc::new(waiting));
        self
    }

    /// The fencing token of the lease held now: etcd's revision when it was taken.
    /// `None` while none is held.
    ///
    /// While etcd keeps its data, every later holder's token is larger, whichever member
    /// answers: work that checks the token where it lands refuses an earlier holder's.
    /// When etcd loses its data (a member started again on an empty data directory) or is
    /// restored from a snapshot, revisions start again from where that left them, under
    /// the same cluster id: a later holder's token may then be smaller than an earlier
    /// one's, or equal to it. The lease still keeps two holders apart then (a holder
    /// that sees the history go back closes its endpoint, and a standby that saw the old
    /// history holds the lease a TTL before it binds), but whatever checks tokens must be
    /// told that the history started again.
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
    /// at most a couple of seconds per etcd member after the close. It returns at once
    /// if no lease was taken.
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
            if let State::Lost { key, cause } = &latest.borrow_and_update().state {
                return Error::LeaseLost {
                    key: key.clone(),
                    cause: cause.clone(),
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
        if !self.prefix.ends_with('/') {
            return Err(Error::LeasePrefix {
                prefix: self.prefix.clone(),
            });
        }
        if self.endpoints.is_empty() {
            return Err(Error::LeaseRefused {
                endpoint: String::new(),
                refusal: LeaseRefusal::InvalidEndpoint,
                said: "no etcd endpoint was given".into(),
            });
        }
        let key = self.key(id);
        let start = Instant::now();
        let unavailable = |reason: String| Error::LeaseUnavailable {
            endpoints: self.endpoints.join(","),
            waited: waited(start),
            reason,
        };
        let mut members = Members::new(&self.endpoints, self.options.clone().unwrap_or_default());
        let mut history = History::default();
        history.set_cluster(members.check_cluster().await.map_err(refused)?);
        let mut waiting = Waiting {
            key: &key,
            on_wait: self.on_wait.as_deref(),
            last: None,
        };
        let mut failures = 0;
        let mut orphans = Vec::new();
        loop {
            let sent = Instant::now();
            match try_take(&mut members, &key, self.ttl, &mut orphans, &mut history).await {
                Ok(Taken::Ours {
                    lease,
                    token,
                    rewound,
                }) => {
                    info!(%key, token, "took the identity's lease");
                    let record = Record::new(&self.latest, token);
                    let fence = Fence::start(key.clone(), self.ttl, record.clone(), sent);
                    let (to_keeper, endpoints) = mpsc::unbounded_channel();
                    let keeper = Keeper {
                        members,
                        lease,
                        key: key.clone(),
                        token,
                        ttl: self.ttl,
                        cluster: history.cluster(),
                        fence: Arc::clone(&fence),
                        record: record.clone(),
                    };
                    tokio::spawn(keeper.run(endpoints));
                    let held = EtcdHeld {
                        key: key.clone(),
                        record,
                        fence,
                        to_keeper,
                    };
                    if rewound {
                        // A holder of the old history renews nowhere now: by a TTL after
                        // its etcd went away, which was before this, it has fenced itself.
                        waiting.report(LeaseWait::Rewound);
                        tokio::time::sleep(self.ttl).await;
                    }
                    return Ok(Box::new(held));
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
                    waiting.report(LeaseWait::Held { holder });
                    if let Err(failure) =
                        wait_for_delete(&mut members, &key, revision, deadline).await
                    {
                        members.revoke_in_background(orphans);
                        return Err(refused(failure));
                    }
                }
                Err(failure @ Failure::Refused { .. }) => {
                    members.revoke_in_background(orphans);
                    return Err(refused(failure));
                }
                Err(Failure::Transient { endpoint, reason }) => {
                    members.next();
                    failures += 1;
                    match deadline.left() {
                        Some(Duration::ZERO) => {
                            members.revoke_in_background(orphans);
                            return Err(unavailable(reason));
                        }
                        left => {
                            waiting.report(LeaseWait::Unavailable { endpoint, reason });
                            // Every member failed in turn: give them a moment.
                            if failures % members.count() == 0 {
                                tokio::time::sleep(left.map_or(RETRY, |left| left.min(RETRY)))
                                    .await;
                            }
                        }
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
            .field("connect_options", &self.options.as_ref().map(|_| ".."))
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("state", &self.latest.borrow().state)
            .finish_non_exhaustive()
    }
}

/// Tells `on_wait`, and the log, why an open waits, each time that changes.
struct Waiting<'a> {
    key: &'a str,
    on_wait: Option<&'a OnWait>,
    last: Option<std::mem::Discriminant<LeaseWait>>,
}

impl Waiting<'_> {
    fn report(&mut self, wait: LeaseWait) {
        let kind = std::mem::discriminant(&wait);
        if self.last == Some(kind) {
            debug!(key = self.key, %wait, "still waiting for the identity's lease");
            return;
        }
        self.last = Some(kind);
        match &wait {
            LeaseWait::Held { .. } => {
                info!(key = self.key, %wait, "waiting for the identity's lease")
            }
            LeaseWait::Unavailable { .. } | LeaseWait::Rewound => {
                warn!(key = self.key, %wait, "waiting for the identity's lease");
            }
        }
        if let Some(on_wait) = self.on_wait {
            on_wait(&wait);
        }
    }
}

/// The error of a refusal.
fn refused(failure: Failure) -> Error {
    match failure {
        Failure::Refused {
            endpoint,
            refusal,
            said,
        } => Error::LeaseRefused {
            endpoint,
            refusal,
            said,
        },
        // Only refusals are passed on; a transient failure is never an end in itself.
        Failure::Transient { endpoint, reason } => Error::LeaseUnavailable {
            endpoints: endpoint,
            waited: Duration::ZERO,
            reason,
        },
    }
}

/// Who has the key after an attempt to take it.
enum Taken {
    /// This process, at revision `token`, on a history that went back (`rewound`) since
    /// the last answer.
    Ours {
        lease: i64,
        token: i64,
        rewound: bool,
    },
    Theirs {
        holder: String,
        revision: i64,
    },
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
    history: &mut History,
) -> Result<Taken, Failure> {
    let endpoint = members.endpoint().to_owned();
    let failed = |err: etcd_client::Error| Failure::of(&endpoint, &err);
    let mut client = members.client().await?.clone();
    let grant = within(client.lease_grant(ttl.as_secs() as i64, None))
        .await
        .map_err(failed)?;
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
    let response = match within(client.txn(txn)).await {
        Ok(response) => response,
        Err(err) => {
            if members.revoke(lease).await.is_err() {
                orphans.push(lease);
            }
            return Err(failed(err));
        }
    };
    let seen = if response.succeeded() {
        history.observe_write(response.header())
    } else {
        history.observe(response.header())
    };
    let revision = response
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| Failure::Transient {
            endpoint: endpoint.clone(),
            reason: "etcd answered without a revision".into(),
        })?;
    if response.succeeded() {
        return Ok(Taken::Ours {
            lease,
            token: revision,
            rewound: seen != Seen::Forward,
        });
    }
    let _ = members.revoke(lease).await;
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
                .map_err(|reason| Failure::Transient {
                    endpoint: endpoint.clone(),
                    reason,
                })?;
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
/// (to look at the key again). Fails only on a refusal.
async fn wait_for_delete(
    members: &mut Members,
    key: &str,
    revision: i64,
    deadline: Deadline,
) -> Result<(), Failure> {
    if revision == 0 {
        return Ok(());
    }
    let endpoint = members.endpoint().to_owned();
    let limit = deadline.left().map_or(RECHECK, |left| left.min(RECHECK));
    let watch = async {
        let client = members.client().await?;
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let failed = |err: etcd_client::Error| Failure::of(&endpoint, &err);
        let mut stream = client.watch(key, Some(options)).await.map_err(failed)?;
        while let Some(response) = stream.message().await.map_err(failed)? {
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
        Ok::<_, Failure>(false)
    };
    match tokio::time::timeout(limit, watch).await {
        Ok(Ok(true)) | Err(_) => Ok(()),
        Ok(Ok(false)) => {
            tokio::time::sleep(RETRY.min(limit)).await;
            Ok(())
        }
        Ok(Err(refused @ Failure::Refused { .. })) => Err(refused),
        Ok(Err(failure)) => {
            debug!(%key, reason = failure.reason(), "the watch of the identity's lease failed");
            members.next();
            tokio::time::sleep(RETRY.min(limit)).await;
            Ok(())
        }
    }
}

/// `request`, or an error if etcd does not answer it in time.
async fn within<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| {
            Err(etcd_client::Error::Internal(format!(
                "no answer within {REQUEST_TIMEOUT:?}"
            )))
        })
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
