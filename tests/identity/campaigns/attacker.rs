//! A local attacker races the creation of the key's directory (guarantee 9): in a
//! directory that the attacker may write (a volume shared through a group, as a pod's
//! `fsGroup`), the attacker renames the directory the crate has just made and puts a
//! symbolic link to a file or directory of the victim's in its place, run after run. A
//! crate that sets the new directory's mode by path (`mkdir`, then `chmod`) or creates
//! the key through the path follows the link: it changes the mode of the victim's file,
//! or writes the key into the linked directory. Nothing may ever reach the link's target.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    time::{Duration, Instant},
};

use super::{figure, size};
use crate::support::{
    NOBODY, SERVICE_USER, SHARED_GROUP, as_user,
    child::{self, run_within},
    is_root, list, make_dir, runnable_by_others, temp_dir,
};

/// What the attack could change about a target.
fn state(path: &Path) -> (u32, u32, Option<Vec<u8>>, Option<Vec<String>>) {
    let metadata = fs::symlink_metadata(path).expect("the target is there");
    (
        metadata.mode(),
        metadata.uid(),
        metadata.is_file().then(|| fs::read(path).expect("read")),
        metadata.is_dir().then(|| list(path)),
    )
}

#[test]
fn a_directory_swapped_for_a_link_while_it_is_created_never_leads_anywhere() {
    if !is_root() {
        eprintln!("skipped: needs root to run the victim and the attacker as two users");
        return;
    }
    let root = temp_dir();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = runnable_by_others(root.path());
    // The shared volume: the pod's group may write it, setgid as Kubernetes makes it.
    let shared = root.path().join("shared");
    make_dir(&shared, 0, SHARED_GROUP, 0o2775);
    // What the attacker would like the victim to change: a file and a directory of the
    // victim's, which the attacker may not touch itself.
    let home = root.path().join("victim");
    make_dir(&home, SERVICE_USER, SERVICE_USER, 0o755);
    let file = home.join("precious");
    fs::write(&file, b"the victim's file\n").expect("write");
    std::os::unix::fs::chown(&file, Some(SERVICE_USER), Some(SERVICE_USER)).expect("chown");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let dir = home.join("precious-dir");
    make_dir(&dir, SERVICE_USER, SERVICE_USER, 0o755);
    let before = (state(&file), state(&dir));

    let runs = size(300, 3000);
    let mut attacker = child::command_at(&exe, "swap", &shared);
    attacker.env(child::RUNS, runs.to_string()).env(
        child::TARGETS,
        format!("{}:{}", file.display(), dir.display()),
    );
    as_user(&mut attacker, NOBODY, &[SHARED_GROUP]);
    let attacker = attacker.spawn().expect("start the attacker");
    let mut victim = child::command_at(&exe, "create-many", &shared);
    victim.env(child::RUNS, runs.to_string());
    as_user(&mut victim, SERVICE_USER, &[SHARED_GROUP]);
    let start = Instant::now();
    let victim = run_within(victim, Duration::from_secs(120));
    let attacker = child::outcome(attacker);

    let said = |outcome: &child::Outcome, word: &str| -> usize {
        outcome
            .said
            .iter()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                while let Some(w) = words.next() {
                    if w == word {
                        return words.next()?.parse().ok();
                    }
                }
                None
            })
            .unwrap_or_else(|| panic!("no `{word}` in {outcome}"))
    };
    let (created, refused) = (said(&victim, "created"), said(&victim, "refused"));
    let swapped = said(&attacker, "swapped");
    assert_eq!(
        (state(&file), state(&dir)),
        before,
        "the attack reached the victim's file or directory ({swapped} swaps)"
    );
    assert_eq!(created + refused, runs);
    figure(
        "local attacker",
        format_args!(
            "{runs} directory creations raced by an attacker swapping the new directory for \
             a link ({swapped} swapped): 0 targets changed; {created} keys created, \
             {refused} creations refused; {:.1} s",
            start.elapsed().as_secs_f64()
        ),
    );
}
