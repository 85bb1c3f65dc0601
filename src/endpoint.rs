//! The conveniences on top of [`Identity`]: [`PersistentEndpoint::open`], and the
//! [`Builder`] that holds every option.

use std::{fmt, path::Path, sync::Arc, time::Duration};

use iroh::{
    Endpoint,
    endpoint::{self, presets::Preset},
};

use crate::{
    DEFAULT_LOCK_WAIT, Error, Identity, KeySource,
    guard::lease::Lease,
    store::{FileLocation, Location, file},
};

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
    /// first use, with iroh's [`N0`](iroh::endpoint::presets::N0) preset and every other
    /// option at its default.
    ///
    /// The same as `PersistentEndpoint::builder().key_path(path).bind()`; see
    /// [`Builder::bind`].
    ///
    /// # Errors
    ///
    /// See [`Builder::identity`] and [`Builder::bind`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Endpoint, Error> {
        Self::builder().key_path(path).bind().await
    }

    /// Starts configuring an identity and its endpoint. It needs a key location,
    /// [`key_path`](Builder::key_path) or [`default_location`](Builder::default_location),
    /// before it can open anything.
    pub fn builder() -> Builder<NoKeyLocation> {
        Builder {
            location: NoKeyLocation,
            key_env: None,
            lease: None,
            options: file::Options::default(),
            lock_wait: DEFAULT_LOCK_WAIT,
            stable_addressing: true,
            preset: Box::new(|builder| builder.preset(endpoint::presets::N0)),
            configure: Vec::new(),
        }
    }
}

/// A step applied to iroh's own endpoint builder: the preset, or a `configure` step.
type Step = Box<dyn Fn(endpoint::Builder) -> endpoint::Builder + Send + Sync>;

/// The state of a [`Builder`] that has not been told where the key is yet: it cannot
/// open anything until [`key_path`](Builder::key_path),
/// [`default_location`](Builder::default_location) or `keychain` is called.
#[derive(Debug)]
#[non_exhaustive]
pub struct NoKeyLocation;

/// The state of a [`Builder`] that knows where the key is kept: it can open.
#[derive(Debug)]
pub struct KeyLocation(Location);

/// Configures an identity and the endpoint it binds; made by
/// [`PersistentEndpoint::builder`].
///
/// It finishes in one of two ways: [`bind`](Self::bind) gives the endpoint, bound with
/// the preset and the [`configure`](Self::configure) steps; [`identity`](Self::identity)
/// gives the [`Identity`] alone, to bind with an iroh builder of your own.
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
///
/// It cannot open anything before it knows where the key is: a builder without
/// [`key_path`](Self::key_path), [`default_location`](Self::default_location) or
/// `keychain` (feature `keyring`) has no `bind` or `identity`.
///
/// ```compile_fail
/// # async fn run() -> anyhow::Result<()> {
/// let endpoint = iroh_identity::PersistentEndpoint::builder().bind().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a Builder does nothing until `bind().await` or `identity().await`"]
pub struct Builder<K = KeyLocation> {
    location: K,
    key_env: Option<String>,
    lease: Option<Arc<dyn Lease>>,
    options: file::Options,
    lock_wait: Duration,
    stable_addressing: bool,
    preset: Step,
    configure: Vec<Step>,
}

impl<K> Builder<K> {
    /// Keeps the key in the file at `path`. Missing directories are created (`0700`).
    pub fn key_path(self, path: impl AsRef<Path>) -> Builder<KeyLocation> {
        self.located(Location::File(FileLocation::Path(path.as_ref().to_owned())))
    }

    /// Keeps the key in the application's local data directory, as
    /// [`default_key_path`](crate::default_key_path) names it.
    /// [`Builder::key_source`] tells which path that is.
    pub fn default_location(
        self,
        qualifier: &str,
        organization: &str,
        application: &str,
    ) -> Builder<KeyLocation> {
        self.located(Location::File(FileLocation::Default {
            qualifier: qualifier.to_owned(),
            organization: organization.to_owned(),
            application: application.to_owned(),
        }))
    }

