//! The identity lock: one live endpoint per identity.
//!
//! Two endpoints with the same key do not fail: connections silently split between them.
//! The lock turns that into a clear error at start-up. It is an OS lock (`flock` on
//! unix) on the key file itself, so it needs no lock file and no writable directory, and
//! the OS drops it when the process dies: there is never a stale lock to clean up.

use std::{
    fmt,
    fs::{File, TryLockError},
    path::{Path, PathBuf},
    time::Duration,
};

use iroh::{Endpoint, EndpointId};
use tracing::{debug, info};

use crate::{
    Error, key_file, sys,
    wait::{self, Deadline, Waited},
};

/// How often a held lock is tried again while waiting for it.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// An exclusive lock on a key file: while it is held, no other endpoint opens with this
/// identity, in this process or another.
///
/// [`PersistentEndpoint`](crate::PersistentEndpoint) takes it and ties it to the endpoint
/// for you. Use it directly only when you bind the endpoint yourself:
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use std::time::Duration;
///
/// use iroh::{Endpoint, endpoint::presets};
/// use iroh_identity::IdentityLock;
///
/// let key = iroh_identity::load_or_generate("endpoint.key")?;
/// let lock = IdentityLock::acquire("endpoint.key", Duration::from_secs(5)).await?;
/// let endpoint = Endpoint::builder(presets::N0).secret_key(key).bind().await?;
/// lock.hold_until_closed(&endpoint);
/// # Ok(())
/// # }
/// ```
///
/// Dropping the lock releases it.
pub struct IdentityLock {
    /// Never read: the lock lasts exactly as long as this handle is open.
    _file: File,
    path: PathBuf,
}

impl IdentityLock {
    /// Locks the existing key file at `path`, waiting up to `wait` for another holder to
    /// release it.
    ///
    /// # Errors
    ///
    /// - [`Error::InUse`]: another endpoint still held the identity after `wait`.
    /// - [`Error::Io`]: the key file cannot be opened (it must exist: create it first
    ///   with [`load_or_generate`](crate::load_or_generate)), or the file system does
    ///   not support locks.
    pub async fn acquire(path: impl AsRef<Path>, wait: Duration) -> Result<Self, Error> {
        let path = path.as_ref();
        let file =
            key_file::open_existing(path).map_err(|err| Error::io("open key file", path, err))?;
        Self::wait_for(file, path, Deadline::after(wait), None).await
    }

    /// Locks an open key file, waiting until `deadline`; `id` is the identity, for the log.
    pub(crate) async fn wait_for(
        file: File,
        path: &Path,
        deadline: Deadline,
        id: Option<EndpointId>,
    ) -> Result<Self, Error> {
        let attempt = || match file.try_lock() {
            Ok(()) => Ok(Some(())),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(err)) => Err(Error::io("lock key file", path, err)),
        };
        let announce = || {
            info!(
                path = %path.display(),
                id = id.map(tracing::field::display),
                "identity in use by another endpoint; waiting for it to close"
            );
        };
        match wait::until(deadline, RETRY_INTERVAL, attempt, announce).await? {
            Waited::Done(()) => Ok(Self {
                _file: file,
                path: path.into(),
            }),
            Waited::TimedOut(waited) => Err(Error::InUse {
                path: path.into(),
                waited,
            }),
        }
    }

    /// The key file this lock holds.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the lock until `endpoint` closes: until [`Endpoint::close`] is called on
    /// any clone of it, or the last clone is dropped.
    ///
    /// The lock is released as soon as closing starts: a closing endpoint accepts no new
    /// connections, and a restart need not wait for old connections to drain.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like everything in iroh.
    pub fn hold_until_closed(self, endpoint: &Endpoint) {
        // `closed()` holds no clone of the endpoint, so this task does not keep it alive.
        let closed = endpoint.closed();
        tokio::spawn(async move {
            closed.await;
            debug!(path = %self.path.display(), "endpoint closed; identity released");
            drop(self);
        });
    }
}

impl fmt::Debug for IdentityLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Whether an endpoint holds the identity of the open key `file`, found without taking
/// the lock, so that looking never makes an open fail; `None` when it cannot be told.
///
/// On Linux this reads the kernel's table of locks, `/proc/locks`. Elsewhere the lock is
/// taken and released at once: an open that tries the lock in that instant, with no
/// wait, finds the identity in use.
pub(crate) fn is_held(file: &File) -> Option<bool> {
    if let Some(held) = sys::flock_held(file) {
        return Some(held);
    }
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            Some(false)
        }
        Err(TryLockError::WouldBlock) => Some(true),
        Err(TryLockError::Error(_)) => None,
    }
}
