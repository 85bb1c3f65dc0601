//! Guarantee 12: one live endpoint per identity across machines, with an etcd lease
//! (feature `etcd`), against real etcd processes ([`Etcd`]). The failover campaign is
//! `campaigns::failover`.
//!
//! Two machines are two network namespaces of this host ([`Network`]), each with its own
//! copy of the key, run as a user of its own: nothing of the host's guards the identity
//! across them (not a lock per user, nor one per namespace), so only the lease keeps them
//! apart, as it must keep two machines. Each reaches etcd through a proxy of its own
//! ([`Link`]), which injects faults into that machine's traffic alone. That needs root;
//! without it the tests say `skipped`.

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use iroh::SecretKey;
use iroh_identity::{KeyFormat, encode_key};

use crate::support::{
    as_user,
    cgroup::CpuLimit,
    child::{Action, Report, Task},
    etcd::{Certificates, Etcd, LEASE_USER, Options},
    make_dir,
    net::Network,
    now_ms,
    process::Process,
    proxy::{Faults, Proxy},
    runnable_by_others, temp_dir, write_private,
};

/// The TTL of the tests' leases, in seconds: the crate's minimum.
pub(crate) const TTL_S: u64 = 5;
pub(crate) const TTL: Duration = Duration::from_secs(TTL_S);

/// The lease's default prefix.
const PREFIX: &str = "/iroh-identity/";

/// The users that stand for two machines.
const MACHINE_USERS: [u32; 2] = [61011, 61012];

pub(crate) fn skip_unless_root() -> bool {
    crate::support::skip_unless_root("run two machines in namespaces of their own")
}

/// Two machines with a copy of one key each.
pub(crate) struct Machines {
    root: tempfile::TempDir,
    keys: [PathBuf; 2],
    exe: PathBuf,
    pub id: String,
    network: Network,
}

impl Machines {
    pub(crate) fn new() -> Self {
        let root = temp_dir();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let key = SecretKey::generate();
        let keys = MACHINE_USERS.map(|uid| {
            let home = root.path().join(format!("machine-{uid}"));
            make_dir(&home, uid, uid, 0o700);
            let path = home.join("endpoint.key");
            write_private(&path, &encode_key(&key, KeyFormat::Pkcs8Pem));
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown");
            path
        });
        let exe = runnable_by_others(root.path());
        Self {
            root,
            keys,
            exe,
            id: key.public().to_string(),
            network: Network::new(2),
        }
    }

    /// Where each machine reaches the tests' services: the addresses a server's
    /// certificate names.
    pub(crate) fn service_addresses(&self) -> Vec<Ipv4Addr> {
        (0..2).map(|m| self.network.service_address(m)).collect()
    }

    /// A proxy to `target` (on the host's loopback), where machine `m` reaches services.
    pub(crate) fn proxy(&self, m: usize, target: std::net::SocketAddr) -> Proxy {
        Proxy::start(self.network.listen(self.network.service_address(m)), target)
    }

    /// Machine `m`'s own way to every member of `etcd`: a proxy each.
    pub(crate) fn link(&self, m: usize, etcd: &Etcd) -> Link {
        let proxies: Vec<Proxy> = (0..etcd.size())
            .map(|i| self.proxy(m, etcd.member_addr(i)))
            .collect();
        let urls = proxies.iter().map(|proxy| etcd.url_of(proxy)).collect();
        Link { proxies, urls }
    }

    /// Each machine's own way to every member of `etcd`.
    pub(crate) fn links(&self, etcd: &Etcd) -> [Link; 2] {
        [self.link(0, etcd), self.link(1, etcd)]
    }

    /// The key of machine `m`'s lease.
    pub(crate) fn lease_key(&self) -> String {
        format!("{PREFIX}{}", self.id)
    }

    /// Machine `m` runs `task` (its key path filled in) as a holder or a standby.
    pub(crate) fn start(&self, m: usize, task: Task) -> Process {
        let mut task = task;
        task.path.clone_from(&self.keys[m]);
        let mut command = task.command_at(&self.exe);
        self.network.enter(m, &mut command);
        as_user(&mut command, MACHINE_USERS[m], &[]);
        Process::start(&mut command)
    }

    /// Machine `m`'s copy of the key.
    pub(crate) fn key(&self, m: usize) -> &std::path::Path {
        &self.keys[m]
    }

