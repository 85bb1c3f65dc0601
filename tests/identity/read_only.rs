//! Guarantee 6: when the key exists nothing has to be written, so a read-only key file
//! and directory (a Kubernetes secret mount) work, lock and stable addressing included. The campaigns use
//! [`ReadOnlyKey`] for an unreadable key and a missing key in a read-only directory.
//!
//! Root may write anywhere, so under root the child processes run as `nobody`, for whom
//! the modes below really mean read-only.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use iroh_identity::load_or_generate;

use crate::support::{
    NOBODY,
    child::{self, Holder, run_to_end},
    is_root, list, runnable_by_others, temp_dir,
};

/// A key in a directory that the child cannot write to.
pub struct ReadOnlyKey {
    // Held for its clean-up at the end of the test.
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    pub path: PathBuf,
    pub id: String,
    /// This test binary, where the child's user can run it.
    exe: PathBuf,
}

impl ReadOnlyKey {
    /// `key_mode` and `key_owner` (`None`: the child's user) say how the secret is mounted.
    pub fn new(key_mode: u32, key_owner: Option<u32>) -> Self {
        let root = temp_dir();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = root.path().join("secret");
        fs::create_dir(&dir).expect("mkdir");
        let path = dir.join("endpoint.key");
        let id = load_or_generate(&path).expect("key").public().to_string();
        fs::set_permissions(&path, fs::Permissions::from_mode(key_mode)).expect("chmod");
        if is_root() {
            let owner = key_owner.unwrap_or(NOBODY);
            std::os::unix::fs::chown(&path, Some(owner), Some(owner)).expect("chown");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("chmod");
        let exe = runnable_by_others(root.path());
        Self {
            _root: root,
            dir,
            path,
            id,
            exe,
        }
    }

    /// A child that runs as `nobody` when the tests run as root.
    pub fn unprivileged(&self, action: &str, path: &Path) -> Command {
        let mut command = child::command_at(&self.exe, action, path);
        if is_root() {
            command.uid(NOBODY).gid(NOBODY);
        }
        command
    }

    /// What a write to the directory or the file would change.
    pub fn state(&self) -> (Vec<String>, fs::Metadata, Vec<u8>) {
        (
            list(&self.dir),
            fs::metadata(&self.dir).expect("dir metadata"),
            fs::read(&self.path).expect("read key"),
        )
    }
}

impl Drop for ReadOnlyKey {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755));
    }
}

pub fn same_state(
    a: &(Vec<String>, fs::Metadata, Vec<u8>),
    b: &(Vec<String>, fs::Metadata, Vec<u8>),
) -> bool {
    a.0 == b.0 && a.1.modified().ok() == b.1.modified().ok() && a.2 == b.2
}

#[test]
fn a_read_only_key_in_a_read_only_directory_opens_and_nothing_is_written() {
    let key = ReadOnlyKey::new(0o400, None);
    let before = key.state();
    for (action, stable) in [("key", false), ("open", false), ("open", true)] {
        let mut command = key.unprivileged(action, &key.path);
        if stable {
            // The ports cannot be remembered here: that is no reason to fail.
            command.env(child::STABLE, "1");
        }
        let outcome = run_to_end(command);
        assert_eq!(outcome.expect_id(), key.id, "{action}, stable {stable}");
    }
    assert!(same_state(&before, &key.state()), "something was written");
}

#[test]
fn the_lock_works_in_a_read_only_directory() -> anyhow::Result<()> {
    let key = ReadOnlyKey::new(0o400, None);
    let holder = Holder::start(key.unprivileged("hold", &key.path));
    assert_eq!(holder.id, key.id);
    let mut second = key.unprivileged("open", &key.path);
    second.env(child::LOCK_WAIT_MS, "0");
    let outcome = run_to_end(second);
    assert!(outcome.expect_error().contains("in use"), "{outcome:?}");
    holder.kill();
    let outcome = run_to_end(key.unprivileged("open", &key.path));
    assert_eq!(outcome.expect_id(), key.id);
    Ok(())
}

#[test]
fn a_root_owned_world_readable_secret_opens_for_another_user() {
    if !is_root() {
        eprintln!("skipped: only root can mount a secret owned by root for another user");
        return;
    }
    let key = ReadOnlyKey::new(0o644, Some(0));
    let outcome = run_to_end(key.unprivileged("open", &key.path));
    assert_eq!(outcome.expect_id(), key.id);
}
