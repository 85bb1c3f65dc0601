//! Guarantee 9: no other local user can replace, plant or stall an identity. Before a key
//! is read or created, every directory above it, every link on the way and the key file
//! must belong to this user or root and be writable by no one else (a sticky directory
//! and the process's own groups excepted), or the open is refused with the path, what was
//! found and the fix. The layouts real deployments use keep working.
//!
//! The attacks run as real second users: `nobody` attacks, a service runs as
//! [`SERVICE_USER`] where it must not be root, and [`SHARED_GROUP`] is a group (a pod's
//! `fsGroup`) that a directory can be shared through. They need root to set up.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
};

use iroh::SecretKey;
use iroh_identity::{Error, KeyFormat, PathKind, TrustProblem, encode_key, load_key};

use crate::campaigns::figure;
use crate::support::{
    NOBODY, SERVICE_USER, SHARED_GROUP, Site, builder,
    child::{self, Action, Outcome, Task, run_to_end},
    identity_of, known_key, list, make_dir,
    process::Process,
    shell_as, temp_dir, write_private,
};

/// The attacker's key: one whose secret the attacker knows.
fn attackers_key() -> SecretKey {
    SecretKey::from_bytes(&std::array::from_fn(|i| 0xa7 ^ i as u8))
}

/// Writes the attacker's key at `path` as the attacker (`nobody`, in `groups`) would.
fn plant_key(path: &Path, groups: &[u32]) {
    let hex = String::from_utf8(encode_key(&attackers_key(), KeyFormat::Hex).to_vec())
        .expect("hex is UTF-8");
    shell_as(
        NOBODY,
        groups,
        &format!(
            "umask 077; printf '%s' '{}' > '{}'",
            hex.trim(),
            path.display()
        ),
    );
}

fn skip_unless_root() -> bool {
    crate::support::skip_unless_root("act as several users")
}

/// Fails unless `err` is an untrusted-path error about `path` with `problem`, and its
/// message names both paths, the owner and mode found, and the fix.
fn assert_untrusted(err: &Error, key: &Path, path: &Path, problem: TrustProblem, fix: &str) {
    let Error::UntrustedPath {
        key: refused_key,
        path: refused,
        problem: found,
        owner,
        ..
    } = err
    else {
        panic!("not an untrusted path: {err:?}");
    };
    assert_eq!(
        (refused_key.as_path(), refused.as_path()),
        (key, path),
        "{err}"
    );
    assert_eq!(*found, problem, "{err}");
    let owner = owner.expect("unix names the owner and mode");
    let message = err.to_string();
    assert!(!message.contains("chown"), "{message}");
    for part in [
        path.display().to_string(),
        format!("owner uid {}", owner.uid),
        format!("mode {:04o}", owner.mode),
        fix.to_owned(),
    ] {
        assert!(
            message.contains(&part),
            "{part:?} is missing from: {message}"
        );
    }
}

/// What a child reported, which must be an error containing all of `parts`.
fn assert_child_refused(outcome: &Outcome, parts: &[&str]) {
    let error = outcome.expect_error();
    for part in parts {
        assert!(error.contains(part), "{part:?} is missing from: {error}");
    }
}

#[test]
fn a_directory_planted_by_another_user_with_their_key_is_refused() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    // /tmp-like: everyone may add names. The attacker makes the directory the victim
    // will use and puts a key in it whose secret they know.
    let site = Site::new();
    let shared = site.path("shared");
    make_dir(&shared, 0, 0, 0o1777);
    let dir = shared.join("app");
    shell_as(NOBODY, &[], &format!("mkdir -m 0755 '{}'", dir.display()));
    let key = dir.join("endpoint.key");
    plant_key(&key, &[]);
    let planted = fs::read(&key)?;

    let err = identity_of(&key).expect_err("root must not take the planted key");
    let fix = format!("if you did not put {} there, remove it", dir.display());
    assert_untrusted(&err, &key, &dir, TrustProblem::OtherOwner { user: 0 }, &fix);
    let outcome = run_to_end(site.child(&Task::new(Action::Open, &key), SERVICE_USER, &[]));
    assert_child_refused(
        &outcome,
        &[&dir.display().to_string(), "belongs to uid 65534"],
    );
    assert_eq!(fs::read(&key)?, planted, "the attacker's file was changed");
    attack("a directory with a key planted by nobody", &err, &site);
    Ok(())
}