    /// A command that runs `program` on machine `m`, as its user, from a copy every user
    /// can run.
    pub(crate) fn command(&self, m: usize, program: &std::path::Path) -> Command {
        let name = program.file_name().expect("a program name");
        let copy = self.root.path().join(name);
        if !copy.exists() {
            fs::copy(program, &copy).expect("copy the program");
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let mut command = Command::new(copy);
        self.network.enter(m, &mut command);
        as_user(&mut command, MACHINE_USERS[m], &[]);
        command
    }

    /// A holder or standby on the lease through `link`, waiting for it as long as it takes.
    pub(crate) fn serve(&self, m: usize, link: &Link) -> Process {
        self.start(m, hold(link))
    }
}

/// A holder's task: hold the identity with a lease through `link`, at the tests' TTL,
/// waiting for it as long as it takes.
pub(crate) fn hold(link: &Link) -> Task {
    Task::new(Action::Hold, "")
        .lease(link.urls(), TTL_S)
        .lock_wait_ms(u64::MAX)
}

/// One machine's way to etcd: a proxy per member.
pub(crate) struct Link {
    proxies: Vec<Proxy>,
    urls: Vec<String>,
}

impl Link {
    /// The URL of every member, as this machine reaches it.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.urls.clone()
    }

    /// Changes the faults of this machine's traffic to every member.
    pub(crate) fn set(&self, change: impl Fn(&mut Faults)) {
        for proxy in &self.proxies {
            proxy.set(&change);
        }
    }

    /// Holds every byte either way: the machine is cut off from etcd, its connections open.
    pub(crate) fn blackhole(&self) {
        self.set(|faults| faults.blackhole = [true; 2]);
    }
}

/// Machine 0 takes the identity with `tasks[0]`, then machine 1 starts with `tasks[1]` and
/// waits: the holder, its fencing token, and the standby.
fn holder_and_standby(machines: &Machines, [first, second]: [Task; 2]) -> (Process, i64, Process) {
    let holder = machines.start(0, first);
    let (_, token, _) = holder
        .holding(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the first does not hold: {:?}", holder.said()));
    let standby = machines.start(1, second);
    assert!(standby.holding(Duration::from_millis(500)).is_none());
    (holder, token, standby)
}

/// The error a child reported, which must say `expected` and come within 5 s of `start`:
/// a refusal that waiting does not mend fails at once.
fn refused_at_once(server: &Process, expected: &str, start: Instant, what: &str) -> String {
    let error = refused(server);
    assert!(
        error.contains(expected) && start.elapsed() < Duration::from_secs(5),
        "{what}: {error} after {:?}",
        start.elapsed()
    );
    error
}

/// The error a child reported within a few seconds, or a panic that shows all it said.
fn refused(server: &Process) -> String {
    server.error(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "no error within 10 s; the child said {:?} and logged {:?}",
            server.said(),
            server.stderr_text()
        )
    })
}

#[test]
fn two_machines_one_holder_and_the_standby_takes_over_after_a_close_or_a_kill() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let primary = machines.serve(0, &links[0]);
    let (_, first_token, _) = primary
        .holding(Duration::from_secs(10))
        .expect("the first holds");
    let standby = machines.serve(1, &links[1]);
    assert!(
        standby.holding(Duration::from_secs(1)).is_none(),
        "the standby bound while the primary held the lease: {:?}",
        standby.said()
    );

    // A graceful close revokes the lease: the standby binds within a second.
    primary.signal(libc::SIGTERM);
    let closed_at = primary.closed(Duration::from_secs(10)).expect("closed");
    let (_, token, held_at) = standby.holding(Duration::from_secs(5)).expect("took over");
    let graceful = held_at.saturating_sub(closed_at);
    assert!(
        token > first_token,
        "fencing tokens grow: {first_token} then {token}"
    );
    assert!(graceful < 1000, "took over {graceful} ms after the close");
    drop(primary);

    // A SIGKILL leaves the lease to expire: within the TTL and a second.
    let mut holder = standby;
    let next = machines.serve(0, &links[0]);
    assert!(next.holding(Duration::from_millis(500)).is_none());
    let killed_at = holder.kill();
    let (_, next_token, held_at) = next
        .holding(TTL + Duration::from_secs(5))
        .expect("took over after the kill");
    let takeover = held_at.saturating_sub(killed_at);
    assert!(next_token > token);
    assert!(
        takeover < (TTL + Duration::from_secs(1)).as_millis() as u64,
        "took over {takeover} ms after the kill"
    );
    eprintln!(
        "lease takeover (TTL {TTL:?}): {graceful} ms after a graceful close, {takeover} ms \
         after a SIGKILL"
    );
}

