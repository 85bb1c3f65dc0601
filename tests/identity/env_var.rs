//! The opt-in environment variable: hex or base32, trimmed, any case; when set it wins
//! over the key file, which is then neither read nor created; when set wrongly it is an
//! error, never a fall-back to the file. Its identity is locked on the host like any
//! other (guarantee 7).

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use data_encoding::{BASE32_NOPAD, HEXLOWER, HEXUPPER};

use crate::support::{
    child::{Action, Holder, Outcome, Task, run_to_end},
    known_key, temp_dir, write_private,
};

const VAR: &str = "TEST_IROH_SECRET";

fn open_with_env(path: &std::path::Path, value: Option<&str>) -> Outcome {
    run_to_end(with_env(Task::new(Action::Open, path), value))
}

/// The child of `task`, taking its key from [`VAR`], set to `value` or unset.
fn with_env(mut task: Task, value: Option<&str>) -> Command {
    task.key_env = Some(VAR.to_owned());
    let mut command = task.command();
    command.env_remove(VAR);
    if let Some(value) = value {
        command.env(VAR, value);
    }
    command
}

#[test]
fn the_variable_wins_and_the_key_file_is_not_created() {
    let key = known_key();
    let bytes = key.to_bytes();
    let values = [
        HEXLOWER.encode(&bytes),
        format!("  {}\n", HEXUPPER.encode(&bytes)),
        BASE32_NOPAD.encode(&bytes),
        format!("\t{}  ", BASE32_NOPAD.encode(&bytes).to_lowercase()),
    ];
    for value in values {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        let outcome = open_with_env(&path, Some(&value));
        assert_eq!(outcome.expect_id(), key.public().to_string(), "{value:?}");
        assert!(
            !path.exists(),
            "the key file was created although the variable is set"
        );
    }
}

#[test]
fn the_variable_wins_over_an_existing_key_file_which_stays_as_it_is() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let file_key = iroh::SecretKey::from_bytes(&std::array::from_fn(|i| 0x89 ^ i as u8));
    write_private(&path, &file_key.to_bytes());
    let env_key = known_key();
    let outcome = open_with_env(&path, Some(&HEXLOWER.encode(&env_key.to_bytes())));
    assert_eq!(outcome.expect_id(), env_key.public().to_string());
    assert_eq!(fs::read(&path)?, file_key.to_bytes());
    Ok(())
}

#[test]
fn without_the_variable_the_key_file_is_used() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(&path, &known_key().to_bytes());
    let outcome = open_with_env(&path, None);
    assert_eq!(outcome.expect_id(), known_key().public().to_string());
    Ok(())
}

#[test]
fn a_bad_value_is_an_error_naming_the_variable_and_the_file_is_not_used() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(&path, &known_key().to_bytes());
    for value in ["", "   ", "not a key", &"x".repeat(64), &"0".repeat(63)] {
        let outcome = open_with_env(&path, Some(value));
        let error = outcome.expect_error();
        assert!(error.contains(VAR), "{error}");
        assert!(error.contains("unset it to use the key file"), "{error}");
    }
    assert_eq!(fs::read(&path)?, known_key().to_bytes());
    Ok(())
}

#[test]
fn two_processes_with_the_same_variable_are_kept_apart_and_a_kill_releases_it() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let key = iroh::SecretKey::generate();
    let value = HEXLOWER.encode(&key.to_bytes());
    let mut holder = with_env(Task::new(Action::Hold, &path), Some(&value));
    holder
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("TMPDIR", dir.path());
    let holder = Holder::start(holder);
    assert_eq!(holder.id, key.public().to_string());

    // Started from elsewhere (a shell, not the service): the same host lock all the same.
    let start = Instant::now();
    let mut second = with_env(
        Task::new(Action::Open, &path).lock_wait_ms(500),
        Some(&value),
    );
    second
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", "relative");
    let second = run_to_end(second);
    assert!(start.elapsed() >= Duration::from_millis(500), "it waited");
    let error = second.expect_error();
    assert!(error.contains("is in use by another endpoint"), "{error}");
    assert!(
        error.contains(&holder.id),
        "the error names the identity: {error}"
    );

    // The same key from a file is the same identity: kept out too.
    let file = dir.path().join("copy.key");
    write_private(&file, &key.to_bytes());
    let from_file = run_to_end(Task::new(Action::Open, &file).lock_wait_ms(0).command());
    assert!(
        from_file.expect_error().contains("is in use"),
        "{from_file}"
    );

    holder.kill();
    let after = run_to_end(with_env(
        Task::new(Action::Open, &path).lock_wait_ms(0),
        Some(&value),
    ));
    assert_eq!(after.expect_id(), key.public().to_string());
    assert!(!path.exists(), "no key file was created");
}

#[test]
fn a_key_everyone_knows_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    for value in ["0".repeat(64), "f".repeat(64), "a".repeat(52)] {
        let outcome = open_with_env(&path, Some(&value));
        let error = outcome.expect_error();
        assert!(
            error.contains("everyone knows its secret"),
            "{value}: {error}"
        );
        assert!(!path.exists(), "no key file instead");
    }
}