/// Prints what an attack met, for RELIABILITY.md, with the test's paths shortened.
fn attack(name: &str, err: &dyn std::fmt::Display, site: &Site) {
    let message = err
        .to_string()
        .replace(&site.root.path().display().to_string(), "…");
    figure("local attacker", format_args!("{name}: refused: {message}"));
}

#[test]
fn a_key_or_link_planted_in_a_sticky_directory_is_refused() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    // The key directly in a sticky directory, where others may add names: the attacker
    // plants the key file itself, or a link to one of theirs, before the first start.
    let site = Site::new();
    let shared = site.path("shared");
    make_dir(&shared, 0, 0, 0o1777);
    let key = shared.join("endpoint.key");
    plant_key(&key, &[]);
    let err = identity_of(&key).expect_err("a key of nobody's");
    assert_untrusted(
        &err,
        &key,
        &key,
        TrustProblem::OtherOwner { user: 0 },
        "remove it",
    );

    let theirs = shared.join("theirs.key");
    shell_as(
        NOBODY,
        &[],
        &format!("mv '{}' '{}'", key.display(), theirs.display()),
    );
    shell_as(
        NOBODY,
        &[],
        &format!("ln -s '{}' '{}'", theirs.display(), key.display()),
    );
    attack("a key planted by nobody in a sticky directory", &err, &site);
    let err = identity_of(&key).expect_err("a link of nobody's");
    assert!(
        matches!(
            err,
            Error::UntrustedPath {
                kind: PathKind::SymbolicLink,
                ..
            }
        ),
        "{err:?}"
    );
    assert_untrusted(
        &err,
        &key,
        &key,
        TrustProblem::OtherOwner { user: 0 },
        "remove it",
    );
    attack(
        "a link planted by nobody in a sticky directory",
        &err,
        &site,
    );
    Ok(())
}

#[test]
fn a_key_another_user_can_replace_is_refused_before_it_is_read() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    // A directory others may write (mode 0777, a misconfigured volume), and one a group
    // the process is not in may write: the victim's key was there first, the attacker
    // swaps it for one of theirs.
    let site = Site::new();
    for (name, gid, mode, attacker_groups, problem, fix) in [
        (
            "open",
            0,
            0o777,
            vec![],
            TrustProblem::WritableByOthers,
            "chmod o-w",
        ),
        (
            "group",
            SHARED_GROUP,
            0o770,
            vec![SHARED_GROUP],
            TrustProblem::WritableByGroup,
            "chmod g-w",
        ),
    ] {
        let dir = site.path(name);
        make_dir(&dir, 0, 0, 0o700);
        let key = dir.join("endpoint.key");
        identity_of(&key)?;
        std::os::unix::fs::chown(&dir, Some(0), Some(gid))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
        let theirs = dir.join(".theirs");
        plant_key(&theirs, &attacker_groups);
        shell_as(
            NOBODY,
            &attacker_groups,
            &format!("mv -f '{}' '{}'", theirs.display(), key.display()),
        );
        let err = identity_of(&key).expect_err("the swapped key must not be read");
        assert_untrusted(
            &err,
            &key,
            &dir,
            problem,
            &format!("{fix} {}", dir.display()),
        );
        attack(
            &format!("the key swapped by nobody ({name} directory)"),
            &err,
            &site,
        );
    }
    Ok(())
}

