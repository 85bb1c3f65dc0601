//! Guarantee 7 on one host against what the host and its other users do (R1–R5 of the
//! crate docs): every process that holds an identity's secret meets the same lock,
//! whatever its groups, environment or errors (R1); no other user can keep an identity
//! from opening or make it wait (R2); nothing an OS cleaner removes is a lock (R3);
//! nothing piles up per identity (R4). A killed holder lets go at once (R5) is
//! `campaigns::lock`.
//!
//! The attacks and mishaps run as real users (`useradd`, numeric users), real groups, the
//! real `systemd-tmpfiles` and a real GNOME Keyring. They need root.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use iroh::SecretKey;
use iroh_identity::{KeyFormat, encode_key};

use crate::campaigns::figure;
use crate::support::{
    Account, NOBODY, OTHER_USER, SERVICE_USER, SHARED_GROUP, Site,
    child::{Action, Holder, Task, run_to_end, run_within},
    make_dir, shell_as,
};

fn skip_unless_root() -> bool {
    crate::support::skip_unless_root("act as several users")
}

/// The variable the children take their key from, as services take `IROH_SECRET`.
const VARIABLE: &str = "TEST_IROH_SECRET";

/// A new key, given to children as the hex an `IROH_SECRET` holds.
struct Secret {
    key: SecretKey,
    hex: String,
}

impl Secret {
    fn new() -> Self {
        let key = SecretKey::generate();
        let hex = String::from_utf8(encode_key(&key, KeyFormat::Hex).to_vec()).expect("hex");
        Self {
            key,
            hex: hex.trim().to_owned(),
        }
    }

    /// A child of `site` doing `action` as `uid` with this key in [`VARIABLE`], waiting
    /// `wait_ms` for its identity.
    fn child(&self, site: &Site, uid: u32, action: Action, wait_ms: u64) -> Command {
        self.child_in(site, uid, uid, action, wait_ms)
    }

    /// The same, in the primary group `gid`.
    fn child_in(&self, site: &Site, uid: u32, gid: u32, action: Action, wait_ms: u64) -> Command {
        let mut task = Task::new(action, "/nonexistent/unused.key").lock_wait_ms(wait_ms);
        task.key_env = Some(VARIABLE.to_owned());
        let mut command = site.child_in(&task, uid, gid, &[]);
        command.env(VARIABLE, &self.hex);
        command
    }
}

/// The names of this crate's host locks that the process `pid` has now, as every user
/// can read them in `/proc/net/unix` (world-readable). The process's sockets tell which
/// lines are its, since other tests' holders are listed too; the attacker would squat
/// every name it sees.
fn lock_names_of(pid: u32) -> Vec<String> {
    let sockets: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the holder's descriptors")
        .flatten()
        .filter_map(|entry| fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix");
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| {
            fields
                .get(6)
                .is_some_and(|inode| sockets.iter().any(|own| own == inode))
        })
        .filter_map(|fields| fields.get(7)?.strip_prefix('@').map(str::to_owned))
        .filter(|name| name.starts_with("iroh-identity/"))
        .collect()
}

#[test]
fn one_user_in_two_group_sets_meets_one_lock() {
    if skip_unless_root() {
        return;
    }
    // A home the user shares with its own group (0775): a process in another primary
    // group (systemd's `Group=`, `sg`) does not trust it. Both still meet one lock.
    let site = Site::new();
    let account = Account::create("iroh-id-groups", &site.path("home"), 0o775);
    let secret = Secret::new();
    let child = |action, gid, wait_ms| {
        let mut command = secret.child_in(&site, account.uid, gid, action, wait_ms);
        command.env("HOME", &account.home);
        command
    };
    for (holding, other) in [(account.gid, SHARED_GROUP), (SHARED_GROUP, account.gid)] {
        let holder = Holder::start(child(Action::Hold, holding, 0));
        // Another environment too: nothing of it decides where the lock is.
        let mut second = child(Action::Open, other, 300);
        second
            .env("HOME", "/")
            .env("XDG_RUNTIME_DIR", "/nonexistent")
            .env("TMPDIR", "/var/tmp")
            .current_dir("/");
        let refused = run_to_end(second);
        let error = refused.expect_error();
        assert!(error.contains("is in use"), "{error}");
        assert!(error.contains(&holder.id), "{error}");
        drop(holder);
    }
}

