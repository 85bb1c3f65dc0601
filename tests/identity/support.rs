//! What the tests share: key files, loopback endpoints, an echo server and its tickets,
//! child processes.

use std::{
    fs,
    hash::{BuildHasher, RandomState},
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD, HEXLOWER, HEXUPPER};
use iroh::{
    SecretKey,
    endpoint::{self, Connection},
    protocol::{AcceptError, ProtocolHandler},
};
use iroh_identity::{KeyFormat, encode_key};
use iroh_tickets::endpoint::EndpointTicket;

pub mod child;

/// A fresh directory, removed at the end of the test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Every format a key file can be written in.
pub const ALL_FORMATS: [KeyFormat; 7] = [
    KeyFormat::Pkcs8Pem,
    KeyFormat::Pkcs8PemV1,
    KeyFormat::Pkcs8Der,
    KeyFormat::Raw,
    KeyFormat::Hex,
    KeyFormat::Base32,
    KeyFormat::OpenSsh,
];

/// A fixed key, so that tests know which id to expect. Its bytes are binary (0x9c is
/// not UTF-8 on its own), so that written raw it is read as a raw key, not as text.
pub fn known_key() -> SecretKey {
    SecretKey::from_bytes(&[0x9c; 32])
}

/// Writes a private (0600) file, as a well-kept key file is.
pub fn write_private(path: &Path, content: &[u8]) {
    fs::write(path, content).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A random number, without a dependency.
pub fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A small, seeded generator (xorshift64*): reproducible without a dependency.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the variable `name` when it is set, at random otherwise; returns the
    /// seed too, to print.
    pub fn from_env_or_random(name: &str) -> (Self, u64) {
        let seed = std::env::var(name)
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(random_u64)
            | 1;
        (Self(seed), seed)
    }

    /// Always the same numbers.
    pub fn fixed() -> Self {
        Self(0x2545_f491_4f6c_dd1d)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }

    pub fn key(&mut self) -> SecretKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&self.bytes(32));
        SecretKey::from_bytes(&bytes)
    }
}

/// A persistent endpoint as the tests open it: no n0 services, loopback only.
pub fn builder(path: &Path) -> iroh_identity::Builder {
    iroh_identity::PersistentEndpoint::builder()
        .key_path(path)
        .preset(endpoint::presets::Minimal)
        .configure(loopback)
}

/// Binds only to 127.0.0.1, so that tests never touch another interface.
pub fn loopback(builder: endpoint::Builder) -> endpoint::Builder {
    builder
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .expect("valid socket address")
}

/// The address to reach a loopback endpoint at.
pub fn addr_of(endpoint: &iroh::Endpoint) -> iroh::EndpointAddr {
    iroh::EndpointAddr::new(endpoint.id()).with_ip_addr(endpoint.bound_sockets()[0])
}

/// The files in a directory, by name, sorted.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// An example binary built by `cargo test` beside this test binary.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples before running tests",
        path.display()
    );
    path
}

/// Whether the tests run as root, who can read and write any file regardless of mode.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The user that root-run tests drop to when permissions must really apply; the
/// attacker of the local-attacker tests.
pub const NOBODY: u32 = 65534;

/// A second unprivileged user: the one a service runs as, when a test needs a user that
/// is neither root nor the attacker. It needs no account: the kernel knows users by
/// number.
pub const SERVICE_USER: u32 = 61001;

/// A group that is not root's: a Kubernetes pod's `fsGroup`, or a group that an attacker
/// shares with a directory.
pub const SHARED_GROUP: u32 = 61100;

/// Makes `command` run as `uid` (its group the same number) with the supplementary
/// `groups`, as a process of that user would. Root only.
pub fn as_user<'a>(command: &'a mut Command, uid: u32, groups: &[u32]) -> &'a mut Command {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid) between fork and
    // exec, on memory moved into the closure.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    command
}

