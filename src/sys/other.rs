//! Platforms without unix permissions: plain opens, no modes, publish by link.
//!
//! These platforms are not tested in CI; see the crate's *Limitations*.

use std::{
    fs::{self, File, FileType, Metadata, OpenOptions},
    io,
    path::Path,
};

/// Opens an existing key file for reading.
pub(crate) fn open_key_file(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Creates a new file, failing if anything is at `path`.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Creates a directory.
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)
}

/// Permission bits are a unix notion: nothing is judged exposed here.
pub(crate) fn exposed_mode(_metadata: &Metadata) -> Option<u32> {
    None
}

/// Says what a non-regular file is, for error messages.
pub(crate) fn describe(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else {
        "something else"
    }
}

/// Gives the file at `temp` the name `target` by a hard link, which fails if anything is
/// already there; `temp` is left for the caller to remove.
pub(crate) fn publish_no_clobber(temp: &Path, target: &Path) -> io::Result<()> {
    fs::hard_link(temp, target)
}

/// Directories cannot be synced here; renames are as durable as the platform makes them.
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Directories cannot be locked here.
pub(crate) fn lock_dir(_dir: &Path) -> Option<File> {
    None
}
