//! The host lock: one live endpoint per identity on this host, whatever its key came
//! from.
//!
//! The key file's own lock keeps apart two endpoints that read the same file. This one
//! keeps apart any two with the same identity: one from a key file, one from an
//! environment variable or the secret store, or from a copy of the file. An identity is
//! locked by its `EndpointId`: `ID.lock` in a directory of the user's that every process
//! of the user finds in the same place, whatever its environment (`$XDG_RUNTIME_DIR`,
//! `$HOME` and `$TMPDIR` differ between a shell, a service and a cron job, and two
//! processes that looked in two places would not meet):
//!
//! - root, on Linux: `/run/iroh-identity`;
//! - a user with a home directory in the user database: `HOME/.local/state/iroh-identity`;
//! - a user without one (a container's numeric user), or whose home cannot hold it:
//!   `/tmp/iroh-identity-UID`, where another user could take the name first (then it is
//!   refused, as any directory of another user's is);
//! - elsewhere (Windows): `iroh-identity` in the user's local application data.
//!
//! The directory is made and checked as the directories above a key are. Its files are
//! only ever locked, never written, and never removed (removing a lock file while
//! another process waits on it would let two hold it). Like every lock here it is per
//! user: two users of one host are not kept apart.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use iroh::EndpointId;

use super::lock::FileLock;
use crate::{Error, Operation, store::file::private_dir, sys::Dir, wait::Deadline};

/// The runtime directory this process has checked, kept open.
static RUNTIME_DIR: Mutex<Option<Arc<Dir>>> = Mutex::new(None);

/// Locks the identity `id` on this host, waiting until `deadline` for another holder.
pub(crate) async fn lock_identity(id: EndpointId, deadline: Deadline) -> Result<FileLock, Error> {
    let (file, path) = open(&lock_name(id))?;
    FileLock::acquire(file, &path, deadline, Some(id)).await
}

/// Takes the host lock of `id` if no endpoint holds it: `None` while one does.
#[cfg(feature = "keyring")]
pub(crate) fn try_lock_identity(id: EndpointId) -> Result<Option<FileLock>, Error> {
    try_lock(&lock_name(id))
}

/// The name of the host lock of `id`.
fn lock_name(id: EndpointId) -> String {
    format!("{id}.lock")
}

/// Takes the lock `name` if no one holds it: `None` while another does.
#[cfg(feature = "keyring")]
pub(crate) fn try_lock(name: &str) -> Result<Option<FileLock>, Error> {
    let (file, path) = open(name)?;
    FileLock::try_acquire(file, &path)
}

fn open(name: &str) -> Result<(std::fs::File, PathBuf), Error> {
    let dir = runtime_dir()?;
    let path = dir.path().join(name);
    let file = dir
        .open_lock_file(name.as_ref())
        .map_err(|err| Error::io(Operation::OpenLockFile, &path, err))?;
    Ok((file, path))
}

/// The user's directory of host locks, made and checked on first use.
fn runtime_dir() -> Result<Arc<Dir>, Error> {
    let mut cached = RUNTIME_DIR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = cached.as_ref() {
        return Ok(Arc::clone(dir));
    }
    let mut result = Err(Error::NoHomeDirectory);
    for path in candidates() {
        result = private_dir(&path);
        if result.is_ok() {
            break;
        }
    }
    let dir = result?;
    *cached = Some(Arc::clone(&dir));
    Ok(dir)
}

/// Where the host locks may be, in order: the same for every process of the user.
fn candidates() -> Vec<PathBuf> {
    #[cfg(unix)]
    {
        let uid = crate::sys::process().uid;
        let mut candidates = Vec::new();
        if uid == 0 && cfg!(target_os = "linux") {
            candidates.push(PathBuf::from("/run/iroh-identity"));
        } else if let Some(home) = crate::sys::home_of(uid).filter(|home| home.parent().is_some()) {
            candidates.push(home.join(".local/state/iroh-identity"));
        }
        candidates.push(PathBuf::from(format!("/tmp/iroh-identity-{uid}")));
        candidates
    }
    #[cfg(not(unix))]
    {
        directories::BaseDirs::new()
            .map(|dirs| dirs.data_local_dir().join("iroh-identity"))
            .into_iter()
            .collect()
    }
}