#[test]
fn a_group_writable_directory_is_trusted_only_by_members_of_its_group() {
    if skip_unless_root() {
        return;
    }
    // A Kubernetes volume with `fsGroup`: the directory is root's, group SHARED_GROUP,
    // mode 2775, and the pod's user has that group among its supplementary groups.
    let site = Site::new();
    let volume = site.path("volume");
    make_dir(&volume, 0, SHARED_GROUP, 0o2775);
    let key = volume.join("identity").join("endpoint.key");
    let first = run_to_end(site.child(
        &Task::new(Action::Open, &key),
        SERVICE_USER,
        &[SHARED_GROUP],
    ));
    let id = first.expect_id().to_owned();
    let again = run_to_end(site.child(
        &Task::new(Action::Open, &key),
        SERVICE_USER,
        &[SHARED_GROUP],
    ));
    assert_eq!(again.expect_id(), id);
    let metadata = fs::metadata(&key).expect("the key");
    assert_eq!(
        (metadata.uid(), metadata.mode() & 0o7777),
        (SERVICE_USER, 0o600)
    );

    // Not a member: the same directory is someone else's to write.
    let outsider = run_to_end(site.child(&Task::new(Action::Open, &key), NOBODY, &[]));
    assert_child_refused(
        &outsider,
        &[
            &volume.display().to_string(),
            &format!("group {SHARED_GROUP}, which this process is not a member of"),
            "chmod g-w",
        ],
    );
    attack(
        "a group directory opened by a user outside the group",
        &outsider.expect_error(),
        &site,
    );
}

/// A Kubernetes secret volume as the kubelet lays it out: the mount (`1777`), a
/// timestamped directory holding the files, a `..data` link to it, and for each key a
/// link `NAME -> ..data/NAME`. Returns the path the pod reads.
fn secret_volume(site: &Site, name: &str, mode: u32, gid: u32) -> PathBuf {
    let mount = site.path(name);
    make_dir(&mount, 0, 0, 0o1777);
    let data = mount.join("..2026_11_26_10_00_00.123456789");
    make_dir(&data, 0, 0, 0o755);
    let file = data.join("endpoint.key");
    write_private(&file, &encode_key(&known_key(), KeyFormat::Pkcs8Pem));
    std::os::unix::fs::chown(&file, Some(0), Some(gid)).expect("chown");
    fs::set_permissions(&file, fs::Permissions::from_mode(mode)).expect("chmod");
    symlink("..2026_11_26_10_00_00.123456789", mount.join("..data")).expect("symlink");
    let key = mount.join("endpoint.key");
    symlink("..data/endpoint.key", &key).expect("symlink");
    key
}

#[test]
fn a_kubernetes_secret_works_and_its_default_mode_is_refused_to_root() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let site = Site::new();
    let id = known_key().public().to_string();
    // The default mode, 0644, read by the pod's non-root user.
    let default = secret_volume(&site, "default", 0o644, 0);
    assert_eq!(
        run_to_end(site.child(&Task::new(Action::Identity, &default), SERVICE_USER, &[]))
            .expect_id(),
        id
    );
    // The same, read by root: exposed to every user, and chmod would not last.
    let err = identity_of(&default).expect_err("0644 to root");
    assert!(
        matches!(
            err,
            Error::InsecurePermissions {
                mode: 0o644,
                kubernetes_secret: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("defaultMode: 0400"), "{err}");
    // `defaultMode: 0400`, read by root.
    let private = secret_volume(&site, "private", 0o400, 0);
    assert_eq!(identity_of(&private)?.to_string(), id);
    // `fsGroup` with `defaultMode: 0440`, read by a member of the group.
    let group = secret_volume(&site, "group", 0o440, SHARED_GROUP);
    assert_eq!(
        run_to_end(site.child(
            &Task::new(Action::Identity, &group),
            SERVICE_USER,
            &[SHARED_GROUP]
        ))
        .expect_id(),
        id
    );
    Ok(())
}

#[test]
fn a_key_under_tmp_in_a_directory_of_ones_own_works() {
    let tmp = std::env::temp_dir();
    let mode = fs::metadata(&tmp).expect("the temporary directory").mode() & 0o7777;
    assert_eq!(mode, 0o1777, "{} is not a shared /tmp", tmp.display());
    // As the user running the tests (root, in CI) ...
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    let id = identity_of(&key).expect("a key under /tmp");
    assert_eq!(identity_of(&key).expect("again"), id);
    if skip_unless_root() {
        return;
    }
    // ... and as a service user, in a directory of its own.
    let site = Site::new();
    let own = tmp.join(format!("iroh-identity-{}", crate::support::random_u64()));
    make_dir(&own, SERVICE_USER, SERVICE_USER, 0o700);
    let key = own.join("endpoint.key");
    let first = run_to_end(site.child(&Task::new(Action::Open, &key), SERVICE_USER, &[]));
    let again = run_to_end(site.child(&Task::new(Action::Open, &key), SERVICE_USER, &[]));
    let _ = fs::remove_dir_all(&own);
    assert_eq!(again.expect_id(), first.expect_id());
}

#[test]
fn a_key_of_another_user_is_refused_whatever_its_mode() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    for mode in [0o600, 0o644] {
        let dir = temp_dir();
        let key = dir.path().join("endpoint.key");
        write_private(&key, &known_key().to_bytes());
        fs::set_permissions(&key, fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY))?;
        let err = identity_of(&key).expect_err("nobody's key");
        assert_untrusted(
            &err,
            &key,
            &key,
            TrustProblem::OtherOwner { user: 0 },
            "remove it",
        );
    }
    // Root's own private key, read by root.
    let dir = temp_dir();
    let key = dir.path().join("endpoint.key");
    write_private(&key, &known_key().to_bytes());
    assert_eq!(load_key(&key)?.public(), known_key().public());
    Ok(())
}

