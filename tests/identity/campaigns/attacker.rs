//! A local attacker races the creation of the key's directory (guarantee 9): in a
//! directory that the attacker may write (a volume shared through a group, as a pod's
//! `fsGroup`), the attacker renames the directory the crate has just made and puts a
//! symbolic link to a file or directory of the victim's in its place, run after run. A
//! crate that sets the new directory's mode by path (`mkdir`, then `chmod`) or creates
//! the key through the path follows the link: it changes the mode of the victim's file,
//! or writes the key into the linked directory. Nothing may ever reach the link's target.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use super::{figure, size};
use crate::support::{
    NOBODY, SERVICE_USER, SHARED_GROUP, Snapshot, as_user,
    child::{Action, Report, Task, outcome, run_within},
    make_dir,
    process::Process,
    runnable_by_others, skip_unless_root, temp_dir,
};

#[test]
fn a_directory_swapped_for_a_link_while_it_is_created_never_leads_anywhere() {
    if skip_unless_root("run the victim and the attacker as two users") {
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
    let before = (Snapshot::of(&file), Snapshot::of(&dir));

    let runs = size(300, 3000);
    let targets = vec![file.clone(), dir.clone()];
    let mut attacker = Task::new(Action::Swap { runs, targets }, &shared).command_at(&exe);
    as_user(&mut attacker, NOBODY, &[SHARED_GROUP]);
    let attacker = Process::start(&mut attacker);
    let mut victim = Task::new(Action::CreateMany { runs }, &shared).command_at(&exe);
    as_user(&mut victim, SERVICE_USER, &[SHARED_GROUP]);
    let start = Instant::now();
    let victim = run_within(victim, Duration::from_secs(120));
    let attacker = outcome(attacker);

    let (created, refused) = victim.expect(|report| match report {
        Report::Created { created, refused } => Some((*created, *refused)),
        _ => None,
    });
    let swapped = attacker.expect(|report| match report {
        Report::Swapped(swapped) => Some(*swapped),
        _ => None,
    });
    assert_eq!(
        (Snapshot::of(&file), Snapshot::of(&dir)),
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

#[test]
fn what_is_planted_on_the_path_after_it_was_checked_is_never_followed() {
    if skip_unless_root("run the victim and the attacker as two users") {
        return;
    }
    // In a sticky directory, another user keeps putting something at the name of the
    // key's missing directory and taking it away: a directory of its own that everyone
    // may write, or a link to a directory of the victim's that holds another identity.
    // A crate that checks the path, then looks it up by name again, follows what was
    // put there in between: it writes its key where the attacker can take it away, or
    // runs another service's identity.
    let root = temp_dir();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = runnable_by_others(root.path());
    let shared = root.path().join("shared");
    make_dir(&shared, 0, 0, 0o1777);
    let other = root.path().join("other-service");
    make_dir(&other, SERVICE_USER, SERVICE_USER, 0o700);
    let mut other_key = Task::new(Action::Identity, other.join("endpoint.key")).command_at(&exe);
    as_user(&mut other_key, SERVICE_USER, &[]);
    let other_id = crate::support::child::run_to_end(other_key)
        .expect_id()
        .to_owned();

    let runs = size(100, 1000);
    let target = other.clone();
    let mut attacker = Task::new(Action::Toggle { runs, target }, &shared).command_at(&exe);
    as_user(&mut attacker, NOBODY, &[]);
    let attacker = Process::start(&mut attacker);
    let mut victim = Task::new(Action::OpenMany { runs }, &shared).command_at(&exe);
    as_user(&mut victim, SERVICE_USER, &[]);
    let start = Instant::now();
    let victim = run_within(victim, Duration::from_secs(300));
    let attacker = outcome(attacker);
    let (ids, refused) = victim.expect(|report| match report {
        Report::Opened { ids, refused } => Some((ids.clone(), *refused)),
        _ => None,
    });
    let swapped = attacker.expect(|report| match report {
        Report::Swapped(swapped) => Some(*swapped),
        _ => None,
    });
    let ran_the_other = ids.iter().filter(|id| **id == other_id).count();
    // Keys the victim wrote where the attacker owns the directory.
    let mut in_attackers_dirs = 0;
    for entry in fs::read_dir(&shared).expect("list").flatten() {
        let found = fs::symlink_metadata(entry.path()).expect("stat");
        let attackers = found.is_dir() && std::os::unix::fs::MetadataExt::uid(&found) == NOBODY;
        if attackers && entry.path().join("endpoint.key").exists() {
            in_attackers_dirs += 1;
        }
    }
    assert_eq!(
        ran_the_other, 0,
        "the victim ran another service's identity"
    );
    assert_eq!(
        in_attackers_dirs, 0,
        "the victim wrote keys into the attacker's directories"
    );
    assert_eq!(ids.len() + refused, runs);
    figure(
        "local attacker",
        format_args!(
            "{runs} opens while another user plants a directory or a link on the path \
             ({swapped} plantings): 0 keys in the attacker's directories, 0 runs of another \
             identity; {} keys created, {refused} opens refused; {:.1} s",
            ids.len(),
            start.elapsed().as_secs_f64()
        ),
    );
}
