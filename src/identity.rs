//! An identity this process holds: a secret key, where it came from, the guard that keeps
//! a second endpoint from running it, and the ports it is remembered to listen on.
//!
//! Everything below this module is about one of those; this is where they meet iroh's
//! [`Endpoint`].

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use iroh::{Endpoint, EndpointId, SecretKey, endpoint};
use tracing::warn;

use crate::{
    Error,
    guard::{Guard, lease::Lease},
    ports::{self, StableAddressing},
    store::{Location, Stored, env, file},
    sys::Dir,
    wait::Deadline,
};

/// How often a bind without remembered ports is tried, and the pause between tries.
const FRESH_BIND_TRIES: u32 = 4;
const FRESH_BIND_PAUSE: Duration = Duration::from_millis(100);

/// A persistent identity that this process holds: an endpoint's secret key, together
/// with where it came from and the lock that keeps any other endpoint from running it.
///
/// Take one with [`Identity::open`], or with
/// [`PersistentEndpoint::builder`](crate::PersistentEndpoint::builder) and
/// [`identity`](crate::Builder::identity) for every option; then bind it with any iroh
/// builder you configured. The key never leaves it: an endpoint gets it only with the
/// lock, which the endpoint then holds until it closes.
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
pub struct Identity {
    key: SecretKey,
    source: KeySource,
    /// The key file's directory, where its ports are remembered; none for a key from
    /// anywhere else.
    key_dir: Option<Arc<Dir>>,
    guard: Guard,
    lock_wait: Duration,
    stable_addressing: bool,
}

/// Where an [`Identity`]'s key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// A key file, which the identity holds locked.
    File {
        /// The key file.
        path: PathBuf,
    },
    /// An environment variable ([`Builder::key_from_env`](crate::Builder::key_from_env)).
    Environment {
        /// The variable's name.
        variable: String,
    },
    /// An entry of the OS secret store (`Builder::keychain`, feature `keyring`).
    Keychain {
        /// The entry's service.
        service: String,
        /// The entry's account.
        account: String,
    },
}

impl Identity {
    /// Loads the key at `path`, or generates and stores one, and takes the identity, with
    /// every option at its default: the same as
    /// `PersistentEndpoint::builder().key_path(path).identity()`.
    ///
    /// # Errors
    ///
    /// See [`Builder::identity`](crate::Builder::identity).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        crate::PersistentEndpoint::builder()
            .key_path(path)
            .identity()
            .await
    }

    /// Loads the key of the OS secret store's entry `service`/`account`, or generates and
    /// stores one, and takes the identity, with every option at its default: the same as
    /// `PersistentEndpoint::builder().keychain(service, account).identity()`. Feature
    /// `keyring`.
    ///
    /// # Errors
    ///
    /// See [`Builder::identity`](crate::Builder::identity).
    #[cfg(feature = "keyring")]
    pub async fn open_keychain(service: &str, account: &str) -> Result<Self, Error> {
        crate::PersistentEndpoint::builder()
            .keychain(service, account)
            .identity()
            .await
    }

    /// Loads or creates the key and takes the identity: what every way in comes to.
    pub(crate) async fn take(
        location: &Location,
        key_env: Option<&str>,
        lease: Option<&dyn Lease>,
        options: file::Options,
        lock_wait: Duration,
        stable_addressing: bool,
    ) -> Result<Self, Error> {
        let deadline = Deadline::after(lock_wait);
        let stored = match key_env {
            Some(variable) => env::load(variable)?.map(|key| Stored {
                key,
                source: KeySource::Environment {
                    variable: variable.to_owned(),
                },
                dir: None,
            }),
            None => None,
        };
        let stored = match stored {
            Some(stored) => stored,
            None => location.open(options, deadline).await?,
        };
        let guard = Guard::take(&stored.key, lease, deadline).await?;
        Ok(Self {
            key: stored.key,
            source: stored.source,
            key_dir: stored.dir,
            guard,
            lock_wait,
            stable_addressing,
        })
    }

    /// The identity: the [`EndpointId`] that an endpoint bound with it has.
    pub fn id(&self) -> EndpointId {
        self.key.public()
    }

    /// Where the key came from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The key file, unless the key came from an environment variable or the secret
    /// store.
    pub fn key_path(&self) -> Option<&Path> {
        match &self.source {
            KeySource::File { path } => Some(path),
            KeySource::Environment { .. } | KeySource::Keychain { .. } => None,
        }
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
    /// [*Stable addressing*](crate#stable-addressing)). To keep the ports across restarts,
    /// configure the builder through
    /// [`PersistentEndpoint::builder`](crate::PersistentEndpoint::builder) and
    /// [`configure`](crate::Builder::configure), which owns the order of the steps. Only
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
                let deadline = Deadline::after(self.lock_wait);
                Some(StableAddressing::for_their_builder(dir, name, deadline).await)
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
            Some((dir, name)) => {
                let deadline = Deadline::after(self.lock_wait);
                Some(StableAddressing::prepare(dir, name, deadline).await)
            }
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
    fn ports_file(&self) -> Option<(Arc<Dir>, &std::ffi::OsStr)> {
        let (KeySource::File { path }, Some(dir), true) =
            (&self.source, &self.key_dir, self.stable_addressing)
        else {
            return None;
        };
        Some((Arc::clone(dir), path.file_name()?))
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
