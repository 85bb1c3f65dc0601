//! Child processes: this test binary run again, to act as a second program.
//!
//! The parent says what to do through environment variables; the child answers with
//! lines that start with `@child: ` on stdout (`id <hex>`, `error <message>`, `ready`).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use iroh::{RelayConfig, RelayMap, RelayUrl, endpoint::presets, protocol::Router};
use iroh_tickets::endpoint::EndpointTicket;
use tokio::signal::unix::{SignalKind, signal};

/// What the child does: `key` (load or generate the key only), `open` (bind and close),
/// `hold` (bind, say `ready`, keep the endpoint open until killed, 30 s at most) or
/// `serve` (as `hold`, with stable addressing and an echo server; says `ticket <ticket>`
/// and closes gracefully on SIGTERM) or `dial` (a peer without a key file: connects to
/// [`TICKET`], says `ready` and stays connected until killed, 30 s at most).
const ACTION: &str = "CHILD_ACTION";
const PATH: &str = "CHILD_PATH";
/// The lock wait, in milliseconds.
pub const LOCK_WAIT_MS: &str = "CHILD_LOCK_WAIT_MS";
/// The umask to create files under, in octal.
pub const UMASK: &str = "CHILD_UMASK";
/// The environment variable to take the key from (`Builder::key_from_env`).
pub const KEY_ENV: &str = "CHILD_KEY_ENV";
/// Milliseconds since the epoch at which to start, so that many children start at once.
pub const START_AT_MS: &str = "CHILD_START_AT_MS";
/// Set: log everything, iroh's TRACE lines included, to stderr (to search it for secrets).
pub const TRACE: &str = "CHILD_TRACE";
/// The largest file the child may write, in bytes (`RLIMIT_FSIZE`).
pub const FILE_SIZE_LIMIT: &str = "CHILD_FILE_SIZE_LIMIT";
/// Set: `open` and `hold` bind with stable addressing, on all interfaces.
pub const STABLE: &str = "CHILD_STABLE";
/// The ticket a `dial` child connects to.
pub const TICKET: &str = "CHILD_TICKET";
/// The URL of a relay (with a self-signed certificate): `serve` uses it and no IP
/// socket at all, and hands out a ticket that holds only the relay.
pub const RELAY: &str = "CHILD_RELAY";

/// How many runs a `create-many` (victim) or `swap` (attacker) child makes.
pub const RUNS: &str = "CHILD_RUNS";
/// For a `swap` child: the paths its links point to, `:`-separated, used in turn.
pub const TARGETS: &str = "CHILD_TARGETS";
/// Set: `open` takes the key from the default per-user location of an application
/// (`default_location`), not from `CHILD_PATH`.
pub const DEFAULT_LOCATION: &str = "CHILD_DEFAULT_LOCATION";

/// How long a `hold` child keeps its endpoint if nobody kills it.
const HOLD_AT_MOST: Duration = Duration::from_secs(30);

/// A command that runs this test binary as a child doing `action` on the key at `path`.
pub fn command(action: &str, path: &Path) -> Command {
    command_at(&std::env::current_exe().expect("current exe"), action, path)
}

/// The same, with this test binary at `exe` (a copy that another user can run).
pub fn command_at(exe: &Path, action: &str, path: &Path) -> Command {
    let mut command = Command::new(exe);
    command
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ACTION, action)
        .env(PATH, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// What a finished child said.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    /// What it said in its `@child: ` lines.
    pub said: Vec<String>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Outcome {
    /// The endpoint id it reported, if it got one.
    pub fn id(&self) -> Option<&str> {
        self.said.iter().find_map(|line| line.strip_prefix("id "))
    }

    /// The error it reported, if it failed.
    pub fn error(&self) -> Option<&str> {
        self.said
            .iter()
            .find_map(|line| line.strip_prefix("error "))
    }

    /// The id, or a panic that shows everything the child said.
    pub fn expect_id(&self) -> &str {
        self.id()
            .unwrap_or_else(|| panic!("child reported no id: {self}"))
    }

    /// The error, or a panic that shows everything the child said.
    pub fn expect_error(&self) -> &str {
        self.error()
            .unwrap_or_else(|| panic!("child reported no error: {self}"))
    }

    /// Fails if anything the child printed (logs, errors, panics) holds `secret`.
    pub fn assert_no_secret(&self, secret: &iroh::SecretKey) {
        let secret = secret.to_bytes();
        crate::support::assert_no_secret(&self.stdout, &secret, "a child's stdout");
        crate::support::assert_no_secret(self.stderr.as_bytes(), &secret, "a child's stderr");
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} said {:?}; stderr:\n{}",
            self.status, self.said, self.stderr
        )
    }
}

