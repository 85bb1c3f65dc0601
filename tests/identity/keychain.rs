//! Guarantee 11: keys in the OS secret store, against a real one ([`Store`]): GNOME
//! Keyring on a private session bus on Linux, the Credential Manager on Windows. The store
//! is reached only from child processes, each given the session's environment. The
//! first-run race is a campaign (`campaigns::race`).

#[cfg(target_os = "linux")]
use std::fs;
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use ed25519_dalek::ed25519::pkcs8::{EncodePrivateKey, KeypairBytes, PublicKeyBytes};
use iroh::SecretKey;
use iroh_identity::{KeyFormat, decode_key, encode_key};

#[cfg(target_os = "linux")]
use crate::support::{Snapshot, list};
use crate::support::{
    child::{Action, Holder, Outcome, Task, run_to_end},
    temp_dir, write_private,
};

#[cfg(windows)]
pub(crate) use crate::support::credential_manager::CredentialManager as Store;
/// The secret store the tests run against: GNOME Keyring on a private bus of its own on
/// Linux; on Windows the Credential Manager of the user (under Wine, of the Wine prefix),
/// held by one test at a time.
#[cfg(target_os = "linux")]
pub(crate) use crate::support::secret_service::SecretService as Store;

const ACCOUNT: &str = "endpoint";

/// A child that does `action` with the key of the entry `entry`/[`ACCOUNT`], waiting
/// half a second for the identity.
fn task(service: &Store, action: Action, entry: &str) -> Command {
    task_waiting(service, action, entry, 500)
}

fn task_waiting(service: &Store, action: Action, entry: &str, wait_ms: u64) -> Command {
    let mut command = Task::new(action, "/nonexistent/unused.key")
        .keychain(entry, ACCOUNT)
        .lock_wait_ms(wait_ms)
        .command();
    service.env(&mut command);
    command
}

/// The key tool in the session.
fn tool(service: &Store, args: &[&str]) -> std::process::Output {
    service
        .command(env!("CARGO_BIN_EXE_iroh-identity"))
        .args(args)
        .output()
        .expect("run iroh-identity")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn the_same_identity_on_every_run_and_the_entry_holds_a_key_file_byte_for_byte() {
    let service = Store::start();
    let first = run_to_end(task(&service, Action::Identity, "chat"));
    let id = first.expect_id().to_owned();
    for _ in 0..2 {
        assert_eq!(
            run_to_end(task(&service, Action::Open, "chat")).expect_id(),
            id
        );
    }

    // What the store holds, as another program sees it: a PKCS#8 v2 PEM key file.
    let stored = service.lookup("chat", ACCOUNT).expect("the entry exists");
    let (key, format) = decode_key(&stored).expect("a key");
    assert_eq!(format, KeyFormat::Pkcs8Pem);
    assert_eq!(stored, encode_key(&key, KeyFormat::Pkcs8Pem).as_slice());
    assert_eq!(key.public().to_string(), id);

    // Its public key by a tool no one here wrote: OpenSSL, on the copy that the key tool
    // exports (a PKCS#8 v1 file, which OpenSSL 3.0 reads). (Not on Windows, which has no
    // OpenSSL of its own.)
    #[cfg(unix)]
    {
        let dir = temp_dir();
        let exported = dir.path().join("exported.pem");
        let export = tool(
            &service,
            &[
                "keychain",
                "export",
                "chat",
                ACCOUNT,
                path_str(&exported),
                "--format",
                "pkcs8-v1",
            ],
        );
        assert!(export.status.success(), "{export:?}");
        assert_eq!(String::from_utf8_lossy(&export.stdout).trim(), id);
        let public = Command::new("openssl")
            .args([
                "pkey",
                "-in",
                path_str(&exported),
                "-pubout",
                "-outform",
                "DER",
            ])
            .output()
            .expect("run openssl (see .ci/run)");
        assert!(public.status.success(), "{public:?}");
        assert_eq!(public.stdout.len(), 44, "an Ed25519 SubjectPublicKeyInfo");
        assert_eq!(&public.stdout[12..], key.public().as_bytes());
    }
}

#[test]
fn a_file_identity_moves_into_the_store_and_out_again_with_its_id() {
    let service = Store::start();
    let dir = temp_dir();
    let file = dir.path().join("endpoint.key");
    let key = crate::support::new_key_file(&file);
    let id = key.public().to_string();

    let import = tool(
        &service,
        &["keychain", "import", "moved", ACCOUNT, path_str(&file)],
    );
    assert!(import.status.success(), "{import:?}");
    assert_eq!(String::from_utf8_lossy(&import.stdout).trim(), id);
    assert_eq!(
        run_to_end(task(&service, Action::Open, "moved")).expect_id(),
        id
    );
    let shown = tool(&service, &["keychain", "id", "moved", ACCOUNT]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), id);

    // An entry is never replaced: importing another key into it changes nothing.
    let other = dir.path().join("other.key");
    crate::support::new_key_file(&other);
    let before = service.lookup("moved", ACCOUNT);
    let again = tool(
        &service,
        &["keychain", "import", "moved", ACCOUNT, path_str(&other)],
    );
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("keychain entry moved/endpoint already exists"),
        "{again:?}"
    );
    assert_eq!(service.lookup("moved", ACCOUNT), before);

    // Not deleted while an endpoint runs it.
    let holder = Holder::start(task(&service, Action::Hold, "moved"));
    let busy = tool(&service, &["keychain", "delete", "moved", ACCOUNT, "--yes"]);
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("close it first"),
        "{busy:?}"
    );
    assert_eq!(service.lookup("moved", ACCOUNT), before);
    holder.kill();

    // Out again, into a file, then deleted; delete asks for --yes first.
    let back = dir.path().join("back.key");
    let export = tool(
        &service,
        &["keychain", "export", "moved", ACCOUNT, path_str(&back)],
    );
    assert!(export.status.success(), "{export:?}");
    assert_eq!(
        iroh_identity::load_key(&back).expect("exported").public(),
        key.public()
    );
    let unconfirmed = tool(&service, &["keychain", "delete", "moved", ACCOUNT]);
    assert_eq!(unconfirmed.status.code(), Some(1), "{unconfirmed:?}");
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    assert_eq!(service.lookup("moved", ACCOUNT), before);
    let deleted = tool(&service, &["keychain", "delete", "moved", ACCOUNT, "--yes"]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(String::from_utf8_lossy(&deleted.stdout).trim(), id);
    assert_eq!(service.lookup("moved", ACCOUNT), None);
}

