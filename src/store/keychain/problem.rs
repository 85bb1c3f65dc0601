//! What can go wrong with an entry of the secret store.

use std::{fmt, time::Duration};

use iroh::EndpointId;

/// What went wrong with an entry of the secret store: [`Error::Keychain`](crate::Error::Keychain).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeychainProblem {
    /// There is no such entry, and creating one was not asked for
    /// ([`Builder::create_if_missing(false)`](crate::Builder::create_if_missing)).
    Missing,
    /// There is no secret store to reach: no session bus or no Secret Service on it, no
    /// keychain. The store's own words.
    Unavailable(String),
    /// The store is locked, or refused access. The store's own words.
    Locked(String),
    /// The store failed otherwise. The store's own words.
    Failed(String),
    /// The store did not answer by the open's deadline (the
    /// [lock wait](crate::Builder::lock_wait)): its daemon is stopped or hung, or it waits
    /// for an unlock prompt that nobody answered.
    NoAnswer,
    /// An endpoint runs the entry's identity now, so it is not deleted.
    InUse {
        /// The identity.
        id: EndpointId,
    },
    /// Another process of the user has been creating the entry for all of the wait: its
    /// store is slow, or waits for the user to unlock it.
    StillCreating {
        /// How long this one waited, to the millisecond.
        waited: Duration,
    },
    /// Another writer replaced the key while it was stored: the entry holds theirs.
    Replaced,
    /// The store did not keep the key: reading it back found nothing.
    NotKept,
}

impl fmt::Display for KeychainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str(
                "there is no such entry, and creating one was not asked for; nothing was \
                 created",
            ),
            Self::Unavailable(reason) => write!(
                f,
                "there is no secret store to reach ({reason}); nothing was written: start one \
                 (a desktop session's keyring), or keep the key in a file"
            ),
            Self::Locked(reason) => write!(
                f,
                "the secret store is locked or refused access ({reason}); nothing was written: \
                 unlock it and try again"
            ),
            Self::Failed(reason) => write!(f, "the secret store failed ({reason})"),
            Self::NoAnswer => f.write_str(
                "the secret store did not answer in time (a stopped daemon, or an unlock \
                 prompt nobody answered); no write was started after the wait",
            ),
            Self::InUse { id } => {
                write!(f, "an endpoint runs its identity {id} now; close it first")
            }
            Self::StillCreating { waited } => write!(
                f,
                "another process has been creating the entry for {waited:?}"
            ),
            Self::Replaced => f.write_str(
                "another writer replaced the key while it was stored; the entry holds theirs",
            ),
            Self::NotKept => f.write_str("the store did not keep the key"),
        }
    }
}