#[test]
fn a_paused_holder_is_replaced_and_closes_its_endpoint_when_it_resumes() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let primary = machines.serve(0, &links[0]);
    primary
        .holding(Duration::from_secs(10))
        .expect("the first holds");
    let standby = machines.serve(1, &links[1]);
    primary.signal(libc::SIGSTOP);
    let stopped_at = now_ms();
    let (_, _, held_at) = standby
        .holding(TTL + Duration::from_secs(5))
        .expect("the standby took over");
    std::thread::sleep(Duration::from_millis(500));
    let resumed_at = now_ms();
    primary.signal(libc::SIGCONT);
    let (reason, lost_at) = primary
        .lost(Duration::from_secs(5))
        .expect("the resumed holder closed its endpoint");
    let both_open = lost_at.saturating_sub(resumed_at);
    assert!(
        both_open < 1000,
        "both endpoints were open {both_open} ms after the resume ({reason})"
    );
    eprintln!(
        "paused holder: replaced {} ms after SIGSTOP; after SIGCONT both endpoints were open \
         for {both_open} ms ({reason})",
        held_at.saturating_sub(stopped_at)
    );
}

#[test]
fn losing_etcd_fences_the_holder_within_the_ttl_and_a_standby_proceeds_when_it_is_back() {
    if skip_unless_root() {
        return;
    }
    let mut etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let primary = machines.serve(0, &links[0]);
    primary
        .holding(Duration::from_secs(10))
        .expect("the first holds");
    let standby = machines.serve(1, &links[1]);
    std::thread::sleep(Duration::from_millis(300));
    etcd.kill_member(0);
    let stopped_at = now_ms();
    let (reason, lost_at) = primary
        .lost(TTL + Duration::from_secs(2))
        .expect("the holder fenced itself");
    let fenced = lost_at.saturating_sub(stopped_at);
    assert!(
        fenced <= TTL.as_millis() as u64,
        "fenced {fenced} ms after etcd died: {reason}"
    );
    assert!(standby.holding(Duration::ZERO).is_none());

    etcd.start_member(0);
    etcd.wait_until_ready();
    let (_, _, held_at) = standby
        .holding(TTL * 3 + Duration::from_secs(10))
        .expect("the standby proceeded once etcd was back");
    eprintln!(
        "etcd lost: the holder fenced itself {fenced} ms after; the standby held {} ms after \
         the loss",
        held_at.saturating_sub(stopped_at)
    );
}

#[test]
fn a_standby_waits_quietly_after_the_history_is_compacted() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let primary = machines.serve(0, &links[0]);
    primary.holding(Duration::from_secs(10)).expect("holds");
    let standby = machines.serve(1, &links[1]);
    std::thread::sleep(Duration::from_millis(500));
    // The key's revision is compacted away while the standby waits: a watch from it is
    // refused, and a standby that took that for a delete would ask again and again.
    etcd.write_and_compact(20);
    std::thread::sleep(Duration::from_millis(500));
    let before = etcd.requests("LeaseGrant");
    std::thread::sleep(Duration::from_secs(3));
    let asked = etcd.requests("LeaseGrant") - before;
    assert!(
        asked <= 4,
        "the standby asked for {asked} leases in 3 s while the key was held"
    );
    assert!(standby.holding(Duration::ZERO).is_none());
    primary.signal(libc::SIGTERM);
    standby
        .holding(Duration::from_secs(5))
        .expect("the standby took over after the compaction");
    eprintln!("compacted history: the standby asked for {asked} leases in 3 s, then took over");
}

