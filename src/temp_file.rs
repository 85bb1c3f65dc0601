//! Temporary files beside the file they become: created private, written and synced
//! before they are published under their name, removed if they never are, and cleaned up
//! after runs that were killed.
//!
//! The key file and the ports file are both written this way, so that a crash leaves the
//! old file or the whole new one, never a torn one.

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    process,
};

use tracing::debug;

use crate::{Error, sys};

/// A temporary file, removed when dropped unless it was renamed away.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    file: File,
}

impl TempFile {
    /// Creates `.NAME.tmp-PID-N` in `dir` (`0600` on unix), for a file to be named `name`.
    pub(crate) fn create(dir: &Path, name: &OsStr) -> Result<Self, Error> {
        let mut base = prefix(name);
        base.push(process::id().to_string());
        let mut attempt = 0;
        loop {
            let mut file_name = base.clone();
            file_name.push(format!("-{attempt}"));
            let path = dir.join(file_name);
            match sys::create_private_file(&path) {
                Ok(file) => return Ok(Self { path, file }),
                // Left by an earlier process with the same id, where nothing cleaned it.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(err) => return Err(Error::io("create temporary file", path, err)),
            }
        }
    }

    /// Writes `content` and waits until it is on disk.
    pub(crate) fn write_durably(&self, content: &[u8]) -> Result<(), Error> {
        (&self.file)
            .write_all(content)
            .map_err(|err| Error::io("write temporary file", &self.path, err))?;
        self.file
            .sync_all()
            .map_err(|err| Error::io("sync temporary file", &self.path, err))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Gone already after a rename; after a link, or on failure, this removes it.
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                debug!(path = %self.path.display(), %err, "cannot remove a temporary file")
            }
        }
    }
}

/// Temporary files for a file named `name` are `.NAME.tmp-PID-N`: hidden, beside it.
fn prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    prefix
}

/// Removes the temporary files that killed runs left in `dir` for the file `name`.
///
/// Only for a caller that knows no other process is writing one right now.
pub(crate) fn remove_leftovers(dir: &Path, name: &OsStr) {
    let prefix = prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(prefix.as_encoded_bytes())
        {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    debug!(path = %path.display(), "removed a temporary file of an interrupted run")
                }
                Err(err) => {
                    debug!(path = %path.display(), %err, "cannot remove a temporary file")
                }
            }
        }
    }
}

/// The directory a path is in; `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}