/// Runs a shell command line as `uid` with the supplementary `groups`, for an attacker's
/// simple moves (mkdir, mv, ln); fails the test if it fails.
pub fn shell_as(uid: u32, groups: &[u32], script: &str) {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    as_user(&mut command, uid, groups);
    let output = command.output().expect("run sh");
    assert!(
        output.status.success(),
        "`{script}` as uid {uid}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A directory made for a test, given to `uid` (and `gid`) with `mode`.
pub fn make_dir(path: &Path, uid: u32, gid: u32, mode: u32) {
    fs::create_dir(path).expect("mkdir");
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// This test binary, or a copy of it in `dir` when another user could not run it where
/// it is (a checkout under `/root`, say).
pub fn runnable_by_others(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let others_may = |path: &Path, bits: u32| {
        fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & bits == bits)
    };
    let reachable = exe
        .ancestors()
        .skip(1)
        .all(|ancestor| others_may(ancestor, 0o001));
    if !is_root() || (reachable && others_may(&exe, 0o005)) {
        return exe;
    }
    let copy = dir.join("identity-test");
    fs::copy(&exe, &copy).expect("copy the test binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// Every way a 32-byte secret is commonly written down, and the body of its key file.
fn renderings(secret: &[u8; 32]) -> Vec<Vec<u8>> {
    let text = [
        HEXLOWER.encode(secret),
        HEXUPPER.encode(secret),
        BASE32_NOPAD.encode(secret),
        BASE32_NOPAD.encode(secret).to_lowercase(),
        BASE64.encode(secret),
        BASE64URL_NOPAD.encode(secret),
        format!("{secret:?}"),
    ];
    let mut all: Vec<Vec<u8>> = text.into_iter().map(String::into_bytes).collect();
    all.push(secret.to_vec());
    // The lines of the key file this crate writes.
    let pem = encode_key(&SecretKey::from_bytes(secret), KeyFormat::Pkcs8Pem);
    let pem = String::from_utf8_lossy(&pem).into_owned();
    all.extend(
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .map(|line| line.as_bytes().to_vec()),
    );
    all
}

/// Fails if `haystack` holds the secret key in any of its common renderings.
pub fn assert_no_secret(haystack: &[u8], secret: &[u8; 32], what: &str) {
    for rendering in renderings(secret) {
        assert!(
            !haystack
                .windows(rendering.len())
                .any(|window| window == rendering),
            "{what} contains the secret key ({})",
            String::from_utf8_lossy(&rendering)
        );
    }
}

/// Every log line at TRACE, iroh's included, written on this thread while the guard
/// lives.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("not poisoned").clone()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A persistent endpoint with stable addressing, as a server would open it: no n0
/// services (no relay, no address lookup), sockets on all interfaces.
pub fn stable_builder(path: &Path) -> iroh_identity::Builder {
    iroh_identity::PersistentEndpoint::builder()
        .key_path(path)
        .preset(endpoint::presets::Minimal)
        .stable_addressing(true)
}

/// Relay only, through `relay` (a test relay with a self-signed certificate): no IP
/// sockets at all, so there is no direct path to take.
pub fn relay_only(
    relay: iroh::RelayMap,
) -> impl Fn(endpoint::Builder) -> endpoint::Builder + Clone + Send + 'static {
    move |builder| {
        builder
            .clear_ip_transports()
            .relay_mode(iroh::RelayMode::Custom(relay.clone()))
            .ca_tls_config(iroh::tls::CaTlsConfig::insecure_skip_verify())
    }
}

/// The ALPN of the tests' echo protocol.
pub const ECHO_ALPN: &[u8] = b"iroh-identity/test-echo";

/// Sends back what a peer sends on one stream.
#[derive(Debug, Clone)]
pub struct Echo;

impl ProtocolHandler for Echo {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        let (mut send, mut recv) = connection.accept_bi().await?;
        let message = recv
            .read_to_end(1024)
            .await
            .map_err(AcceptError::from_err)?;
        send.write_all(&message)
            .await
            .map_err(AcceptError::from_err)?;
        send.finish()?;
        connection.closed().await;
        Ok(())
    }
}

/// A ticket for a server on this machine: its id and a loopback address on the port of
/// each of its sockets (a ticket for a LAN peer names the LAN address instead).
pub fn loopback_ticket(endpoint: &iroh::Endpoint) -> EndpointTicket {
    let mut addr = iroh::EndpointAddr::new(endpoint.id());
    for socket in endpoint.bound_sockets() {
        let loopback: IpAddr = match socket {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        addr = addr.with_ip_addr(SocketAddr::new(loopback, socket.port()));
    }
    EndpointTicket::new(addr)
}

/// A new client (loopback only, no relay) dials `ticket` and sends `message`; see
/// [`echo`].
pub async fn echo_within(
    ticket: &str,
    message: &[u8],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let ticket: EndpointTicket = ticket.parse()?;
    let client = loopback(iroh::Endpoint::builder(endpoint::presets::Minimal))
        .bind()
        .await?;
    let result = echo(&client, ticket.endpoint_addr(), message, limit).await;
    client.close().await;
    result
}

/// `client` dials `addr`, sends `message` and waits for it to come back, within `limit`.
/// Returns the time from dialling to the echo.
pub async fn echo(
    client: &iroh::Endpoint,
    addr: &iroh::EndpointAddr,
    message: &[u8],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let reply = tokio::time::timeout(limit, async {
        let connection = client.connect(addr.clone(), ECHO_ALPN).await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(message).await?;
        send.finish()?;
        let reply = recv.read_to_end(1024).await?;
        connection.close(0u32.into(), b"done");
        anyhow::Ok(reply)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no echo within {limit:?}"))??;
    anyhow::ensure!(reply == message, "the echo differs from the message");
    Ok(start.elapsed())
}