/// Finding 4: with etcd's default election timeout (1 s), a leader change takes one to
/// three seconds; a holder at the shortest TTL the crate allows keeps its lease across
/// it. Each round kills the leader, whose member the holder's requests go to first.
#[test]
fn a_leader_change_at_etcds_default_election_timeout_keeps_the_lease_at_the_shortest_ttl() {
    if skip_unless_root() {
        return;
    }
    let rounds = crate::campaigns::size(2, 12);
    let mut etcd = Options::members(3).default_election().start();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let mut leader = etcd.leader();
    let mut urls = links[0].urls();
    // The leader first: the holder's keep-alives go to it until it fails.
    urls.rotate_left(leader);
    // The shortest TTL there is: 1 s is raised to the crate's minimum.
    let primary = machines.start(
        0,
        Task::new(Action::Hold, "")
            .lease(urls, 1)
            .lock_wait_ms(u64::MAX)
            .hold_for(Duration::from_secs(30 * rounds as u64))
            .log(),
    );
    let (_, token, _) = primary.holding(Duration::from_secs(20)).expect("holds");
    let mut elections = Vec::new();
    for round in 0..rounds {
        let killed = Instant::now();
        etcd.kill_member(leader);
        let new_leader = etcd.leader();
        elections.push(killed.elapsed().as_millis());
        assert_ne!(new_leader, leader);
        // A holder that lost its keep-alives at the kill would fence within its TTL.
        assert!(
            primary.lost(TTL + Duration::from_secs(1)).is_none(),
            "round {round}: the holder lost its lease: {:?} {:?}",
            primary.said(),
            primary.stderr_text()
        );
        // A standby whose requests start at the dead member is told "held", never
        // "unavailable".
        let mut urls = links[1].urls();
        urls.rotate_left(leader);
        let standby = machines.start(
            1,
            Task::new(Action::Open, "").lease(urls, 1).lock_wait_ms(500),
        );
        let error = refused(&standby);
        assert!(error.contains("is held by"), "round {round}: {error}");
        etcd.start_member(leader);
        etcd.wait_until_ready();
        leader = new_leader;
    }
    assert!(primary.lost(Duration::ZERO).is_none());
    elections.sort_unstable();
    eprintln!(
        "leader changes at etcd's default election timeout: {rounds} kills of the leader, a \
         new leader seen after {elections:?} ms; the holder at the shortest TTL kept its \
         lease (token {token}) and its endpoint"
    );
}

/// Finding 5: a round trip of a quarter of the TTL to etcd, every renewal included, does
/// not fence a healthy holder.
#[test]
fn renewals_survive_a_round_trip_of_a_quarter_of_the_ttl() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let slow = machines.link(0, &etcd);
    let round_trip = TTL / 4;
    for proxy in &slow.proxies {
        proxy.add_round_trip(round_trip);
    }
    let start = Instant::now();
    let primary = machines.serve(0, &slow);
    primary
        .holding(Duration::from_secs(30))
        .expect("holds through the slow link");
    let took = start.elapsed();
    assert!(
        primary.lost(TTL * 2).is_none(),
        "the holder fenced itself with a round trip of {round_trip:?}: {:?}",
        primary.said()
    );
    let link = machines.link(1, &etcd);
    let standby = machines.start(
        1,
        Task::new(Action::Open, "")
            .lease(link.urls(), TTL_S)
            .lock_wait_ms(500),
    );
    let error = refused(&standby);
    assert!(error.contains("is held by"), "{error}");
    eprintln!(
        "a round trip of {round_trip:?} to etcd (TTL {TTL:?}): the lease taken in {took:?}, \
         then kept for {:?} with no fence",
        TTL * 2
    );
}

/// Findings 2 and 3: an operator's `etcdctl lease revoke`, `etcdctl del`, or a put that
/// binds the key to another lease fences the holder at once, before the standby binds.
#[test]
fn an_operators_revoke_delete_or_put_fences_the_holder_before_the_standby_binds() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let key = machines.lease_key();
    let mut machine = 0;
    let mut holder = machines.serve(machine, &links[machine]);
    holder.holding(Duration::from_secs(10)).expect("holds");
    let mut figures = Vec::new();
    for kind in ["lease revoke", "del", "put with another lease"] {
        machine = 1 - machine;
        let standby = machines.serve(machine, &links[machine]);
        assert!(standby.holding(Duration::from_millis(500)).is_none());
        let lease = etcd.lease_of(&key);
        assert_ne!(lease, 0, "the key is bound to the holder's lease");
        let at = now_ms();
        match kind {
            "lease revoke" => {
                etcd.etcdctl(&["lease", "revoke", &format!("{lease:x}")]);
            }
            "del" => {
                etcd.etcdctl(&["del", &key]);
            }
            _ => {
                let granted = etcd.etcdctl(&["lease", "grant", "600"]);
                let other = granted.split_whitespace().nth(1).expect("a lease id");
                etcd.etcdctl(&["put", &key, "an operator's", &format!("--lease={other}")]);
            }
        }
        let (reason, lost_at) = holder
            .lost(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{kind}: the holder kept its endpoint: {:?}", holder.said()));
        let fenced = lost_at.saturating_sub(at);
        if kind == "put with another lease" {
            // The key is someone else's now: the standby waits until it is deleted.
            assert!(standby.holding(Duration::from_millis(500)).is_none());
            etcd.etcdctl(&["del", &key]);
        }
        let (_, _, held_at) = standby
            .holding(TTL + Duration::from_secs(5))
            .expect("the standby took over");
        assert!(
            lost_at <= held_at,
            "{kind}: the standby bound {} ms before the holder closed ({reason})",
            lost_at - held_at
        );
        assert!(fenced < 1000, "{kind}: fenced {fenced} ms after ({reason})");
        figures.push(format!(
            "{kind}: the holder closed {fenced} ms after the command began, the standby \
             bound {} ms after it",
            held_at.saturating_sub(at)
        ));
        holder = standby;
    }
    eprintln!("operator actions: {}", figures.join("; "));
}

