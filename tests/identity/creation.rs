//! Guarantees 3 and 5 at creation: a new key appears alone, temporary files of killed runs
//! are removed, and modes are 0600 / 0700 whatever the umask. Kills and faults during
//! creation are campaigns (`campaigns::kill`, `campaigns::filesystem`).

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use iroh_identity::{Error, encode_key, load_key, load_or_generate, store_new_key};

use crate::support::{
    ALL_FORMATS,
    child::{self, run_to_end},
    list, temp_dir,
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
fn a_key_from_elsewhere_is_stored_in_any_format_and_never_over_another() -> anyhow::Result<()> {
    let key = iroh::SecretKey::generate();
    for format in ALL_FORMATS {
        let dir = temp_dir();
        let path = dir.path().join("new").join("endpoint.key");
        store_new_key(&path, &key, format)?;
        assert_eq!(load_key(&path)?.public(), key.public(), "{format}");
        assert_eq!(fs::read(&path)?, *encode_key(&key, format), "{format}");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(list(&dir.path().join("new")), ["endpoint.key"]);

        let other = iroh::SecretKey::generate();
        let err = store_new_key(&path, &other, format).expect_err("a key is there");
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(
            load_key(&path)?.public(),
            key.public(),
            "{format} was replaced"
        );
    }
    Ok(())
}

#[test]
fn load_key_never_creates_a_key() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let err = load_key(&path).expect_err("there is no key");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(list(dir.path()).is_empty());
}
