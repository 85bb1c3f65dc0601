//! Kill campaign (guarantee 3): first runs that create a key and bind are SIGKILLed at
//! random instants: a third spread over their whole life, a third from the moment their
//! temporary file appears (writing, syncing, publishing, syncing the directory), a third
//! from the moment their key appears (binding). The parent watches the directory to know.
//!
//! After each kill the path holds no key or a whole one; when it holds one, the next run
//! reports that same id; at most one temporary file is ever left, and the next creation
//! removes it; nothing a child printed holds a key.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use iroh_identity::{decode_key, load_key};

use super::{figure, size};
use crate::support::{
    child::{Action, Task, outcome, run_to_end},
    list,
    process::Process,
    random_u64, temp_dir,
};

/// Where in its life a killed first run was, as seen from what it left.
#[derive(Debug, Default)]
struct Seen {
    /// No key, no temporary file: before creating anything.
    before_temp_file: usize,
    /// A temporary file and no key: while writing, syncing or publishing.
    inside_creation: usize,
    /// A key, and no id reported: after publishing, before or while binding.
    published_not_bound: usize,
    /// A key and its id reported: bound.
    bound: usize,
}

fn first_run(path: &Path) -> Command {
    Task::new(Action::Open, path).trace().command()
}

/// What a directory shows of a first run in it: a temporary file of its own, and the key.
struct Watch<'a> {
    dir: &'a Path,
    /// Temporary files that were there before the run started (left by killed runs).
    old: Vec<String>,
}

impl<'a> Watch<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            old: list(dir),
        }
    }

    fn has_new_temp_file(&self) -> bool {
        list(self.dir)
            .iter()
            .any(|name| name.starts_with(".endpoint.key.tmp-") && !self.old.contains(name))
    }

    fn has_key(&self) -> bool {
        self.dir.join("endpoint.key").exists()
    }

    /// Polls until `event` is seen, the run exits, or 10 s pass.
    fn until(&self, event: impl Fn(&Self) -> bool, running: &mut Process) {
        let start = Instant::now();
        while !event(self) && start.elapsed() < Duration::from_secs(10) {
            if running.exited().is_some() {
                return;
            }
        }
    }
}

/// How long, in µs, first runs here take: to live, from their temporary file to their
/// key, and from their key to their exit. The median of five runs.
fn spans() -> (u64, u64, u64) {
    let (mut life, mut creating, mut binding) = (vec![], vec![], vec![]);
    for _ in 0..5 {
        let dir = temp_dir();
        let watch = Watch::new(dir.path());
        let start = Instant::now();
        let mut running = Process::start(&mut first_run(&dir.path().join("endpoint.key")));
        let micros = || start.elapsed().as_micros() as u64;
        watch.until(Watch::has_new_temp_file, &mut running);
        let temp_at = micros();
        watch.until(Watch::has_key, &mut running);
        let key_at = micros();
        outcome(running).expect_id();
        life.push(micros());
        creating.push(key_at.saturating_sub(temp_at));
        binding.push(micros() - key_at);
    }
    let median = |mut spans: Vec<u64>| {
        spans.sort_unstable();
        spans[spans.len() / 2]
    };
    (median(life), median(creating), median(binding))
}

#[test]
fn a_kill_at_any_instant_leaves_no_key_or_a_whole_one() -> anyhow::Result<()> {
    let kills = size(60, 1000);
    let (life, creating, binding) = spans();

    let mut seen = Seen::default();
    let (mut next_runs, mut most_leftovers) = (0, 0);
    let mut dir = temp_dir();
    for n in 0..kills {
        let path = dir.path().join("endpoint.key");
        let watch = Watch::new(dir.path());
        let mut running = Process::start(&mut first_run(&path));
        // A third of the kills anywhere in the run's life, a third while it creates the
        // key, a third while it binds.
        let delay = match n % 3 {
            0 => random_u64() % (life * 5 / 4),
            1 => {
                watch.until(Watch::has_new_temp_file, &mut running);
                random_u64() % (creating * 3 / 2 + 1)
            }
            _ => {
                watch.until(Watch::has_key, &mut running);
                random_u64() % (binding + 1)
            }
        };
        std::thread::sleep(Duration::from_micros(delay));
        // If it had exited already, that was one more instant.
        running.kill();
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
            assert_eq!(said.id(), None, "an id was reported without a key file");
            match leftovers.len() {
                0 => seen.before_temp_file += 1,
                _ => seen.inside_creation += 1,
            }
            // The next first run goes to the same directory, and must clean up.
            continue;
        }
        // A whole key (a torn one fails to load), reported if reported at all.
        let key =
            load_key(&path).map_err(|err| anyhow::anyhow!("a kill left a torn key file: {err}"))?;
        said.assert_no_secret(&key);
        let id = key.public().to_string();
        match said.id() {
            Some(reported) => {
                assert_eq!(reported, id, "a run reported another identity");
                seen.bound += 1;
            }
            None => seen.published_not_bound += 1,
        }
        // The next run keeps that identity and leaves the key alone in its directory.
        let next = run_to_end(first_run(&path));
        assert_eq!(next.expect_id(), id, "the identity changed after a kill");
        next.assert_no_secret(&key);
        assert_eq!(list(dir.path()), ["endpoint.key"]);
        next_runs += 1;
        dir = temp_dir();
    }
    figure(
        "kill",
        format_args!(
            "{kills} kills, a third over a run's {life} µs, a third over the {creating} µs \
             from temporary file to key, a third over the {binding} µs of the bind: \
             {seen:?}; torn keys 0; {next_runs} runs after a published key, all with its \
             id (identity changes 0); most leftover temporary files {most_leftovers}, 0 \
             after the next run"
        ),
    );
    Ok(())
}
