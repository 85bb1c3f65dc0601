//! The host lock: one live endpoint per identity on this host, whatever its key came
//! from.
//!
//! The key file's own lock keeps apart two endpoints that read the same file. This one
//! keeps apart any two with the same identity: one from a key file, one from an
//! environment variable or the secret store, or from a copy of the file. An identity is
//! locked by its `EndpointId`: `ID.lock` in the user's runtime directory,
//! `$XDG_RUNTIME_DIR/iroh-identity`; when there is none, `/run/iroh-identity` for root on
//! Linux, `iroh-identity-UID` in the temporary directory for anyone else. That directory is private (`0700`), made and checked as the
//! directories above a key are. Its files are only ever locked, never written, and never
//! removed (removing a lock file while another process waits on it would let two hold
//! it). Like every lock here it is per user: two users of one host are not kept apart.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use iroh::EndpointId;

use super::lock::FileLock;
use crate::{
    Error, Operation,
    store::file::private_dir,
    sys::{self, Dir},
    wait::Deadline,
};

/// The runtime directory this process has checked, kept open.
static RUNTIME_DIR: Mutex<Option<(PathBuf, Arc<Dir>)>> = Mutex::new(None);

/// Locks the identity `id` on this host, waiting until `deadline` for another holder.
pub(crate) async fn lock_identity(id: EndpointId, deadline: Deadline) -> Result<FileLock, Error> {
    lock(&format!("{id}.lock"), Some(id), deadline).await
}

/// Locks the name `name` in the runtime directory, waiting until `deadline`; `id` is for
/// the log.
pub(crate) async fn lock(
    name: &str,
    id: Option<EndpointId>,
    deadline: Deadline,
) -> Result<FileLock, Error> {
    let (file, path) = open(name)?;
    FileLock::acquire(file, &path, deadline, id).await
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

/// The user's runtime directory for this crate, made and checked on first use.
fn runtime_dir() -> Result<Arc<Dir>, Error> {
    let uid = sys::process().uid;
    let path = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if PathBuf::from(&dir).is_absolute() => PathBuf::from(dir).join("iroh-identity"),
        // Where no other user can take the name first.
        _ if uid == 0 && cfg!(target_os = "linux") => PathBuf::from("/run/iroh-identity"),
        _ => std::env::temp_dir().join(format!("iroh-identity-{uid}")),
    };
    let mut cached = RUNTIME_DIR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((cached_path, dir)) = cached.as_ref()
        && *cached_path == path
    {
        return Ok(Arc::clone(dir));
    }
    let dir = private_dir(&path)?;
    *cached = Some((path, Arc::clone(&dir)));
    Ok(dir)
}