/// Finding 6, a member's data lost: revisions start again, so the next holder's token is
/// smaller, as documented. The standby, which saw the old history, waits a TTL before it
/// binds, so that the old holder, which hears nothing (its link is cut), has fenced
/// itself first.
#[test]
fn after_etcd_loses_its_data_the_old_holder_is_closed_before_the_next_binds() {
    if skip_unless_root() {
        return;
    }
    let mut etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    // Revisions well above what a new history reaches in a few seconds.
    for i in 0..30 {
        etcd.etcdctl(&["put", &format!("/test/history/{i}"), "x"]);
    }
    let (primary, old_token, standby) =
        holder_and_standby(&machines, [hold(&links[0]), hold(&links[1])]);
    links[0].blackhole();
    etcd.wipe_member(0);
    let wiped_at = now_ms();
    let (_, token, held_at) = standby
        .holding(TTL * 3)
        .expect("the standby took over on the new history");
    let (reason, lost_at) = primary.lost(TTL).expect("the old holder fenced itself");
    assert!(
        lost_at <= held_at,
        "the standby bound {} ms before the old holder closed ({reason})",
        lost_at - held_at
    );
    assert!(
        token < old_token,
        "a new history's revisions start again: {old_token} then {token}"
    );
    eprintln!(
        "etcd's data lost: the old holder (token {old_token}) closed {} ms after the wipe, the \
         standby bound {} ms after it with token {token}",
        lost_at.saturating_sub(wiped_at),
        held_at.saturating_sub(wiped_at)
    );
}

/// Finding 6, a snapshot restored: the history goes back to the snapshot, and the next
/// holder may get the very token an earlier one had, as documented; it binds only after
/// the earlier one fenced itself.
#[test]
fn after_a_snapshot_is_restored_the_old_holder_is_closed_before_the_next_binds() {
    if skip_unless_root() {
        return;
    }
    let mut etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let snapshot = temp_dir();
    let snapshot = snapshot.path().join("etcd.snapshot");
    etcd.save_snapshot(&snapshot);
    let (primary, old_token, standby) =
        holder_and_standby(&machines, [hold(&links[0]), hold(&links[1])]);
    links[0].blackhole();
    etcd.restore_snapshot(&snapshot);
    let restored_at = now_ms();
    let (_, token, held_at) = standby
        .holding(TTL * 3)
        .expect("the standby took over on the restored history");
    let (reason, lost_at) = primary.lost(TTL).expect("the old holder fenced itself");
    assert!(
        lost_at <= held_at,
        "the standby bound {} ms before the old holder closed ({reason})",
        lost_at - held_at
    );
    eprintln!(
        "snapshot restored: the old holder (token {old_token}) closed {} ms after the restore, \
         the standby bound {} ms after it with token {token}",
        lost_at.saturating_sub(restored_at),
        held_at.saturating_sub(restored_at)
    );
}

/// Finding 1: TLS with client certificates, as a production cluster runs it. A CA that
/// did not sign etcd's certificate, or no client certificate, fails at once, whatever the
/// wait.
#[test]
fn a_tls_cluster_with_client_certificates_holds_hands_over_and_refuses_a_wrong_ca_at_once() {
    if skip_unless_root() {
        return;
    }
    let machines = Machines::new();
    let certificates = Certificates::new(&machines.service_addresses());
    let etcd = Options::members(1).tls(&certificates).start();
    let links = machines.links(&etcd);
    let tls = |task: Task, ca: &str, client: bool| {
        let identity = client.then(|| {
            (
                certificates.path("client.pem"),
                certificates.path("client.key"),
            )
        });
        task.etcd_tls(certificates.path(ca), identity)
    };
    let (primary, first, standby) = holder_and_standby(
        &machines,
        [0, 1].map(|m| tls(hold(&links[m]), "ca.pem", true)),
    );
    primary.terminate();
    let (_, token, _) = standby
        .holding(Duration::from_secs(5))
        .expect("the standby took over over TLS");
    assert!(token > first);

    let start = Instant::now();
    let wrong_ca = machines.start(0, tls(hold(&links[0]).log(), "other-ca.pem", true));
    let no_certificate = machines.start(0, tls(hold(&links[0]).log(), "ca.pem", false));
    for (server, what) in [
        (&wrong_ca, "another CA"),
        (&no_certificate, "no client certificate"),
    ] {
        let error = refused_at_once(server, "TLS", start, what);
        eprintln!("TLS, {what}: {error} ({:?})", start.elapsed());
    }
}

