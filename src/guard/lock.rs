//! An OS lock (`flock` on unix) on a file: the key file that was read, which needs no
//! lock file and no writable directory, or a lock file of the host lock. The OS drops it
//! when the process dies: there is never a stale lock to clean up.

use std::{
    fmt,
    fs::{File, TryLockError},
    path::{Path, PathBuf},
    time::Duration,
};

use iroh::EndpointId;
use tracing::info;

use crate::{
    Error, Operation, sys,
    wait::{self, Deadline, Waited},
};

/// How often a held lock is tried again while waiting for it.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// An exclusive lock on a file: while it is held, no other endpoint opens with this
/// identity, in this process or another. Dropping it releases it.
pub(crate) struct FileLock {
    /// Never read: the lock lasts exactly as long as this handle is open.
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Locks the open `file` at `path`, waiting until `deadline` for another holder to
    /// release it; `id` is the identity, for the log.
    pub(crate) async fn acquire(
        file: File,
        path: &Path,
        deadline: Deadline,
        id: Option<EndpointId>,
    ) -> Result<Self, Error> {
        let attempt = || try_lock(&file, path).map(|locked| locked.then_some(()));
        let announce = || {
            info!(
                path = %path.display(),
                id = id.map(tracing::field::display),
                "identity in use by another endpoint; waiting for it to close"
            );
        };
        // An endpoint of this process that was just closed releases its identity in a
        // task of the runtime's: let it run before the first verdict.
        let waited = match attempt()? {
            Some(()) => Waited::Done(()),
            None => {
                tokio::task::yield_now().await;
                wait::until(deadline, RETRY_INTERVAL, attempt, announce).await?
            }
        };
        match waited {
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

    /// Locks the open `file` at `path` if no one holds it: `None` while another does.
    #[cfg(feature = "keyring")]
    pub(crate) fn try_acquire(file: File, path: &Path) -> Result<Option<Self>, Error> {
        Ok(try_lock(&file, path)?.then(|| Self {
            _file: file,
            path: path.into(),
        }))
    }
}

/// Takes the lock on `file` at `path` if no one holds it: whether it was taken.
fn try_lock(file: &File, path: &Path) -> Result<bool, Error> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(err)) => Err(Error::io(Operation::LockKeyFile, path, err)),
    }
}

impl fmt::Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLock")
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
