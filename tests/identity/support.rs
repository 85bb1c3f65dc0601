//! What the tests share: key files, loopback endpoints, an echo server and its tickets,
//! child processes.

use std::{
    fs,
    hash::{BuildHasher, RandomState},
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};
#[cfg(unix)]
use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::Command,
};

use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD, HEXLOWER, HEXUPPER};
use iroh::{
    SecretKey,
    endpoint::{self},
};
use iroh_identity::{KeyFormat, encode_key};
use iroh_tickets::endpoint::EndpointTicket;

#[cfg(all(feature = "etcd", target_os = "linux"))]
pub(crate) mod cgroup;
pub(crate) mod child;
#[cfg(all(feature = "keyring", windows))]
pub(crate) mod credential_manager;
/// The echo protocol of the `echo` example: one implementation for both.
#[path = "../../examples/echo/protocol.rs"]
pub(crate) mod echo;
#[cfg(all(feature = "etcd", target_os = "linux"))]
pub(crate) mod etcd;
#[cfg(all(feature = "etcd", target_os = "linux"))]
pub(crate) mod net;
pub(crate) mod process;
#[cfg(all(feature = "etcd", target_os = "linux"))]
pub(crate) mod proxy;
#[cfg(all(feature = "keyring", target_os = "linux"))]
pub(crate) mod secret_service;

/// A fresh directory, removed at the end of the test.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Every format a key file can be written in.
pub(crate) const ALL_FORMATS: [KeyFormat; 7] = [
    KeyFormat::Pkcs8Pem,
    KeyFormat::Pkcs8PemV1,
    KeyFormat::Pkcs8Der,
    KeyFormat::Raw,
    KeyFormat::Hex,
    KeyFormat::Base32,
    KeyFormat::OpenSsh,
];

/// A fixed key, so that tests know which id to expect. Its bytes are binary (it starts
/// with 0x9c, which is not UTF-8 on its own), so that written raw it is read as a raw key,
/// not as text; and they are not one byte repeated, which is refused as a key everyone
/// knows.
pub(crate) fn known_key() -> SecretKey {
    SecretKey::from_bytes(&std::array::from_fn(|i| 0x9c ^ i as u8))
}

/// Takes the identity at `path` as an application does (the key loaded, or generated
/// and stored, then locked), on a runtime of its own for tests that are not async, and
/// lets it go again. Returns its id.
pub(crate) fn identity_of(path: &Path) -> Result<iroh::EndpointId, iroh_identity::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(iroh_identity::Identity::open(path))
        .map(|identity| identity.id())
}

/// Stores a new key at `path`, as a first run leaves it, and returns it.
pub(crate) fn new_key_file(path: &Path) -> SecretKey {
    let key = SecretKey::generate();
    iroh_identity::store_new_key(path, &key, KeyFormat::Pkcs8Pem).expect("store a key");
    key
}

/// Everything about what is at a path that a write, a replacement or a deletion would
/// change: its type, inode, mtime and mode, and what it holds (a file's bytes, a
/// directory's names, a link's target).
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    file_type: fs::FileType,
    inode: u64,
    modified: std::time::SystemTime,
    mode: u32,
    content: Option<Vec<u8>>,
    names: Option<Vec<String>>,
    link_target: Option<PathBuf>,
}

impl Snapshot {
    pub(crate) fn of(path: &Path) -> Self {
        let metadata = fs::symlink_metadata(path).expect("something is at the path");
        let file_type = metadata.file_type();
        // Windows: the file index for the inode, the attributes for the mode.
        #[cfg(unix)]
        let (inode, mode) = {
            use std::os::unix::fs::MetadataExt;
            (metadata.ino(), metadata.mode())
        };
        #[cfg(windows)]
        let (inode, mode) = {
            use std::os::windows::fs::MetadataExt;
            (crate::windows::file_index(path), metadata.file_attributes())
        };
        Self {
            file_type,
            inode,
            modified: metadata.modified().expect("mtime"),
            mode,
            // Only small regular files: a 1 GiB sparse case must not be read whole here.
            content: (file_type.is_file() && metadata.len() < 1 << 20)
                .then(|| fs::read(path).expect("read")),
            names: file_type.is_dir().then(|| list(path)),
            link_target: file_type
                .is_symlink()
                .then(|| fs::read_link(path).expect("readlink")),
        }
    }

