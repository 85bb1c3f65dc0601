//! Guarantees 3 and 5 at creation: a new key appears alone, temporary files of killed runs
//! are removed, and modes are 0600 / 0700 whatever the umask. Kills and faults during
//! creation are campaigns (`campaigns::kill`, `campaigns::filesystem`).

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::{fs, path::Path};

use iroh_identity::{Error, Identity, KeySource, encode_key, load_key, store_new_key};

use crate::support::{ALL_FORMATS, identity_of, list, temp_dir};
#[cfg(unix)]
use crate::support::{
    SERVICE_USER, as_user,
    child::{Action, Task, run_to_end},
    is_root, make_dir, runnable_by_others,
};

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

#[test]
fn creation_leaves_only_the_key_file() -> anyhow::Result<()> {
    let dir = temp_dir();
    identity_of(&dir.path().join("endpoint.key"))?;
    assert_eq!(list(dir.path()), ["endpoint.key"]);
    Ok(())
}

#[test]
fn temporary_files_of_killed_runs_are_removed_by_the_next_creation() -> anyhow::Result<()> {
    let dir = temp_dir();
    // What a run killed between creating its temporary file and publishing it leaves.
    for stale in [
        ".endpoint.key.tmp-00000000deadbeef",
        ".endpoint.key.tmp-77e3a1c0ffee0042",
    ] {
        fs::write(dir.path().join(stale), b"-----BEGIN PRIVATE KEY-----\nMFEC")?;
    }
    fs::write(dir.path().join("unrelated.tmp-1-0"), b"not ours")?;
    // Files of the user's that only look alike stay: a backup of an old identity.
    let backup = dir.path().join(".endpoint.key.tmp-backup-of-old-identity");
    let old_key = crate::support::new_key_file(&backup);
    fs::write(
        dir.path().join(".endpoint.key.tmp-4242-0"),
        b"an old version's name",
    )?;
    identity_of(&dir.path().join("endpoint.key"))?;
    assert_eq!(
        list(dir.path()),
        [
            ".endpoint.key.tmp-4242-0",
            ".endpoint.key.tmp-backup-of-old-identity",
            "endpoint.key",
            "unrelated.tmp-1-0"
        ]
    );
    assert_eq!(iroh_identity::load_key(&backup)?.public(), old_key.public());
    Ok(())
}

#[test]
fn a_temporary_file_is_removed_only_when_no_writer_holds_it() -> anyhow::Result<()> {
    // A run killed while writing leaves its temporary file, unlocked; a process that is
    // writing one holds it locked, and a sweep must leave it alone.
    let dir = temp_dir();
    let abandoned = dir.path().join(".endpoint.key.tmp-0123456789abcdef");
    let in_use = dir.path().join(".endpoint.key.tmp-fedcba9876543210");
    fs::write(&abandoned, b"-----BEGIN PRIVATE KEY-----\nMFEC")?;
    fs::write(&in_use, b"-----BEGIN PRIVATE KEY-----\nMFEC")?;
    let writer = fs::File::open(&in_use)?;
    writer.lock()?;
    identity_of(&dir.path().join("endpoint.key"))?;
    assert_eq!(
        list(dir.path()),
        [".endpoint.key.tmp-fedcba9876543210", "endpoint.key"]
    );
    drop(writer);
    Ok(())
}

#[test]
fn missing_directories_are_created() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("a").join("b").join("endpoint.key");
    let id = identity_of(&path)?;
    assert_eq!(identity_of(&path)?, id);
    // Windows: `windows::what_the_crate_creates_reads_back_owner_only`.
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);
        assert_eq!(mode(&path), 0o600);
    }
    Ok(())
}

#[test]
#[cfg(unix)]
fn modes_are_0600_and_0700_whatever_the_umask() {
    for umask in ["000", "002", "022", "077", "277"] {
        let dir = temp_dir();
        let path = dir.path().join("new").join("nested").join("endpoint.key");
        let mut task = Task::new(Action::Identity, &path);
        task.umask = Some(u32::from_str_radix(umask, 8).expect("octal"));
        let outcome = task.run();
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
        #[cfg(unix)]
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
    let path = dir.path().join("missing").join("endpoint.key");
    let err = load_key(&path).expect_err("there is no key");
    assert!(
        matches!(&err, Error::NotFound { path: p } if *p == path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(list(dir.path()).is_empty());
}

#[tokio::test]
async fn without_create_if_missing_a_missing_key_is_an_error_and_nothing_is_created() {
    // A provisioned server whose secret volume did not mount, or whose path has a typo.
    let dir = temp_dir();
    let path = dir.path().join("secret-volume").join("endpoint.key");
    let open = |path: &Path| Identity::builder(path).create_if_missing(false);
    let err = open(&path).bind().await.expect_err("there is no key");
    assert!(
        matches!(&err, Error::NotFound { path: p } if *p == path),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "there is no key file at {}; nothing was created",
            path.display()
        )
    );
    let err = open(&path).open().await.expect_err("no key");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(list(dir.path()).is_empty(), "something was created");

    // Once the key is there, it opens.
    let key = dir.path().join("endpoint.key");
    store_new_key(
        &key,
        &iroh::SecretKey::generate(),
        iroh_identity::KeyFormat::Pkcs8Pem,
    )
    .expect("store");
    let identity = open(&key).open().await.expect("the key exists");
    assert_eq!(identity.source(), &KeySource::File { path: key });
}

#[test]
#[cfg(unix)]
fn a_umask_that_takes_the_owners_read_bit_leaves_no_directory_behind_it() {
    // Root reads any directory whatever its mode; the service user must do without.
    let root = temp_dir();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = root.path().join("home");
    if is_root() {
        make_dir(&home, SERVICE_USER, SERVICE_USER, 0o700);
    } else {
        fs::create_dir(&home).expect("mkdir");
    }
    let path = home.join("new").join("nested").join("endpoint.key");
    let mut task = Task::new(Action::Identity, &path);
    task.umask = Some(0o477);
    let mut command = task.command_at(&runnable_by_others(root.path()));
    if is_root() {
        as_user(&mut command, SERVICE_USER, &[]);
    }
    run_to_end(command).expect_id();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&home.join("new")), 0o700);
    assert_eq!(mode(&home.join("new").join("nested")), 0o700);
}
