//! File-system faults (guarantees 3 and 6): when the key cannot be created, the error is
//! clear and names the path, no partial key is published and no temporary file is left.
//! A read-only key directory with the key present works: see `read_only`.

use std::{fs, path::Path, process::Command};
#[cfg(unix)]
use std::{io, path::PathBuf};

use super::figure;
use crate::support::{
    child::{Action, Task, run_to_end},
    list, temp_dir,
};
#[cfg(unix)]
use crate::{read_only::ReadOnlyKey, support::is_root};

/// Runs `command` (a child opening `path`) and checks that it fails with an error that
/// contains `phrase` and names `named`, and that the directory of `path`, if there is
/// one, is as it was: no key, no temporary file.
fn assert_fails_cleanly(fault: &str, command: Command, path: &Path, named: &Path, phrase: &str) {
    let dir = path.parent().expect("parent");
    let before = dir.is_dir().then(|| list(dir));
    let outcome = run_to_end(command);
    assert!(outcome.status.success(), "the child panicked: {outcome}");
    let error = outcome.expect_error();
    assert!(error.contains(phrase), "{fault}: {error}");
    assert!(
        error.contains(&named.display().to_string()),
        "{fault}: {error}"
    );
    assert!(!path.exists(), "{fault}: a key was published");
    assert_eq!(
        dir.is_dir().then(|| list(dir)),
        before,
        "{fault}: files were left"
    );
    let message = error.replace(&named.display().to_string(), "PATH");
    figure("filesystem", format_args!("{fault}: {message}"));
}

#[test]
#[cfg(unix)]
fn a_key_directory_that_is_not_writable_is_a_clear_error() {
    let key = ReadOnlyKey::new(0o400, None);
    let missing = key.dir.join("other.key");
    let command = key.unprivileged(&Task::new(Action::Open, &missing).trace());
    assert_fails_cleanly(
        "key directory not writable",
        command,
        &missing,
        &key.dir,
        "cannot create temporary file",
    );
    let missing = key.dir.join("sub").join("endpoint.key");
    let command = key.unprivileged(&Task::new(Action::Open, &missing).trace());
    assert_fails_cleanly(
        "missing directory in a directory that is not writable",
        command,
        &missing,
        &key.dir,
        "cannot create directory",
    );
    assert_eq!(list(&key.dir), ["endpoint.key"]);
    // And the existing key beside them still opens, here too.
    assert_eq!(run_to_end(key.child(Action::Open)).expect_id(), key.id);
}

#[test]
fn a_parent_that_is_a_file_is_a_clear_error() -> anyhow::Result<()> {
    let dir = temp_dir();
    let file = dir.path().join("file");
    fs::write(&file, b"")?;
    let path = file.join("endpoint.key");
    assert_fails_cleanly(
        "parent path is a file",
        Task::new(Action::Open, &path).trace().command(),
        &path,
        &file,
        if cfg!(windows) {
            "not a directory"
        } else {
            "Not a directory"
        },
    );
    assert_eq!(list(dir.path()), ["file"]);
    Ok(())
}

// RLIMIT_FSIZE; Windows has no limit on the size of a process's files.
#[test]
#[cfg(unix)]
fn a_file_size_limit_is_a_clear_error_and_leaves_nothing() {
    // 0: not a byte may be written; 100: the write stops inside the 119-byte key.
    for limit in [0, 100] {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        let mut task = Task::new(Action::Open, &path).trace();
        task.file_size_limit = Some(limit);
        let command = task.command();
        assert_fails_cleanly(
            &format!("file size limit of {limit} bytes (RLIMIT_FSIZE)"),
            command,
            &path,
            dir.path(),
            "cannot write temporary file",
        );
    }
}

/// A tiny tmpfs, filled to the last byte; unmounted when dropped.
#[cfg(unix)]
struct FullFileSystem {
    dir: tempfile::TempDir,
}

#[cfg(unix)]
impl FullFileSystem {
    /// `None` when the machine does not let us mount one (not root, or no capability).
    fn mount() -> Option<Self> {
        let dir = temp_dir();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            return None;
        }
        let full = Self { dir };
        let mut filler = fs::File::create(full.dir.path().join("filler")).expect("filler");
        let err =
            io::copy(&mut io::repeat(0), &mut filler).expect_err("a 16 KiB file system fills up");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        Some(full)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

#[cfg(unix)]
impl Drop for FullFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

// A tmpfs mounted by root.
#[test]
#[cfg(unix)]
fn a_full_file_system_is_a_clear_error_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: only root can mount a small file system to fill");
        return;
    }
    let Some(full) = FullFileSystem::mount() else {
        eprintln!("skipped: this machine does not allow mounting a tmpfs");
        return;
    };
    let path = full.path().join("endpoint.key");
    assert_fails_cleanly(
        "full file system (16 KiB tmpfs)",
        Task::new(Action::Open, &path).trace().command(),
        &path,
        &full.path(),
        "cannot write temporary file",
    );
    assert_eq!(list(&full.path()), ["filler"]);
}