#[tokio::test]
async fn allow_insecure_permissions_turns_the_checks_off() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let site = Site::new();
    let dir = site.path("theirs");
    make_dir(&dir, NOBODY, NOBODY, 0o777);
    let key = dir.join("endpoint.key");
    plant_key(&key, &[]);
    let strict = builder(&key).bind().await;
    assert!(
        matches!(strict, Err(Error::UntrustedPath { .. })),
        "{strict:?}"
    );
    let endpoint = builder(&key)
        .allow_insecure_permissions(true)
        .bind()
        .await?;
    assert_eq!(endpoint.id(), attackers_key().public());
    endpoint.close().await;
    Ok(())
}

#[test]
fn temporary_names_cannot_be_taken_in_advance() {
    if skip_unless_root() {
        return;
    }
    // The key directly in a sticky directory. The attacker creates every temporary name
    // of the old scheme (`.endpoint.key.tmp-PID-0` to `-100`) for the victim's process
    // before it creates its key: files the victim may not remove.
    let site = Site::new();
    let shared = site.path("shared");
    make_dir(&shared, 0, 0, 0o1777);
    let key = shared.join("endpoint.key");
    let task = Task::new(Action::Identity, &key).start_in(std::time::Duration::from_millis(500));
    let mut victim = site.child(&task, SERVICE_USER, &[]);
    let victim = Process::start(&mut victim);
    let pid = victim.pid();
    shell_as(
        NOBODY,
        &[],
        &format!(
            "cd '{}' && for i in $(seq 0 100); do : > .endpoint.key.tmp-{pid}-$i; done",
            shared.display()
        ),
    );
    let outcome = child::outcome(victim);
    outcome.expect_id();
    assert_eq!(fs::metadata(&key).expect("the key").uid(), SERVICE_USER);
    assert_eq!(list(&shared).len(), 102, "the attacker's files and the key");
    figure(
        "local attacker",
        format_args!("101 temporary names of the old scheme taken in advance: the key was created"),
    );
}

#[test]
fn a_key_stored_in_a_directory_that_cannot_be_read_is_reported_as_stored() {
    if skip_unless_root() {
        return;
    }
    // Mode 0300: the owner may create and open files in it, but not list or sync it.
    let site = Site::new();
    let dir = site.path("drop-box");
    make_dir(&dir, SERVICE_USER, SERVICE_USER, 0o300);
    let key = dir.join("endpoint.key");
    let first = run_to_end(site.child(&Task::new(Action::Open, &key).trace(), SERVICE_USER, &[]));
    let id = first.expect_id().to_owned();
    assert!(
        first
            .stderr
            .contains("the key file was stored, but its directory cannot be synced"),
        "{first}"
    );
    assert_eq!(
        run_to_end(site.child(&Task::new(Action::Open, &key), SERVICE_USER, &[])).expect_id(),
        id
    );
}

