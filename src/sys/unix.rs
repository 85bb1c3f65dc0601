//! Unix: file modes and owners, opens that cannot hang, and a no-clobber rename.

use std::{
    fs::{self, DirBuilder, File, FileType, Metadata, OpenOptions, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Opens an existing key file for reading.
///
/// `O_NONBLOCK` makes opening a FIFO return at once instead of waiting for a writer; it
/// changes nothing for the regular files that are then read.
pub(crate) fn open_key_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Creates a new file that only its owner can read, failing if anything is at `path`.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The umask may have taken bits away from 0600 (never added any): restore exactly 0600.
    file.set_permissions(Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Creates a directory that only its owner can enter, whatever the umask.
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)?;
    fs::set_permissions(path, Permissions::from_mode(0o700))
}

/// The permission bits of a key file that the current user owns and that group or
/// others may access: such a key is exposed. A file owned by someone else (a secret
/// mounted by root, say) is that owner's business and is not judged.
pub(crate) fn exposed_mode(metadata: &Metadata) -> Option<u32> {
    let mode = metadata.mode() & 0o7777;
    (metadata.uid() == effective_uid() && mode & 0o077 != 0).then_some(mode)
}

#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Says what a non-regular file is, for error messages.
pub(crate) fn describe(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a named pipe (FIFO)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "something else"
    }
}

/// Gives the complete file at `temp` the name `target`, failing with
/// [`io::ErrorKind::AlreadyExists`] if anything is already there.
///
/// On Linux this is `renameat2(RENAME_NOREPLACE)`, after which `temp` is gone. Where the
/// kernel or file system lacks it, and on other unixes, it is `link`, after which `temp`
/// is still there for the caller to remove.
pub(crate) fn publish_no_clobber(temp: &Path, target: &Path) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match rename_no_replace(temp, target) {
        // Not supported here: fall back to link, which reports any real error again.
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)
            ) => {}
        result => return result,
    }
    fs::hard_link(temp, target)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};

    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call; renameat2 reads
    // them and nothing else of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the entries of a directory durable: after a crash, what was created or renamed
/// in it is still there.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes an exclusive lock on a directory, waiting for it, so that only one process at a
/// time creates a key in it. `None` where directories cannot be locked (some network file
/// systems): creation is then still correct, only stale temporary files are left alone.
pub(crate) fn lock_dir(dir: &Path) -> Option<File> {
    let handle = File::open(dir).ok()?;
    handle.lock().ok()?;
    Some(handle)
}
