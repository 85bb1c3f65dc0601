//! Kill campaign (guarantee 3): first runs that create a key and bind are SIGKILLed at
//! random instants spread over their whole life, from process start through the temporary
//! file, its sync and its publication, to the bind.
//!
//! After each kill the path holds no key or a whole one; once a key is published every
//! later run reports its id; at most one temporary file is ever left, and the next
//! creation removes it; nothing a child printed holds a key.

use std::time::{Duration, Instant};

use iroh_identity::{decode_key, load_or_generate};

use super::{figure, size};
use crate::support::{
    child::{self, outcome, run_to_end},
    list, random_u64, temp_dir,
};

/// Where in its life a killed child was, as seen from what it left.
#[derive(Debug, Default)]
struct Seen {
    /// No key, no temporary file: before creating anything.
    before_temp_file: usize,
    /// A temporary file and no key: while writing, syncing or publishing.
    inside_creation: usize,
    /// A key, and no id reported: after publishing, before or while binding.
    before_bound: usize,
    /// A key and its id reported: bound.
    bound: usize,
}

fn first_run(path: &std::path::Path) -> std::process::Command {
    let mut command = child::command("open", path);
    command.env(child::TRACE, "1");
    command
}

#[test]
fn a_kill_at_any_instant_leaves_no_key_or_a_whole_one() -> anyhow::Result<()> {
    let kills = size(60, 1000);
    // How long a first run lives here, to spread the kills over all of it.
    let probe = temp_dir();
    let start = Instant::now();
    run_to_end(first_run(&probe.path().join("endpoint.key"))).expect_id();
    let span = start.elapsed().as_micros() as u64 * 5 / 4;

    let mut seen = Seen::default();
    let (mut settled_paths, mut most_leftovers) = (0, 0);
    let mut dir = temp_dir();
    let mut published: Option<iroh::PublicKey> = None;
    for _ in 0..kills {
        let path = dir.path().join("endpoint.key");
        let mut running = first_run(&path).spawn()?;
        std::thread::sleep(Duration::from_micros(random_u64() % span));
        // An error only if it had exited already, which is one more instant.
        let _ = running.kill();
        let said = outcome(running);

        let leftovers: Vec<String> = list(dir.path())
            .into_iter()
            .filter(|name| name != "endpoint.key")
            .collect();
        assert!(
            leftovers.len() <= 1,
            "temporary files pile up: {leftovers:?}"
        );
        most_leftovers = most_leftovers.max(leftovers.len());
        for leftover in &leftovers {
            // A whole key never published must not have been printed either.
            if let Ok((key, _)) = decode_key(&std::fs::read(dir.path().join(leftover))?) {
                said.assert_no_secret(&key);
            }
        }
        if !path.exists() {
            assert!(published.is_none(), "a published key disappeared");
            assert_eq!(said.id(), None, "an id was reported without a key file");
            match leftovers.len() {
                0 => seen.before_temp_file += 1,
                _ => seen.inside_creation += 1,
            }
            continue;
        }
        // A whole key (a torn one fails to load), and the one published before, if any.
        let key = load_or_generate(&path)
            .map_err(|err| anyhow::anyhow!("a kill left a torn key file: {err}"))?;
        said.assert_no_secret(&key);
        let id = key.public();
        match said.id() {
            Some(reported) => {
                assert_eq!(reported, id.to_string(), "a run reported another identity");
                seen.bound += 1;
            }
            None => seen.before_bound += 1,
        }
        if let Some(before) = published.replace(id) {
            assert_eq!(before, id, "the identity changed");
            // Published and then kept by a later run: settled. Start again on a new path.
            settled_paths += 1;
            dir = temp_dir();
            published = None;
        }
    }
    // Whatever the last kill left, the next run ends with the key alone.
    run_to_end(first_run(&dir.path().join("endpoint.key"))).expect_id();
    assert_eq!(list(dir.path()), ["endpoint.key"]);
    figure(
        "kill",
        format_args!(
            "{kills} kills spread over {span} µs: {seen:?}; torn keys 0, identity changes 0, \
             most leftover temporary files {most_leftovers} (0 after the next run), \
             {settled_paths} paths settled"
        ),
    );
    Ok(())
}
