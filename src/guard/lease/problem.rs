//! What goes wrong with a lease, as the error type tells it: a leaf, so that the error
//! type names it without importing the lease.

use std::{fmt, time::Duration};

/// How a held lease was lost: the cause of [`Error::LeaseLost`](crate::Error::LeaseLost).
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

/// Why the store refuses a lease however long one waits: what
/// [`Error::LeaseRefused`](crate::Error::LeaseRefused) says is wrong, and what to do.
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
