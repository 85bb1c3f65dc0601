//! The host lock: one live endpoint per identity on this host, whatever its key came from
//! (a key file, a copy of it, an environment variable, the secret store).
//!
//! An identity is locked by its secret, not by where the key was read: the lock's name is
//! derived from the secret key with a keyed hash (BLAKE3's `derive_key`), so every process
//! that holds the secret finds the same lock, whatever its user, groups, environment or
//! working directory, and no one without the secret can know its name in advance. The
//! secret itself never leaves the process.
//!
//! - **Linux** ([`socket`]): an abstract unix socket. It is no file: nothing to create,
//!   nothing an OS cleaner ages (`systemd-tmpfiles`), a logout removes (`/run/user`) or a
//!   reboot wipes, nothing that piles up per identity; the kernel frees it the instant its
//!   holder dies. Its namespace is the network namespace: every user's processes meet in
//!   it, so two users running copies of one secret are kept apart too, and two containers
//!   with network namespaces of their own are two hosts (as two machines, they need a
//!   lease). Its weakness is that another user can see a holder's name (`/proc/net/unix`)
//!   and take it after the holder exits; how that never stops or stalls an identity is the
//!   module's business.
//! - **Elsewhere** ([`file`]): a lock file in a private directory of the user's, found in
//!   the user database, the same for every process of the user, and removed when it is
//!   let go of.
//!
//! A process that cannot reach the lock fails with the reason: it never runs unguarded,
//! and never falls back to a second place.

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod file;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod responder;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod socket;

use std::time::Duration;

use iroh::{EndpointId, SecretKey};
use tracing::info;
use zeroize::Zeroizing;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
use self::file as imp;
#[cfg(any(target_os = "linux", target_os = "android"))]
use self::socket as imp;
use crate::{
    Error,
    wait::{self, Deadline, Waited},
};

/// How often a held lock is tried again while waiting for it.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// A lock this process holds on this host; dropping it lets go of it at once.
#[derive(Debug)]
pub(crate) struct HostLock {
    _held: imp::Held,
}

/// What a host lock is for.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// An identity: every process on this host that holds `key`.
    Identity(&'a SecretKey),
    /// The creation of a keychain entry: this user's processes that create it (the secret
    /// store is per user).
    #[cfg_attr(not(feature = "keyring"), allow(dead_code))]
    KeychainEntry { service: &'a str, account: &'a str },
}

impl Scope<'_> {
    /// The key the lock is named with, and a holder proves itself with: derived, never
    /// the secret itself.
    fn lock_key(self) -> Zeroizing<[u8; 32]> {
        match self {
            Self::Identity(key) => {
                let secret = Zeroizing::new(key.to_bytes());
                Zeroizing::new(blake3::derive_key(
                    "iroh-identity 2026-12-03 host lock of an identity",
                    &secret[..],
                ))
            }
            Self::KeychainEntry { service, account } => {
                let user = crate::sys::process().uid.to_le_bytes();
                let name = [&user[..], service.as_bytes(), &[0], account.as_bytes()].concat();
                Zeroizing::new(blake3::derive_key(
                    "iroh-identity 2026-12-03 host lock of a keychain entry",
                    &name,
                ))
            }
        }
    }

    /// Whether a holder of another user can be told from a squatter by asking it to
    /// prove it knows the lock's key: an identity's holders can; a keychain entry is this
    /// user's alone.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn proves_itself(self) -> bool {
        matches!(self, Self::Identity(_))
    }
}

/// What one attempt at a lock found.
#[derive(Debug)]
enum Attempt {
    Taken(imp::Held),
    /// Another process holds it: who, where that can be told.
    Held(Option<Holder>),
}

/// The process that holds a lock, as this host tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) uid: u32,
    /// Unknown (`None`) in another PID namespace, or where the host does not say.
    pub(crate) pid: Option<u32>,
}

/// Locks the identity of `key` on this host, waiting until `deadline` for another holder.
///
/// # Errors
///
/// [`Error::InUse`] when another endpoint holds it for all of the wait; the errors of
/// [`try_lock`] otherwise.
pub(crate) async fn lock_identity(key: &SecretKey, deadline: Deadline) -> Result<HostLock, Error> {
    let scope = Scope::Identity(key);
    let mut holder = None;
    let mut attempt = || {
        Ok(match imp::attempt(scope)? {
            Attempt::Taken(held) => Some(HostLock { _held: held }),
            Attempt::Held(found) => {
                holder = found;
                None
            }
        })
    };
    let id = key.public();
    let announce = || info!(%id, "identity in use by another endpoint; waiting for it to close");
    // An endpoint of this process that was just closed releases its identity in a task of
    // the runtime's: let it run before the first verdict.
    let first = attempt()?;
    let waited = match first {
        Some(lock) => Waited::Done(lock),
        None => {
            tokio::task::yield_now().await;
            wait::until(deadline, RETRY_INTERVAL, attempt, announce).await?
        }
    };
    match waited {
        Waited::Done(lock) => Ok(lock),
        Waited::TimedOut(waited) => Err(in_use(id, holder, waited)),
    }
}

/// Takes the lock of `scope` if no one holds it: `None` while another process does.
#[cfg(feature = "keyring")]
///
/// # Errors
///
/// [`Error::HostLock`] when the lock cannot be reached, or [`Error::HostLockTaken`] when
/// every name it may have is taken by other users.
pub(crate) fn try_lock(scope: Scope<'_>) -> Result<Option<HostLock>, Error> {
    Ok(match imp::attempt(scope)? {
        Attempt::Taken(held) => Some(HostLock { _held: held }),
        Attempt::Held(_) => None,
    })
}

/// Whether an endpoint holds the identity of `key` on this host, found without taking the
/// lock, so that looking never makes an open fail; `None` when it cannot be told.
pub(crate) fn is_held(key: &SecretKey) -> Option<bool> {
    imp::is_held(Scope::Identity(key))
}

/// The error of an open that waited for all of `waited` while `holder` held `id`.
pub(crate) fn in_use(id: EndpointId, holder: Option<Holder>, waited: Duration) -> Error {
    Error::InUse {
        id,
        pid: holder.and_then(|holder| holder.pid),
        uid: holder.map(|holder| holder.uid),
        waited,
    }
}
