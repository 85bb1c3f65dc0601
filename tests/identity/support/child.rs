//! Child processes: this test binary run again, to act as a second program.
//!
//! The protocol is two types. The parent describes what the child does in a [`Task`],
//! which travels as JSON in one environment variable; the child answers with
//! [`Report`]s, one JSON value a line on stdout behind `@child `.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use iroh::{RelayConfig, RelayMap, RelayUrl, endpoint::presets, protocol::Router};
use iroh_tickets::endpoint::EndpointTicket;
use serde::{Deserialize, Serialize};

use super::{echo, process::Process};

/// The environment variable that carries the [`Task`].
const TASK: &str = "IROH_IDENTITY_TEST_TASK";

/// What a line of the child's stdout starts with when it is a [`Report`].
const MARK: &str = "@child ";

/// How long a `Hold` or `Serve` child keeps its endpoint if nobody stops it.
const HOLD_AT_MOST: Duration = Duration::from_secs(30);

/// What a child does, with what only that needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Action {
    /// Takes the identity, reports its id, and lets it go.
    Identity,
    /// Binds an endpoint (loopback only, unless `all_interfaces`), reports its id, closes.
    Open,
    /// As `Open`, then reports `Ready` and keeps the endpoint until killed.
    Hold,
    /// Serves echo on all interfaces, or through `relay` (the URL of a relay with a
    /// self-signed certificate) and no IP socket at all; reports its id and a ticket
    /// (that holds only the relay, with one), then `Ready`, and closes gracefully on
    /// SIGTERM.
    Serve { relay: Option<String> },
    /// A peer without a key file: connects to `ticket`, reports `Ready`, stays connected.
    Dial { ticket: String },
    /// The victim of the directory-swap attack: takes the identity at `PATH/N/endpoint.key`
    /// for each of `runs` runs N, where `PATH/N` is missing; reports `Created`.
    CreateMany { runs: usize },
    /// The attacker of the directory-swap attack: for each of `runs` runs N, renames
    /// `PATH/N` away as soon as it appears and puts a link to one of `targets` in its
    /// place; reports `Swapped`.
    Swap { runs: usize, targets: Vec<PathBuf> },
    /// The victim of the planted-directory race: for each of `runs` runs N, takes the
    /// identity at `PATH/appN/endpoint.key` a moment after the attacker started on it,
    /// then leaves `PATH/doneN`; reports `Opened`.
    OpenMany { runs: usize },
    /// The attacker of the planted-directory race: for each of `runs` runs N, until
    /// `PATH/doneN` appears, puts something at `PATH/appN` and takes it away again, as
    /// fast as it can: a directory of its own that every user may write on even runs, a
    /// link to `target` on odd ones; reports `Swapped`.
    Toggle { runs: usize, target: PathBuf },
    /// The squatter of the host lock: binds each abstract unix socket name of `names` and
    /// listens on it, never accepting (a name ending in `!` is bound without listening);
    /// reports `Ready` and keeps them until killed.
    Squat { names: Vec<String> },
    /// The squatter of remembered ports: binds UDP on every interface, IPv4 and IPv6, on
    /// each of `ports`; reports `Ready` and keeps them until killed.
    BindUdp { ports: Vec<u16> },
    /// The flooder of the host lock: connects to each of `names` and lets go, as fast as
    /// it can, on 4 threads, for `millis` milliseconds, keeping each connection open for
    /// a while; reports `Ready` once it started.
    Flood { names: Vec<String>, millis: u64 },
    /// Makes `count` unix sockets, bound to nothing, and keeps them until killed: a long
    /// table of unix sockets; reports `Ready`.
    Sockets { count: usize },
    /// Takes `runs` identities of new keys one after the other, each from the variable
    /// `key_env`, and lets each go; reports `Opened`.
    OpenKeys { runs: usize },
}

/// Everything a child needs to know: what to do, to which key, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Task {
    pub action: Action,
    pub path: PathBuf,
    /// The lock wait; the crate's default when `None`.
    pub lock_wait_ms: Option<u64>,
    /// The umask to create files under.
    pub umask: Option<u32>,
    /// The environment variable to take the key from (`Builder::key_from_env`).
    pub key_env: Option<String>,
    /// Milliseconds since the epoch at which to start, so that many children start at once.
    pub start_at_ms: Option<u64>,
    /// Log everything, iroh's TRACE lines included, to stderr (to search it for secrets).
    pub trace: bool,
    /// Log WARN and ERROR lines to stderr, each starting with milliseconds since the
    /// epoch.
    pub log: bool,
    /// The largest file the child may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size_limit: Option<u64>,
    /// `Open` and `Hold` bind iroh's sockets on all interfaces (where stable addressing
    /// remembers ports) instead of 127.0.0.1 only.
    pub all_interfaces: bool,
    /// Take the key from the default location of an application, not from `path`.
    pub default_location: bool,
    /// Take the key from this keychain entry (service, account), not from `path`.
    pub keychain: Option<(String, String)>,
    /// Guard the identity with a lease in etcd.
    pub lease: Option<LeaseTask>,
    /// How a `Hold` child behaves while it holds.
    pub holding: Holding,
}

