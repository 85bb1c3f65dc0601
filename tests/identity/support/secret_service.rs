//! A real Secret Service for the keychain tests: GNOME Keyring on a private D-Bus session
//! bus, both started here and stopped when the value is dropped.
//!
//! Nothing of the user's session is reached: the bus listens in a temporary directory, its
//! configuration starts no services on demand (no second keyring, no password prompt), and
//! the keyring keeps its files under a temporary home. The crate's store reads the bus
//! address from the environment once per process, so everything that touches the store
//! runs as a child process with [`SecretService::env`].

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::process::Process;

/// The packages that give the tools below (`.ci/run` installs them).
const PACKAGES: &str = "dbus gnome-keyring libsecret-tools libglib2.0-bin";

/// How long the keyring may take to appear on the bus (about 50 ms here).
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A private session bus with an unlocked GNOME Keyring on it.
/// Its daemons are killed when it is dropped: the keyring first, then the bus (fields
/// drop in order).
pub(crate) struct SecretService {
    keyring: Process,
    _bus: Process,
    address: String,
    dir: tempfile::TempDir,
    /// The user whose session it is; this process's when `None`.
    user: Option<u32>,
}

impl SecretService {
    /// Starts the bus and the keyring and waits until the keyring serves.
    pub(crate) fn start() -> Self {
        Self::start_for(None)
    }

    /// The same, as the user `uid` (whose group is the same number): its session, which
    /// its processes reach whatever their groups. Root only.
    pub(crate) fn start_as(uid: u32) -> Self {
        Self::start_for(Some(uid))
    }

    fn start_for(user: Option<u32>) -> Self {
        let dir = super::temp_dir();
        for sub in ["home", "run", "data"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let config = dir.path().join("bus.conf");
        fs::write(&config, bus_config(&dir.path().join("run"))).expect("write bus config");
        if let Some(uid) = user {
            for path in ["", "home", "run", "data"] {
                std::os::unix::fs::chown(dir.path().join(path), Some(uid), Some(uid))
                    .expect("chown");
            }
        }
        let as_user = |command: &mut Command| {
            if let Some(uid) = user {
                super::as_user(command, uid, &[]);
            }
        };
        let mut bus = Command::new("dbus-daemon");
        bus.arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        as_user(&mut bus);
        let bus = spawn(&mut bus);
        let address = bus
            .stdout_line(READY_WITHIN, |line| Some(line.trim().to_owned()))
            .map(|(_, address)| address)
            .unwrap_or_default();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        let mut keyring = Command::new("gnome-keyring-daemon");
        keyring
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(session_env(dir.path(), &address))
            .stdin(Stdio::piped());
        as_user(&mut keyring);
        let mut service = Self {
            keyring: spawn(&mut keyring),
            _bus: bus,
            address,
            dir,
            user,
        };
        // The password of the new login keyring, which is then unlocked.
        let mut password = service.keyring.stdin();
        password
            .write_all(b"test password")
            .expect("write the password");
        drop(password);
        service.wait_until_served();
        service
    }

    /// Gives `command` this session: its bus, and a home and runtime directory of its
    /// own (the host lock's directory among them).
    pub(crate) fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command.envs(session_env(self.dir.path(), &self.address))
    }

    /// A command that runs `program` in this session, as its user.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        self.env(&mut command);
        if let Some(uid) = self.user {
            super::as_user(&mut command, uid, &[]);
        }
        command
    }

    /// Stops the keyring (SIGSTOP), as a hung daemon: it answers nothing until
    /// [`resume`](Self::resume).
    pub(crate) fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub(crate) fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        self.keyring.signal(signal);
    }

    /// What `secret-tool` finds in the entry `service`/`account`, byte for byte; `None`
    /// when there is no such entry (or the store is locked).
    pub(crate) fn lookup(&self, service: &str, account: &str) -> Option<Vec<u8>> {
        let output = self
            .command("secret-tool")
            .args(["lookup", "service", service, "username", account])
            .output()
            .expect("run secret-tool");
        output.status.success().then_some(output.stdout)
    }

    /// Stores `secret` in the entry `service`/`account` with `secret-tool`, as anything
    /// else on the desktop could.
    pub(crate) fn store(&self, service: &str, account: &str, secret: &[u8]) {
        let mut child = self
            .command("secret-tool")
            .args([
                "store",
                "--label=planted",
                "service",
                service,
                "username",
                account,
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run secret-tool");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(secret)
            .expect("write the secret");
        assert!(child.wait().expect("wait").success(), "secret-tool store");
    }

    /// Locks the keyring's login collection, as a screen lock does. It stays locked: there
    /// is no way to unlock it again without a prompt.
    pub(crate) fn lock(&self) {
        let status = self
            .command("gdbus")
            .args([
                "call",
                "--session",
                "--dest",
                "org.freedesktop.secrets",
                "--object-path",
                "/org/freedesktop/secrets",
                "--method",
                "org.freedesktop.Secret.Service.Lock",
                "['/org/freedesktop/secrets/collection/login']",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("run gdbus");
        assert!(status.success(), "lock the login collection");
    }

    /// The keyring's files, where a stored secret would land.
    pub(crate) fn keyring_files(&self) -> PathBuf {
        self.dir.path().join("data").join("keyrings")
    }

    /// What `gdbus call` prints for `method(argument)` on `object` of `destination`, on
    /// the session bus.
    fn call(&self, destination: &str, object: &str, method: &str, argument: &str) -> String {
        let output = self
            .command("gdbus")
            .args(["call", "--session", "--dest", destination])
            .args(["--object-path", object, "--method", method, argument])
            .output()
            .expect("run gdbus");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether the alias `default` names a collection.
    fn has_default(&self) -> bool {
        self.call(
            "org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.ReadAlias",
            "default",
        )
        .contains("/collection/")
    }

    fn wait_until_served(&mut self) {
        let start = Instant::now();
        loop {
            let owned = self.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "org.freedesktop.secrets",
            );
            // Served, and its login collection made and unlocked: before that, a store
            // finds no default collection.
            if owned.contains("true") && self.has_default() {
                return;
            }
            if let Some(status) = self.keyring.exited() {
                panic!("gnome-keyring-daemon exited: {status}");
            }
            assert!(
                start.elapsed() < READY_WITHIN,
                "the keyring did not appear on the bus within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The environment of a process in the session rooted at `dir`.
fn session_env(dir: &Path, address: &str) -> Vec<(&'static str, PathBuf)> {
    let home = dir.join("home");
    vec![
        ("DBUS_SESSION_BUS_ADDRESS", PathBuf::from(address)),
        ("HOME", home.clone()),
        ("XDG_RUNTIME_DIR", dir.join("run")),
        ("XDG_DATA_HOME", dir.join("data")),
        ("XDG_CONFIG_HOME", home.join(".config")),
        ("XDG_CACHE_HOME", home.join(".cache")),
    ]
}

/// A session bus that listens in `run` and starts nothing on demand (no `servicedir`).
fn bus_config(run: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        run.display()
    )
}

fn spawn(command: &mut Command) -> Process {
    let program = command.get_program().to_string_lossy().into_owned();
    Process::try_start(command.stderr(Stdio::null())).unwrap_or_else(|err| {
        panic!("cannot start {program} ({err}); install {PACKAGES}, as .ci/run does")
    })
}