/// What a line of the child's stdout says, if anything: the test harness may print its
/// own words before it on the same line.
fn said(line: &str) -> Option<&str> {
    line.split_once("@child: ").map(|(_, said)| said)
}

/// Waits for a started child and collects what it said.
pub fn outcome(child: Child) -> Outcome {
    let output = child.wait_with_output().expect("wait for child");
    Outcome {
        status: output.status,
        said: String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| said(line).map(str::to_owned))
            .collect(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a child to the end.
pub fn run_to_end(mut command: Command) -> Outcome {
    outcome(command.spawn().expect("spawn child"))
}

/// Runs a child to the end, killing it and failing the test if it takes longer than
/// `limit`: for what must not hang.
pub fn run_within(mut command: Command, limit: Duration) -> Outcome {
    let mut child = command.spawn().expect("spawn child");
    let start = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let outcome = outcome(child);
            panic!("the child did not finish within {limit:?}: {outcome}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    outcome(child)
}

/// The epoch time `delay` from now, for [`START_AT_MS`].
pub fn start_at(delay: Duration) -> String {
    let at = SystemTime::now() + delay;
    at.duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis()
        .to_string()
}

/// A child that holds an open endpoint (`hold` or `serve`); killed (SIGKILL) when
/// dropped.
pub struct Holder {
    pub child: Child,
    pub id: String,
    /// What a `serve` child hands out.
    pub ticket: Option<String>,
    /// Kept open so that the child can still write when it exits by itself.
    _stdout: BufReader<ChildStdout>,
}

impl Holder {
    /// Starts a `hold` or `serve` child and waits until its endpoint is open.
    pub fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawn child");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (mut id, mut ticket) = (None, None);
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).expect("read child stdout") == 0 {
                break;
            }
            match said(line.trim_end()) {
                Some("ready") => break,
                Some(said) if said.starts_with("id ") => id = Some(said[3..].to_owned()),
                Some(said) if said.starts_with("ticket ") => {
                    ticket = Some(said[7..].to_owned());
                }
                Some(said) => panic!("holder failed: {said}"),
                None => {}
            }
        }
        let id = id.unwrap_or_else(|| panic!("holder exited before it was ready"));
        Self {
            child,
            id,
            ticket,
            _stdout: stdout,
        }
    }

    /// The ticket of a `serve` child.
    pub fn ticket(&self) -> &str {
        self.ticket
            .as_deref()
            .expect("a serve child says its ticket")
    }

    /// Kills the holder with SIGKILL: no close, no clean-up, as in a crash.
    pub fn kill(mut self) {
        self.child.kill().expect("kill holder");
        self.child.wait().expect("reap holder");
    }

    /// Asks a `serve` child to close gracefully (SIGTERM) and returns without waiting;
    /// dropping the holder then waits for it to exit (and kills it if it is still there).
    pub fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to our own child, which has not been reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
    }

    /// Waits up to `limit` for the child to exit by itself.
    pub fn exits_within(mut self, limit: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side; does nothing unless started by [`command`].
pub fn run() {
    let Ok(action) = std::env::var(ACTION) else {
        return;
    };
    let path = PathBuf::from(std::env::var_os(PATH).expect("CHILD_PATH is set"));
    if let Ok(umask) = std::env::var(UMASK) {
        let umask = libc::mode_t::from_str_radix(&umask, 8).expect("octal umask");
        // SAFETY: umask has no preconditions; this child runs one test on one thread.
        unsafe { libc::umask(umask) };
    }
    if std::env::var_os(TRACE).is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
    if let Ok(limit) = std::env::var(FILE_SIZE_LIMIT) {
        limit_file_size(limit.parse().expect("a size in bytes"));
    }
    if let Ok(at) = std::env::var(START_AT_MS) {
        let at = UNIX_EPOCH + Duration::from_millis(at.parse().expect("start time"));
        if let Ok(delay) = at.duration_since(SystemTime::now()) {
            std::thread::sleep(delay);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match action.as_str() {
            "key" => match iroh_identity::load_or_generate(&path) {
                Ok(key) => println!("@child: id {}", key.public()),
                Err(err) => println!("@child: error {}", chain(&err)),
            },
            "serve" => serve(&path).await,
            "create-many" => create_many(&path),
            "swap" => swap(&path),
            "dial" => dial().await,
            "open" | "hold" => {
                let mut builder = if std::env::var_os(STABLE).is_some() {
                    super::stable_builder(&path)
                } else {
                    super::builder(&path)
                };
                if std::env::var_os(DEFAULT_LOCATION).is_some() {
                    builder = builder.default_location("com", "example", "iroh-identity-test");
                }
                if let Ok(ms) = std::env::var(LOCK_WAIT_MS) {
                    let ms = ms.parse().expect("lock wait in ms");
                    builder = builder.lock_wait(Duration::from_millis(ms));
                }
                if let Ok(name) = std::env::var(KEY_ENV) {
                    builder = builder.key_from_env(name);
                }
                match builder.bind().await {
                    Ok(endpoint) => {
                        println!("@child: id {}", endpoint.id());
                        if action == "hold" {
                            println!("@child: ready");
                            tokio::time::sleep(HOLD_AT_MOST).await;
                        }
                        endpoint.close().await;
                    }
                    Err(err) => println!("@child: error {}", chain(&err)),
                }
            }
            other => panic!("unknown child action {other}"),
        }
    });
}

/// Serves echo with stable addressing until SIGTERM, then closes gracefully.
async fn serve(path: &Path) {
    let mut builder = super::stable_builder(path);
    if let Ok(ms) = std::env::var(LOCK_WAIT_MS) {
        builder = builder.lock_wait(Duration::from_millis(ms.parse().expect("lock wait in ms")));
    }
    let relay = std::env::var(RELAY).ok().map(|url| {
        let url: RelayUrl = url.parse().expect("a relay URL");
        RelayMap::from(RelayConfig::new(url, None))
    });
    if let Some(relay) = &relay {
        builder = builder.configure(super::relay_only(relay.clone()));
    }
    let endpoint = match builder.bind().await {
        Ok(endpoint) => endpoint,
        Err(err) => return println!("@child: error {}", chain(&err)),
    };
    let ticket = if relay.is_some() {
        let online = tokio::time::timeout(Duration::from_secs(10), endpoint.online());
        online.await.expect("connected to the relay within 10 s");
        EndpointTicket::new(endpoint.addr())
    } else {
        super::loopback_ticket(&endpoint)
    };
    let router = Router::builder(endpoint)
        .accept(super::ECHO_ALPN, super::Echo)
        .spawn();
    println!("@child: id {}", router.endpoint().id());
    println!("@child: ticket {ticket}");
    println!("@child: ready");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        () = tokio::time::sleep(HOLD_AT_MOST) => {}
    }
    router.shutdown().await.expect("graceful shutdown");
}

