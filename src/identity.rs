//! An identity this process holds, and how to take one: a secret key, where it came from,
//! the guard that keeps a second endpoint from running it, and the ports it is remembered
//! to listen on; and the [`Builder`] that holds every option of taking it and binding it.
//!
//! Everything below this module is about one of those; this is where they meet iroh's
//! [`Endpoint`].

use std::{ffi::OsStr, fmt, path::Path, sync::Arc, time::Duration};

use iroh::{
    Endpoint, EndpointId, SecretKey,
    endpoint::{self, presets::Preset},
};
use tracing::warn;

use crate::{
    error::Error,
    guard::{Guard, lease::Lease},
    ports::{self, StableAddressing},
    store::{self, KeyLocation, KeySource, StoredFile},
    sys::Dir,
    wait::Deadline,
};

/// How long an open waits, by default, for another endpoint to release the identity.
///
/// Long enough for a restart in which the old process is still closing; short enough
/// that a second copy of a program fails while its user is still watching.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);

/// How often a bind without remembered ports is tried, and the pause between tries.
const FRESH_BIND_TRIES: u32 = 4;
const FRESH_BIND_PAUSE: Duration = Duration::from_millis(100);

/// A persistent identity that this process holds: an endpoint's secret key, together
/// with where it came from and the lock that keeps any other endpoint from running it.
///
/// Take one with [`Identity::open`], or with [`Identity::builder`] for every option;
/// then bind it with any iroh builder you configured. The key never leaves it: an
/// endpoint gets it only with the lock, which the endpoint then holds until it closes.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use iroh::{Endpoint, endpoint::presets};
/// use iroh_identity::Identity;
///
/// let identity = Identity::open("endpoint.key").await?;
/// println!("{}", identity.id()); // the same on every run, before binding
/// let builder = Endpoint::builder(presets::N0).alpns(vec![b"chat/1".to_vec()]);
/// let endpoint = identity.bind(builder).await?;
/// endpoint.close().await; // releases the identity
/// # Ok(())
/// # }
/// ```
///
/// Dropping an identity that was not bound releases it.
///
/// # One live endpoint per identity
///
/// Two endpoints with the same key do not fail in iroh: their connections silently split
/// between them. Here the identity is locked on this host by its secret, whatever the key
/// came from (a file, a copy of it, an environment variable, the secret store), while an
/// `Identity`, or an endpoint bound with it, or any clone of that endpoint, is alive. A
/// second open waits up to the [lock wait](Builder::lock_wait) ([`DEFAULT_LOCK_WAIT`]),
/// then fails with [`Error::InUse`], which names the holding process (guarantee 7).
///
/// On Linux the lock is an abstract unix socket named by a keyed hash of the secret: no
/// file, and no name anyone without the secret can know in advance. It holds to these
/// (`tests/identity/host.rs`, `campaigns::lock`):
///
/// - **R1: one lock for every holder.** Every process of a user on this host that holds
///   the secret meets the same lock, whatever its groups, environment, working directory
///   or errors along the way, and whatever the holder's state (stopped, starved, flooded:
///   the kernel names a listener's user); one that cannot reach the lock fails
///   ([`Error::HostLock`]): it never runs unguarded, and there is no second place. A
///   process of another user with a copy of the secret meets it too, and is kept out while
///   the holder proves, within 100 ms, that it knows the secret.
/// - **R2: no other user can stop it, or make it wait.** Another user can read a holder's
///   socket name (`/proc/net/unix`) and take it once the holder is gone; the lock then
///   takes the next of its 8 names, each derived on its own from the secret, at a cost of
///   at most 100 ms per open (the time listeners of other users have, all together, to
///   prove they know the secret). When all 8 are taken, the open fails at once with
///   [`Error::HostLockTaken`], which names the squatters' uids and how an administrator
///   finds their processes.
/// - **R3: nothing an OS cleaner removes is a lock.** There is no file:
///   `systemd-tmpfiles`, a logout's removal of `/run/user/UID` and a reboot's `/tmp` wipe
///   have nothing to take.
/// - **R4: nothing piles up per identity.** A lock lives exactly as long as its holder.
/// - **R5: a killed holder releases at once.** The kernel frees the socket with the
///   process; there are no stale locks. Closing the endpoint or dropping its last clone
///   releases it too.
///
/// What it does not do:
///
/// - Its namespace is the network namespace: two containers (or services with
///   `PrivateNetwork=`) with network namespaces of their own are two hosts, as two
///   machines are, and need a lease to be kept apart.
/// - Two users of one host with copies of one secret are kept apart only while the holder
///   answers the other's question within 100 ms: a holder of another user that is
///   stopped or starved that long, or that a third user floods with connections, is taken
///   for a squatter, since letting an unanswering listener count as a holder would let
///   any user stall any identity.
/// - A child made with `fork` and no `exec` keeps its parent's lock for the parent's user,
///   until both have let go, but answers no other user.
/// - Elsewhere than on Linux the lock is a file of the user's, in a private directory
///   (`~/.local/state/iroh-identity`; on Windows `iroh-identity\locks` in the local
///   application data, one byte-range lock per identity): per user, so two users of one
///   host are not kept apart there. Windows' form is run under Wine; macOS' and the
///   BSDs' are not run here.
pub struct Identity {
    key: SecretKey,
    source: KeySource,
    /// The key file, where its ports are remembered; none for a key from anywhere else.
    file: Option<StoredFile>,
    guard: Guard,
    lock_wait: Duration,
    stable_addressing: bool,
}