/// The lease a child takes, in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseTask {
    /// The members' client URLs.
    pub endpoints: Vec<String>,
    /// The TTL in seconds.
    pub ttl_s: u64,
    /// The key's prefix; the crate's default when `None`.
    pub prefix: Option<String>,
    /// TLS to etcd: the CA's certificate, and the client's certificate and key if any.
    pub tls: Option<EtcdTls>,
    /// The etcd user and password.
    pub user: Option<(String, String)>,
}

/// What a child that holds its endpoint does meanwhile.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Holding {
    /// How long it keeps its endpoint if nobody stops it; `HOLD_AT_MOST` unless set.
    pub at_most_ms: Option<u64>,
    /// Threads that spin for ever beside it once it holds (a busy program).
    pub busy_threads: usize,
    /// Once it holds, a task of the application's blocks the runtime's thread this long.
    pub block_runtime_ms: Option<u64>,
}

/// The files of a TLS connection to etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EtcdTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Task {
    pub(crate) fn new(action: Action, path: impl Into<PathBuf>) -> Self {
        Self {
            action,
            path: path.into(),
            lock_wait_ms: None,
            umask: None,
            key_env: None,
            start_at_ms: None,
            trace: false,
            log: false,
            file_size_limit: None,
            all_interfaces: false,
            default_location: false,
            keychain: None,
            lease: None,
            holding: Holding::default(),
        }
    }

    /// Guards the identity with a lease in the etcd at `endpoints`, of `ttl_s` seconds.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    pub(crate) fn lease(mut self, endpoints: Vec<String>, ttl_s: u64) -> Self {
        self.lease = Some(LeaseTask {
            endpoints,
            ttl_s,
            prefix: None,
            tls: None,
            user: None,
        });
        self
    }

    /// The lease, for the methods that set its details.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    fn lease_mut(&mut self) -> &mut LeaseTask {
        self.lease.as_mut().expect("a lease, set first")
    }

    /// Talks to etcd over TLS: `ca` verifies etcd, `identity` (a certificate and its key)
    /// is the client's.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    pub(crate) fn etcd_tls(mut self, ca: PathBuf, identity: Option<(PathBuf, PathBuf)>) -> Self {
        self.lease_mut().tls = Some(EtcdTls { ca, identity });
        self
    }

    /// Authenticates to etcd as `user`.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    pub(crate) fn etcd_user(mut self, user: &str, password: &str) -> Self {
        self.lease_mut().user = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Keeps the lease's key under `prefix`.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    pub(crate) fn lease_prefix(mut self, prefix: &str) -> Self {
        self.lease_mut().prefix = Some(prefix.to_owned());
        self
    }

    /// A `Hold` child keeps its endpoint for up to `hold` if nobody stops it.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    pub(crate) fn hold_for(mut self, hold: Duration) -> Self {
        self.holding.at_most_ms = Some(u64::try_from(hold.as_millis()).expect("a short hold"));
        self
    }

    /// Logs WARN and ERROR lines to stderr, each after its time in epoch milliseconds.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    pub(crate) fn log(mut self) -> Self {
        self.log = true;
        self
    }

    /// Takes the key from the keychain entry `service`/`account`.
    #[cfg(feature = "keyring")]
    pub(crate) fn keychain(mut self, service: &str, account: &str) -> Self {
        self.keychain = Some((service.to_owned(), account.to_owned()));
        self
    }

    pub(crate) fn lock_wait_ms(mut self, ms: u64) -> Self {
        self.lock_wait_ms = Some(ms);
        self
    }

    pub(crate) fn trace(mut self) -> Self {
        self.trace = true;
        self
    }

    pub(crate) fn all_interfaces(mut self) -> Self {
        self.all_interfaces = true;
        self
    }

    /// Starts `delay` from now: give many children the same instant.
    pub(crate) fn start_in(mut self, delay: Duration) -> Self {
        let at = SystemTime::now() + delay;
        let ms = at
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis();
        self.start_at_ms = Some(u64::try_from(ms).expect("a time in range"));
        self
    }

    /// A command that runs this test binary as a child doing this task.
    pub(crate) fn command(&self) -> Command {
        self.command_at(&std::env::current_exe().expect("current exe"))
    }

    /// The same, with this test binary at `exe` (a copy that another user can run).
    pub(crate) fn command_at(&self, exe: &Path) -> Command {
        let mut command = Command::new(exe);
        command
            .args([
                "child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(TASK, serde_json::to_string(self).expect("a task is JSON"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs the task to its end.
    pub(crate) fn run(&self) -> Outcome {
        run_to_end(self.command())
    }
}

/// What a child says, one line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    Id(String),
    /// An error and its causes, as `anyhow` prints them with `{:#}`.
    Error(String),
    Ticket(String),
    Ready,
    Created {
        created: usize,
        refused: usize,
    },
    Swapped(usize),
    /// The ids the runs of an `OpenMany` victim took, and how many were refused.
    Opened {
        ids: Vec<String>,
        refused: usize,
    },
    /// The endpoint is bound, holding its lease with this fencing token, since `at_ms`.
    Holding {
        token: i64,
        at_ms: u64,
    },
    /// The endpoint was closed on SIGTERM at `at_ms`.
    Closed {
        at_ms: u64,
    },
    /// The lease was lost, and the endpoint closed, at `at_ms`.
    Lost {
        reason: String,
        at_ms: u64,
    },
    /// The lease's `on_wait` said why the open waits, at `at_ms`.
    Waiting {
        why: String,
        at_ms: u64,
    },
}

fn say(report: Report) {
    println!(
        "{MARK}{}",
        serde_json::to_string(&report).expect("a report is JSON")
    );
}

/// The report on a line of the child's stdout, if any: the test harness may print its
/// own words before it on the same line.
pub(crate) fn report_in(line: &str) -> Option<Report> {
    let (_, json) = line.split_once(MARK)?;
    Some(serde_json::from_str(json.trim_end()).expect("a child's report"))
}

/// What a finished child said.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: ExitStatus,
    pub reports: Vec<Report>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Outcome {
    /// The endpoint id it reported, if it got one.
    pub(crate) fn id(&self) -> Option<&str> {
        self.reports.iter().find_map(|report| match report {
            Report::Id(id) => Some(id.as_str()),
            _ => None,
        })
    }

    /// The error it reported, if it failed.
    pub(crate) fn error(&self) -> Option<&str> {
        self.reports.iter().find_map(|report| match report {
            Report::Error(error) => Some(error.as_str()),
            _ => None,
        })
    }

    /// The id, or a panic that shows everything the child said.
    pub(crate) fn expect_id(&self) -> &str {
        self.id()
            .unwrap_or_else(|| panic!("child reported no id: {self}"))
    }

    /// The error, or a panic that shows everything the child said.
    pub(crate) fn expect_error(&self) -> &str {
        self.error()
            .unwrap_or_else(|| panic!("child reported no error: {self}"))
    }

    /// The one report of its kind that `pick` finds, or a panic.
    pub(crate) fn expect<T>(&self, pick: impl Fn(&Report) -> Option<T>) -> T {
        self.reports
            .iter()
            .find_map(pick)
            .unwrap_or_else(|| panic!("child did not report it: {self}"))
    }

    /// Fails if anything the child printed (logs, errors, panics) holds `secret`.
    pub(crate) fn assert_no_secret(&self, secret: &iroh::SecretKey) {
        let secret = secret.to_bytes();
        super::assert_no_secret(&self.stdout, &secret, "a child's stdout");
        super::assert_no_secret(self.stderr.as_bytes(), &secret, "a child's stderr");
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reported {:?}; stderr:\n{}",
            self.status, self.reports, self.stderr
        )
    }
}

