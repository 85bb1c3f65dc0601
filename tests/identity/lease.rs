//! Guarantee 12: one live endpoint per identity across machines, with an etcd lease
//! (feature `etcd`), against real etcd processes ([`Etcd`]). The failover campaign is
//! `campaigns::failover`.
//!
//! Two machines are two network namespaces of this host ([`Namespace`]), each with its own
//! copy of the key, run as a user of its own: nothing of the host's guards the identity
//! across them (not a lock per user, nor one per namespace), so only the lease keeps them
//! apart, as it must keep two machines. Each reaches etcd through a proxy of its own
//! ([`Link`]), which injects faults into that machine's traffic alone. That needs root;
//! without it the tests say `skipped`.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Command},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use iroh::SecretKey;
use iroh_identity::{KeyFormat, encode_key};

use crate::support::{
    as_user,
    child::{Action, Report, Task},
    etcd::Etcd,
    make_dir,
    net::Namespace,
    now_ms,
    proxy::Proxy,
    runnable_by_others, signal, temp_dir, write_private,
};

/// The TTL of the tests' leases, in seconds: the crate's minimum.
pub(crate) const TTL_S: u64 = 2;
pub(crate) const TTL: Duration = Duration::from_secs(TTL_S);

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
    namespaces: [Namespace; 2],
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
            namespaces: [Namespace::new(), Namespace::new()],
        }
    }

    /// Where each machine reaches the host: the addresses a server's certificate names.
    pub(crate) fn host_sides(&self) -> Vec<Ipv4Addr> {
        self.namespaces.iter().map(Namespace::host_side).collect()
    }

    /// Machine `m`'s own way to every member of `etcd`: a proxy each, on its side of the
    /// host.
    pub(crate) fn link(&self, m: usize, etcd: &Etcd) -> Link {
        let proxies: Vec<Proxy> = (0..etcd.size())
            .map(|i| Proxy::start(self.namespaces[m].host_side(), etcd.member_addr(i)))
            .collect();
        let urls = proxies.iter().map(|proxy| etcd.url_of(proxy)).collect();
        Link {
            _proxies: proxies,
            urls,
        }
    }

    /// Machine `m` runs `task` (its key path filled in) as a holder or a standby.
    pub(crate) fn start(&self, m: usize, task: Task) -> Server {
        let mut task = task;
        task.path.clone_from(&self.keys[m]);
        let mut command = task.command_at(&self.exe);
        self.namespaces[m].enter(&mut command);
        as_user(&mut command, MACHINE_USERS[m], &[]);
        Server::start(command)
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
        self.namespaces[m].enter(&mut command);
        as_user(&mut command, MACHINE_USERS[m], &[]);
        command
    }

    /// A holder or standby on the lease through `link`, waiting for it as long as it takes.
    pub(crate) fn serve(&self, m: usize, link: &Link) -> Server {
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
    /// Kept for as long as the link: they forward the machine's traffic.
    _proxies: Vec<Proxy>,
    urls: Vec<String>,
}

impl Link {
    /// The URL of every member, as this machine reaches it.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.urls.clone()
    }
}

/// What a child said so far, each report with when it arrived, and a signal for the next.
type Reports = Arc<(Mutex<Vec<(Instant, Report)>>, Condvar)>;