    /// Keeps the key in the OS secret store, in the entry named by `service` and
    /// `account`: the Secret Service (GNOME Keyring, KWallet) on Linux, the Keychain on
    /// macOS, the Credential Manager on Windows. Feature `keyring`.
    ///
    /// A missing entry is created with a new key (unless
    /// [`create_if_missing(false)`](Self::create_if_missing)); an entry that holds
    /// anything else is an error and is never replaced, and so is a store that cannot be
    /// reached or is locked: nothing falls back to a file or to a fresh identity. There is
    /// no key file, so no ports are remembered; the identity is locked on this host as
    /// any other (see [`Identity`]). Calls to the store run off the runtime's threads, and
    /// are waited for until the [lock wait](Self::lock_wait) ends (1 s at least).
    #[cfg(feature = "keyring")]
    pub fn keychain(self, service: &str, account: &str) -> Builder<KeyLocation> {
        self.located(Location::Keychain {
            service: service.to_owned(),
            account: account.to_owned(),
        })
    }

    fn located(self, location: Location) -> Builder<KeyLocation> {
        Builder {
            location: KeyLocation(location),
            key_env: self.key_env,
            lease: self.lease,
            options: self.options,
            lock_wait: self.lock_wait,
            stable_addressing: self.stable_addressing,
            preset: self.preset,
            configure: self.configure,
        }
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

    /// Guards the identity across machines with `lease`, beside the host's locks: see
    /// [`EtcdLease`](crate::EtcdLease). Feature `etcd`.
    #[cfg(feature = "etcd")]
    pub fn lease(mut self, lease: crate::EtcdLease) -> Self {
        self.lease = Some(Arc::new(lease));
        self
    }

    /// Whether a missing key is generated and stored (the default), or is an error,
    /// [`Error::NotFound`], that creates nothing, not even a directory.
    ///
    /// Turn it off for a provisioned server whose id is known to its clients: a key path
    /// with a typo, or a secret volume that did not mount, then stops the server instead
    /// of starting it with a new identity.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.options.create_if_missing = create;
        self
    }

    /// How long to wait for another endpoint with this identity to close before failing
    /// with [`Error::InUse`]; [`DEFAULT_LOCK_WAIT`] unless set. Zero does not wait;
    /// `Duration::MAX` waits for as long as it takes (a hot standby).
    ///
    /// It bounds every wait: for another process creating the same key (after which the
    /// key is created without the directory lock, which only keeps creators in turn),
    /// for the identity, for the secret store's answers (1 s at least), and when binding,
    /// for a busy remembered port, which is waited for
    /// [`MAX_PORT_WAIT`](crate::MAX_PORT_WAIT) at most whatever this is.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Turns off the checks of who may read and change the key, instead of failing with
    /// [`Error::InsecurePermissions`] or [`Error::UntrustedPath`] (guarantees 5 and 9 of
    /// the [crate docs](crate#guarantees)). Unix only; off by default.
    ///
    /// With it, a key file of the current user that group or others may access is
    /// accepted, and so is a key file, a directory above it or a symbolic link on the
    /// way that belongs to another user or that others may write: a place where another
    /// local user could replace the identity. What stays on: new files and directories
    /// are still created private, through descriptors and never through a link, and an
    /// existing key is still never written.
    pub fn allow_insecure_permissions(mut self, allow: bool) -> Self {
        self.options.allow_insecure_permissions = allow;
        self
    }

    /// Whether the endpoint binds the UDP ports of its last run, remembered beside the
    /// key, so that its tickets survive a restart: on unless turned off. See
    /// [*Stable addressing*](crate#stable-addressing) for how, and what it never does.
    pub fn stable_addressing(mut self, on: bool) -> Self {
        self.stable_addressing = on;
        self
    }

    /// Uses this iroh preset instead of [`N0`](iroh::endpoint::presets::N0), for
    /// [`bind`](Builder::bind).
    pub fn preset(mut self, preset: impl Preset + Clone + Send + Sync + 'static) -> Self {
        self.preset = Box::new(move |builder| builder.preset(preset.clone()));
        self
    }

    /// Sets anything else on iroh's [`endpoint::Builder`] for [`bind`](Builder::bind):
    /// ALPNs, relay mode, bind addresses, address lookup, hooks.
    ///
    /// Steps run after the preset, in the order given; the secret key is set after all of
    /// them, so nothing here can replace the identity. A step may bind addresses of its
    /// own, fixed ports included: they win over the remembered ports of
    /// [stable addressing](crate#stable-addressing). A step may run more than once, on
    /// builders that are thrown away, to see which sockets it binds: it must only
    /// configure the builder it is given.
    pub fn configure(
        mut self,
        step: impl Fn(endpoint::Builder) -> endpoint::Builder + Send + Sync + 'static,
    ) -> Self {
        self.configure.push(Box::new(step));
        self
    }
}