impl Identity {
    /// Loads the key at `path`, or generates and stores one, and takes the identity, with
    /// every option at its default: the same as `Identity::builder(path).open()`.
    ///
    /// # Errors
    ///
    /// See [`Builder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path.as_ref()).open().await
    }

    /// Starts configuring an identity kept at `location` (a key file's path, or a
    /// [`KeyLocation`]), and the endpoint it binds.
    pub fn builder(location: impl Into<KeyLocation>) -> Builder {
        Builder {
            location: location.into(),
            key_env: None,
            lease: None,
            options: store::Options::default(),
            lock_wait: DEFAULT_LOCK_WAIT,
            stable_addressing: true,
            preset: Box::new(|builder| builder.preset(endpoint::presets::N0)),
            configure: Vec::new(),
        }
    }

    /// The identity: the [`EndpointId`] that an endpoint bound with it has.
    pub fn id(&self) -> EndpointId {
        self.key.public()
    }

    /// Where the key came from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Binds an endpoint with this identity and an iroh builder you configured
    /// (`Endpoint::builder(presets::N0).alpns(..)`...): sets the key, binds, and ties the
    /// identity to the endpoint and all its clones until one of them is closed or the
    /// last is dropped (with an etcd lease, only a close lets it go).
    ///
    /// The builder is bound as you configured it. With stable addressing on, the ports
    /// the endpoint gets are remembered; but they are not asked for again here, because
    /// a builder's sockets cannot be seen from outside it, and asking for a socket of a
    /// family it already binds one for would fail (see
    /// [*stable addressing*](Builder::stable_addressing)). To keep the ports across restarts,
    /// configure it through [`Identity::builder`] and [`configure`](Builder::configure),
    /// which owns the order of the steps. Only
    /// a remembered port that an endpoint of this process held until a moment ago is
    /// waited for (250 ms at most), for a builder that binds that very port again.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when iroh cannot bind; `Error::LeaseLost` when the identity's etcd
    /// lease was found lost once the endpoint was bound (the endpoint is closed). A loss
    /// in the instant after that check closes the endpoint too, which is then returned
    /// already closing.
    pub async fn bind(self, builder: endpoint::Builder) -> Result<Endpoint, Error> {
        let addressing = match self.ports_file() {
            Some((dir, name)) => {
                Some(StableAddressing::for_their_builder(dir, name, self.lock_wait).await)
            }
            None => None,
        };
        let endpoint = self.bind_with_key(builder).await?;
        self.finish(endpoint, addressing).await
    }

    /// Binds with an iroh builder that `configure` makes from an empty one, with the
    /// remembered ports first, as iroh's own sockets, for every family `configure` binds
    /// no default socket of its own for. When that bind fails, another program took a
    /// remembered port in the instant after it was found free: the builder is bound again
    /// without them, with a warning.
    pub(crate) async fn bind_configured(
        self,
        configure: impl Fn(endpoint::Builder) -> endpoint::Builder,
    ) -> Result<Endpoint, Error> {
        let mut addressing = match self.ports_file() {
            Some((dir, name)) => Some(StableAddressing::prepare(dir, name, self.lock_wait).await),
            None => None,
        };
        let endpoint = match &mut addressing {
            Some(addressing) if addressing.has_ports() => {
                let theirs = ports::defaults_bound_by(&configure);
                let builder = configure(addressing.apply(endpoint::Builder::empty(), theirs));
                match self.bind_with_key(builder).await {
                    Ok(endpoint) => endpoint,
                    // Only a failed bind may be a remembered port taken in the meantime.
                    Err(err @ Error::Bind(_)) => {
                        let cause = std::error::Error::source(&err)
                            .map_or_else(String::new, |cause| cause.to_string());
                        warn!(
                            %err, %cause,
                            "cannot bind the endpoint's ports of the last run (another program \
                             may have taken one); binding fresh ones"
                        );
                        addressing.give_up();
                        self.bind_fresh(&configure).await?
                    }
                    Err(err) => return Err(err),
                }
            }
            _ => {
                self.bind_with_key(configure(endpoint::Builder::empty()))
                    .await?
            }
        };
        self.finish(endpoint, addressing).await
    }

    /// Binds without remembered ports, after a bind with them failed. The sockets of the
    /// failed attempt may take a moment to go, so a failure is tried again, a few times.
    async fn bind_fresh(
        &self,
        configure: &impl Fn(endpoint::Builder) -> endpoint::Builder,
    ) -> Result<Endpoint, Error> {
        let mut tries = 1;
        loop {
            match self
                .bind_with_key(configure(endpoint::Builder::empty()))
                .await
            {
                Err(Error::Bind(_)) if tries < FRESH_BIND_TRIES => {
                    tries += 1;
                    tokio::time::sleep(FRESH_BIND_PAUSE).await;
                }
                result => return result,
            }
        }
    }

    /// The key file's directory and name, where its ports are remembered, when there is
    /// a key file and stable addressing is on.
    fn ports_file(&self) -> Option<(Arc<Dir>, &OsStr)> {
        let file = self.file.as_ref().filter(|_| self.stable_addressing)?;
        Some((Arc::clone(&file.dir), &file.name))
    }

    async fn bind_with_key(&self, builder: endpoint::Builder) -> Result<Endpoint, Error> {
        self.guard.check()?;
        builder
            .secret_key(self.key.clone())
            .bind()
            .await
            .map_err(Error::Bind)
    }

    /// Remembers the ports, and hands the identity over to the endpoint; or closes the
    /// endpoint if its lease was lost while it was being bound.
    async fn finish(
        self,
        endpoint: Endpoint,
        addressing: Option<StableAddressing>,
    ) -> Result<Endpoint, Error> {
        if let Err(err) = self.guard.check() {
            endpoint.close().await;
            return Err(err);
        }
        if let Some(addressing) = addressing {
            addressing.remember(&endpoint);
        }
        self.guard.hold_until_closed(&endpoint);
        Ok(endpoint)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A step applied to iroh's own endpoint builder: the preset, or a `configure` step.
type Step = Box<dyn Fn(endpoint::Builder) -> endpoint::Builder + Send + Sync>;

/// Configures an identity and the endpoint it binds; made by [`Identity::builder`].
///
/// It finishes in one of two ways: [`bind`](Self::bind) gives the endpoint, bound with
/// the preset and the [`configure`](Self::configure) steps; [`open`](Self::open) gives
/// the [`Identity`] alone, to bind with an iroh builder of your own.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use iroh::{RelayMode, endpoint::presets};
/// use iroh_identity::{Identity, KeyLocation};
///
/// let endpoint = Identity::builder(KeyLocation::default_for("com", "example", "chat"))
///     .key_from_env("IROH_SECRET")
///     .preset(presets::N0)
///     .configure(|builder| builder.alpns(vec![b"chat/1".to_vec()]).relay_mode(RelayMode::Disabled))
///     .bind()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a Builder does nothing until `bind().await` or `open().await`"]
pub struct Builder {
    location: KeyLocation,
    key_env: Option<String>,
    lease: Option<Arc<dyn Lease>>,
    options: store::Options,
    lock_wait: Duration,
    stable_addressing: bool,
    preset: Step,
    configure: Vec<Step>,
}

impl Builder {
    /// Takes the key from the environment variable `name` when it is set, as 64 hex or
    /// 52 base32 characters (white space around it and upper case are fine). This is the
    /// `IROH_SECRET` convention of sendme and dumbpipe.
    ///
    /// When the variable is set it wins: the key's location is neither read, nor created,
    /// nor locked. When it is set but not a key, opening fails; the location is not used
    /// in its place. When it is unset, the location is used as usual.
    pub fn key_from_env(mut self, name: impl Into<String>) -> Self {
        self.key_env = Some(name.into());
        self
    }

    /// Guards the identity across machines with `lease`, beside the host's lock: see
    /// [`EtcdLease`](crate::EtcdLease). Feature `etcd`.
    #[cfg(feature = "etcd")]
    pub fn lease(mut self, lease: crate::guard::lease::etcd::EtcdLease) -> Self {
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
    /// for a busy remembered port (10 s at most, whatever this is: beyond the 3 s or so in
    /// which a closing endpoint lets go of its sockets).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Turns off the checks of who may read and change the key, instead of failing with
    /// [`Error::InsecurePermissions`] or [`Error::UntrustedPath`] (guarantees 5 and 9 of
    /// the [crate docs](crate#guarantees)); on Windows, the checks of owners and DACLs
    /// alike. Off by default.
    ///
    /// With it, a key file of the current user that group or others may access is
    /// accepted, and so is a key file, a directory above it or a symbolic link on the
    /// way that belongs to another user or that others may write: a place where another
    /// local user could replace the identity. What stays on: new files and directories
    /// are still created private, through descriptors and never through a link, and an
    /// existing key is still never written.
    ///
    /// On unix the checks trust root, the process's user and the members of its groups;
    /// they see owners and modes, not POSIX ACLs. In a user namespace (a rootless container), files of
    /// users it does not map, `/` among them, belong to the overflow user (65534), and
    /// every key is refused: there, turn the checks off with this.
    pub fn allow_insecure_permissions(mut self, allow: bool) -> Self {
        self.options.allow_insecure_permissions = allow;
        self
    }

    /// Whether the endpoint binds the UDP ports of its last run, remembered beside the
    /// key, so that its tickets survive a restart (guarantee 10): on unless turned off.
    ///
    /// A ticket (`iroh_tickets::endpoint::EndpointTicket`) holds an endpoint's id, the
    /// direct addresses (IP and UDP port) it had when the ticket was made, and its home
    /// relay. A peer dials what is in it, so a ticket reaches the endpoint after a restart
    /// if one of them still leads to it: the id does (the key file); the home relay does
    /// when the endpoint picks the same one again (always with a single relay of your own;
    /// with n0's relays while the nearest is the same); a direct address does when the
    /// machine keeps its IP address and the port is the same. That last one is stable
    /// addressing, and it works offline, with no relay at all.
    ///
    /// iroh binds a socket on all interfaces for IPv4 and one for IPv6, on random ports.
    /// Their ports are remembered in a file beside the key, named like it with `.ports`
    /// appended (`endpoint.key.ports`), and asked for again on the next bind. It is on
    /// unless this turns it off, and:
    ///
    /// - **Your addresses win.** [`bind`](Self::bind) owns the order of the builder's
    ///   steps: the remembered sockets go first, as iroh's own are, and a
    ///   [`configure`](Self::configure) step may bind any address of its own (a fixed port
    ///   or port 0, one interface or all), or clear them with `clear_ip_transports()`. A
    ///   family the steps bind a default socket for keeps theirs; the remembered port fills
    ///   in only where they bind none. [`Identity::bind`] is given a builder that is
    ///   already configured, whose sockets iroh 1.4 cannot show; adding one to it could
    ///   fail, so it binds the builder as it is and only remembers the ports.
    /// - **A busy port is waited for.** A gracefully closing endpoint releases the identity
    ///   at once but keeps its sockets while its connections drain (iroh allows about 3 s).
    ///   So a remembered port still in use is waited for until the lock wait ends, 10 s at
    ///   most, or 250 ms when the port is held by an endpoint of this process that was
    ///   closed but not dropped. A port that only other users' programs hold is not waited
    ///   for at all (Linux tells who holds it): they would not let go. Then the endpoint
    ///   binds a fresh port, logs a warning that says why, and remembers the new one.
    /// - **It never makes an open fail.** A ports file that is missing, damaged or cannot
    ///   be written (a read-only secret mount) means fresh ports and a line in the log; so
    ///   does a remembered port that another program takes in the instant between the check
    ///   that it is free and iroh's bind: the bind is tried again without it. The file is
    ///   replaced only when it is one this crate wrote, never when it is anything else
    ///   (another file, a link, another user's), and ports below 1024 are ignored. It is
    ///   written like a key, only by the holder of the identity.
    /// - **What it cannot do.** A ticket does not survive a new IP address (another
    ///   network, a new container, a new DHCP lease) with no relay or address lookup to
    ///   help, nor a port that another program took: UDP ports are shared by every user of
    ///   the host, so another local user can take a remembered port, and then costs the
    ///   endpoint its old tickets' direct address, never its start (nor, on Linux, any
    ///   wait). A key from an environment variable or the secret store has no file, so
    ///   nothing is remembered. Only sockets on all interfaces are remembered, and of a
    ///   family for which the `configure` steps bind one of their own beside iroh's, none:
    ///   which one is iroh's cannot be told.
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
    /// [stable addressing](Builder::stable_addressing). A step may run more than once, on
    /// builders that are thrown away, to see which sockets it binds: it must only
    /// configure the builder it is given.
    pub fn configure(
        mut self,
        step: impl Fn(endpoint::Builder) -> endpoint::Builder + Send + Sync + 'static,
    ) -> Self {
        self.configure.push(Box::new(step));
        self
    }

    /// Loads the key, or generates and stores one, and takes the identity: the
    /// [`Identity`], to bind with an iroh builder of your own ([`Identity::bind`]).
    ///
    /// The key file is read if it exists (in any format the crate knows) and never
    /// written again. If there is none, a new key is generated and stored (unless
    /// [`create_if_missing(false)`](Self::create_if_missing)). A keychain entry is
    /// treated the same way. Then the identity is locked on this host: if another endpoint
    /// holds it, this waits for up to [`lock_wait`](Self::lock_wait) (see [`Identity`]).
    ///
    /// - **An identity is never lost** (guarantee 2). An existing key file is never
    ///   written, replaced or deleted, even when it is damaged, unreadable, of an unknown
    ///   format or the wrong size: that is an error naming the path and the problem. With
    ///   [`create_if_missing(false)`](Self::create_if_missing), a missing key is an error
    ///   too, instead of a new identity.
    /// - **Keys are created crash-safely** (guarantee 3). A new key (PKCS#8 v2 PEM, which
    ///   holds the public key too, so that damage is detected) is written to a temporary
    ///   file beside it (`0600`), synced, published under its name by a rename that never
    ///   replaces anything, and the directory is synced; missing directories are made
    ///   `0700`. A crash leaves no key or a whole one, and the next creation removes the
    ///   temporary files of killed runs (where the directory can be listed). When the
    ///   directory cannot be synced after the key is published (one that may be written
    ///   but not read), the key is used and a warning logged: only its survival of a power
    ///   loss is unconfirmed.
    /// - **First-run races settle** (guarantee 4). Processes that create the same key at
    ///   once all end up with the same one: the losers read the winner's. Creators take a
    ///   lock on the directory in turn, waited for no longer than the lock wait, 5 s at
    ///   most: creation is correct without it.
    /// - **Read-only keys work** (guarantee 6). An existing key is never written and
    ///   nothing else has to be, so a read-only file or directory (a Kubernetes secret)
    ///   works, lock included. Where it can, the crate writes the ports file beside the
    ///   key; where it cannot, the endpoint binds fresh ports.
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
    /// - [`Error::NameTooLong`], [`Error::TooManyLinks`], [`Error::UncreatablePath`],
    ///   [`Error::Io`]: the key file or its directory cannot be read or created.
    /// - The errors of the lease, if one was given.
    ///
    /// [`create_if_missing`]: Self::create_if_missing
    pub async fn open(&self) -> Result<Identity, Error> {
        let deadline = Deadline::after(self.lock_wait);
        let stored = store::open(
            &self.location,
            self.key_env.as_deref(),
            self.options,
            deadline,
        )
        .await?;
        let guard = Guard::take(&stored.key, self.lease.as_deref(), deadline).await?;
        Ok(Identity {
            key: stored.key,
            source: stored.source,
            file: stored.file,
            guard,
            lock_wait: self.lock_wait,
            stable_addressing: self.stable_addressing,
        })
    }

    /// Takes the identity (see [`open`](Self::open)) and binds an endpoint with it, the
    /// preset and the [`configure`](Self::configure) steps. The identity stays with the
    /// returned endpoint and all its clones until one of them is closed or the last is
    /// dropped (with an etcd lease, only a close).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), and [`Error::Bind`] when iroh cannot bind.
    pub async fn bind(self) -> Result<Endpoint, Error> {
        let identity = self.open().await?;
        let steps = |builder| {
            self.configure
                .iter()
                .fold((self.preset)(builder), |builder, step| step(builder))
        };
        identity.bind_configured(steps).await
    }
}

impl fmt::Debug for Builder {
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