/// The victim of the directory-swap attack: creates a key in `DIR/N/endpoint.key` for
/// each run N, where `DIR/N` is missing, and says how many were created.
fn create_many(dir: &Path) {
    let runs: usize = std::env::var(RUNS)
        .expect("CHILD_RUNS")
        .parse()
        .expect("a count");
    let (mut created, mut refused) = (0, 0);
    for run in 0..runs {
        // In step with the attacker: wait until it has dealt with the previous run.
        if run > 0 {
            let previous = dir.join((run - 1).to_string());
            let start = std::time::Instant::now();
            while !previous.is_symlink() && start.elapsed() < Duration::from_millis(200) {
                std::thread::yield_now();
            }
        }
        match iroh_identity::load_or_generate(dir.join(run.to_string()).join("endpoint.key")) {
            Ok(_) => created += 1,
            Err(_) => refused += 1,
        }
    }
    println!("@child: created {created} refused {refused}");
}

/// The attacker of the directory-swap attack: for each run N, waits for `DIR/N` to
/// appear, renames it away and puts a link to one of `TARGETS` in its place, as fast as
/// it can. Says how many it swapped.
fn swap(dir: &Path) {
    use std::{fs, os::unix::fs::symlink, time::Instant};

    let runs: usize = std::env::var(RUNS)
        .expect("CHILD_RUNS")
        .parse()
        .expect("a count");
    let targets = std::env::var(TARGETS).expect("CHILD_TARGETS");
    let targets: Vec<&str> = targets.split(':').collect();
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
        let _ = symlink(targets[run % targets.len()], &name);
    }
    println!("@child: swapped {swapped}");
}

/// Connects to the ticket's endpoint and stays connected.
async fn dial() {
    let ticket: EndpointTicket = std::env::var(TICKET)
        .expect("CHILD_TICKET is set")
        .parse()
        .expect("a ticket");
    let client = super::loopback(iroh::Endpoint::builder(presets::Minimal))
        .bind()
        .await
        .expect("bind");
    let connect = client.connect(ticket.endpoint_addr().clone(), super::ECHO_ALPN);
    let connection = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .expect("connected within 5 s")
        .expect("connected");
    println!("@child: id {}", client.id());
    println!("@child: ready");
    tokio::time::sleep(HOLD_AT_MOST).await;
    drop(connection);
    client.close().await;
}

/// An error and its causes, `: `-separated, as `anyhow` prints them with `{:#}`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// Makes writes beyond `bytes` fail with `EFBIG` instead of killing the process.
fn limit_file_size(bytes: libc::rlim_t) {
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