#[test]
fn a_damaged_entry_is_an_error_that_names_it_and_it_is_left_unchanged() {
    let service = Store::start();
    // A secret with another key's public half: damage that a key file would show too.
    let mismatched = KeypairBytes {
        secret_key: [7; 32],
        public_key: Some(PublicKeyBytes(
            *SecretKey::from_bytes(&[8; 32]).public().as_bytes(),
        )),
    }
    .to_pkcs8_pem(Default::default())
    .expect("encode");
    let cases: [(&str, &[u8]); 4] = [
        ("text", b"my password"),
        (
            "truncated",
            &encode_key(&SecretKey::from_bytes(&[7; 32]), KeyFormat::Pkcs8Pem)[..60],
        ),
        ("binary", &[0xff, 0x00, 0x9c, 0x10]),
        ("mismatched", mismatched.as_bytes()),
    ];
    for (name, secret) in cases {
        service.store(name, ACCOUNT, secret);
        let outcome = run_to_end(task(&service, Action::Open, name));
        let error = outcome.expect_error();
        assert!(
            error.contains(&format!(
                "keychain entry {name}/endpoint is not a usable Ed25519 key"
            )),
            "{name}: {error}"
        );
        assert!(error.contains("left unchanged"), "{error}");
        assert_eq!(
            service.lookup(name, ACCOUNT).as_deref(),
            Some(secret),
            "{name}"
        );
    }
}

// The Secret Service's D-Bus.
#[test]
#[cfg(target_os = "linux")]
fn without_a_session_bus_it_is_a_clear_error_and_nothing_is_written() {
    let dir = temp_dir();
    let (home, run) = (dir.path().join("home"), dir.path().join("run"));
    for sub in [&home, &run] {
        fs::create_dir(sub).expect("mkdir");
    }
    let mut command = Task::new(Action::Open, dir.path().join("endpoint.key"))
        .keychain("chat", ACCOUNT)
        .command();
    command
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", run.join("no-bus").display()),
        )
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &run)
        .env("XDG_DATA_HOME", home.join("data"));
    let before = Snapshot::of(dir.path());
    let outcome = run_to_end(command);
    let error = outcome.expect_error();
    assert!(
        error.contains("keychain entry chat/endpoint: there is no secret store to reach"),
        "{error}"
    );
    assert!(error.contains("nothing was written"), "{error}");
    assert_eq!(Snapshot::of(dir.path()), before);
    assert!(list(&home).is_empty() && list(&run).is_empty());
}