impl Builder<KeyLocation> {
    /// Where the key this builder opens is kept: the path given to
    /// [`key_path`](Self::key_path), the one [`default_location`](Self::default_location)
    /// chose, or a keychain entry. A key from the environment variable of
    /// [`key_from_env`](Self::key_from_env), when it is set, wins over it.
    ///
    /// # Errors
    ///
    /// As [`default_key_path`](crate::default_key_path).
    pub fn key_source(&self) -> Result<KeySource, Error> {
        self.location.0.resolve()
    }

    /// Loads the key, or generates and stores one, and takes the identity: the
    /// [`Identity`], to bind with an iroh builder of your own
    /// ([`Identity::bind`]).
    ///
    /// The key file is read if it exists (in any format the crate knows) and never
    /// written again. If there is none, a new key is generated and published as PKCS#8
    /// PEM, crash-safely, in a way that leaves racing processes with the same key (unless
    /// [`create_if_missing(false)`](Self::create_if_missing)). A keychain entry is
    /// treated the same way. Then the identity is locked on this host: if another endpoint
    /// holds it, this waits for up to [`lock_wait`](Self::lock_wait).
    ///
    /// Reading the key is a few system calls on the calling task; creating one adds an
    /// `fsync` of the file and of each directory it touched, once in the life of the key.
    /// Only the waits yield to the runtime.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidKey`], [`Error::NotAFile`], [`Error::DanglingSymlink`]:
    ///   something unusable is at the key path. It is left exactly as it was.
    /// - [`Error::UntrustedPath`], [`Error::InsecurePermissions`] (unix): another user
    ///   could change the key, or the key is yours and others may read it.
    /// - [`Error::NotFound`]: there is no key, and [`create_if_missing`] is off.
    /// - [`Error::InUse`]: another endpoint still holds the identity, whatever its key
    ///   came from.
    /// - [`Error::HostLock`], [`Error::HostLockTaken`]: the identity's lock on this host
    ///   cannot be reached, or other users' processes have taken every name it may have.
    /// - [`Error::Keychain`], [`Error::InvalidKeychainKey`] (feature `keyring`): the secret
    ///   store cannot be reached, is locked, or holds something else than a key in the
    ///   entry, which is left as it is.
    /// - [`Error::InvalidEnvKey`]: the chosen environment variable is set to something
    ///   that is not a key.
    /// - [`Error::NoHomeDirectory`], [`Error::RelativeDataDirectory`]: there is no usable
    ///   default location.
    /// - [`Error::NameTooLong`], [`Error::Io`]: the key file or its directory cannot be
    ///   read or created.
    ///
    /// [`create_if_missing`]: Self::create_if_missing
    pub async fn identity(self) -> Result<Identity, Error> {
        self.take_identity().await
    }

    /// Takes the identity (see [`identity`](Self::identity)) and binds an endpoint with
    /// it, the preset and the [`configure`](Self::configure) steps. The identity stays
    /// with the returned endpoint and all its clones until one of them is closed or the
    /// last is dropped (with an etcd lease, only a close).
    ///
    /// # Errors
    ///
    /// As [`identity`](Self::identity), and [`Error::Bind`] when iroh cannot bind.
    pub async fn bind(self) -> Result<Endpoint, Error> {
        let identity = self.take_identity().await?;
        let steps = |builder| {
            self.configure
                .iter()
                .fold((self.preset)(builder), |builder, step| step(builder))
        };
        identity.bind_configured(steps).await
    }

    async fn take_identity(&self) -> Result<Identity, Error> {
        Identity::take(
            &self.location.0,
            self.key_env.as_deref(),
            self.lease.as_deref(),
            self.options,
            self.lock_wait,
            self.stable_addressing,
        )
        .await
    }
}

impl<K: fmt::Debug> fmt::Debug for Builder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("location", &self.location)
            .field("key_env", &self.key_env)
            .field("lease", &self.lease)
            .field("create_if_missing", &self.options.create_if_missing)
            .field("lock_wait", &self.lock_wait)
            .field(
                "allow_insecure_permissions",
                &self.options.allow_insecure_permissions,
            )
            .field("stable_addressing", &self.stable_addressing)
            .field("configure_steps", &self.configure.len())
            .finish_non_exhaustive()
    }
}
