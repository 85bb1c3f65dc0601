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

use crate::{
    DEFAULT_LOCK_WAIT, Error,
    guard::{Guard, lock::FileLock},
    ports::{self, StableAddressing},
    store::{env, file},
    sys::Dir,
    wait::Deadline,
};

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
    /// the environment.
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
        let options = file::Options::default();
        Self::take(path.as_ref().into(), None, options, DEFAULT_LOCK_WAIT, true).await
    }

    /// Loads or creates the key and takes the identity: what every way in comes to.
    pub(crate) async fn take(
        path: PathBuf,
        key_env: Option<&str>,
        options: file::Options,
        lock_wait: Duration,
        stable_addressing: bool,
    ) -> Result<Self, Error> {
        if let Some(variable) = key_env
            && let Some(key) = env::load(variable)?
        {
            return Ok(Self {
                key,
                source: KeySource::Environment {
                    variable: variable.to_owned(),
                },
                key_dir: None,
                guard: Guard::none(),
                lock_wait,
                stable_addressing,
            });
        }
        let deadline = Deadline::after(lock_wait);
        let loaded = file::open(&path, options, deadline).await?;
        let lock = FileLock::acquire(loaded.file, &path, deadline, loaded.key.public()).await?;
        Ok(Self {
            key: loaded.key,
            key_dir: Some(loaded.dir),
            source: KeySource::File { path },
            guard: Guard::file(lock),
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

    /// The key file, unless the key came from an environment variable.
    pub fn key_path(&self) -> Option<&Path> {
        match &self.source {
            KeySource::File { path } => Some(path),
            KeySource::Environment { .. } => None,
        }
    }

    /// Binds an endpoint with this identity and an iroh builder you configured
    /// (`Endpoint::builder(presets::N0).alpns(..)`...): sets the key, binds, and ties the
    /// identity to the endpoint and all its clones until one of them is closed or the
    /// last is dropped.
    ///
    /// The builder is bound as you configured it. With stable addressing on, the ports
    /// the endpoint gets are remembered; but they are not asked for again here, because
    /// a builder's sockets cannot be seen from outside it, and asking for a socket of a
    /// family it already binds one for would fail (see
    /// [*Stable addressing*](crate#stable-addressing)). To keep the ports across restarts,
    /// configure the builder through
    /// [`PersistentEndpoint::builder`](crate::PersistentEndpoint::builder) and
    /// [`configure`](crate::Builder::configure), which owns the order of the steps.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when iroh cannot bind.
    pub async fn bind(self, builder: endpoint::Builder) -> Result<Endpoint, Error> {
        let addressing = self.addressing().await;
        self.finish(builder, addressing).await
    }

    /// Binds with an iroh builder that `configure` makes from an empty one, with the
    /// remembered ports first, as iroh's own sockets, for every family `configure` binds
    /// no default socket of its own for.
    pub(crate) async fn bind_configured(
        self,
        configure: impl Fn(endpoint::Builder) -> endpoint::Builder,
    ) -> Result<Endpoint, Error> {
        let addressing = self.addressing().await;
        let builder = match &addressing {
            Some(addressing) if addressing.has_ports() => {
                let theirs = ports::defaults_bound_by(&configure);
                configure(addressing.apply(endpoint::Builder::empty(), theirs))
            }
            _ => configure(endpoint::Builder::empty()),
        };
        self.finish(builder, addressing).await
    }

    /// The remembered ports, when there is a key file and stable addressing is on.
    async fn addressing(&self) -> Option<StableAddressing> {
        let (KeySource::File { path }, Some(dir), true) =
            (&self.source, &self.key_dir, self.stable_addressing)
        else {
            return None;
        };
        let deadline = Deadline::after(self.lock_wait);
        Some(StableAddressing::prepare(Arc::clone(dir), path.file_name()?, deadline).await)
    }

    async fn finish(
        self,
        builder: endpoint::Builder,
        addressing: Option<StableAddressing>,
    ) -> Result<Endpoint, Error> {
        let endpoint = builder
            .secret_key(self.key)
            .bind()
            .await
            .map_err(Error::Bind)?;
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