    /// What the file held, if it is a small regular file.
    pub(crate) fn content(&self) -> Option<&[u8]> {
        self.content.as_deref()
    }
}

/// Makes `link` a symbolic link to the file `target`.
pub(crate) fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::symlink(target, link);
    #[cfg(windows)]
    return std::os::windows::fs::symlink_file(target, link);
}

/// Writes a private file (`0600`; on Windows, a DACL of the user, SYSTEM and
/// Administrators alone), as a well-kept key file is.
pub(crate) fn write_private(path: &Path, content: &[u8]) {
    #[cfg(unix)]
    {
        fs::write(path, content).expect("write file");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    #[cfg(windows)]
    crate::windows::write_private(path, content);
}

/// A random number, without a dependency.
pub(crate) fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A small, seeded generator (xorshift64*): reproducible without a dependency.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the variable `name` when it is set, at random otherwise; returns the
    /// seed too, to print.
    pub(crate) fn from_env_or_random(name: &str) -> (Self, u64) {
        let seed = std::env::var(name)
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(random_u64)
            | 1;
        (Self(seed), seed)
    }

    /// Always the same numbers.
    pub(crate) fn fixed() -> Self {
        Self(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }

    pub(crate) fn key(&mut self) -> SecretKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&self.bytes(32));
        SecretKey::from_bytes(&bytes)
    }
}

/// A persistent endpoint as the tests open it: no n0 services, loopback only (so no
/// ports to remember).
pub(crate) fn builder(location: impl Into<iroh_identity::KeyLocation>) -> iroh_identity::Builder {
    stable_builder(location).configure(loopback)
}

/// Binds only to 127.0.0.1, so that tests never touch another interface.
pub(crate) fn loopback(builder: endpoint::Builder) -> endpoint::Builder {
    builder
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .expect("valid socket address")
}

/// The address to reach a loopback endpoint at.
pub(crate) fn addr_of(endpoint: &iroh::Endpoint) -> iroh::EndpointAddr {
    iroh::EndpointAddr::new(endpoint.id()).with_ip_addr(endpoint.bound_sockets()[0])
}

/// The files in a directory, by name, sorted.
pub(crate) fn list(dir: &Path) -> Vec<String> {
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
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples before running tests",
        path.display()
    );
    path
}

/// Whether the tests run as root, who can read and write any file regardless of mode.
#[cfg(unix)]
pub(crate) fn is_root() -> bool {
    uid() == 0
}

/// The user the tests run as.
#[cfg(unix)]
pub(crate) fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether a test that needs root `to` do something must be skipped; says so if it must.
/// Under `cargo xtask test` (`IROH_IDENTITY_NO_SKIP` set), which runs the tests as root,
/// nothing is skipped: the test fails instead.
#[cfg(unix)]
pub(crate) fn skip_unless_root(to: &str) -> bool {
    let skip = !is_root();
    if skip {
        assert!(
            std::env::var_os("IROH_IDENTITY_NO_SKIP").is_none(),
            "needs root to {to}: run `cargo xtask test`, which runs the tests as root"
        );
        eprintln!("skipped: needs root to {to}");
    }
    skip
}

/// The user that root-run tests drop to when permissions must really apply; the
/// attacker of the local-attacker tests.
#[cfg(unix)]
pub(crate) const NOBODY: u32 = 65534;

/// A second unprivileged user: the one a service runs as, when a test needs a user that
/// is neither root nor the attacker. It needs no account: the kernel knows users by
/// number.
#[cfg(unix)]
pub(crate) const SERVICE_USER: u32 = 61001;

