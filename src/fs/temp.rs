//! Files written crash-safely: to a temporary file beside the one they become, created
//! private in the same directory (through its descriptor), written and synced, then
//! published under their name ([`publish_new`], never replacing anything; [`publish_over`],
//! replacing the file that was there), the directory synced; removed if they never are,
//! and cleaned up after runs that were killed.
//!
//! The key file and the ports file are both written this way, so that a crash leaves the
//! old file or the whole new one, never a torn one.
//!
//! Their names end in 64 random bits from the operating system: another user who may
//! add names to the directory (a sticky `/tmp`) cannot create them first to keep a key
//! from being created. Each is held by its writer for as long as it exists (on unix
//! locked with `flock`; on Windows open, which no sweep can then open), so that a
//! leftover of a killed run is told from a file that another process is still writing:
//! only one that no one holds is removed.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, Write},
    path::PathBuf,
};

use tracing::{debug, warn};

use crate::{
    error::{Error, Operation},
    sys::{self, Dir},
};

/// What a temporary name adds to the name of the file it becomes: `.`, `.tmp-` and 16 hex
/// digits.
pub(crate) const ADDED_LEN: usize = 1 + ".tmp-".len() + 16;

/// The longest name of a file that can be written through a temporary file.
pub(crate) const MAX_NAME_LEN: usize = sys::NAME_MAX - ADDED_LEN;

/// A temporary file, removed when dropped unless it was renamed away.
struct TempFile<'a> {
    dir: &'a Dir,
    name: OsString,
    file: File,
}

impl<'a> TempFile<'a> {
    /// Creates `.NAME.tmp-RANDOM` in `dir`, private and held, for a file to be named
    /// `name`.
    fn create(dir: &'a Dir, name: &OsStr) -> Result<Self, Error> {
        let mut attempt = 0;
        loop {
            let random = getrandom::u64()
                .map_err(|err| Error::io(Operation::CreateTemporaryFile, dir.path(), err.into()))?;
            let mut temp_name = prefix(name);
            temp_name.push(format!("{random:016x}"));
            match dir.create_temporary_file(&temp_name) {
                Ok(file) => {
                    return Ok(Self {
                        dir,
                        name: temp_name,
                        file,
                    });
                }
                // 64 random bits never repeat by chance; try again all the same.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempt < 3 => {
                    attempt += 1;
                }
                Err(err) => {
                    return Err(Error::io(
                        Operation::CreateTemporaryFile,
                        dir.path().join(&temp_name),
                        err,
                    ));
                }
            }
        }
    }

    /// Writes `content` and waits until it is on disk.
    fn write_durably(&self, content: &[u8]) -> Result<(), Error> {
        (&self.file)
            .write_all(content)
            .map_err(|err| Error::io(Operation::WriteTemporaryFile, self.path(), err))?;
        self.file
            .sync_all()
            .map_err(|err| Error::io(Operation::SyncTemporaryFile, self.path(), err))
    }

    /// Where it is, for messages.
    fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        // Gone already after a rename; after a link, or on failure, this removes it.
        match self.dir.remove_file(&self.name) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                debug!(path = %self.path().display(), %err, "cannot remove a temporary file")
            }
        }
    }
}

/// Temporary files for a file named `name` are `.NAME.tmp-…`: hidden, beside it.
fn prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    prefix
}

