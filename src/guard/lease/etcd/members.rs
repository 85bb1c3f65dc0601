//! The etcd members a lease talks to: one at a time, turning to the next on a failure;
//! what a failure means (a refusal that waiting does not mend, or one that may pass); and
//! the history that the answers' headers show.

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, ConnectOptions, ResponseHeader};
use tokio::task::JoinSet;

use super::REQUEST_TIMEOUT;
use crate::guard::lease::problem::LeaseRefusal;

/// How long the members are asked, at each take, which cluster they belong to: a member
/// that does not answer by then is left out of the check, not waited for.
const CLUSTER_CHECK_WITHIN: Duration = Duration::from_secs(1);

/// Why a request to etcd failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Waiting does not mend it: a mistake in the configuration or the cluster.
    Refused {
        endpoint: String,
        refusal: LeaseRefusal,
        said: String,
    },
    /// It may pass: a member down or slow, no leader yet, a connection lost.
    Transient { endpoint: String, reason: String },
}

impl Failure {
    /// What `err`, from a request to `endpoint`, means.
    pub(super) fn of(endpoint: &str, err: &etcd_client::Error) -> Self {
        let endpoint = endpoint.to_owned();
        match refusal(err) {
            Some(refusal) => Self::Refused {
                endpoint,
                refusal,
                said: said(err),
            },
            None => Self::Transient {
                endpoint,
                reason: said(err),
            },
        }
    }

    /// A request to `endpoint` that got no answer within `limit`.
    pub(super) fn timed_out(endpoint: &str, limit: Duration) -> Self {
        Self::Transient {
            endpoint: endpoint.to_owned(),
            reason: format!("no answer within {limit:?}"),
        }
    }

    /// Words for a log line or an error.
    pub(super) fn reason(&self) -> String {
        match self {
            Self::Refused { said, refusal, .. } => format!("{said}: {refusal}"),
            Self::Transient { reason, .. } => reason.clone(),
        }
    }
}

/// What is refused, when `err` is a refusal that waiting does not mend.
fn refusal(err: &etcd_client::Error) -> Option<LeaseRefusal> {
    use etcd_client::Error as E;
    use tonic::Code;

    if chain(err).any(is_tls) {
        return Some(LeaseRefusal::Tls);
    }
    match err {
        E::GRpcStatus(status) => {
            let message = status.message();
            match status.code() {
                Code::PermissionDenied => Some(LeaseRefusal::Permission),
                // etcd's words for a wrong user or password, no user while authentication
                // is on, and a user while it is off (etcd's rpctypes/error.go).
                Code::InvalidArgument | Code::FailedPrecondition
                    if [
                        "authentication failed",
                        "user name is empty",
                        "authentication is not enabled",
                        "user name not found",
                    ]
                    .iter()
                    .any(|words| message.contains(words)) =>
                {
                    Some(LeaseRefusal::Authentication)
                }
                // Not etcd's v3 API: another service answers at the URL.
                Code::Unimplemented => Some(LeaseRefusal::WrongCluster),
                _ => None,
            }
        }
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => {
            Some(LeaseRefusal::InvalidEndpoint)
        }
        _ => None,
    }
}

/// Whether `cause` is a TLS failure: an I/O error on the connection that says its data
/// is invalid, which is what the TLS layer (rustls, through tokio-rustls) gives for a
/// certificate refused either way, an alert the server sent, or a server that does not
/// speak TLS. A TCP connection itself never fails so.
fn is_tls(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
}

