//! Who may run an identity across machines: a lease that one holder has at a time, in a
//! store every machine reaches. The host's locks cannot see another machine; a lease can.
//!
//! A lease is a second kind of guard, beside the locks. It is taken after them, kept alive
//! in the background, released when the endpoint closes, and when it may have been lost
//! the holder closes its endpoint itself (self-fencing) before anyone else can take it.
//! Only etcd is built ([`etcd`], feature `etcd`); another store (a Kubernetes `Lease`,
//! Consul, a database lock) is one more implementation of [`Lease`].

#[cfg(feature = "etcd")]
pub(crate) mod etcd;

use std::{fmt, future::Future, pin::Pin, time::Duration};

use iroh::{Endpoint, EndpointId};

use crate::{error::Error, wait::Deadline};

/// A future of a lease's, boxed so that the trait can be a trait object.
pub(crate) type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store of leases, one per identity.
pub(crate) trait Lease: fmt::Debug + Send + Sync {
    /// Takes the lease of `id`, waiting for another holder to let it go until
    /// `deadline`, and keeps it alive until it is released or lost.
    fn acquire(
        &self,
        id: EndpointId,
        deadline: Deadline,
    ) -> Pending<'_, Result<Box<dyn Held>, Error>>;
}

/// A lease this process holds. Dropped before it was given an endpoint, it is released.
pub(crate) trait Held: fmt::Debug + Send + Sync {
    /// The error that says why, if the lease was lost already.
    fn check(&self) -> Result<(), Error>;

    /// Hands the lease over to `endpoint`: released when it closes; when the lease may
    /// have been lost, the endpoint is closed.
    fn hold_until_closed(self: Box<Self>, endpoint: &Endpoint);
}

/// How a held lease was lost: the cause of [`Error::LeaseLost`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseLoss {
    /// The store confirmed no keep-alive for `silence`, the TTL less a margin, so the lease
    /// may be about to expire: the store out of reach, or this process paused or starved.
    Unconfirmed {
        /// How long since the last keep-alive that the store confirmed was sent.
        silence: Duration,
        /// The lease's time to live.
        ttl: Duration,
    },
    /// The store no longer knows the lease: it expired, or was revoked (`etcdctl lease
    /// revoke`).
    Revoked,
    /// The lease's key was deleted (`etcdctl del`, or a revoke of its lease).
    Deleted,
    /// The lease's key was written again, now bound to another lease or to none (an
    /// operator's `etcdctl put`).
    Replaced,
    /// The store's history went back below the revision at which the lease was taken,
    /// or the endpoints answer for another cluster now: its data was lost, or restored
    /// from a snapshot.
    Rewound {
        /// The store's revision now.
        revision: i64,
        /// The revision at which the lease was taken: its fencing token.
        token: i64,
    },
}

impl fmt::Display for LeaseLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unconfirmed { silence, ttl } => write!(
                f,
                "etcd confirmed no keep-alive for {silence:.1?}, so the lease (TTL {ttl:?}) \
                 may be about to expire"
            ),
            Self::Revoked => f.write_str("etcd no longer knows the lease (revoked, or expired)"),
            Self::Deleted => f.write_str("its key was deleted"),
            Self::Replaced => f.write_str("its key was written again, bound to another lease"),
            Self::Rewound { revision, token } => write!(
                f,
                "etcd's history went back to revision {revision}, before the lease's \
                 {token} (its data lost, or restored from a snapshot)"
            ),
        }
    }
}

/// Why the store refuses a lease however long one waits: what [`Error::LeaseRefused`]
/// says is wrong, and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseRefusal {
    /// The user or password was refused; or no user was given while etcd's authentication
    /// is on, or one was given while it is off.
    Authentication,
    /// The user's roles may not read and write the lease's key.
    Permission,
    /// The TLS connection failed: a certificate refused either way, or TLS spoken to a
    /// server that does not speak it.
    Tls,
    /// The endpoints answer for more than one etcd cluster, or one is not etcd.
    WrongCluster,
    /// An endpoint URL (or the TLS options given for it) cannot be used.
    InvalidEndpoint,
}

impl fmt::Display for LeaseRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Authentication => {
                "authentication failed; give the right user and password \
                 (ConnectOptions::with_user), and a user only where etcd's authentication is on"
            }
            Self::Permission => {
                "the user may not write the lease's key; grant its role readwrite on the \
                 prefix (etcdctl role grant-permission ROLE readwrite --prefix=true PREFIX)"
            }
            Self::Tls => {
                "the TLS connection failed; check the CA, the client certificate and key \
                 (ConnectOptions::with_tls), and that the URL is https:// only where etcd \
                 serves TLS"
            }
            Self::WrongCluster => {
                "the endpoints are not the members of one etcd cluster; give the client URLs \
                 of one cluster's members"
            }
            Self::InvalidEndpoint => {
                "the endpoint cannot be used as given; fix its URL or TLS options"
            }
        })
    }
}