/// Waits for a started child to exit and collects what it said.
pub(crate) fn outcome(process: Process) -> Outcome {
    Outcome::of(process.finish(None))
}

/// What a started child said once it exited, or was killed when `limit` had passed.
#[cfg(unix)]
pub(crate) fn outcome_within(process: Process, limit: Duration) -> Outcome {
    Outcome::of(process.finish(Some(limit)))
}

/// Runs a child to the end.
pub(crate) fn run_to_end(mut command: Command) -> Outcome {
    outcome(Process::start(&mut command))
}

/// Runs a child to the end, killing it and failing the test if it takes longer than
/// `limit`: for what must not hang.
#[cfg(unix)]
pub(crate) fn run_within(mut command: Command, limit: Duration) -> Outcome {
    let mut process = Process::start(&mut command);
    let in_time = process.exit_within(limit).is_some();
    let outcome = outcome_within(process, Duration::ZERO);
    assert!(
        in_time,
        "the child did not finish within {limit:?}: {outcome}"
    );
    outcome
}

impl Outcome {
    fn of((status, stdout, stderr): (ExitStatus, Vec<u8>, Vec<u8>)) -> Self {
        Self {
            status,
            reports: String::from_utf8_lossy(&stdout)
                .lines()
                .filter_map(report_in)
                .collect(),
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// How long a holder may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A child that holds something (an open endpoint, names, a port) once it said it is
/// ready; its [`Process`] kills it when dropped.
pub(crate) struct Holder {
    pub process: Process,
    /// The id it said; empty if it said none.
    pub id: String,
    /// What a `Serve` child hands out.
    pub ticket: Option<String>,
}

impl Holder {
    /// Starts a `Hold` or `Serve` child and waits until its endpoint is open.
    pub(crate) fn start(command: Command) -> Self {
        let holder = Self::until_ready(command);
        assert!(!holder.id.is_empty(), "holder exited before it was ready");
        holder
    }

    /// Starts a child that holds something (`Squat`, `BindUdp`, or a holder) and waits
    /// until it says it is ready, or exits; fails if it reports anything else first.
    pub(crate) fn until_ready(mut command: Command) -> Self {
        let mut process = Process::start(&mut command);
        let ready = process
            .report(READY_WITHIN, |report| {
                matches!(report, Report::Ready).then_some(())
            })
            .is_some();
        let (mut id, mut ticket) = (None, None);
        for report in process.said() {
            match report {
                Report::Ready => break,
                Report::Id(reported) => id = Some(reported),
                Report::Ticket(reported) => ticket = Some(reported),
                other => panic!("holder failed: {other:?}"),
            }
        }
        assert!(
            ready || process.exited().is_some(),
            "the child was not ready within {READY_WITHIN:?}"
        );
        Self {
            process,
            id: id.unwrap_or_default(),
            ticket,
        }
    }

    /// The ticket of a `Serve` child.
    pub(crate) fn ticket(&self) -> &str {
        self.ticket
            .as_deref()
            .expect("a serve child says its ticket")
    }

    /// Kills it (SIGKILL), as in a crash, and returns once it is gone.
    pub(crate) fn kill(mut self) {
        self.process.kill();
    }

    /// Waits up to `limit` for it to exit by itself (after a [`terminate`](Process::terminate),
    /// say), or fails the test.
    #[cfg(unix)]
    pub(crate) fn exits_within(mut self, limit: Duration) -> ExitStatus {
        self.process.exits_within(limit)
    }
}

impl std::ops::Deref for Holder {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Holder {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// What a test child reports, read from its stdout as it comes.
impl Process {
    /// The first report that `pick` takes, with when it arrived: waiting up to `limit`
    /// while the child's stdout lasts.
    pub(crate) fn report<T>(
        &self,
        limit: Duration,
        pick: impl Fn(&Report) -> Option<T>,
    ) -> Option<(Instant, T)> {
        self.stdout_line(limit, |line| report_in(line).as_ref().and_then(&pick))
    }

    /// Everything it reported so far.
    pub(crate) fn said(&self) -> Vec<Report> {
        self.stdout_lines()
            .iter()
            .filter_map(|line| report_in(line))
            .collect()
    }
}

/// What a child that holds a lease reports.
#[cfg(all(feature = "etcd", target_os = "linux"))]
impl Process {
    /// The fencing token and the wall-clock time at which it started holding, with when
    /// that arrived: waiting up to `limit`.
    pub(crate) fn holding(&self, limit: Duration) -> Option<(Instant, i64, u64)> {
        self.report(limit, |report| match report {
            Report::Holding { token, at_ms } => Some((*token, *at_ms)),
            _ => None,
        })
        .map(|(at, (token, at_ms))| (at, token, at_ms))
    }

    /// Why and when it said it lost its lease (and closed its endpoint), waiting up to
    /// `limit`.
    pub(crate) fn lost(&self, limit: Duration) -> Option<(String, u64)> {
        self.report(limit, |report| match report {
            Report::Lost { reason, at_ms } => Some((reason.clone(), *at_ms)),
            _ => None,
        })
        .map(|(_, lost)| lost)
    }

    /// When it closed on SIGTERM, waiting up to `limit`.
    pub(crate) fn closed(&self, limit: Duration) -> Option<u64> {
        self.report(limit, |report| match report {
            Report::Closed { at_ms } => Some(*at_ms),
            _ => None,
        })
        .map(|(_, at_ms)| at_ms)
    }

    /// The error it reported, waiting up to `limit`.
    pub(crate) fn error(&self, limit: Duration) -> Option<String> {
        self.report(limit, |report| match report {
            Report::Error(error) => Some(error.clone()),
            _ => None,
        })
        .map(|(_, error)| error)
    }

    /// The time (epoch ms) of its first log line that holds `text`, waiting up to `limit`
    /// (a child started with [`Task::log`], whose lines start with that time).
    pub(crate) fn logged(&self, text: &str, limit: Duration) -> Option<u64> {
        self.stderr_line(limit, |line| {
            line.contains(text)
                .then(|| line.split_whitespace().next()?.parse().ok())
                .flatten()
        })
    }
}

/// The child's side; does nothing unless started by [`Task::command`].
pub(crate) fn run() {
    let Ok(task) = std::env::var(TASK) else {
        return;
    };
    let task: Task = serde_json::from_str(&task).expect("a task");
    #[cfg(unix)]
    if let Some(umask) = task.umask {
        // SAFETY: umask has no preconditions; this child runs one test on one thread.
        unsafe { libc::umask(umask as libc::mode_t) };
    }
    // `IROH_IDENTITY_CHILD_TRACE` set in a test's environment traces every child: to see
    // what a child did in a test that does not ask for it.
    if task.trace || std::env::var_os("IROH_IDENTITY_CHILD_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    } else if task.log {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_timer(EpochMs)
            .with_writer(std::io::stderr)
            .init();
    }
    #[cfg(unix)]
    if let Some(limit) = task.file_size_limit {
        limit_file_size(limit);
    }
    if let Some(at) = task.start_at_ms {
        let at = UNIX_EPOCH + Duration::from_millis(at);
        if let Ok(delay) = at.duration_since(SystemTime::now()) {
            std::thread::sleep(delay);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match &task.action {
            Action::Identity => match builder(&task).open().await {
                Ok(identity) => say(Report::Id(identity.id().to_string())),
                Err(err) => say(Report::Error(chain(&err))),
            },
            Action::Open | Action::Hold => open(&task).await,
            Action::Serve { relay } => serve(&task, relay.as_deref()).await,
            Action::Dial { ticket } => dial(ticket).await,
            Action::CreateMany { runs } => create_many(&task.path, *runs).await,
            #[cfg(unix)]
            Action::Swap { runs, targets } => swap(&task.path, *runs, targets),
            Action::OpenMany { runs } => open_many(&task.path, *runs).await,
            #[cfg(unix)]
            Action::Toggle { runs, target } => toggle(&task.path, *runs, target),
            #[cfg(target_os = "linux")]
            Action::Squat { names } => squat(names),
            Action::BindUdp { ports } => bind_udp(ports),
            #[cfg(target_os = "linux")]
            Action::Flood { names, millis } => flood(names, *millis),
            #[cfg(target_os = "linux")]
            Action::Sockets { count } => sockets(*count),
            Action::OpenKeys { runs } => open_keys(&task, *runs).await,
            #[cfg(not(target_os = "linux"))]
            action => panic!("{action:?} is a task of unix's or Linux's tests"),
        }
    });
}

/// The identity's builder as the task describes it: no n0 services, and loopback only
/// unless the task binds on all interfaces.
fn builder(task: &Task) -> iroh_identity::Builder {
    use iroh_identity::KeyLocation;

    let mut location = KeyLocation::file(&task.path);
    if task.default_location {
        location = KeyLocation::default_for("com", "example", "iroh-identity-test");
    }
    #[cfg(feature = "keyring")]
    if let Some((service, account)) = &task.keychain {
        location = KeyLocation::keychain(service, account);
    }
    let mut builder = if task.all_interfaces {
        super::stable_builder(location)
    } else {
        super::builder(location)
    };
    if let Some(ms) = task.lock_wait_ms {
        builder = builder.lock_wait(Duration::from_millis(ms));
    }
    if let Some(name) = &task.key_env {
        builder = builder.key_from_env(name);
    }
    builder
}

/// A log line's time: milliseconds since the epoch, as [`super::now_ms`] gives them.
struct EpochMs;

impl tracing_subscriber::fmt::time::FormatTime for EpochMs {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", super::now_ms())
    }
}

/// Starts `count` threads that spin for ever: a program busy beside its endpoint.
fn spin(count: usize) {
    for _ in 0..count {
        std::thread::spawn(|| {
            loop {
                std::hint::spin_loop();
            }
        });
    }
}

async fn open(task: &Task) {
    let lease = Lease::of(task);
    match lease.builder(builder(task)).bind().await {
        Ok(endpoint) => {
            say(Report::Id(endpoint.id().to_string()));
            lease.say_holding();
            spin(task.holding.busy_threads);
            if let Some(ms) = task.holding.block_runtime_ms {
                // Work that never yields, as an application may have: this runtime has one
                // thread, which it holds up.
                tokio::spawn(async move { std::thread::sleep(Duration::from_millis(ms)) });
            }
            if task.action == Action::Hold {
                say(Report::Ready);
                let at_most = (task.holding.at_most_ms).map_or(HOLD_AT_MOST, Duration::from_millis);
                hold(&endpoint, &lease, at_most).await;
            }
            endpoint.close().await;
        }
        Err(err) => say(Report::Error(chain(&err))),
    }
}

/// Keeps the endpoint until killed, SIGTERM (then closes it) or the loss of its lease.
async fn hold(endpoint: &iroh::Endpoint, lease: &Lease, at_most: Duration) {
    let terminate = terminated();
    tokio::select! {
        () = tokio::time::sleep(at_most) => {}
        () = terminate => {
            endpoint.close().await;
            say(Report::Closed { at_ms: super::now_ms() });
            lease.released().await;
        }
        reason = lease.lost() => say(Report::Lost { reason, at_ms: super::now_ms() }),
    }
}

/// The task's lease, if it has one (feature `etcd`).
struct Lease {
    #[cfg(feature = "etcd")]
    etcd: Option<iroh_identity::EtcdLease>,
}

impl Lease {
    fn of(task: &Task) -> Self {
        #[cfg(feature = "etcd")]
        {
            let etcd = task.lease.as_ref().map(|task| {
                use iroh_identity::etcd_client::{
                    Certificate, ConnectOptions, Identity, TlsOptions,
                };

                let mut options = ConnectOptions::new();
                if let Some(tls) = &task.tls {
                    let read = |path: &PathBuf| std::fs::read(path).expect("a TLS file");
                    let mut config =
                        TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)));
                    if let Some((cert, key)) = &tls.identity {
                        config = config.identity(Identity::from_pem(read(cert), read(key)));
                    }
                    options = options.with_tls(config);
                }
                if let Some((user, password)) = &task.user {
                    options = options.with_user(user, password);
                }
                let mut lease = iroh_identity::EtcdLease::new(task.endpoints.clone())
                    .connect_options(options)
                    .on_wait(|wait| {
                        say(Report::Waiting {
                            why: wait.to_string(),
                            at_ms: super::now_ms(),
                        })
                    })
                    .ttl(Duration::from_secs(task.ttl_s));
                if let Some(prefix) = &task.prefix {
                    lease = lease.prefix(prefix.clone());
                }
                lease
            });
            Self { etcd }
        }
        #[cfg(not(feature = "etcd"))]
        {
            assert!(task.lease.is_none(), "leases need the etcd feature");
            Self {}
        }
    }

    fn builder(&self, builder: iroh_identity::Builder) -> iroh_identity::Builder {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &self.etcd {
            return builder.lease(etcd.clone());
        }
        builder
    }

    fn say_holding(&self) {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &self.etcd {
            let token = etcd.fencing_token().expect("a held lease has a token");
            say(Report::Holding {
                token,
                at_ms: super::now_ms(),
            });
        }
    }

    /// Why the lease was lost, when it is; never without one.
    async fn lost(&self) -> String {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &self.etcd {
            return etcd.lost().await.to_string();
        }
        std::future::pending().await
    }

    /// Waits until the lease is let go of after a close, as a program that then exits
    /// should.
    async fn released(&self) {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &self.etcd {
            etcd.released().await;
        }
    }
}

/// Serves echo until SIGTERM, then closes gracefully.
async fn serve(task: &Task, relay: Option<&str>) {
    let lease = Lease::of(task);
    let mut builder = lease.builder(super::stable_builder(&task.path));
    if let Some(ms) = task.lock_wait_ms {
        builder = builder.lock_wait(Duration::from_millis(ms));
    }
    let relay = relay.map(|url| {
        let url: RelayUrl = url.parse().expect("a relay URL");
        RelayMap::from(RelayConfig::new(url, None))
    });
    if let Some(relay) = &relay {
        builder = builder.configure(super::relay_only(relay.clone()));
    }
    let endpoint = match builder.bind().await {
        Ok(endpoint) => endpoint,
        Err(err) => return say(Report::Error(chain(&err))),
    };
    let ticket = if relay.is_some() {
        let online = tokio::time::timeout(Duration::from_secs(10), endpoint.online());
        online.await.expect("connected to the relay within 10 s");
        EndpointTicket::new(endpoint.addr())
    } else {
        super::loopback_ticket(&endpoint)
    };
    let router = Router::builder(endpoint)
        .accept(echo::ALPN, echo::Echo)
        .spawn();
    say(Report::Id(router.endpoint().id().to_string()));
    lease.say_holding();
    say(Report::Ticket(ticket.to_string()));
    say(Report::Ready);
    let terminate = terminated();
    tokio::select! {
        () = terminate => {}
        () = tokio::time::sleep(HOLD_AT_MOST) => {}
        reason = lease.lost() => return say(Report::Lost { reason, at_ms: super::now_ms() }),
    }
    router.shutdown().await.expect("graceful shutdown");
    lease.released().await;
}

/// Connects to the ticket's endpoint and stays connected.
async fn dial(ticket: &str) {
    let ticket: EndpointTicket = ticket.parse().expect("a ticket");
    let client = super::loopback(iroh::Endpoint::builder(presets::Minimal))
        .bind()
        .await
        .expect("bind");
    let connect = client.connect(ticket.endpoint_addr().clone(), echo::ALPN);
    let connection = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .expect("connected within 5 s")
        .expect("connected");
    say(Report::Id(client.id().to_string()));
    say(Report::Ready);
    tokio::time::sleep(HOLD_AT_MOST).await;
    drop(connection);
    client.close().await;
}

/// The victim of the directory-swap attack.
async fn create_many(dir: &Path, runs: usize) {
    let (mut created, mut refused) = (0, 0);
    for run in 0..runs {
        // In step with the attacker: wait until it has dealt with the previous run.
        if run > 0 {
            let previous = dir.join((run - 1).to_string());
            let start = Instant::now();
            while !previous.is_symlink() && start.elapsed() < Duration::from_millis(200) {
                std::thread::yield_now();
            }
        }
        let path = dir.join(run.to_string()).join("endpoint.key");
        match iroh_identity::Identity::open(path).await {
            Ok(_) => created += 1,
            Err(_) => refused += 1,
        }
    }
    say(Report::Created { created, refused });
}

/// The attacker of the directory-swap attack.
#[cfg(unix)]
fn swap(dir: &Path, runs: usize, targets: &[PathBuf]) {
    use std::{fs, os::unix::fs::symlink};

    let mut swapped = 0;
    for run in 0..runs {
        let name = dir.join(run.to_string());
        let away = dir.join(format!(".moved-{run}"));
        let start = Instant::now();
        let moved = loop {
            if fs::rename(&name, &away).is_ok() {
                break true;
            }
            if start.elapsed() > Duration::from_secs(2) {
                break false;
            }
        };
        swapped += usize::from(moved);
        // Fails only if the victim made the directory again meanwhile: the next run.
        let _ = symlink(&targets[run % targets.len()], &name);
    }
    say(Report::Swapped(swapped));
}

/// The victim of the planted-directory race.
async fn open_many(dir: &Path, runs: usize) {
    let (mut ids, mut refused) = (Vec::new(), 0);
    for run in 0..runs {
        // Land anywhere in the attacker's cycle.
        std::thread::sleep(Duration::from_micros(super::random_u64() % 2000));
        let path = dir.join(format!("app{run}")).join("endpoint.key");
        match iroh_identity::Identity::open(path).await {
            Ok(identity) => ids.push(identity.id().to_string()),
            Err(_) => refused += 1,
        }
        std::fs::write(dir.join(format!("done{run}")), b"").expect("mark the run done");
    }
    say(Report::Opened { ids, refused });
}

/// The attacker of the planted-directory race.
#[cfg(unix)]
fn toggle(dir: &Path, runs: usize, target: &Path) {
    use std::{fs, os::unix::fs::PermissionsExt};

    let mut swapped = 0;
    for run in 0..runs {
        let name = dir.join(format!("app{run}"));
        let stage = dir.join(format!(".stage{run}"));
        if run % 2 == 0 {
            fs::create_dir(&stage).expect("mkdir");
            fs::set_permissions(&stage, fs::Permissions::from_mode(0o777)).expect("chmod");
        } else {
            std::os::unix::fs::symlink(target, &stage).expect("symlink");
        }
        let done = dir.join(format!("done{run}"));
        let start = Instant::now();
        while !done.exists() && start.elapsed() < Duration::from_secs(5) {
            if fs::rename(&stage, &name).is_ok() {
                swapped += 1;
                std::hint::spin_loop();
                // Taken away again unless the victim made it its own meanwhile.
                let _ = fs::rename(&name, &stage);
            }
        }
    }
    say(Report::Swapped(swapped));
}

/// The squatter of the host lock's names.
#[cfg(target_os = "linux")]
fn squat(names: &[String]) {
    use std::os::{
        fd::{FromRawFd, OwnedFd},
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixListener},
    };