#[test]
fn a_relative_home_or_data_directory_is_an_error_not_a_key_in_the_current_directory() {
    for (variable, relative_home) in [("HOME", true), ("XDG_DATA_HOME", false)] {
        let (cwd, home) = (temp_dir(), temp_dir());
        let mut task = Task::new(Action::Open, "unused");
        task.default_location = true;
        let mut command = task.command();
        command.current_dir(cwd.path());
        if relative_home {
            command
                .env("HOME", "relative-home")
                .env_remove("XDG_DATA_HOME");
        } else {
            command
                .env("HOME", home.path())
                .env("XDG_DATA_HOME", "relative-data");
        }
        let outcome = run_to_end(command);
        assert_child_refused(
            &outcome,
            &[&format!("{variable} is a relative path"), "absolute"],
        );
        assert!(
            list(cwd.path()).is_empty(),
            "{variable}: created in the current directory"
        );
        assert!(
            list(home.path()).is_empty(),
            "{variable}: created in the home directory"
        );
    }
}

#[test]
fn a_key_path_that_names_a_directory_is_an_error_and_nothing_is_created() {
    let dir = temp_dir();
    for path in [
        dir.path().join("new").join("endpoint.key/"),
        dir.path().join("new").join("endpoint.key/."),
    ] {
        let err = identity_of(&path).expect_err("a directory's path");
        assert!(
            crate::support::child::chain(&err).contains("a key path must name a file"),
            "{err:?}"
        );
    }
    assert!(list(dir.path()).is_empty(), "something was created");
}

#[test]
fn a_key_name_too_long_for_its_temporary_file_is_a_clear_error() -> anyhow::Result<()> {
    let dir = temp_dir();
    let longest = dir.path().join("k".repeat(233));
    identity_of(&longest)?;
    for len in [234, 250] {
        let key = dir.path().join("missing").join("k".repeat(len));
        let err = identity_of(&key).expect_err("too long");
        assert!(
            matches!(err, Error::NameTooLong { len: found, max: 233, .. } if found == len),
            "{err:?}"
        );
        assert!(err.to_string().contains("choose a shorter name"), "{err}");
        assert_eq!(list(dir.path()), ["k".repeat(233)], "something was created");
    }
    Ok(())
}