/// Whether `entry_name` is a temporary name of this crate's for the file `name`: the
/// prefix and exactly 16 lowercase hex digits. A file of the user's that merely starts
/// like one (`.endpoint.key.tmp-backup`) is not.
fn is_temporary_name(entry_name: &OsStr, prefix: &OsStr) -> bool {
    entry_name
        .as_encoded_bytes()
        .strip_prefix(prefix.as_encoded_bytes())
        .is_some_and(|random| {
            random.len() == 16
                && random
                    .iter()
                    .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// Removes the temporary files that killed runs of this user left in `dir` for the file
/// `name`: those that no live writer holds ([`Dir::remove_abandoned`]). Another user's
/// files are theirs, whatever their names.
fn remove_leftovers(dir: &Dir, name: &OsStr) {
    let prefix = prefix(name);
    let process = sys::process();
    for entry_name in dir.names() {
        if !is_temporary_name(&entry_name, &prefix) {
            continue;
        }
        let ours = matches!(
            dir.stat_at(&entry_name),
            Ok(Some(stat)) if stat.kind == sys::FileKind::File && process.owns(&stat.owner)
        );
        if !ours {
            continue;
        }
        let path = dir.path().join(&entry_name);
        match dir.remove_abandoned(&entry_name) {
            Ok(true) => {
                debug!(path = %path.display(), "removed a temporary file of an interrupted run")
            }
            Ok(false) => {}
            Err(err) => debug!(path = %path.display(), %err, "cannot remove a temporary file"),
        }
    }
}

/// What [`publish_new`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    /// The content is now at the name.
    Published,
    /// Something was at the name already, or was put there meanwhile: it is left as it is.
    AlreadyThere,
}

/// Writes `content` to a new file `name` in `dir`, unless something is there: the losers
/// of a race find the winner's file. `operation` names the publishing in an error, and
/// `what` the file in the log. Once it is published, a failure to sync the directory is a
/// warning: the file is there, only its survival of a power loss is not confirmed.
pub(crate) fn publish_new(
    dir: &Dir,
    name: &OsStr,
    content: &[u8],
    operation: Operation,
    what: &str,
) -> Result<Published, Error> {
    let path = dir.path().join(name);
    if dir.stat_at(name).ok().flatten().is_some() {
        debug!(path = %path.display(), "another process created the file first");
        return Ok(Published::AlreadyThere);
    }
    // Every live writer holds its temporary file locked, so what is unlocked was left by a
    // run that was killed.
    remove_leftovers(dir, name);
    let mut attempt = 0;
    loop {
        let temp = TempFile::create(dir, name)?;
        temp.write_durably(content)?;
        match dir.publish_no_clobber(&temp.name, name) {
            Ok(()) => break,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                debug!(path = %path.display(), "another process created the file first");
                return Ok(Published::AlreadyThere);
            }
            // Removed as a leftover by another creator in the instant between its
            // creation and its lock.
            Err(err) if err.kind() == io::ErrorKind::NotFound && attempt < 3 => {
                debug!(path = %path.display(), "the temporary file vanished; writing it again");
                attempt += 1;
            }
            Err(err) => return Err(Error::io(operation, path, err)),
        }
    }
    if let Err(err) = dir.sync() {
        warn!(
            path = %path.display(),
            %err,
            "the {what} was stored, but its directory cannot be synced: after a power loss it \
             may be missing"
        );
    }
    Ok(Published::Published)
}

/// Writes `content` to the file `name` in `dir`: over the file there when `replace` says
/// so, else only where there is none. A failure to sync the directory is logged.
pub(crate) fn publish_over(
    dir: &Dir,
    name: &OsStr,
    content: &[u8],
    replace: bool,
    operation: Operation,
) -> Result<(), Error> {
    remove_leftovers(dir, name);
    let temp = TempFile::create(dir, name)?;
    temp.write_durably(content)?;
    let path = dir.path().join(name);
    let written = if replace {
        dir.replace(&temp.name, name)
    } else {
        dir.publish_no_clobber(&temp.name, name)
    };
    written.map_err(|err| Error::io(operation, &path, err))?;
    if let Err(err) = dir.sync() {
        debug!(path = %path.display(), %err, "the file was replaced, but its directory cannot be synced");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_this_crate_are_temporary() {
        let prefix = prefix(OsStr::new("endpoint.key"));
        let temporary = |name: &str| is_temporary_name(OsStr::new(name), &prefix);
        assert!(temporary(".endpoint.key.tmp-0123456789abcdef"));
        for name in [
            ".endpoint.key.tmp-backup-of-old-identity",
            ".endpoint.key.tmp-0123456789ABCDEF",
            ".endpoint.key.tmp-0123456789abcdef0",
            ".endpoint.key.tmp-0123456789abcde",
            ".endpoint.key.tmp-",
            "endpoint.key.tmp-0123456789abcdef",
        ] {
            assert!(!temporary(name), "{name}");
        }
    }
}