    // A name ending in `!` is bound by a stream socket that does not listen.
    let held: Vec<OwnedFd> = names
        .iter()
        .map(|name| match name.strip_suffix('!') {
            Some(name) => {
                // SAFETY: plain calls on a new descriptor of ours and an address that
                // outlives them.
                unsafe {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    assert!(fd >= 0, "socket");
                    let mut raw: libc::sockaddr_un = std::mem::zeroed();
                    raw.sun_family = libc::AF_UNIX as libc::sa_family_t;
                    for (slot, byte) in raw.sun_path[1..].iter_mut().zip(name.bytes()) {
                        *slot = byte as libc::c_char;
                    }
                    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
                    let bound = libc::bind(
                        fd,
                        (&raw as *const libc::sockaddr_un).cast(),
                        len as libc::socklen_t,
                    );
                    assert_eq!(bound, 0, "bind the name");
                    OwnedFd::from_raw_fd(fd)
                }
            }
            None => {
                let address = SocketAddr::from_abstract_name(name).expect("an abstract name");
                UnixListener::bind_addr(&address)
                    .expect("bind the name")
                    .into()
            }
        })
        .collect();
    say(Report::Ready);
    std::thread::sleep(HOLD_AT_MOST);
    drop(held);
}

/// The flooder of the host lock.
#[cfg(target_os = "linux")]
fn flood(names: &[String], millis: u64) {
    use std::os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixStream},
    };

    let until = Instant::now() + Duration::from_millis(millis);
    let addresses: Vec<SocketAddr> = names
        .iter()
        .map(|name| SocketAddr::from_abstract_name(name).expect("an abstract name"))
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let addresses = addresses.clone();
            std::thread::spawn(move || {
                let mut open = std::collections::VecDeque::new();
                while Instant::now() < until {
                    for address in &addresses {
                        if let Ok(stream) = UnixStream::connect_addr(address) {
                            open.push_back(stream);
                        }
                        // Each connection kept open for a while, as long as 256 more.
                        if open.len() > 256 {
                            open.pop_front();
                        }
                    }
                }
            })
        })
        .collect();
    say(Report::Ready);
    for thread in threads {
        let _ = thread.join();
    }
}