#[test]
#[cfg(feature = "cli")] // it runs the key tool beside the library
fn a_lock_held_on_the_key_directory_delays_creation_only_by_the_lock_wait() {
    if skip_unless_root() {
        return;
    }
    // Another user holds a lock on the shared directory, for as long as it likes. The
    // lock only keeps creators in turn: after the wait, the key is created without it.
    let site = Site::new();
    let shared = site.path("shared");
    make_dir(&shared, 0, 0, 0o1777);
    let mut holder = std::process::Command::new("flock");
    holder
        .args([
            "--exclusive",
            "--no-fork",
            &shared.display().to_string(),
            "sleep",
            "60",
        ])
        .stdout(std::process::Stdio::null());
    crate::support::as_user(&mut holder, NOBODY, &[]);
    let holder = Process::start(&mut holder);
    let locked = std::time::Instant::now();
    while !lock_is_held(&shared) {
        assert!(
            locked.elapsed() < std::time::Duration::from_secs(5),
            "flock took no lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let key = shared.join("endpoint.key");
    let open = Task::new(Action::Open, &key)
        .lock_wait_ms(300)
        .trace()
        .command();
    let start = std::time::Instant::now();
    let opened = child::run_within(open, std::time::Duration::from_secs(20));
    let took_open = start.elapsed();
    opened.expect_id();
    assert!(
        opened.stderr.contains("creating the key without the lock"),
        "{opened}"
    );

    // An open that waits for ever for its identity, and the key tool (the default
    // wait), side by side: both wait for the directory lock 5 s at most.
    let unbounded = Process::start(
        &mut Task::new(Action::Open, shared.join("unbounded.key"))
            .lock_wait_ms(u64::MAX)
            .command(),
    );
    let generated = shared.join("generated.key");
    let start = std::time::Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iroh-identity"))
        .args(["generate", &generated.display().to_string()])
        .output()
        .expect("run iroh-identity");
    let took_generate = start.elapsed();
    let unbounded = child::outcome(unbounded);
    let took_unbounded = start.elapsed();
    drop(holder);
    assert!(output.status.success(), "{output:?}");
    assert!(generated.exists());
    unbounded.expect_id();
    assert!(
        took_unbounded < std::time::Duration::from_secs(9),
        "an open with an unbounded lock wait took {took_unbounded:?}"
    );
    assert!(
        took_open < std::time::Duration::from_secs(3),
        "open took {took_open:?}"
    );
    let wait = iroh_identity::DEFAULT_LOCK_WAIT;
    assert!(
        took_generate >= wait && took_generate < wait + std::time::Duration::from_secs(3),
        "generate took {took_generate:?}"
    );
    figure(
        "local attacker",
        format_args!(
            "a lock held by nobody on the key's directory: open (lock wait 300 ms) created \
             the key in {took_open:?}, `iroh-identity generate` in {took_generate:?}, an open \
             waiting for ever for its identity in {took_unbounded:?}"
        ),
    );
}

/// Whether some process holds a lock on `dir` now.
#[cfg(feature = "cli")]
fn lock_is_held(dir: &Path) -> bool {
    let handle = fs::File::open(dir).expect("open the directory");
    match handle.try_lock() {
        Ok(()) => false,
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(err)) => panic!("{err}"),
    }
}

/// A kernel setting changed for one test, and set back when dropped.
struct Sysctl {
    path: PathBuf,
    was: String,
}

impl Sysctl {
    fn set(name: &str, value: &str) -> Self {
        let path = Path::new("/proc/sys").join(name.replace('.', "/"));
        let was = fs::read_to_string(&path).expect("read the setting");
        fs::write(&path, value).expect("change the setting");
        Self { path, was }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, self.was.trim());
    }
}

#[test]
fn a_hard_link_planted_in_a_sticky_directory_is_refused() {
    if skip_unless_root() {
        return;
    }
    // Where `fs.protected_hardlinks` is 0 (an older kernel, some containers), a user may
    // link any file it can reach, even one it cannot read. The attacker links the
    // victim's other identity where the victim's service looks for its key, before its
    // first start: every check of owner and mode passes, and the service would run an
    // identity the attacker chose.
    let _unprotected = Sysctl::set("fs.protected_hardlinks", "0");
    let site = Site::new();
    let shared = site.path("shared");
    make_dir(&shared, 0, 0, 0o1777);
    let home = site.path("home");
    make_dir(&home, SERVICE_USER, SERVICE_USER, 0o711);
    let other = home.join("other.key");
    write_private(&other, &encode_key(&attackers_key(), KeyFormat::Pkcs8Pem));
    std::os::unix::fs::chown(&other, Some(SERVICE_USER), Some(SERVICE_USER)).expect("chown");
    let key = shared.join("endpoint.key");
    shell_as(
        NOBODY,
        &[],
        &format!("ln '{}' '{}'", other.display(), key.display()),
    );
    let refused = run_to_end(site.child(&Task::new(Action::Open, &key), SERVICE_USER, &[]));
    assert_child_refused(
        &refused,
        &["2 names (hard links)", &key.display().to_string()],
    );
    attack(
        "a hard link planted in a sticky directory",
        &refused.expect_error(),
        &site,
    );
    // A hard link the user made in a private directory is the user's business.
    let private = home.join("backup.key");
    fs::hard_link(&other, &private).expect("link");
    run_to_end(site.child(&Task::new(Action::Open, &private), SERVICE_USER, &[])).expect_id();
}
