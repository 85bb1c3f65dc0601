//! The opt-in environment variable: hex or base32, trimmed, any case; when set it wins
//! over the key file, which is then neither read nor created; when set wrongly it is an
//! error, never a fall-back to the file.

use std::fs;

use data_encoding::{BASE32_NOPAD, HEXLOWER, HEXUPPER};

use crate::support::{
    child::{Action, Outcome, Task, run_to_end},
    known_key, temp_dir, write_private,
};

const VAR: &str = "TEST_IROH_SECRET";

fn open_with_env(path: &std::path::Path, value: Option<&str>) -> Outcome {
    let mut task = Task::new(Action::Open, path);
    task.key_env = Some(VAR.to_owned());
    let mut command = task.command();
    command.env_remove(VAR);
    if let Some(value) = value {
        command.env(VAR, value);
    }
    run_to_end(command)
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
    let file_key = iroh::SecretKey::from_bytes(&[9; 32]);
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
