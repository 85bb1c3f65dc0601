//! Binding the endpoint: where its key comes from, the preset, and iroh's own options.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use directories::ProjectDirs;
use iroh::{
    Endpoint, SecretKey,
    endpoint::{self, presets::Preset},
};
use tracing::info;
use zeroize::Zeroizing;

use crate::{
    Error, IdentityLock, KeyProblem, key, key_file, ports::StableAddressing, wait::Deadline,
};

/// How long an open waits, by default, for another endpoint to release the identity.
///
/// Long enough for a restart in which the old process is still closing; short enough
/// that a second copy of a program fails while its user is still watching.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The longest wait for a remembered port that another program holds, whatever the
/// [lock wait](Builder::lock_wait): beyond the 3 s or so in which a gracefully closing
/// endpoint lets go of its sockets, and short enough that a program squatting the port
/// cannot hold up an open that waits for ever for its identity.
pub const MAX_PORT_WAIT: Duration = Duration::from_secs(10);

/// The name of the key file in a [default location](Builder::default_location).
pub const DEFAULT_KEY_FILE_NAME: &str = "endpoint.key";

/// Opens iroh endpoints whose identity survives restarts.
///
/// Both ways in give back a plain [`iroh::Endpoint`], usable wherever one is (a
/// [`Router`](iroh::protocol::Router), your own protocols), at no cost: there is no
/// wrapper to unwrap. Close it as any endpoint, with [`Endpoint::close`]; that also
/// releases the identity for the next open.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// let endpoint = iroh_identity::PersistentEndpoint::open("endpoint.key").await?;
/// println!("{}", endpoint.id()); // the same on every run
/// endpoint.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct PersistentEndpoint;

impl PersistentEndpoint {
    /// Binds an endpoint with the key stored at `path`, generating and storing one on
    /// first use, with iroh's [`N0`](iroh::endpoint::presets::N0) preset and
    /// [stable addressing](Builder::stable_addressing): its UDP ports are remembered
    /// beside the key and bound again, so that its tickets survive a restart.
    ///
    /// The same as
    /// `PersistentEndpoint::builder().key_path(path).stable_addressing(true).bind()`; see
    /// [`Builder::bind`] for what happens, the errors and the guarantees.
    ///
    /// # Errors
    ///
    /// See [`Builder::bind`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Endpoint, Error> {
        Self::builder()
            .key_path(path)
            .stable_addressing(true)
            .bind()
            .await
    }

    /// Starts configuring an endpoint: key location, preset, iroh options, lock wait.
    pub fn builder() -> Builder {
        Builder {
            location: None,
            preset: Box::new(|builder| builder.preset(endpoint::presets::N0)),
            configure: Vec::new(),
            key_env: None,
            lock_wait: DEFAULT_LOCK_WAIT,
            read_options: key_file::ReadOptions::default(),
            stable_addressing: false,
        }
    }
}

/// The key file of an application in the user's local data directory:
/// `$XDG_DATA_HOME/<application>/endpoint.key` on Linux, `~/Library/Application
/// Support/<qualifier>.<organization>.<application>/endpoint.key` on macOS,
/// `%LOCALAPPDATA%\<organization>\<application>\data\endpoint.key` on Windows.
///
/// The directory is local, never roaming: a roaming profile would carry the identity to
/// a second machine and run it there at the same time.
///
/// # Errors
///
/// - [`Error::NoHomeDirectory`] when the user has no home directory.
/// - [`Error::RelativeDataDirectory`] when `HOME` or `XDG_DATA_HOME` is a relative path:
///   the key would land under whatever the current directory is, and a later start from
///   another directory would make a new identity.
pub fn default_key_path(
    qualifier: &str,
    organization: &str,
    application: &str,
) -> Result<PathBuf, Error> {
    // Where `directories` reads XDG_DATA_HOME, it ignores a relative one and falls back
    // to ~/.local/share: a key silently elsewhere than the user meant.
    #[cfg(not(any(target_os = "macos", target_os = "ios", windows)))]
    if let Some(value) = std::env::var_os("XDG_DATA_HOME")
        && !value.is_empty()
        && Path::new(&value).is_relative()
    {
        return Err(Error::RelativeDataDirectory {
            variable: "XDG_DATA_HOME",
            value: value.into(),
        });
    }
    let path = ProjectDirs::from(qualifier, organization, application)
        .map(|dirs| dirs.data_local_dir().join(DEFAULT_KEY_FILE_NAME))
        .ok_or(Error::NoHomeDirectory)?;
    if path.is_relative() {
        return Err(Error::RelativeDataDirectory {
            variable: "HOME",
            value: std::env::var_os("HOME").unwrap_or_default().into(),
        });
    }
    Ok(path)
}

/// A step applied to iroh's own endpoint builder.
type Configure = Box<dyn FnOnce(endpoint::Builder) -> endpoint::Builder + Send>;

