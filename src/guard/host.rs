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
//!   it, and two containers with network namespaces of their own are two hosts (as two
//!   machines, they need a lease). Another user can see a holder's name
//!   (`/proc/net/unix`) and take it after the holder exits; how that never stops or
//!   stalls an identity is the module's business.
//! - **Elsewhere**: a lock file in a private directory of the user's ([`crate::fs::lock`]),
//!   found in the user database, the same for every process of the user, and removed
//!   when it is let go of.
//!
//! A process that cannot reach the lock fails with the reason: it never runs unguarded,
//! and never falls back to a second place.

#[cfg(any(target_os = "linux", target_os = "android"))]
mod proof;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod responder;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod socket;

use std::time::{Duration, Instant};

use iroh::{EndpointId, SecretKey};
use tracing::info;
use zeroize::Zeroizing;

use crate::{error::Error, wait::Deadline};

/// How often a held lock is tried again while waiting for it.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// A lock this process holds on this host; dropping it lets go of it at once.
#[derive(Debug)]
pub(crate) struct HostLock {
    _held: Held,
}

/// The lock of this system's kind.
#[cfg(any(target_os = "linux", target_os = "android"))]
type Held = socket::Held;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
type Held = crate::fs::lock::LockFile;

/// What one attempt at a lock found.
#[derive(Debug)]
enum Attempt<H> {
    Taken(H),
    /// Another process holds it: who, where it can be told.
    Held(Option<Holder>),
}

/// The process that holds a lock, as this host tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) uid: u32,
    /// Unknown (`None`) in another PID namespace, or where the host does not say.
    pub(crate) pid: Option<u32>,
}

/// The key the lock of the identity of `key` is named with, and a holder proves itself
/// with: derived, never the secret itself.
fn lock_key(key: &SecretKey) -> Zeroizing<[u8; 32]> {
    let secret = Zeroizing::new(key.to_bytes());
    Zeroizing::new(blake3::derive_key(
        "iroh-identity 2026-12-03 host lock of an identity",
        &secret[..],
    ))
}

/// One attempt at the lock of the identity of `key`.
async fn attempt(key: &SecretKey) -> Result<Attempt<Held>, Error> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return socket::look(key)?.settle().await;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return attempt_file(key);
}

/// The same, for code that is not async.
#[cfg(feature = "keyring")]
fn attempt_blocking(key: &SecretKey) -> Result<Attempt<Held>, Error> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return socket::look(key)?.settle_blocking();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return attempt_file(key);
}

/// An attempt at the lock file of the identity of `key`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn attempt_file(key: &SecretKey) -> Result<Attempt<Held>, Error> {
    Ok(match crate::fs::lock::try_lock(&identity_file_name(key))? {
        Some(held) => Attempt::Taken(held),
        None => Attempt::Held(None),
    })
}

/// The name of an identity's lock file, where it is a file.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn identity_file_name(key: &SecretKey) -> std::ffi::OsString {
    let tag = blake3::keyed_hash(&lock_key(key), b"name");
    format!(
        "{}.lock",
        data_encoding::HEXLOWER.encode(&tag.as_bytes()[..16])
    )
    .into()
}

/// Locks the identity of `key` on this host, waiting until `deadline` for another holder.
///
/// # Errors
///
/// [`Error::InUse`] when another endpoint holds it for all of the wait;
/// [`Error::HostLock`] when the lock cannot be reached; [`Error::HostLockTaken`] when
/// other users have taken every name it may have.
pub(crate) async fn lock_identity(key: &SecretKey, deadline: Deadline) -> Result<HostLock, Error> {
    let id = key.public();
    let start = Instant::now();
    let mut holder = None;
    let mut announced = false;
    loop {
        match attempt(key).await? {
            Attempt::Taken(held) => return Ok(HostLock { _held: held }),
            Attempt::Held(found) => holder = found.or(holder),
        }
        if deadline.left() == Some(Duration::ZERO) {
            return Err(in_use(id, holder, start));
        }
        if !announced {
            announced = true;
            info!(%id, "identity in use by another endpoint; waiting for it to close");
            // An endpoint of this process that was just closed releases its identity in a
            // task of the runtime's: let it run before the next look.
            tokio::task::yield_now().await;
            continue;
        }
        let pause = deadline
            .left()
            .map_or(RETRY_INTERVAL, |left| left.min(RETRY_INTERVAL));
        tokio::time::sleep(pause).await;
    }
}

/// Takes the lock of the identity of `key` if no one holds it: `None` while another
/// process does.
#[cfg(feature = "keyring")]
pub(crate) fn try_lock_identity(key: &SecretKey) -> Result<Option<HostLock>, Error> {
    Ok(match attempt_blocking(key)? {
        Attempt::Taken(held) => Some(HostLock { _held: held }),
        Attempt::Held(_) => None,
    })
}

/// Whether an endpoint holds the identity of `key` on this host, found without taking the
/// lock, so that looking never makes an open fail; `None` when it cannot be told.
pub(crate) fn is_held(key: &SecretKey) -> Option<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return socket::is_held(key);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return crate::fs::lock::is_held(&identity_file_name(key));
}

/// The error of an open that waited since `start` while `holder` held `id`.
fn in_use(id: EndpointId, holder: Option<Holder>, start: Instant) -> Error {
    Error::InUse {
        id,
        pid: holder.and_then(|holder| holder.pid),
        uid: holder.map(|holder| holder.uid),
        waited: Duration::from_millis(start.elapsed().as_millis() as u64),
    }
}