#[test]
#[cfg(feature = "keyring")]
fn one_user_in_two_group_sets_creates_one_keychain_entry_and_runs_it_once() {
    if skip_unless_root() {
        return;
    }
    let site = Site::new();
    let account = Account::create("iroh-id-keychain", &site.path("home"), 0o775);
    let service = crate::support::secret_service::SecretService::start_as(account.uid);
    let rounds = crate::campaigns::size(8, 20);
    for round in 0..rounds {
        let entry = format!("round-{round}");
        let racers: Vec<_> = [account.gid, SHARED_GROUP]
            .into_iter()
            .map(|gid| {
                let task = Task::new(Action::Hold, "/nonexistent/unused.key")
                    .keychain(&entry, "endpoint")
                    .lock_wait_ms(300)
                    .start_in(Duration::from_millis(300));
                let mut command = site.child_in(&task, account.uid, gid, &[]);
                service.env(&mut command);
                command.env("HOME", &account.home);
                crate::support::process::Process::start(&mut command)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        use crate::support::child::{Outcome, outcome_within};

        let outcomes: Vec<Outcome> = racers
            .into_iter()
            .map(|racer| outcome_within(racer, Duration::ZERO))
            .collect();
        let ran: Vec<&str> = outcomes.iter().filter_map(Outcome::id).collect();
        assert_eq!(
            ran.len(),
            1,
            "round {round}: exactly one runs: {outcomes:#?}"
        );
        let stored = service.lookup(&entry, "endpoint").expect("an entry");
        let (stored, _) = iroh_identity::decode_key(&stored).expect("a key");
        assert_eq!(
            ran[0],
            stored.public().to_string(),
            "round {round}: what ran is what is stored"
        );
        // The other was told the identity is in use; or, if it came first to create the
        // entry, that the directory of the creation lock is not private to its group set
        // (the lock has no second place).
        let refused = outcomes
            .iter()
            .find_map(Outcome::error)
            .expect("the other was refused");
        assert!(
            refused.contains("is in use") || refused.contains("may be written by group"),
            "round {round}: {refused}"
        );
    }
    figure(
        "host lock",
        format_args!(
            "{rounds} rounds of two group sets on one empty keychain entry: one ran and \
             stored its key each time"
        ),
    );
}

#[test]
fn a_homeless_users_identity_opens_whatever_another_user_planted_in_tmp() {
    if skip_unless_root() {
        return;
    }
    // A user with no home in the user database (a container's numeric user). The old
    // host lock lived in `/tmp/iroh-identity-UID`, where another user could take the
    // name first and keep every identity of the user from opening.
    const HOMELESS: u32 = 61002;
    let site = Site::new();
    let planted = Path::new("/tmp/iroh-identity-61002");
    let _ = fs::remove_dir_all(planted);
    shell_as(
        NOBODY,
        &[],
        &format!("mkdir -m 777 '{}'", planted.display()),
    );
    let secret = Secret::new();
    let key = &secret.key;
    let holder = Holder::start(secret.child(&site, HOMELESS, Action::Hold, 0));
    assert_eq!(holder.id, key.public().to_string());
    // Two copies of one key file, each the user's: one runs, the other is told.
    let home = site.path("home");
    make_dir(&home, HOMELESS, HOMELESS, 0o700);
    let copy = home.join("endpoint.key");
    fs::write(&copy, encode_key(key, KeyFormat::Pkcs8Pem)).expect("write the copy");
    std::os::unix::fs::chown(&copy, Some(HOMELESS), Some(HOMELESS)).expect("chown");
    fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let refused = run_to_end(site.child(
        &Task::new(Action::Open, &copy).lock_wait_ms(200),
        HOMELESS,
        &[],
    ));
    assert!(refused.expect_error().contains("is in use"), "{refused}");
    drop(holder);
    assert!(
        fs::read_dir(planted).expect("list").next().is_none(),
        "nothing was put in the planted directory"
    );
    fs::remove_dir(planted).expect("clean up");
}

#[test]
fn another_user_squatting_the_locks_names_neither_stops_nor_delays_it() {
    if skip_unless_root() {
        return;
    }
    // The attacker reads each name a holder had from /proc/net/unix and binds it once the
    // holder is gone. The identity opens on the next name, at once; only when every name
    // is squatted does it fail, naming the squatter.
    let site = Site::new();
    let secret = Secret::new();
    let key = &secret.key;
    let victim = |action, wait_ms| secret.child(&site, SERVICE_USER, action, wait_ms);
    let mut squatters = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 0.. {
        let start = Instant::now();
        let outcome = run_within(victim(Action::Open, 5000), Duration::from_secs(20));
        let took = start.elapsed();
        if let Some(error) = outcome.error() {
            assert!(round >= 1, "it opened before any squatting: {outcome}");
            assert!(error.contains("uid 65534"), "{error}");
            assert!(error.contains("ss -xlp"), "{error}");
            assert!(took < Duration::from_secs(2), "the refusal took {took:?}");
            figure(
                "host lock",
                format_args!(
                    "the lock's names squatted one by one by another user as they were seen: \
                     opened {round} times, the slowest in {slowest:?}; then refused in \
                     {took:?}: {error}"
                ),
            );
            break;
        }
        assert_eq!(outcome.expect_id(), key.public().to_string());
        slowest = slowest.max(took);
        assert!(took < Duration::from_secs(2), "round {round} took {took:?}");
        assert!(
            round < 16,
            "never refused: the lock's names are not bounded"
        );
        // The attacker learns the name the holder listens on, and takes it after.
        let holder = Holder::start(victim(Action::Hold, 0));
        let seen = lock_names_of(holder.pid());
        drop(holder);
        assert!(!seen.is_empty(), "a holder's name is in /proc/net/unix");
        let squat = Task::new(Action::Squat { names: seen }, "/nonexistent");
        squatters.push(Holder::until_ready(site.child(&squat, NOBODY, &[])));
    }
}

#[test]
fn two_users_with_one_secret_are_kept_apart() {
    if skip_unless_root() {
        return;
    }
    // A holder of another user proves it knows the lock's key: it is a holder, not a
    // squatter, and the second user is told the identity is in use.
    let site = Site::new();
    let secret = Secret::new();
    let child = |uid, action, wait_ms| secret.child(&site, uid, action, wait_ms);
    let holder = Holder::start(child(SERVICE_USER, Action::Hold, 0));
    let refused = run_to_end(child(OTHER_USER, Action::Open, 300));
    let error = refused.expect_error();
    assert!(error.contains("is in use"), "{error}");
    assert!(error.contains(&format!("uid {SERVICE_USER}")), "{error}");
    drop(holder);
    run_to_end(child(OTHER_USER, Action::Open, 1000)).expect_id();
}

#[test]
fn the_os_cleaners_never_remove_a_held_lock() {
    if skip_unless_root() {
        return;
    }
    // What cleans behind a running service: systemd-tmpfiles ageing /tmp (which honours
    // `flock` only on directories), logind removing /run/user/UID at logout, a reboot
    // wiping /tmp. A user with no home, whose old lock was a file in /tmp.
    const HOMELESS: u32 = 61003;
    let site = Site::new();
    let secret = Secret::new();
    let child = |action, wait_ms| {
        let mut command = secret.child(&site, HOMELESS, action, wait_ms);
        command.env("XDG_RUNTIME_DIR", format!("/run/user/{HOMELESS}"));
        command
    };
    let holder = Holder::start(child(Action::Hold, 0));
    // Every file of the user's where cleaners look, made 20 days old, then aged out by the
    // real systemd-tmpfiles with Debian's and Fedora's rule for /tmp (10 days).
    let owned = files_of(HOMELESS);
    for path in &owned {
        let status = Command::new("touch")
            .args(["-h", "-d", "20 days ago"])
            .arg(path)
            .status()
            .expect("run touch");
        assert!(status.success());
    }
    let rules = site.path("tmp.conf");
    let mut lines = String::new();
    for dir in owned.iter().filter(|path| path.is_dir()) {
        lines += &format!("e {} - - - 10d\n", dir.display());
    }
    fs::write(&rules, lines).expect("write the rules");
    let cleaned = Command::new("systemd-tmpfiles")
        .arg("--clean")
        .arg(&rules)
        .output()
        .expect("run systemd-tmpfiles");
    assert!(cleaned.status.success(), "{cleaned:?}");
    // And what logout and a reboot remove.
    let _ = fs::remove_dir_all(format!("/run/user/{HOMELESS}"));
    for path in files_of(HOMELESS) {
        let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
    }
    let refused = run_to_end(child(Action::Open, 200));
    assert!(
        refused.expect_error().contains("is in use"),
        "a second copy ran after the clean: {refused}"
    );
    drop(holder);
    figure(
        "host lock",
        format_args!(
            "after systemd-tmpfiles --clean, a logout's and a reboot's removals ({} files of \
             the holder's found before), a second copy is still refused",
            owned.len()
        ),
    );
}

/// The files of `uid` where OS cleaners look: /tmp, /var/tmp, /run.
fn files_of(uid: u32) -> Vec<std::path::PathBuf> {
    let output = Command::new("find")
        .args([
            "/tmp",
            "/var/tmp",
            "/run",
            "-xdev",
            "-user",
            &uid.to_string(),
        ])
        .output()
        .expect("run find");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(Into::into)
        .collect()
}

#[test]
fn nothing_piles_up_per_identity() {
    if skip_unless_root() {
        return;
    }
    // A thousand identities run and let go, as a test bench or a multi-tenant service
    // does: no file, no directory, nothing the kernel keeps for them afterwards.
    const TENANT: u32 = 61005;
    let runs = 1000;
    let site = Site::new();
    let home = site.path("home");
    make_dir(&home, TENANT, TENANT, 0o700);
    let before = files_of(TENANT).len();
    let mut task = Task::new(Action::OpenKeys { runs }, "/nonexistent/unused.key").lock_wait_ms(0);
    task.key_env = Some(VARIABLE.to_owned());
    let mut command = site.child(&task, TENANT, &[]);
    command.env("HOME", &home);
    let start = Instant::now();
    let outcome = run_to_end(command);
    let took = start.elapsed();
    let (ids, refused) = outcome.expect(|report| match report {
        crate::support::child::Report::Opened { ids, refused } => Some((ids.len(), *refused)),
        _ => None,
    });
    assert_eq!((ids, refused), (runs, 0), "{outcome}");
    let after = files_of(TENANT).len();
    let in_home = crate::support::list(&home).len();
    assert_eq!(
        (after - before, in_home),
        (0, 0),
        "files left behind by {runs} identities"
    );
    figure(
        "host lock",
        format_args!(
            "{runs} identities taken and let go in one process in {took:?}: 0 files left in \
             /tmp, /var/tmp, /run and the home"
        ),
    );
}

/// The number of descriptors the process `pid` has open.
fn descriptors_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

#[test]
fn a_holder_of_the_same_user_is_never_taken_for_a_squatter() {
    if skip_unless_root() {
        return;
    }
    // The kernel says who listens, whatever the holder does: stopped (SIGSTOP, a debugger,
    // a frozen cgroup), or flooded with connections by another user.
    let site = Site::new();
    let secret = Secret::new();
    let child = |uid, action, wait_ms| secret.child(&site, uid, action, wait_ms);
    let holder = Holder::start(child(SERVICE_USER, Action::Hold, 0));
    let pid = holder.pid();
    crate::support::signal(pid, libc::SIGSTOP);
    let refused = run_to_end(child(SERVICE_USER, Action::Open, 300));
    crate::support::signal(pid, libc::SIGCONT);
    assert!(
        refused.expect_error().contains("is in use"),
        "stopped: {refused}"
    );

    let flood = Task::new(
        Action::Flood {
            names: lock_names_of(pid),
            millis: 3000,
        },
        "/nonexistent",
    );
    let flooder = Holder::until_ready(site.child(&flood, NOBODY, &[]));
    std::thread::sleep(Duration::from_millis(300));
    let mut most = 0;
    for _ in 0..5 {
        let refused = run_to_end(child(SERVICE_USER, Action::Open, 200));
        assert!(
            refused.expect_error().contains("is in use"),
            "flooded: {refused}"
        );
        most = most.max(descriptors_of(pid));
    }
    drop(flooder);
    // The responder keeps at most 64 connections waiting, and closes the rest at once.
    assert!(most < 150, "the flooded holder had {most} descriptors open");
    figure(
        "host lock",
        format_args!(
            "a stopped holder, and one flooded by another user on 4 threads: a second process \
             of the same user refused each time; the flooded holder had at most {most} \
             descriptors open"
        ),
    );
}

#[test]
fn a_silent_squatter_does_not_hide_another_users_holder() {
    if skip_unless_root() {
        return;
    }
    // The squatter takes the first name and never answers; the holder of another user,
    // on the next name, answers within the wait that they share.
    let site = Site::new();
    let secret = Secret::new();
    let child = |uid, action, wait_ms| secret.child(&site, uid, action, wait_ms);
    let first = Holder::start(child(SERVICE_USER, Action::Hold, 0));
    let names = lock_names_of(first.pid());
    let squat = Task::new(Action::Squat { names }, "/nonexistent");
    drop(first);
    let _squatter = Holder::until_ready(site.child(&squat, NOBODY, &[]));
    let holder = Holder::start(child(SERVICE_USER, Action::Hold, 0));
    for _ in 0..5 {
        let refused = run_to_end(child(OTHER_USER, Action::Open, 300));
        let error = refused.expect_error();
        assert!(error.contains(&format!("uid {SERVICE_USER}")), "{error}");
    }
    drop(holder);
}

#[test]
fn silent_names_and_a_long_socket_table_do_not_slow_an_open() {
    if skip_unless_root() {
        return;
    }
    // Another user binds a name it saw without listening on it, and makes the kernel's
    // table of unix sockets long (15,000), which is read only for an error's sake.
    let site = Site::new();
    let secret = Secret::new();
    let key = &secret.key;
    let child = |action, wait_ms| secret.child(&site, SERVICE_USER, action, wait_ms);
    let first = Holder::start(child(Action::Hold, 0));
    let names = lock_names_of(first.pid())
        .into_iter()
        .map(|name| format!("{name}!"))
        .collect();
    let squat = Task::new(Action::Squat { names }, "/nonexistent");
    drop(first);
    let _squatter = Holder::until_ready(site.child(&squat, NOBODY, &[]));
    let long = Task::new(Action::Sockets { count: 15_000 }, "/nonexistent");
    let _table = Holder::until_ready(site.child(&long, NOBODY, &[]));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let start = Instant::now();
        let opened = run_to_end(child(Action::Open, 1000));
        slowest = slowest.max(start.elapsed());
        assert_eq!(opened.expect_id(), key.public().to_string());
    }
    assert!(
        slowest < Duration::from_millis(1500),
        "an open took {slowest:?}"
    );
    figure(
        "host lock",
        format_args!(
            "a name bound without listening and 15,000 other unix sockets of another user: \
             the slowest of 5 opens (a child process each) took {slowest:?}"
        ),
    );
}
