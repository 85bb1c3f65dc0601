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
};

/// Creates the directories the walk found missing (`0700`), each one made durable.
pub(crate) fn create_missing(walk: &mut Walk<'_>, reached: &mut Reached) -> Result<(), Error> {
    for name in std::mem::take(&mut reached.missing) {
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
                walk.check_directory(&found)?;
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
    let mut reached = walk.walk_to(path)?;
    create_missing(&mut walk, &mut reached)?;
    Ok(Arc::clone(reached.dir()))
}
