//! Race campaign (guarantees 4 and 11): rounds of processes that open the same missing
//! path, or the same empty keychain entry, at the same instant, key only and full
//! endpoint, end with one identity per round.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use iroh_identity::load_key;

use super::{figure, size};
use crate::support::{
    child::{Action, Outcome, Task, outcome},
    list,
    process::Process,
    temp_dir,
};

const RACERS: usize = 16;

/// One round: `RACERS` children doing `action` on one missing path, started at the same
/// instant. Checks that they end with one identity and one file, and returns what each
/// said.
fn round(action: Action, lock_wait_ms: Option<u64>) -> Vec<Outcome> {
    let dir = temp_dir();
    let path = dir.path().join("new").join("endpoint.key");
    let mut task = Task::new(action, &path)
        .start_in(Duration::from_millis(500))
        .trace();
    task.lock_wait_ms = lock_wait_ms;
    let racers: Vec<_> = (0..RACERS)
        .map(|_| Process::start(&mut task.command()))
        .collect();
    let outcomes: Vec<Outcome> = racers.into_iter().map(outcome).collect();

    let key = load_key(&path).expect("the round left a key");
    let ids: BTreeSet<&str> = outcomes.iter().filter_map(Outcome::id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([key.public().to_string().as_str()]),
        "{RACERS} racers ended with these identities"
    );
    assert_eq!(list(&dir.path().join("new")), ["endpoint.key"]);
    for outcome in &outcomes {
        outcome.assert_no_secret(&key);
    }
    outcomes
}

/// Runs the rounds and prints the figure. With a lock wait of zero, racers that find the
/// identity in use fail with the in-use error, and only with it.
fn campaign(name: &str, action: Action, lock_wait_ms: Option<u64>) {
    let rounds = size(2, 50);
    let (mut in_use, mut failures) = (0, Vec::new());
    let start = Instant::now();
    for _ in 0..rounds {
        for outcome in round(action.clone(), lock_wait_ms) {
            match outcome.error() {
                None => {
                    outcome.expect_id();
                }
                Some(error) if lock_wait_ms == Some(0) && error.contains("is in use") => {
                    in_use += 1;
                }
                Some(_) => failures.push(outcome),
            }
        }
    }
    assert!(failures.is_empty(), "failed racers: {failures:#?}");
    figure(
        name,
        format_args!(
            "{rounds} rounds of {RACERS} processes: 1 identity in every round, 0 failures, \
             {in_use} in-use errors, {:.2} s per round",
            start.elapsed().as_secs_f64() / rounds as f64
        ),
    );
}

#[test]
fn racing_first_runs_all_get_the_same_key() {
    campaign("race identity", Action::Identity, None);
}

#[test]
fn racing_endpoint_opens_all_get_the_same_identity() {
    // Each one holds the identity for a moment; the others wait their turn.
    campaign("race endpoint", Action::Open, None);
}

#[test]
fn racing_endpoint_opens_without_waiting_fail_only_with_in_use() {
    campaign("race endpoint, lock wait 0", Action::Open, Some(0));
}

#[test]
#[cfg(all(feature = "keyring", any(target_os = "linux", windows)))]
fn racing_first_runs_on_an_empty_keychain_entry_all_get_the_same_key() {
    let rounds = size(20, 50);
    let service = crate::keychain::Store::start();
    let start = Instant::now();
    for round in 0..rounds {
        let entry = format!("race-{round}");
        let task = Task::new(Action::Identity, "/nonexistent/unused.key")
            .keychain(&entry, "endpoint")
            .start_in(Duration::from_millis(500))
            .trace();
        let racers: Vec<_> = (0..RACERS)
            .map(|racer| {
                let mut command = task.command();
                service.env(&mut command);
                // Half of them started from another environment (a shell, a service):
                // they must meet all the same.
                if racer % 2 == 1 {
                    command
                        .env_remove("XDG_RUNTIME_DIR")
                        .env("TMPDIR", "relative");
                }
                Process::start(&mut command)
            })
            .collect();
        let outcomes: Vec<Outcome> = racers.into_iter().map(outcome).collect();
        let stored = service
            .lookup(&entry, "endpoint")
            .unwrap_or_else(|| panic!("round {round} left no entry; the racers: {outcomes:#?}"));
        let (key, _) = iroh_identity::decode_key(&stored).expect("the entry holds a key");
        let ids: BTreeSet<&str> = outcomes.iter().map(Outcome::expect_id).collect();
        assert_eq!(
            ids,
            BTreeSet::from([key.public().to_string().as_str()]),
            "round {round}: {RACERS} racers ended with these identities"
        );
        for outcome in &outcomes {
            outcome.assert_no_secret(&key);
        }
    }
    let store = if cfg!(windows) {
        "the Credential Manager"
    } else {
        "GNOME Keyring"
    };
    figure(
        "race keychain",
        format_args!(
            "{rounds} rounds of {RACERS} processes on an empty entry of {store}: 1 identity in \
             every round, 0 failures, {:.2} s per round",
            start.elapsed().as_secs_f64() / rounds as f64
        ),
    );
}