/// Configures and binds an endpoint with a persistent identity; made by
/// [`PersistentEndpoint::builder`].
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use iroh::{RelayMode, endpoint::presets};
/// use iroh_identity::PersistentEndpoint;
///
/// let endpoint = PersistentEndpoint::builder()
///     .default_location("com", "example", "chat")
///     .key_from_env("IROH_SECRET")
///     .preset(presets::N0)
///     .configure(|builder| builder.alpns(vec![b"chat/1".to_vec()]).relay_mode(RelayMode::Disabled))
///     .bind()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a Builder does nothing until `bind().await`"]
pub struct Builder {
    location: Option<Location>,
    preset: Configure,
    configure: Vec<Configure>,
    key_env: Option<String>,
    lock_wait: Duration,
    read_options: key_file::ReadOptions,
    stable_addressing: bool,
}

/// Where the key file is.
#[derive(Debug)]
enum Location {
    Path(PathBuf),
    Default {
        qualifier: String,
        organization: String,
        application: String,
    },
}

impl Builder {
    /// Keeps the key in the file at `path`. Missing directories are created (`0700`).
    pub fn key_path(mut self, path: impl AsRef<Path>) -> Self {
        self.location = Some(Location::Path(path.as_ref().to_owned()));
        self
    }

    /// Keeps the key in the application's local data directory, as
    /// [`default_key_path`] names it.
    pub fn default_location(
        mut self,
        qualifier: &str,
        organization: &str,
        application: &str,
    ) -> Self {
        self.location = Some(Location::Default {
            qualifier: qualifier.to_owned(),
            organization: organization.to_owned(),
            application: application.to_owned(),
        });
        self
    }

    /// Uses this iroh preset instead of [`N0`](iroh::endpoint::presets::N0).
    pub fn preset(mut self, preset: impl Preset + Send + 'static) -> Self {
        self.preset = Box::new(move |builder| builder.preset(preset));
        self
    }

    /// Sets anything else on iroh's [`endpoint::Builder`]: ALPNs, relay mode, bind
    /// addresses, address lookup, hooks.
    ///
    /// Steps run after the preset, in the order given. The secret key is set after all of
    /// them, so nothing here can replace the identity.
    pub fn configure(
        mut self,
        step: impl FnOnce(endpoint::Builder) -> endpoint::Builder + Send + 'static,
    ) -> Self {
        self.configure.push(Box::new(step));
        self
    }

    /// Takes the key from the environment variable `name` when it is set, as 64 hex or
    /// 52 base32 characters (white space around it and upper case are fine). This is the
    /// `IROH_SECRET` convention of sendme and dumbpipe.
    ///
    /// When the variable is set it wins: the key file is neither read, nor created, nor
    /// locked. When it is set but not a key, opening fails; the file is not used in its
    /// place. When it is unset, the key file is used as usual.
    pub fn key_from_env(mut self, name: impl Into<String>) -> Self {
        self.key_env = Some(name.into());
        self
    }

    /// How long to wait for another endpoint with this identity to close before failing
    /// with [`Error::InUse`]; [`DEFAULT_LOCK_WAIT`] unless set. Zero tries once;
    /// `Duration::MAX` waits for as long as it takes (a hot standby).
    ///
    /// It bounds every wait of the open: for another process creating the same key
    /// (after which the key is created without the directory lock, which only keeps
    /// creators in turn), for the identity, and for a busy remembered port, which is
    /// waited for [`MAX_PORT_WAIT`] at most whatever this is.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Turns off the checks of who may read and change the key, instead of failing with
    /// [`Error::InsecurePermissions`] or [`Error::UntrustedPath`]. Unix only; off by
    /// default.
    ///
    /// With it, a key file of the current user that group or others may access is
    /// accepted, and so is a key file, a directory above it or a symbolic link on the
    /// way that belongs to another user or that others may write: a place where another
    /// local user could replace the identity. What stays on: new files and directories
    /// are still created private, through descriptors and never through a link, and an
    /// existing key is still never written.
    pub fn allow_insecure_permissions(mut self, allow: bool) -> Self {
        self.read_options.allow_insecure_permissions = allow;
        self
    }

    /// Binds the endpoint's UDP sockets to the ports they had last time, so that the
    /// tickets it handed out still reach it directly after a restart. Off by default;
    /// [`PersistentEndpoint::open`] turns it on.
    ///
    /// iroh binds a socket on all interfaces for IPv4 and one for IPv6, each on a
    /// random port unless told otherwise. With stable addressing their ports are
    /// remembered in a file beside the key, named like it with `.ports` appended
    /// (`endpoint.key.ports`), and asked for again on the next open. The file is written
    /// when the ports change, with the same crash-safe steps as a new key, and only by
    /// the holder of the identity lock.
    ///
    /// It never makes an open fail. A remembered port that is still in use is waited
    /// for: a gracefully closing endpoint releases the identity at once but keeps its
    /// sockets while its connections drain (iroh allows about 3 s). The wait ends with
    /// the [lock wait](Self::lock_wait), or after 250 ms when the port is held by an
    /// endpoint of this process that was closed but not dropped: drop every clone of an
    /// endpoint before opening its identity again. Then the endpoint binds a fresh port,
    /// logs a warning and remembers the new one. A ports file that is missing, damaged
    /// or cannot be written (a read-only directory) means fresh ports and a line in the
    /// log.
    ///
    /// See the crate's [*Tickets*](crate#tickets) section for what a ticket holds and
    /// when it survives a restart.
    ///
    /// With [`key_from_env`](Self::key_from_env) there is no key file, so nothing is
    /// remembered. The remembered sockets are set before the preset and the
    /// [`configure`](Self::configure) steps. A step that binds addresses of its own
    /// must start with `clear_ip_transports()`, which also leaves the remembered ones
    /// out; without it, iroh refuses a second socket on all interfaces for a family.
    /// Only sockets on all interfaces are remembered.
    pub fn stable_addressing(mut self, on: bool) -> Self {
        self.stable_addressing = on;
        self
    }

