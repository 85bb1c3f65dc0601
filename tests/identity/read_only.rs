//! Guarantee 6: when the key exists nothing has to be written, so a read-only key file
//! and directory (a Kubernetes secret mount) work, lock and stable addressing included.
//! The campaigns use [`ReadOnlyKey`] for an unreadable key and a missing key in a
//! read-only directory.
//!
//! Root may write anywhere, so under root the child processes run as `nobody`, for whom
//! the modes below really mean read-only.

use std::{fs, os::unix::fs::PermissionsExt, path::PathBuf, process::Command};

use crate::support::{
    NOBODY, Snapshot, as_user,
    child::{Action, Holder, Task, run_to_end},
    is_root, new_key_file, runnable_by_others, temp_dir,
};

/// A key in a directory that the child cannot write to.
pub(crate) struct ReadOnlyKey {
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
    pub(crate) fn new(key_mode: u32, key_owner: Option<u32>) -> Self {
        let root = temp_dir();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = root.path().join("secret");
        fs::create_dir(&dir).expect("mkdir");
        let path = dir.join("endpoint.key");
        let id = new_key_file(&path).public().to_string();
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

    /// A child doing `task`, as `nobody` when the tests run as root.
    pub(crate) fn unprivileged(&self, task: &Task) -> Command {
        let mut command = task.command_at(&self.exe);
        if is_root() {
            as_user(&mut command, NOBODY, &[]);
        }
        command
    }

    /// The child doing `action` on the key.
    pub(crate) fn child(&self, action: Action) -> Command {
        self.unprivileged(&Task::new(action, &self.path))
    }

    /// What a write to the directory or the key would change.
    pub(crate) fn state(&self) -> (Snapshot, Snapshot) {
        (Snapshot::of(&self.dir), Snapshot::of(&self.path))
    }
}

impl Drop for ReadOnlyKey {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn a_read_only_key_in_a_read_only_directory_opens_and_nothing_is_written() {
    let key = ReadOnlyKey::new(0o400, None);
    let before = key.state();
    let tasks = [
        Task::new(Action::Identity, &key.path),
        Task::new(Action::Open, &key.path),
        // The ports cannot be remembered here: that is no reason to fail.
        Task::new(Action::Open, &key.path).all_interfaces(),
    ];
    for task in &tasks {
        let outcome = run_to_end(key.unprivileged(task));
        assert_eq!(outcome.expect_id(), key.id, "{task:?}");
    }
    assert_eq!(key.state(), before, "something was written");
}

#[test]
fn the_lock_works_in_a_read_only_directory() -> anyhow::Result<()> {
    let key = ReadOnlyKey::new(0o400, None);
    let holder = Holder::start(key.child(Action::Hold));
    assert_eq!(holder.id, key.id);
    let outcome = run_to_end(key.unprivileged(&Task::new(Action::Open, &key.path).lock_wait_ms(0)));
    assert!(outcome.expect_error().contains("in use"), "{outcome:?}");
    holder.kill();
    let outcome = run_to_end(key.child(Action::Open));
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
    let outcome = run_to_end(key.child(Action::Open));
    assert_eq!(outcome.expect_id(), key.id);
}
