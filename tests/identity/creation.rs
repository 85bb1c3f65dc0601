//! Guarantees 3 and 5 at creation: a new key appears whole or not at all, temporary files
//! do not pile up, and modes are 0600 / 0700 whatever the umask.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use iroh_identity::load_or_generate;

use crate::support::{
    child::{self, run_to_end},
    list, random_u64, temp_dir,
};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

#[test]
fn creation_leaves_only_the_key_file() -> anyhow::Result<()> {
    let dir = temp_dir();
    load_or_generate(dir.path().join("endpoint.key"))?;
    assert_eq!(list(dir.path()), ["endpoint.key"]);
    Ok(())
}

#[test]
fn temporary_files_of_killed_runs_are_removed_by_the_next_creation() -> anyhow::Result<()> {
    let dir = temp_dir();
    // What a run killed between creating its temporary file and publishing it leaves.
    for stale in [".endpoint.key.tmp-4242-0", ".endpoint.key.tmp-77-3"] {
        fs::write(dir.path().join(stale), b"-----BEGIN PRIVATE KEY-----\nMFEC")?;
    }
    fs::write(dir.path().join("unrelated.tmp-1-0"), b"not ours")?;
    load_or_generate(dir.path().join("endpoint.key"))?;
    assert_eq!(list(dir.path()), ["endpoint.key", "unrelated.tmp-1-0"]);
    Ok(())
}

#[test]
fn missing_directories_are_created() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("a").join("b").join("endpoint.key");
    let key = load_or_generate(&path)?;
    assert_eq!(load_or_generate(&path)?.public(), key.public());
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);
    assert_eq!(mode(&path), 0o600);
    Ok(())
}

#[test]
fn modes_are_0600_and_0700_whatever_the_umask() {
    for umask in ["000", "002", "022", "077", "277"] {
        let dir = temp_dir();
        let path = dir.path().join("new").join("nested").join("endpoint.key");
        let mut command = child::command("key", &path);
        command.env(child::UMASK, umask);
        let outcome = run_to_end(command);
        outcome.expect_id();
        assert_eq!(mode(&path), 0o600, "key file under umask {umask}");
        assert_eq!(
            mode(&dir.path().join("new")),
            0o700,
            "directory under umask {umask}"
        );
        assert_eq!(
            mode(path.parent().expect("parent")),
            0o700,
            "directory under umask {umask}"
        );
    }
}

#[test]
fn a_parent_that_is_a_file_is_an_error_naming_the_path() -> anyhow::Result<()> {
    let dir = temp_dir();
    fs::write(dir.path().join("file"), b"")?;
    let path = dir.path().join("file").join("endpoint.key");
    let err = load_or_generate(&path).expect_err("cannot create under a file");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(list(dir.path()), ["file"]);
    Ok(())
}

/// A bounded version of the kill campaign: children creating a key are SIGKILLed at
/// random instants. After each kill the path holds no key or a whole one, a key once
/// published never changes, and at most one temporary file is ever left.
#[test]
fn a_kill_at_any_instant_leaves_no_key_or_a_whole_one() -> anyhow::Result<()> {
    const KILLS: usize = 40;
    // How long a child takes to start and create a key here, to spread kills over it.
    let probe = temp_dir();
    let start = Instant::now();
    run_to_end(child::command("key", &probe.path().join("endpoint.key"))).expect_id();
    let span = start.elapsed().as_micros() as u64 * 5 / 4;

    let (mut whole, mut absent, mut episodes) = (0, 0, 0);
    let mut dir = temp_dir();
    let mut seen: Option<iroh::PublicKey> = None;
    for _ in 0..KILLS {
        let path = dir.path().join("endpoint.key");
        let mut child = child::command("key", &path).spawn()?;
        std::thread::sleep(Duration::from_micros(random_u64() % span));
        child.kill()?;
        child.wait()?;
        let leftovers = list(dir.path()).len() - usize::from(path.exists());
        assert!(
            leftovers <= 1,
            "temporary files pile up: {:?}",
            list(dir.path())
        );
        if !path.exists() {
            assert!(seen.is_none(), "a published key disappeared");
            absent += 1;
            continue;
        }
        // A whole key, and the same one as after the previous kill if there was one.
        let key = load_or_generate(&path)?.public();
        whole += 1;
        match seen.replace(key) {
            None => {}
            Some(before) => {
                assert_eq!(before, key, "the identity changed");
                // Seen twice: this path is settled; start again on an empty one.
                assert_eq!(list(dir.path()), ["endpoint.key"]);
                dir = temp_dir();
                seen = None;
                episodes += 1;
            }
        }
    }
    eprintln!(
        "{KILLS} kills over {span} µs: {whole} whole keys, {absent} without a key, {episodes} settled paths, 0 torn"
    );
    // Whatever the last kills left, the next run ends with the key alone.
    load_or_generate(dir.path().join("endpoint.key"))?;
    assert_eq!(list(dir.path()), ["endpoint.key"]);
    Ok(())
}