/// A child holding, or waiting for, the identity; its reports arrive as they are said,
/// and its log lines (stderr) are kept.
pub(crate) struct Server {
    child: Option<Child>,
    reports: Reports,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let reports: Reports = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let shared = Arc::clone(&reports);
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(report) = crate::support::child::report_in(&line) {
                    let (list, arrived) = &*shared;
                    list.lock()
                        .expect("not poisoned")
                        .push((Instant::now(), report));
                    arrived.notify_all();
                }
            }
        });
        let lines = Arc::clone(&log);
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("not poisoned").push(line);
            }
        });
        Self {
            child: Some(child),
            reports,
            log,
            readers: vec![stdout, stderr],
        }
    }

    /// The first report that `pick` takes, waiting up to `limit` for it, with when it
    /// arrived.
    pub(crate) fn wait_for<T>(
        &self,
        limit: Duration,
        pick: impl Fn(&Report) -> Option<T>,
    ) -> Option<(Instant, T)> {
        let (list, arrived) = &*self.reports;
        let deadline = Instant::now() + limit;
        let mut list = list.lock().expect("not poisoned");
        loop {
            if let Some(found) = list
                .iter()
                .find_map(|(at, report)| pick(report).map(|value| (*at, value)))
            {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            list = arrived.wait_timeout(list, left).expect("not poisoned").0;
        }
    }

    /// The fencing token and the wall-clock time at which it started holding, waiting
    /// up to `limit`.
    pub(crate) fn holding(&self, limit: Duration) -> Option<(Instant, i64, u64)> {
        self.wait_for(limit, |report| match report {
            Report::Holding { token, at_ms } => Some((*token, *at_ms)),
            _ => None,
        })
        .map(|(at, (token, at_ms))| (at, token, at_ms))
    }

    /// When it said it lost its lease (and closed its endpoint), waiting up to `limit`.
    pub(crate) fn lost(&self, limit: Duration) -> Option<(String, u64)> {
        self.wait_for(limit, |report| match report {
            Report::Lost { reason, at_ms } => Some((reason.clone(), *at_ms)),
            _ => None,
        })
        .map(|(_, lost)| lost)
    }

    /// When it closed on SIGTERM, waiting up to `limit`.
    pub(crate) fn closed(&self, limit: Duration) -> Option<u64> {
        self.wait_for(limit, |report| match report {
            Report::Closed { at_ms } => Some(*at_ms),
            _ => None,
        })
        .map(|(_, at_ms)| at_ms)
    }

    /// The error it reported, waiting up to `limit`.
    pub(crate) fn error(&self, limit: Duration) -> Option<String> {
        self.wait_for(limit, |report| match report {
            Report::Error(error) => Some(error.clone()),
            _ => None,
        })
        .map(|(_, error)| error)
    }

    /// Everything it said so far.
    pub(crate) fn said(&self) -> Vec<Report> {
        let list = self.reports.0.lock().expect("not poisoned");
        list.iter().map(|(_, report)| report.clone()).collect()
    }

    pub(crate) fn signal(&self, signal: libc::c_int) {
        crate::support::signal(self.child.as_ref().expect("running").id(), signal);
    }

    /// SIGKILL, and the wall-clock time it was sent.
    pub(crate) fn kill(&mut self) -> u64 {
        let at = now_ms();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        at
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// The error a child reported within a few seconds, or a panic that shows all it said.
fn refused(server: &Server) -> String {
    server.error(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "no error within 10 s; the child said {:?} and logged {:?}",
            server.said(),
            server.log.lock().expect("not poisoned")
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
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
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
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
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
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
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
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
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

#[test]
fn a_leader_change_keeps_the_lease_and_the_endpoint() {
    if skip_unless_root() {
        return;
    }
    let mut etcd = Etcd::cluster();
    let machines = Machines::new();
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
    let leader = etcd.leader();
    // The leader first: both the holder's keep-alives and the standby's requests go to it
    // until it fails, and then must turn to the members that are left.
    let mut endpoints = links[0].urls();
    endpoints.rotate_left(leader);
    let primary = machines.start(
        0,
        Task::new(Action::Hold, "")
            .lease(endpoints, TTL_S)
            .lock_wait_ms(u64::MAX),
    );
    let (_, token, _) = primary.holding(Duration::from_secs(10)).expect("holds");
    etcd.kill_member(leader);
    let new_leader = etcd.leader();
    assert_ne!(new_leader, leader);
    // Three TTLs later, the holder still holds: no loss, and a standby is refused.
    assert!(
        primary.lost(TTL * 3).is_none(),
        "the holder lost its lease: {:?}",
        primary.said()
    );
    // Each standby's requests start at the dead member: each must be told "held", never
    // "unavailable" (etcd-client alone fails a share of the requests to a dead member).
    let mut endpoints = links[1].urls();
    endpoints.rotate_left(leader);
    for _ in 0..4 {
        let standby = machines.start(
            1,
            Task::new(Action::Open, "")
                .lease(endpoints.clone(), TTL_S)
                .lock_wait_ms(500),
        );
        let refused = refused(&standby);
        assert!(refused.contains("is held by"), "{refused}");
    }
    assert!(primary.lost(Duration::ZERO).is_none());
    eprintln!("leader change: the holder kept its lease (token {token}) and its endpoint");
}

#[test]
fn an_unreachable_etcd_is_a_clear_error_after_the_wait() {
    if skip_unless_root() {
        return;
    }
    let machines = Machines::new();
    let host = machines.host_sides()[0];
    let port = std::net::TcpListener::bind((host, 0))
        .and_then(|listener| listener.local_addr())
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

#[tokio::test(flavor = "multi_thread")]
async fn through_a_relay_a_ticket_reaches_the_standby_after_the_primary_dies() -> anyhow::Result<()>
{
    if skip_unless_root() {
        return Ok(());
    }
    let etcd = Etcd::single();
    let machines = Machines::new();
    let (_, relay_url, _relay) = iroh::test_utils::run_relay_server().await?;
    // The relay listens on loopback; both machines reach it through a proxy on machine
    // 0's side of the host, which every namespace routes to.
    let relay_port = relay_url.port().expect("the relay's port");
    let relay_proxy = Proxy::start(
        machines.host_sides()[0],
        std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, relay_port)),
    );
    let relay_url: iroh::RelayUrl = format!("https://{}", relay_proxy.addr()).parse()?;
    let relay_map = iroh::RelayMap::from(iroh::RelayConfig::new(relay_url.clone(), None));
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
    let serve = |m: usize| {
        let mut task = Task::new(Action::Serve, "")
            .lease(links[m].urls(), TTL_S)
            .lock_wait_ms(u64::MAX);
        task.relay = Some(relay_url.to_string());
        machines.start(m, task)
    };
    let mut primary = serve(0);
    let ticket = |server: &Server| {
        server
            .wait_for(Duration::from_secs(15), |report| match report {
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
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
    let from_env = |m: usize, wait_ms: u64| {
        let mut task = Task::new(Action::Hold, "/nonexistent/unused.key")
            .lease(links[m].urls(), TTL_S)
            .lock_wait_ms(wait_ms);
        task.key_env = Some("TEST_IROH_SECRET".to_owned());
        let mut command = task.command_at(&machines.exe);
        command.env("TEST_IROH_SECRET", hex.trim());
        machines.namespaces[m].enter(&mut command);
        as_user(&mut command, MACHINE_USERS[m], &[]);
        Server::start(command)
    };
    let holder = from_env(0, 0);
    holder.holding(Duration::from_secs(10)).expect("holds");
    let refused_one = from_env(1, 500);
    let error = refused(&refused_one);
    assert!(error.contains("is held by"), "{error}");
}
