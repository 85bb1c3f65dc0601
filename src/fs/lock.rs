//! Lock files of the user's: an identity's host lock where there are no abstract sockets
//! (macOS, the BSDs, Windows), and a keychain entry's creation lock everywhere. An OS lock
//! in a private directory of the user's that every process of the user finds in the same
//! place, whatever its groups or environment: `HOME/.local/state/iroh-identity` from the
//! user database on unix, `iroh-identity` in the local application data (the user's known
//! folder, not `%LOCALAPPDATA%`) on Windows. When it cannot be made or is not private,
//! taking the lock fails: there is no second place.
//!
//! - **Unix**: a file per lock, `NAME.lock`, locked with `flock` and removed by its holder
//!   when it lets go, so that nothing piles up; the one that a waiter locks is checked to
//!   still be the one with the name, or it tries again.
//! - **Windows**: one file, `locks`, for all of the user's locks, and a lock is an
//!   exclusive byte-range lock (`LockFileEx`) on one byte of it, at an offset derived from
//!   the lock's name (62 bits of its hash; a byte past the end of a file can be locked, and
//!   the file stays empty). Nothing is ever removed: a file removed while it is open is
//!   only marked for removal on Windows, and a waiter that opens it meanwhile would lock a
//!   file on its way out (Wine lets it); and every process that has it open shares it
//!   without `FILE_SHARE_DELETE`, so no one can remove or rename it while a lock is held.
//!
//! Like the directory, a lock is per user: two users of one host are not kept apart here.

use std::{
    ffi::OsString,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use super::dirs::private_dir;
use crate::{error::Error, sys::Dir};

/// A lock file this process holds: locked, and removed when dropped.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct LockFile {
    dir: Arc<Dir>,
    name: OsString,
    _file: std::fs::File,
}

#[cfg(unix)]
impl Drop for LockFile {
    fn drop(&mut self) {
        // Removed while still locked: a waiter that opened it meanwhile finds it is no
        // longer the lock file and tries again.
        if let Err(err) = self.dir.remove_file(&self.name) {
            tracing::debug!(%err, "cannot remove a lock file");
        }
    }
}

/// A lock this process holds: a byte of the user's file of locks, unlocked when dropped.
#[cfg(windows)]
#[derive(Debug)]
pub(crate) struct LockFile {
    dir: Arc<Dir>,
    file: std::fs::File,
    offset: u64,
}

#[cfg(windows)]
impl Drop for LockFile {
    fn drop(&mut self) {
        // Unlocked before the handle is closed: Windows releases a closed handle's locks
        // too, but promises no time for it.
        let Err(err) = crate::sys::unlock_byte(&self.file, self.offset) else {
            return;
        };
        // Wine 8 answers ERROR_LOCK_VIOLATION (33) to an unlock of a byte that is not
        // locked, where Windows answers ERROR_NOT_LOCKED (Wine bug 59711: std's
        // `File::unlock` fails so under Wine though it released the lock). Unlocking the
        // byte this handle locked succeeds under Wine too, as measured, so an error here
        // is not expected. Error 33 alone may be Wine's misreport: another handle's
        // attempt at the byte tells it (the byte can be taken: it was released) from a
        // real failure (it cannot: still held), which is logged; every other error is
        // logged as it is. Closing the handle next releases it whichever it was.
        let misreport =
            err.raw_os_error() == Some(LOCK_VIOLATION) && is_free(&self.dir, self.offset);
        if !misreport {
            tracing::warn!(%err, "cannot release a lock; it is released when its handle closes");
        }
    }
}

/// `ERROR_LOCK_VIOLATION`, what Wine answers to an unlock it carried out.
#[cfg(windows)]
const LOCK_VIOLATION: i32 = windows_sys::Win32::Foundation::ERROR_LOCK_VIOLATION as i32;

/// The file of all the user's locks on Windows.
#[cfg(windows)]
const LOCKS: &str = "locks";

/// The byte of [`LOCKS`] that the lock `name` is: 62 bits of its hash, far below the
/// largest offset Windows takes.
#[cfg(windows)]
fn offset_of(name: &OsString) -> u64 {
    let hash = blake3::hash(name.as_encoded_bytes());
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(bytes) >> 2
}

/// Opens the user's file of locks, made private if it is missing, and refuses it if
/// another may use it: one who may open it could take any of the user's locks and keep
/// it (guarantee 9).
#[cfg(windows)]
fn open_locks(dir: &Dir) -> std::io::Result<std::fs::File> {
    use crate::trust::{PathKind, Untrusted, problem};

    let file = dir.open_lock_file(LOCKS.as_ref())?;
    let owner = crate::sys::Stat::of_handle(&file)?.owner;
    match problem(&owner, crate::sys::process(), PathKind::KeyFile) {
        None => Ok(file),
        Some(problem) => {
            let path = dir.path().join(LOCKS);
            let untrusted = Untrusted {
                key: &path,
                path: &path,
                kind: &PathKind::KeyFile,
                owner: &None,
                problem: &problem,
            };
            Err(std::io::Error::other(format!(
                "the file of the user's locks: {untrusted}"
            )))
        }
    }
}

/// Whether another handle can take the byte at `offset` now, letting go of it at once.
#[cfg(windows)]
fn is_free(dir: &Dir, offset: u64) -> bool {
    let Ok(file) = open_locks(dir) else {
        return false;
    };
    let free = matches!(crate::sys::try_lock_byte(&file, offset), Ok(true));
    if free {
        let _ = crate::sys::unlock_byte(&file, offset);
    }
    free
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
    #[cfg(windows)]
    let base = directories::BaseDirs::new().map(|dirs| dirs.data_local_dir().to_owned());
    base.map(|base| base.join("iroh-identity"))
        .ok_or(Error::NoHomeDirectory)
}

/// Takes the lock file `name` if no process holds it: `None` while one does.
#[cfg(unix)]
pub(crate) fn try_lock(name: &OsString) -> Result<Option<LockFile>, Error> {
    use std::fs::TryLockError;

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

/// Takes the lock `name` if no process holds it: `None` while one does.
#[cfg(windows)]
pub(crate) fn try_lock(name: &OsString) -> Result<Option<LockFile>, Error> {
    let dir = dir()?;
    let unreachable = |source| Error::HostLock {
        path: Some(dir.path().join(LOCKS)),
        source,
    };
    let file = open_locks(&dir).map_err(unreachable)?;
    let offset = offset_of(name);
    match crate::sys::try_lock_byte(&file, offset) {
        Ok(true) => Ok(Some(LockFile { dir, file, offset })),
        Ok(false) => Ok(None),
        Err(err) => Err(unreachable(err)),
    }
}

/// Whether a process holds the lock file `name`, found without taking it for more than an
/// instant; `None` when that cannot be told.
#[cfg(unix)]
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
pub(crate) fn is_held(name: &OsString) -> Option<bool> {
    use std::fs::TryLockError;

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

/// Whether a process holds the lock `name`, found without taking it for more than an
/// instant; `None` when that cannot be told.
#[cfg(windows)]
pub(crate) fn is_held(name: &OsString) -> Option<bool> {
    let dir = dir().ok()?;
    let file = open_locks(&dir).ok()?;
    let offset = offset_of(name);
    match crate::sys::try_lock_byte(&file, offset) {
        Ok(true) => {
            let _ = crate::sys::unlock_byte(&file, offset);
            Some(false)
        }
        Ok(false) => Some(true),
        Err(_) => None,
    }
}