/// Finding 1: authentication, with a user whose role may write only the lease's prefix.
/// A wrong password, no user at all, or a prefix the role may not write fails at once,
/// whatever the wait.
#[test]
fn an_authenticated_user_holds_and_hands_over_and_a_refused_one_fails_at_once() {
    if skip_unless_root() {
        return;
    }
    let mut etcd = Etcd::single();
    etcd.enable_auth(PREFIX);
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let (user, password) = LEASE_USER;
    let (primary, first, standby) = holder_and_standby(
        &machines,
        [0, 1].map(|m| hold(&links[m]).etcd_user(user, password)),
    );
    primary.terminate();
    let (_, token, _) = standby
        .holding(Duration::from_secs(5))
        .expect("the standby took over");
    assert!(token > first);

    let start = Instant::now();
    let cases = [
        (
            hold(&links[0]).etcd_user(user, "wrong"),
            "a wrong password",
            "authentication",
        ),
        (hold(&links[0]), "no user", "authentication"),
        (
            hold(&links[0])
                .etcd_user(user, password)
                .lease_prefix("/elsewhere/"),
            "a prefix the role may not write",
            "permission",
        ),
    ];
    let servers: Vec<_> = cases
        .into_iter()
        .map(|(task, what, expected)| (machines.start(0, task), what, expected))
        .collect();
    for (server, what, expected) in &servers {
        let error = refused_at_once(server, expected, start, what);
        eprintln!("auth, {what}: {error} ({:?})", start.elapsed());
    }
}

/// Finding 1: endpoints of two clusters are a mistake, not a wait.
#[test]
fn endpoints_of_two_clusters_fail_at_once() {
    if skip_unless_root() {
        return;
    }
    let machines = Machines::new();
    let (one, two) = (Etcd::single(), Etcd::single());
    let (one_link, two_link) = (machines.link(0, &one), machines.link(0, &two));
    let mut urls = one_link.urls();
    urls.extend(two_link.urls());
    let start = Instant::now();
    let server = machines.start(
        0,
        Task::new(Action::Hold, "")
            .lease(urls, TTL_S)
            .lock_wait_ms(u64::MAX),
    );
    refused_at_once(&server, "cluster", start, "two clusters");
}

/// Finding 2: an open that waits for ever says why it waits, etcd out of reach included,
/// and takes the lease once etcd is back.
#[test]
fn an_unbounded_wait_reports_etcd_out_of_reach_and_ends_when_it_is_back() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let link = machines.link(0, &etcd);
    link.set(|faults| faults.refuse = true);
    let started = now_ms();
    let server = machines.serve(0, &link);
    let (_, (why, at)) = server
        .report(Duration::from_secs(5), |report| match report {
            Report::Waiting { why, at_ms } => Some((why.clone(), *at_ms)),
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "nothing said while etcd was out of reach: {:?}",
                server.said()
            )
        });
    assert!(why.contains("unavailable"), "{why}");
    link.set(|faults| faults.refuse = false);
    server
        .holding(Duration::from_secs(10))
        .expect("took the lease once etcd was back");
    eprintln!(
        "etcd out of reach: on_wait said {why:?} {} ms after the start",
        at - started
    );
}

#[test]
fn an_unreachable_etcd_is_a_clear_error_after_the_wait() {
    if skip_unless_root() {
        return;
    }
    let machines = Machines::new();
    let host = machines.service_addresses()[0];
    // A port that was free a moment ago, where nothing listens now.
    let port = machines
        .network
        .listen(host)
        .local_addr()
        .expect("a port")
        .port();
    let start = Instant::now();
    let server = machines.start(
        0,
        Task::new(Action::Open, "")
            .lease(vec![format!("http://{host}:{port}")], TTL_S)
            .lock_wait_ms(1000),
    );
    let error = refused(&server);
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(
        error.contains(&format!(
            "cannot take the identity's lease from etcd at http://{host}:{port}"
        )),
        "{error}"
    );
}

/// Finding 8: a prefix without its trailing `/` would be another key than every other
/// machine's: it is refused.
#[test]
fn a_prefix_without_a_trailing_slash_is_refused() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let holder = machines.serve(1, &links[1]);
    holder.holding(Duration::from_secs(10)).expect("holds");
    let other = machines.start(
        0,
        hold(&links[0]).lease_prefix(PREFIX.trim_end_matches('/')),
    );
    let error = refused(&other);
    assert!(error.contains("end in '/'"), "{error}");
    assert!(other.holding(Duration::ZERO).is_none());
}