    /// Loads the key, or generates and stores one, locks the identity and binds.
    ///
    /// The key file is read if it exists (in any format the crate knows) and never
    /// written again. If there is none, a new key is generated and published as PKCS#8
    /// PEM, crash-safely, in a way that leaves racing processes with the same key.
    /// Then the identity is locked: if another endpoint holds it, this waits for up to
    /// [`lock_wait`](Self::lock_wait). The lock stays with the returned endpoint and all
    /// its clones until one of them is closed or the last is dropped.
    ///
    /// Reading the key is a few system calls on the calling task; creating one adds an
    /// `fsync` of the file and of each directory it touched, once in the life of the key.
    /// With [stable addressing](Self::stable_addressing), so does the ports file when the
    /// ports change. Only the waits, for the lock and for a busy port, yield to the
    /// runtime.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidKey`], [`Error::NotAFile`], [`Error::DanglingSymlink`]:
    ///   something unusable is at the key path. It is left exactly as it was.
    /// - [`Error::InsecurePermissions`] (unix): the key file is yours and group or
    ///   others may access it.
    /// - [`Error::InUse`]: another endpoint still holds the identity.
    /// - [`Error::InvalidEnvKey`]: the chosen environment variable is set to something
    ///   that is not a key.
    /// - [`Error::NoKeyPath`], [`Error::NoHomeDirectory`]: there is no key location.
    /// - [`Error::Io`]: the key file or its directory cannot be read or created.
    /// - [`Error::Bind`]: iroh cannot bind.
    ///
    /// # Security
    ///
    /// A key file of yours that group or others may access is refused, like OpenSSH
    /// does. New key files are `0600` and new directories `0700`, whatever the umask.
    /// No key material appears in errors, `Debug` output or logs.
    pub async fn bind(self) -> Result<Endpoint, Error> {
        // Every wait of the open ends together.
        let deadline = Deadline::after(self.lock_wait);
        let env_key = match &self.key_env {
            Some(name) => key_from_env(name)?,
            None => None,
        };
        let (secret_key, lock, addressing) = match env_key {
            Some(key) => (key, None, None),
            None => {
                let path = self.location.ok_or(Error::NoKeyPath)?.resolve()?;
                let loaded = key_file::load_or_create(&path, self.read_options, deadline).await?;
                let id = loaded.key.public();
                let lock = IdentityLock::wait_for(loaded.file, &path, deadline, Some(id)).await?;
                let addressing = if self.stable_addressing {
                    StableAddressing::prepare(&path, deadline).await
                } else {
                    None
                };
                (loaded.key, Some(lock), addressing)
            }
        };
        let mut builder = endpoint::Builder::empty();
        if let Some(addressing) = &addressing {
            builder = addressing.apply(builder);
        }
        builder = (self.preset)(builder);
        for step in self.configure {
            builder = step(builder);
        }
        let endpoint = builder
            .secret_key(secret_key)
            .bind()
            .await
            .map_err(Error::Bind)?;
        if let Some(addressing) = addressing {
            addressing.remember(&endpoint);
        }
        if let Some(lock) = lock {
            lock.hold_until_closed(&endpoint);
        }
        Ok(endpoint)
    }
}

impl Location {
    fn resolve(self) -> Result<PathBuf, Error> {
        match self {
            Self::Path(path) => Ok(path),
            Self::Default {
                qualifier,
                organization,
                application,
            } => default_key_path(&qualifier, &organization, &application),
        }
    }
}

/// Reads the key from the environment variable `name`, or `None` if it is unset.
fn key_from_env(name: &str) -> Result<Option<SecretKey>, Error> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    let invalid = |problem| Error::InvalidEnvKey {
        name: name.to_owned(),
        problem,
    };
    let len = value.len();
    let value = Zeroizing::new(
        value
            .into_string()
            .map_err(|_| invalid(KeyProblem::NotHexOrBase32 { len }))?,
    );
    let (key, format) = key::decode_text(&value).map_err(invalid)?;
    info!(variable = name, id = %key.public(), %format, "using the endpoint key from the environment");
    Ok(Some(key))
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("location", &self.location)
            .field("key_env", &self.key_env)
            .field("lock_wait", &self.lock_wait)
            .field(
                "allow_insecure_permissions",
                &self.read_options.allow_insecure_permissions,
            )
            .field("stable_addressing", &self.stable_addressing)
            .field("configure_steps", &self.configure.len())
            .finish_non_exhaustive()
    }
}