/// The causes of `err`: etcd-client's error names none (it has no `source`), and a gRPC
/// status's own words are its message, so the chain starts at what they hold.
fn chain(err: &etcd_client::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    let first: Option<&(dyn std::error::Error + 'static)> = match err {
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        etcd_client::Error::TransportError(transport) => Some(transport),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    std::iter::successors(first, |cause| cause.source())
}

/// etcd's words for `err`, and those of its causes that add to them.
fn said(err: &etcd_client::Error) -> String {
    let mut words = vec![match err {
        etcd_client::Error::GRpcStatus(status) if !status.message().is_empty() => {
            status.message().to_owned()
        }
        etcd_client::Error::TransportError(_) => "transport error".to_owned(),
        _ => err.to_string(),
    }];
    for cause in chain(err) {
        let cause = cause.to_string();
        if !words.iter().any(|said| said.contains(&cause)) {
            words.push(cause);
        }
    }
    words.join(": ")
}

/// The etcd members, a client for each once it is first needed, of which one is talked to
/// at a time.
///
/// etcd-client spreads the requests of one client over all of its endpoints and fails
/// those that land on a member that is down (etcdv3/etcd-client#39), so that a cluster
/// with one member lost would fail a share of the requests. Here each request goes to
/// the current member, and the next member becomes current when a request fails. A
/// client connects when first used: with a user, connecting authenticates, which a member
/// that is down would fail.
#[derive(Clone)]
pub(super) struct Members {
    endpoints: Arc<[String]>,
    options: ConnectOptions,
    clients: Vec<Option<Client>>,
    current: usize,
}

impl Members {
    pub(super) fn new(endpoints: &[String], options: ConnectOptions) -> Self {
        Self {
            endpoints: endpoints.into(),
            // A member that restarted has forgotten the tokens it gave: log in again.
            options: options.with_auto_token_refresh(true),
            clients: vec![None; endpoints.len()],
            current: 0,
        }
    }

    /// The current member's URL.
    pub(super) fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// The current member's client, connected (and logged in) within the request timeout.
    pub(super) async fn client(&mut self) -> Result<&mut Client, Failure> {
        let endpoint = &self.endpoints[self.current];
        let client = &mut self.clients[self.current];
        if client.is_none() {
            *client = Some(connect(endpoint, &self.options).await?);
        }
        Ok(client.as_mut().expect("connected just now"))
    }

    /// A request to the current member failed: its connection is dropped (a member that
    /// hangs would keep it), and the next member becomes current.
    pub(super) fn next(&mut self) {
        self.clients[self.current] = None;
        self.current = (self.current + 1) % self.clients.len();
    }

    pub(super) fn count(&self) -> usize {
        self.clients.len()
    }

    /// Asks every member at once which cluster it belongs to, for a moment: members that
    /// answer for two clusters, or refuse, are a mistake that waiting does not mend. Those
    /// that do not answer in time are left out. Returns the cluster's id, if one answered.
    pub(super) async fn check_cluster(&mut self) -> Result<Option<u64>, Failure> {
        let mut asking = JoinSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let (endpoint, options) = (endpoint.clone(), self.options.clone());
            let existing = self.clients[i].clone();
            asking.spawn(async move {
                let answer = tokio::time::timeout(CLUSTER_CHECK_WITHIN, async {
                    let mut client = match existing {
                        Some(client) => client,
                        None => connect(&endpoint, &options).await?,
                    };
                    let status = client
                        .status()
                        .await
                        .map_err(|err| Failure::of(&endpoint, &err))?;
                    Ok::<_, Failure>((client, status.header().map(ResponseHeader::cluster_id)))
                })
                .await;
                (i, endpoint, answer)
            });
        }
        let mut seen: Option<(String, u64)> = None;
        while let Some(joined) = asking.join_next().await {
            let Ok((i, endpoint, answer)) = joined else {
                continue;
            };
            match answer {
                Ok(Ok((client, cluster))) => {
                    self.clients[i] = Some(client);
                    let Some(cluster) = cluster else { continue };
                    match &seen {
                        Some((first, id)) if *id != cluster => {
                            return Err(Failure::Refused {
                                endpoint,
                                refusal: LeaseRefusal::WrongCluster,
                                said: format!(
                                    "it answers for cluster {cluster:x}, {first} for {id:x}"
                                ),
                            });
                        }
                        Some(_) => {}
                        None => seen = Some((endpoint, cluster)),
                    }
                }
                Ok(Err(refused @ Failure::Refused { .. })) => return Err(refused),
                Ok(Err(Failure::Transient { .. })) | Err(_) => {}
            }
        }
        Ok(seen.map(|(_, id)| id))
    }

    /// Revokes, in the background, the leases of attempts whose answers were lost: one of
    /// them may hold the key, and would keep every holder out for its TTL.
    pub(super) fn revoke_in_background(&self, leases: Vec<i64>) {
        if leases.is_empty() {
            return;
        }
        let mut members = self.clone();
        tokio::spawn(async move {
            for lease in leases {
                let _ = members.revoke(lease).await;
            }
        });
    }

    /// Revokes `lease` through the first member that answers in time.
    pub(super) async fn revoke(&mut self, lease: i64) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..self.count() {
            let endpoint = self.endpoint().to_owned();
            let revoked = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let client = self.client().await?;
                client
                    .lease_revoke(lease)
                    .await
                    .map_err(|err| Failure::of(&endpoint, &err))
            })
            .await;
            match revoked {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(failure)) => last = failure.reason(),
                Err(_) => last = "etcd did not answer in time".into(),
            }
            self.next();
        }
        Err(last)
    }
}