/// Finding 7: a holder starved of CPU (1 ms per 100 ms, Kubernetes' `cpu: 10m`, with busy
/// threads beside it) and cut off from etcd fences itself late: as late as the kernel
/// gives a woken thread of it the CPU. How late, against the standby's bind, is measured;
/// that it fences at all is asserted.
#[test]
fn a_starved_holder_fences_itself_as_late_as_the_cpu_lets_it() {
    if skip_unless_root() {
        return;
    }
    let rounds = crate::campaigns::size(1, 10);
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let mut windows = Vec::new();
    for round in 0..rounds {
        links[0].set(|faults| faults.blackhole = [false; 2]);
        let limit = CpuLimit::new(Duration::from_millis(1), Duration::from_millis(100));
        let mut task = hold(&links[0]).log();
        task.holding.busy_threads = 8;
        let starved = machines.start(0, task);
        starved.holding(Duration::from_secs(10)).expect("holds");
        limit.add(starved.pid());
        let standby = machines.serve(1, &links[1]);
        assert!(standby.holding(Duration::from_millis(500)).is_none());
        links[0].blackhole();
        let cut_at = now_ms();
        let (_, _, held_at) = standby.holding(TTL * 3).expect("the standby took over");
        let fenced_at = starved
            .logged("closing the endpoint", TTL * 3)
            .unwrap_or_else(|| panic!("round {round}: the starved holder never fenced itself"));
        assert!(
            fenced_at > cut_at,
            "round {round}: fenced before it was cut off"
        );
        windows.push(fenced_at as i64 - held_at as i64);
        drop(starved);
        drop(limit);
        drop(standby);
    }
    windows.sort_unstable();
    let overlaps = windows.iter().filter(|window| **window > 0).count();
    eprintln!(
        "a starved holder (1 ms of CPU per 100 ms, 8 busy threads), cut off from etcd: its \
         fence came {windows:?} ms after the standby bound (negative: before); {overlaps} of \
         {rounds} rounds had two holders"
    );
}

/// Finding 7: a holder whose application holds its runtime up (work that never yields on
/// a runtime of one thread) still fences itself on time: the fence is a thread of its own.
#[test]
fn a_holder_whose_runtime_is_held_up_fences_itself_on_time() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let mut task = hold(&links[0]).log();
    task.holding.block_runtime_ms = Some((TTL * 3).as_millis() as u64);
    let blocked = machines.start(0, task);
    blocked.holding(Duration::from_secs(10)).expect("holds");
    let standby = machines.serve(1, &links[1]);
    assert!(standby.holding(Duration::from_millis(500)).is_none());
    links[0].blackhole();
    let (_, _, held_at) = standby.holding(TTL * 3).expect("the standby took over");
    let fenced_at = blocked
        .logged("closing the endpoint", TTL * 3)
        .expect("the holder fenced itself");
    let window = fenced_at as i64 - held_at as i64;
    assert!(
        window < 0,
        "the held-up holder fenced itself {window} ms after the standby bound"
    );
    eprintln!(
        "a holder whose runtime was held up for {:?}, cut off from etcd: its fence came {} ms \
         before the standby bound",
        TTL * 3,
        -window
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_relay_a_ticket_reaches_the_standby_after_the_primary_dies() -> anyhow::Result<()>
{
    if skip_unless_root() {
        return Ok(());
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let (relay_map, relay_url, _relay) = iroh::test_utils::run_relay_server().await?;
    // The relay listens on the host's loopback; both machines reach it through a proxy on
    // machine 0's service address, which every machine routes to.
    let relay_port = relay_url.port().expect("the relay's port");
    let relay_proxy = machines.proxy(
        0,
        std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, relay_port)),
    );
    let machines_relay: iroh::RelayUrl = format!("https://{}", relay_proxy.addr()).parse()?;
    let links = machines.links(&etcd);
    let serve = |m: usize| {
        let relay = Some(machines_relay.to_string());
        let task = Task::new(Action::Serve { relay }, "")
            .lease(links[m].urls(), TTL_S)
            .lock_wait_ms(u64::MAX);
        machines.start(m, task)
    };
    let mut primary = serve(0);
    let ticket = |server: &Process| {
        server
            .report(Duration::from_secs(15), |report| match report {
                Report::Ticket(ticket) => Some(ticket.clone()),
                _ => None,
            })
            .map(|(_, ticket)| ticket)
    };
    let ticket: iroh_tickets::endpoint::EndpointTicket =
        ticket(&primary).expect("the primary's ticket").parse()?;
    let addr = ticket.endpoint_addr().clone();
    assert_eq!(
        addr.ip_addrs().count(),
        0,
        "only the relay and the id: {addr:?}"
    );
    assert_eq!(addr.id.to_string(), machines.id);
    assert_eq!(addr.relay_urls().next(), Some(&machines_relay));
    // The client, on the host, reaches the same relay at its own address.
    let addr = iroh::EndpointAddr::new(addr.id).with_relay_url(relay_url.clone());
    let standby = serve(1);

    let client = crate::support::relay_only(relay_map)(iroh::Endpoint::builder(
        iroh::endpoint::presets::Minimal,
    ))
    .bind()
    .await?;
    let limit = Duration::from_secs(5);
    crate::support::echo::echo(&client, &addr, b"before", limit).await?;

    primary.kill();
    let killed = Instant::now();
    let within = TTL + Duration::from_secs(10);
    let reached = loop {
        match crate::support::echo::echo(&client, &addr, b"after", limit).await {
            Ok(_) => break killed.elapsed(),
            Err(err) => assert!(
                killed.elapsed() < within,
                "the ticket reached no one within {within:?}: {err:#}; standby said {:?}",
                standby.said()
            ),
        }
    };
    assert!(
        standby.holding(Duration::ZERO).is_some(),
        "the standby answered"
    );
    eprintln!(
        "through the relay: the old ticket reached the standby {reached:?} after the SIGKILL"
    );
    client.close().await;
    Ok(())
}