// GNOME Keyring's lock; the Credential Manager has none.
#[test]
#[cfg(target_os = "linux")]
fn a_locked_store_is_a_clear_error_and_nothing_is_written() {
    let service = Store::start();
    // One entry before the lock, so that the keyring's file exists to compare.
    run_to_end(task(&service, Action::Identity, "before")).expect_id();
    service.lock();
    let files = service.keyring_files();
    let before: Vec<_> = list(&files)
        .iter()
        .map(|name| Snapshot::of(&files.join(name)))
        .collect();

    for entry in ["before", "new"] {
        let outcome = run_to_end(task(&service, Action::Open, entry));
        let error = outcome.expect_error();
        assert!(
            error.contains(&format!(
                "keychain entry {entry}/endpoint: the secret store is locked"
            )),
            "{error}"
        );
        assert!(error.contains("unlock it"), "{error}");
    }
    let after: Vec<_> = list(&files)
        .iter()
        .map(|name| Snapshot::of(&files.join(name)))
        .collect();
    assert_eq!(after, before, "the keyring's files changed");
}

#[test]
fn a_second_process_with_the_same_entry_waits_then_is_refused_and_a_kill_releases_it() {
    let service = Store::start();
    let holder = Holder::start(task(&service, Action::Hold, "chat"));
    let start = Instant::now();
    let refused = run_to_end(task(&service, Action::Open, "chat"));
    assert!(start.elapsed() >= Duration::from_millis(500), "it waited");
    let error = refused.expect_error();
    assert!(error.contains("is in use by another endpoint"), "{error}");
    assert!(
        error.contains(&holder.id),
        "the error names the identity: {error}"
    );
    // Linux's lock tells its holder.
    #[cfg(target_os = "linux")]
    assert!(
        error.contains(&format!("(process {}, uid 0)", holder.pid())),
        "the error names the holder: {error}"
    );
    let id = holder.id.clone();
    holder.kill();
    let admitted = run_to_end(task_waiting(&service, Action::Open, "chat", 0));
    assert_eq!(admitted.expect_id(), id);
}

#[test]
fn the_entry_and_a_key_file_of_the_same_identity_are_kept_apart() {
    let service = Store::start();
    let holder = Holder::start(task(&service, Action::Hold, "chat"));
    let stored = service.lookup("chat", ACCOUNT).expect("the entry exists");
    let dir = temp_dir();
    let copy = dir.path().join("copy.key");
    write_private(&copy, &stored);
    let mut from_file = Task::new(Action::Open, &copy).lock_wait_ms(300).command();
    service.env(&mut from_file);
    let outcome: Outcome = run_to_end(from_file);
    let error = outcome.expect_error();
    assert!(error.contains("is in use by another endpoint"), "{error}");
    assert!(error.contains(&holder.id), "{error}");
    holder.kill();
    let mut after = Task::new(Action::Open, &copy).lock_wait_ms(0).command();
    service.env(&mut after);
    run_to_end(after).expect_id();
}

#[test]
fn an_entry_holding_a_key_everyone_knows_is_refused_and_left_as_it_is() {
    let service = Store::start();
    let zero = encode_key(&SecretKey::from_bytes(&[0; 32]), KeyFormat::Pkcs8Pem);
    service.store("zeroed", ACCOUNT, &zero);
    let refused = run_to_end(task(&service, Action::Open, "zeroed"));
    let error = refused.expect_error();
    assert!(error.contains("everyone knows its secret"), "{error}");
    assert_eq!(
        service.lookup("zeroed", ACCOUNT).as_deref(),
        Some(&zero[..])
    );
}

// A daemon stopped with SIGSTOP; the Credential Manager is no process of its own.
#[test]
#[cfg(target_os = "linux")]
fn a_store_that_does_not_answer_fails_by_the_deadline_and_writes_nothing() {
    // gnome-keyring stopped (SIGSTOP), as a hung daemon: every call waits for ever.
    let service = Store::start();
    service.stop();
    let wait = Duration::from_secs(1);
    let start = Instant::now();
    let outcome = crate::support::child::run_within(
        task_waiting(&service, Action::Open, "stopped", wait.as_millis() as u64),
        Duration::from_secs(20),
    );
    let took = start.elapsed();
    let error = outcome.expect_error();
    assert!(error.contains("did not answer in time"), "{error}");
    assert!(took < wait + Duration::from_secs(2), "took {took:?}");
    service.resume();
    assert_eq!(
        service.lookup("stopped", ACCOUNT),
        None,
        "nothing was written"
    );
    crate::campaigns::figure(
        "keychain",
        format_args!(
            "a stopped gnome-keyring: the open failed in {took:?} with a lock wait of {wait:?}, nothing written"
        ),
    );
}