/// A long table of unix sockets.
#[cfg(target_os = "linux")]
fn sockets(count: usize) {
    use std::os::unix::net::UnixDatagram;

    let limit = libc::rlimit {
        rlim_cur: count as u64 + 100,
        rlim_max: count as u64 + 100,
    };
    // SAFETY: valid arguments; this child runs one test on one thread.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    let held: Vec<UnixDatagram> = (0..count)
        .filter_map(|_| UnixDatagram::unbound().ok())
        .collect();
    say(Report::Ready);
    std::thread::sleep(HOLD_AT_MOST);
    drop(held);
}

/// The squatter of remembered ports.
fn bind_udp(ports: &[u16]) {
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

    let mut held = Vec::new();
    for &port in ports {
        held.push(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind IPv4"));
        // IPv6 only, as iroh binds it; a host without IPv6 has nothing to take.
        let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
            .expect("an IPv6 socket");
        v6.set_only_v6(true).expect("IPv6 only");
        if v6
            .bind(&std::net::SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())
            .is_ok()
        {
            held.push(v6.into());
        }
    }
    say(Report::Ready);
    std::thread::sleep(HOLD_AT_MOST);
    drop(held);
}

/// Takes the identities of `runs` new keys one after the other.
async fn open_keys(task: &Task, runs: usize) {
    let variable = task.key_env.as_deref().expect("a variable for the keys");
    let (mut ids, mut refused) = (Vec::new(), 0);
    for _ in 0..runs {
        let key = iroh::SecretKey::generate();
        let hex = data_encoding::HEXLOWER.encode(&key.to_bytes());
        // SAFETY: this child runs one test on one thread, and nothing else of it reads the
        // environment meanwhile.
        unsafe { std::env::set_var(variable, hex) };
        match builder(task).open().await {
            Ok(identity) => ids.push(identity.id().to_string()),
            Err(_) => refused += 1,
        }
    }
    say(Report::Opened { ids, refused });
}

/// Resolves when this process is asked to close gracefully: SIGTERM on unix. Windows has
/// no such signal for a process without a console of its own, so there it never does
/// (the tests of a graceful stop are unix's).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};

        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        terminate.recv().await;
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// An error and its causes, `: `-separated, as `anyhow` prints them with `{:#}`.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// Makes writes beyond `bytes` fail with `EFBIG` instead of killing the process.
#[cfg(unix)]
fn limit_file_size(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: valid arguments; the child runs one test on one thread so far.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0, "setrlimit");
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