#[test]
fn a_key_from_the_environment_is_guarded_by_the_lease_too() {
    if skip_unless_root() {
        return;
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    // Read as the test (root) is not the machine's user, which the trust check refuses.
    let key = std::fs::read(machines.key(0)).expect("the key file");
    let (key, _) = iroh_identity::decode_key(&key).expect("the key");
    let hex = String::from_utf8(encode_key(&key, KeyFormat::Hex).to_vec()).expect("hex");
    let links = machines.links(&etcd);
    let from_env = |m: usize, wait_ms: u64| {
        let mut task = Task::new(Action::Hold, "/nonexistent/unused.key")
            .lease(links[m].urls(), TTL_S)
            .lock_wait_ms(wait_ms);
        task.key_env = Some("TEST_IROH_SECRET".to_owned());
        let mut command = task.command_at(&machines.exe);
        command.env("TEST_IROH_SECRET", hex.trim());
        machines.network.enter(m, &mut command);
        as_user(&mut command, MACHINE_USERS[m], &[]);
        Process::start(&mut command)
    };
    let holder = from_env(0, 0);
    holder.holding(Duration::from_secs(10)).expect("holds");
    let refused_one = from_env(1, 500);
    let error = refused(&refused_one);
    assert!(error.contains("is held by"), "{error}");
}

#[test]
fn zz_debug_tls_auth_kill() {
    let machines = Machines::new();
    let certificates = Certificates::new(&machines.service_addresses());
    let mut etcd = Options::members(1).tls(&certificates).start();
    etcd.enable_auth(PREFIX);
    let links = machines.links(&etcd);
    let (user, password) = LEASE_USER;
    let task = hold(&links[0])
        .etcd_tls(
            certificates.path("ca.pem"),
            Some((
                certificates.path("client.pem"),
                certificates.path("client.key"),
            )),
        )
        .etcd_user(user, password)
        .trace();
    let first = machines.start(
        1,
        hold(&links[1])
            .etcd_tls(
                certificates.path("ca.pem"),
                Some((
                    certificates.path("client.pem"),
                    certificates.path("client.key"),
                )),
            )
            .etcd_user(user, password),
    );
    first.holding(Duration::from_secs(10)).expect("holds");
    let holder = machines.start(0, task);
    std::thread::sleep(Duration::from_millis(500));
    first.signal(libc::SIGTERM);
    holder.holding(Duration::from_secs(10)).expect("holds");
    etcd.kill_member(0);
    let killed = now_ms();
    let lost = holder.lost(Duration::from_secs(10));
    let log = holder.stderr_text();
    let interesting: Vec<_> = log
        .lines()
        .filter(|l| l.contains("iroh_identity"))
        .collect();
    assert!(
        lost.is_some(),
        "not lost; killed at {killed}; log: {interesting:#?}"
    );
    eprintln!("lost {:?} after", lost.map(|(_, at)| at - killed));
}
