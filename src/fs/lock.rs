//! Lock files of the user's: an identity's host lock where there are no abstract sockets
//! (macOS, the BSDs, Windows), and a keychain entry's creation lock everywhere. An OS lock
//! on a file, `NAME.lock`, in a private directory of the user's that every process of the
//! user finds in the same place, whatever its groups or environment: `HOME/.local/state/
//! iroh-identity` from the user database on unix, `iroh-identity` in the local application
//! data on Windows. When it cannot be made or is not private, taking the lock fails: there
//! is no second place.
//!
//! A lock file is removed by its holder when it lets go, so that nothing piles up; the one
//! that a waiter locks is checked to still be the one with the name, or it tries again.
//! Like the directory, it is per user: two users of one host are not kept apart here.

use std::{
    ffi::OsString,
    fs::{File, TryLockError},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tracing::debug;

use super::dirs::private_dir;
use crate::{error::Error, sys::Dir};

/// A lock file this process holds: locked, and removed when dropped.
#[derive(Debug)]
pub(crate) struct LockFile {
    dir: Arc<Dir>,
    name: OsString,
    _file: File,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Removed while still locked: a waiter that opened it meanwhile finds it is no
        // longer the lock file and tries again.
        if let Err(err) = self.dir.remove_file(&self.name) {
            debug!(%err, "cannot remove a lock file");
        }
    }
}

/// The user's directory of lock files, made and checked on first use.
static DIR: Mutex<Option<Arc<Dir>>> = Mutex::new(None);

fn dir() -> Result<Arc<Dir>, Error> {
    let mut cached = DIR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = cached.as_ref() {
        return Ok(Arc::clone(dir));
    }
    let dir = private_dir(&path()?)?;
    *cached = Some(Arc::clone(&dir));
    Ok(dir)
}

/// Where the lock files are: the same for every process of the user.
fn path() -> Result<PathBuf, Error> {
    #[cfg(unix)]
    let base = crate::sys::home_of(crate::sys::process().uid).map(|home| home.join(".local/state"));
    #[cfg(not(unix))]
    let base = directories::BaseDirs::new().map(|dirs| dirs.data_local_dir().to_owned());
    base.map(|base| base.join("iroh-identity"))
        .ok_or(Error::NoHomeDirectory)
}

/// Takes the lock file `name` if no process holds it: `None` while one does.
pub(crate) fn try_lock(name: &OsString) -> Result<Option<LockFile>, Error> {
    let dir = dir()?;
    let name = name.clone();
    let unreachable = |source| Error::HostLock {
        path: Some(dir.path().join(&name)),
        source,
    };
    let file = dir.open_lock_file(&name).map_err(unreachable)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(err)) => return Err(unreachable(err)),
    }
    // Its holder removed it between the open and the lock: not the lock file any more.
    if !dir.is_same_file(&name, &file).unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(LockFile {
        dir,
        name,
        _file: file,
    }))
}

/// Whether a process holds the lock file `name`, found without taking it for more than an
/// instant; `None` when that cannot be told.
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
pub(crate) fn is_held(name: &OsString) -> Option<bool> {
    let dir = dir().ok()?;
    let file = match dir.open_file_no_follow(name) {
        Ok(Some(file)) => file,
        Ok(None) => return None,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    match file.try_lock() {
        Ok(()) => Some(false),
        Err(TryLockError::WouldBlock) => Some(true),
        Err(TryLockError::Error(_)) => None,
    }
}