/// A third unprivileged user: another service on the same host, which may know the same
/// secret as [`SERVICE_USER`] and must still be kept apart from it.
#[cfg(unix)]
pub(crate) const OTHER_USER: u32 = 61004;

/// A group that is not root's: a Kubernetes pod's `fsGroup`, or a group that an attacker
/// shares with a directory.
#[cfg(unix)]
pub(crate) const SHARED_GROUP: u32 = 61100;

/// Makes `command` run as `uid` (its group the same number) with the supplementary
/// `groups`, as a process of that user would. Root only.
#[cfg(unix)]
pub(crate) fn as_user<'a>(command: &'a mut Command, uid: u32, groups: &[u32]) -> &'a mut Command {
    as_user_in(command, uid, uid, groups)
}

/// Makes `command` run as `uid` with the primary group `gid` and the supplementary
/// `groups`: as systemd's `Group=`, or `sg`, start a process of the user. Root only.
#[cfg(unix)]
pub(crate) fn as_user_in<'a>(
    command: &'a mut Command,
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> &'a mut Command {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid) between fork and
    // exec, on memory moved into the closure.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
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
#[cfg(unix)]
pub(crate) fn shell_as(uid: u32, groups: &[u32], script: &str) {
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
#[cfg(unix)]
pub(crate) fn make_dir(path: &Path, uid: u32, gid: u32, mode: u32) {
    fs::create_dir(path).expect("mkdir");
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A place for one test that acts as several users: a root-owned directory every user may
/// enter, and this test binary where every user can run it.
#[cfg(unix)]
pub(crate) struct Site {
    pub(crate) root: tempfile::TempDir,
    exe: PathBuf,
}

#[cfg(unix)]
impl Site {
    pub(crate) fn new() -> Self {
        let root = temp_dir();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let exe = runnable_by_others(root.path());
        Self { root, exe }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// A child doing `task` as `uid` with `groups`.
    pub(crate) fn child(&self, task: &child::Task, uid: u32, groups: &[u32]) -> Command {
        self.child_in(task, uid, uid, groups)
    }

    /// A child doing `task` as `uid` in the primary group `gid`, with `groups`.
    pub(crate) fn child_in(
        &self,
        task: &child::Task,
        uid: u32,
        gid: u32,
        groups: &[u32],
    ) -> Command {
        let mut command = task.command_at(&self.exe);
        as_user_in(&mut command, uid, gid, groups);
        command
    }
}

/// A user in the user database, with a home directory: made with the real `useradd`, and
/// removed with `userdel` when dropped.
#[cfg(unix)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    /// The user's own group.
    pub(crate) gid: u32,
    pub(crate) home: PathBuf,
}

#[cfg(unix)]
impl Account {
    /// Makes the user `name` (its own group of the same name) with the home `home`, which
    /// is made too: the user's and its group's, with `mode`.
    pub(crate) fn create(name: &str, home: &Path, mode: u32) -> Self {
        let _ = Command::new("userdel").arg(name).output();
        let output = Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg("--home-dir")
            .arg(home)
            .arg(name)
            .output()
            .expect("run useradd");
        assert!(output.status.success(), "useradd {name}: {output:?}");
        let id = |flag: &str| -> u32 {
            let output = Command::new("id")
                .args([flag, name])
                .output()
                .expect("run id");
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("an id")
        };
        let account = Self {
            name: name.to_owned(),
            uid: id("-u"),
            gid: id("-g"),
            home: home.to_owned(),
        };
        make_dir(home, account.uid, account.gid, mode);
        account
    }
}

#[cfg(unix)]
impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// This test binary, or a copy of it in `dir` when another user could not run it where
/// it is (a checkout under `/root`, say).
#[cfg(unix)]
pub(crate) fn runnable_by_others(dir: &Path) -> PathBuf {
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

/// How many characters of a secret's text, or bytes of it, in a row give it away: the
/// first refusal of a PEM whose line breaks were gone once quoted 26 base64 characters,
/// 154 of its 256 bits.
const GIVEAWAY: usize = 8;

/// Every way a 32-byte secret is commonly written down as text, and the base64 of its key
/// files in every PEM format this crate writes.
fn renderings(secret: &[u8; 32]) -> Vec<String> {
    let mut all = vec![
        HEXLOWER.encode(secret),
        HEXUPPER.encode(secret),
        BASE32_NOPAD.encode(secret),
        BASE32_NOPAD.encode(secret).to_lowercase(),
        BASE64.encode(secret),
        BASE64URL_NOPAD.encode(secret),
        secret.escape_ascii().to_string(),
    ];
    let key = SecretKey::from_bytes(secret);
    for format in [
        KeyFormat::Pkcs8Pem,
        KeyFormat::Pkcs8PemV1,
        KeyFormat::OpenSsh,
    ] {
        let pem = encode_key(&key, format);
        let body: String = String::from_utf8_lossy(&pem)
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        all.push(body);
    }
    all
}

/// Fails if `haystack` holds [`GIVEAWAY`] characters in a row of any text rendering of
/// the secret, as many of its raw bytes, or its bytes as Rust prints an array.
pub(crate) fn assert_no_secret(haystack: &[u8], secret: &[u8; 32], what: &str) {
    for rendering in renderings(secret) {
        for fragment in rendering.as_bytes().windows(GIVEAWAY) {
            assert!(
                !haystack.windows(GIVEAWAY).any(|window| window == fragment),
                "{what} contains a piece of the secret key ({}): {}",
                String::from_utf8_lossy(fragment),
                String::from_utf8_lossy(haystack)
            );
        }
    }
    for fragment in secret.windows(GIVEAWAY) {
        assert!(
            !haystack.windows(GIVEAWAY).any(|window| window == fragment),
            "{what} contains raw bytes of the secret key"
        );
    }
    let debug = format!("{secret:?}");
    assert!(
        !haystack
            .windows(debug.len())
            .any(|window| window == debug.as_bytes()),
        "{what} contains the secret key as an array"
    );
}

/// Every log line at TRACE, iroh's included, written on this thread while the guard
/// lives.
#[derive(Clone, Default)]
pub(crate) struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub(crate) fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
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

/// A persistent endpoint as a server opens it: no n0 services (no relay, no address
/// lookup), iroh's sockets on all interfaces, whose ports stable addressing remembers.
pub(crate) fn stable_builder(
    location: impl Into<iroh_identity::KeyLocation>,
) -> iroh_identity::Builder {
    iroh_identity::Identity::builder(location).preset(endpoint::presets::Minimal)
}

/// Relay only, through `relay` (a test relay with a self-signed certificate): no IP
/// sockets at all, so there is no direct path to take.
pub(crate) fn relay_only(
    relay: iroh::RelayMap,
) -> impl Fn(endpoint::Builder) -> endpoint::Builder + Clone + Send + 'static {
    move |builder| {
        builder
            .clear_ip_transports()
            .relay_mode(iroh::RelayMode::Custom(relay.clone()))
            .ca_tls_config(iroh::tls::CaTlsConfig::insecure_skip_verify())
    }
}

/// A ticket for a server on this machine: its id and a loopback address on the port of
/// each of its sockets (a ticket for a LAN peer names the LAN address instead).
pub(crate) fn loopback_ticket(endpoint: &iroh::Endpoint) -> EndpointTicket {
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
pub(crate) async fn echo_within(
    ticket: &str,
    message: &[u8],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let ticket: EndpointTicket = ticket.parse()?;
    let client = loopback(iroh::Endpoint::builder(endpoint::presets::Minimal))
        .bind()
        .await?;
    let result = echo::echo(&client, ticket.endpoint_addr(), message, limit).await;
    client.close().await;
    result
}

/// Sends `signal` to the process `pid`, a child of this test.
#[cfg(unix)]
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: sends a signal to a child of ours that has not been reaped.
    unsafe { libc::kill(pid, signal) };
}

/// Milliseconds since the epoch: a time that two processes of one host agree on.
pub(crate) fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch");
    u64::try_from(since.as_millis()).expect("a time in range")
}