/// A client of the one member at `endpoint`, logged in if `options` has a user.
async fn connect(endpoint: &str, options: &ConnectOptions) -> Result<Client, Failure> {
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        Client::connect([endpoint], Some(options.clone())),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(Failure::of(endpoint, &err)),
        Err(_) => Err(Failure::timed_out(endpoint, REQUEST_TIMEOUT)),
    }
}

/// What an answer's header says of etcd's history, against what was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// The same history, as far along or further.
    Forward,
    /// Another history: the revision or the raft term went back, or another cluster
    /// answers.
    Rewound,
}

/// The furthest point of etcd's history seen in linearizable answers (a transaction, a
/// read): their revisions and raft terms never go back while etcd keeps its data,
/// whichever member answers. A keep-alive's or a watch's header is a member's own, which
/// may lag: they are not taken. A history that went back (a member wiped, a snapshot
/// restored) is seen as such until as much is written to it again as was lost.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct History {
    cluster: Option<u64>,
    revision: i64,
    term: u64,
}

impl History {
    /// Records the header of an answer that read: says whether the history went back.
    /// The new one is followed from then on.
    pub(super) fn observe(&mut self, header: Option<&ResponseHeader>) -> Seen {
        self.record(header, false)
    }

    /// Records the header of an answer to a write of this process's (the key put): a
    /// write's revision is beyond every one seen before it, unless the history went back.
    pub(super) fn observe_write(&mut self, header: Option<&ResponseHeader>) -> Seen {
        self.record(header, true)
    }

    fn record(&mut self, header: Option<&ResponseHeader>, write: bool) -> Seen {
        let Some(header) = header else {
            return Seen::Forward;
        };
        let (cluster, revision, term) =
            (header.cluster_id(), header.revision(), header.raft_term());
        let other_cluster = self.cluster.is_some_and(|seen| seen != cluster);
        let went_back = term < self.term
            || if write {
                self.revision > 0 && revision <= self.revision
            } else {
                revision < self.revision
            };
        self.cluster = Some(cluster);
        self.revision = revision;
        self.term = term;
        if other_cluster || went_back {
            Seen::Rewound
        } else {
            Seen::Forward
        }
    }

    /// The cluster the endpoints answer for, once known.
    pub(super) fn cluster(&self) -> Option<u64> {
        self.cluster
    }

    /// Takes `cluster` as the one the endpoints answered for.
    pub(super) fn set_cluster(&mut self, cluster: Option<u64>) {
        if cluster.is_some() {
            self.cluster = cluster;
        }
    }
}
