//! Directories made private: the missing directories above a key, and the user's private
//! directories of lock files.
//!
//! A directory is made through the descriptor of the one above it (`mkdirat`), with its
//! mode set through its own descriptor, and made durable: nothing is ever created or
//! changed through a path that someone could redirect meanwhile. One that a racing
//! process made is checked like those that were there.

use std::{io, path::Path, sync::Arc};

use tracing::debug;

use super::walk::{Checks, Reached, Walk};
use crate::{
    error::{Error, Operation},
    sys::Dir,
    trust::PathKind,
};

/// Creates the directories the walk found missing (`0700`; on Windows granting only the
/// user, SYSTEM and Administrators), each one made durable. One that a racing process
/// made is checked, the last as the home of what is kept there.
pub(crate) fn create_missing(walk: &mut Walk<'_>, reached: &mut Reached) -> Result<(), Error> {
    let missing = std::mem::take(&mut reached.missing);
    let last = missing.len().saturating_sub(1);
    for (index, name) in missing.into_iter().enumerate() {
        let dir = Arc::clone(reached.dir());
        let path = dir.path().join(&name);
        let entered = match dir.create_dir(&name, 0o700) {
            Ok(created) => {
                if let Err(err) = dir.sync() {
                    debug!(dir = %dir.path().display(), %err, "cannot sync a directory");
                }
                created
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let found = dir
                    .open_dir(&name)
                    .map_err(|err| Error::io(Operation::OpenDirectory, &path, err))?;
                let kind = if index == last {
                    PathKind::KeyDirectory
                } else {
                    PathKind::Directory
                };
                walk.check_directory(&found, kind)?;
                found
            }
            Err(err) => return Err(Error::io(Operation::CreateDirectory, path, err)),
        };
        reached.enter(entered);
    }
    Ok(())
}

/// The private directory at `path`, checked as the directories above a key are, and
/// created (`0700`) if it is missing: where lock files are.
#[cfg_attr(
    all(
        any(target_os = "linux", target_os = "android"),
        not(feature = "keyring")
    ),
    allow(dead_code)
)]
pub(crate) fn private_dir(path: &Path) -> Result<Arc<Dir>, Error> {
    let mut walk = Walk::new(path, Checks::Enforce);
    let mut reached = walk.walk_to_home(path)?;
    create_missing(&mut walk, &mut reached)?;
    Ok(Arc::clone(reached.dir()))
}
