//! The crate's one error type.

use std::{fmt, io, path::PathBuf, time::Duration};

use crate::{
    guard::lease::problem::{LeaseLoss, LeaseRefusal},
    key::KeyProblem,
    store::keychain::problem::KeychainProblem,
    sys::{FileKind, Ownership},
    trust::{PathKind, TrustProblem, Untrusted},
};

/// Everything that can go wrong while loading, creating or locking a key, or binding.
///
/// Every variant that concerns a file names its path. No variant ever holds key material,
/// so errors are safe to log and print (guarantee 8): of what is read from a key file, a
/// variable or the secret store, an error names nothing but a PEM label or an algorithm
/// the crate knows by name, and byte counts, however the key is damaged; and the crate
/// logs no key material either, at any level. Buffers that held key bytes are zeroed.
/// The shape of this type is the same in every build, whatever the features or the
/// system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on the key file, a file beside it or a directory failed.
    ///
    /// `operation` says what was being done and `path` what it was done to; the error
    /// the operating system reported is the [`source`].
    ///
    /// [`source`]: std::error::Error::source
    #[error("cannot {operation} {}", path.display())]
    Io {
        /// What was being done.
        operation: Operation,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error the operating system reported.
        #[source]
        source: io::Error,
    },

    /// There is no key file at the path, and none was to be created: with
    /// [`load_key`](crate::load_key), or with
    /// [`Builder::create_if_missing(false)`](crate::Builder::create_if_missing). Nothing
    /// was created, not even a directory.
    #[error("there is no key file at {}; nothing was created", path.display())]
    NotFound {
        /// The key path.
        path: PathBuf,
    },

    /// The key file exists, but its content is not a usable Ed25519 secret key; the
    /// [`source`](std::error::Error::source) says why.
    ///
    /// The file is left exactly as it was: a damaged identity is never replaced.
    #[error("key file {} is not a usable Ed25519 key; it was left unchanged", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its content.
        #[source]
        problem: KeyProblem,
    },

    /// Something other than a regular file (a directory, a FIFO, ...) is at the key path.
    #[error("key file {} is {kind}, not a regular file; it was left unchanged", path.display())]
    NotAFile {
        /// The key path.
        path: PathBuf,
        /// What is there instead.
        kind: FileKind,
    },

    /// The key path, or a directory on the way to it, is a symbolic link whose target does
    /// not exist.
    ///
    /// No key is created through a dangling link: its target may be a volume that is not
    /// mounted yet, and a key created elsewhere would become a second identity.
    #[error(
        "{} is a symbolic link to something missing (a volume not mounted yet?); fix the \
         link or remove it: no key is created through it",
        path.display()
    )]
    DanglingSymlink {
        /// The symbolic link.
        path: PathBuf,
    },

    /// The key file belongs to the current user and group or others may access it
    /// (unix): guarantee 5, the key stays private. On unix, key files are `0600` and the
    /// directories the crate creates `0700`, whatever the umask. (On Windows a key others
    /// may read is an [`Error::UntrustedPath`] with [`TrustProblem::ReadableBy`].)
    ///
    /// Like OpenSSH, the crate refuses such a key. Fix it with `chmod 600 PATH` (in a
    /// Kubernetes secret volume, with `defaultMode: 0400`), or accept it with
    /// [`Builder::allow_insecure_permissions`](crate::Builder::allow_insecure_permissions).
    #[error(
        "key file {path} is accessible by group or others (mode {mode:04o}); {fix}",
        path = path.display(),
        fix = if *kubernetes_secret {
            "it is in a Kubernetes secret volume, where chmod does not last: set \
             `defaultMode: 0400` on the volume to make it private".to_owned()
        } else {
            format!("run `chmod 600 {}` to make it private", path.display())
        }
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Whether it was reached through a Kubernetes secret volume's `..data` link.
        kubernetes_secret: bool,
    },

    /// A directory above the key, a symbolic link on the way to it, or the key file
    /// itself can be changed by a user other than this process's user and root, who
    /// could then replace the identity (or plant one whose secret they know): guarantee
    /// 9, no other local user can replace, plant or stall an identity. On Windows, also a
    /// key file that another may read: guarantee 5, the key stays private.
    ///
    /// Before a key is read or created, every directory from `/` down to it, every
    /// symbolic link on the way and the key itself must belong to the process's user or
    /// to root and be writable by no one else, as OpenSSH's `StrictModes` and Tor's
    /// `check_private_dir` require. Where this crate differs from OpenSSH: a sticky
    /// directory (`/tmp`) is accepted, since others may add names there but not rename or
    /// remove ours; and a directory writable by a group the process is in is accepted (a
    /// Kubernetes `fsGroup` volume), one of a group it is not in refused. A key of another
    /// user is refused; root's key read by another user (a mounted secret) may be
    /// readable, not writable (a warning says when every user may read it). A key file
    /// with more than one name (hard link) in a directory where others may add names is
    /// refused: another user may have linked a file of the user's there (where the
    /// kernel's `fs.protected_hardlinks` is off; there, another user can also make a key
    /// already in such a directory refused by linking it: keep keys out of them).
    ///
    /// On Windows the same rules are read from each path's owner and DACL: SYSTEM,
    /// Administrators and TrustedInstaller stand where root stands; a folder where others
    /// may only add files or folders is accepted above the key as a sticky directory is,
    /// but not as the key's own folder; and a key file that anyone else may read is
    /// refused, as Win32-OpenSSH refuses one. The error names the principal
    /// ([`TrustProblem::OwnedBy`], [`WritableBy`](TrustProblem::WritableBy),
    /// [`ReadableBy`](TrustProblem::ReadableBy)) and the `icacls` command that fixes it.
    /// The key files and folders the crate makes grant only the user, SYSTEM and
    /// Administrators, inheriting nothing.
    ///
    /// The path is walked one name at a time, as the kernel would, and never looked up by
    /// name again: what is planted on it after it was checked is never followed. On unix
    /// it is walked through descriptors, and new directories and files are made through
    /// the descriptor of their directory; on Windows no one else may rename or remove a folder
    /// on the way (the rules above), and links and junctions are opened
    /// as themselves, never followed unjudged. Temporary files get random names. All of
    /// these checks, and only these, are what
    /// [`Builder::allow_insecure_permissions`](crate::Builder::allow_insecure_permissions)
    /// turns off, with the mode check of [`Error::InsecurePermissions`].
    #[error("{}", Untrusted { key, path, kind, owner, problem })]
    UntrustedPath {
        /// The key file whose location is refused.
        key: PathBuf,
        /// The directory, link or file that others could change.
        path: PathBuf,
        /// What `path` is.
        kind: PathKind,
        /// Its owner, group and permission bits (unix); `None` on Windows, where
        /// `problem` names the principal.
        owner: Option<Ownership>,
        /// Who else could change it.
        problem: TrustProblem,
    },

    /// Another endpoint holds this identity on this host, and it was not released within
    /// the wait.
    ///
    /// Only one live endpoint may use an identity at a time, whatever its key came from.
    /// See [`Builder::lock_wait`](crate::Builder::lock_wait).
    #[error(
        "identity {id} is in use by another endpoint on this host{} (waited {waited:?}); \
         close that endpoint or stop its process first",
        Holder(*pid, *uid)
    )]
    InUse {
        /// The identity.
        id: iroh::EndpointId,
        /// The holder's process id, where this process can see it (not from another PID
        /// namespace).
        pid: Option<u32>,
        /// The holder's user id, where it can be told.
        uid: Option<u32>,
        /// How long this open waited for the other endpoint to close, to the millisecond.
        waited: Duration,
    },

    /// The identity's lock on this host cannot be reached, so nothing was bound: an
    /// identity never runs unguarded, and its lock has no second place.
    #[error("cannot take the identity's lock on this host{}", path.as_ref().map(|path| format!(" ({})", path.display())).unwrap_or_default())]
    HostLock {
        /// The lock file, where the lock is one (not on Linux).
        path: Option<PathBuf>,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// Every name the identity's lock on this host may have is taken by processes of
    /// other users that do not hold the identity (Linux): they keep it from opening.
    #[error(
        "every name of the identity's lock on this host is taken by another user's process \
         (uid {}), which keeps the identity from opening; an administrator can find those \
         processes with `ss -xlp | grep iroh-identity/` and stop them",
        if squatters.is_empty() { "unknown".to_owned() } else { squatters.iter().map(u32::to_string).collect::<Vec<_>>().join(", ") }
    )]
    HostLockTaken {
        /// The users whose processes have the names, where they can be told.
        squatters: Vec<u32>,
    },

    /// [`store_new_key`](crate::store_new_key) found something at the path already. It was
    /// left as it was: a key file is never replaced.
    #[error("key file {} already exists; it was left unchanged", path.display())]
    AlreadyExists {
        /// The key path.
        path: PathBuf,
    },

    /// The environment variable chosen with [`Builder::key_from_env`](crate::Builder::key_from_env)
    /// is set, but does not hold a key; the [`source`](std::error::Error::source) says
    /// why.
    ///
    /// The key file is not used as a fallback: that would silently run another identity.
    #[error("environment variable {name} does not hold a key; unset it to use the key file")]
    InvalidEnvKey {
        /// The variable's name.
        name: String,
        /// What is wrong with its value.
        #[source]
        problem: KeyProblem,
    },

    /// The OS secret store cannot give or keep the key of an entry (feature `keyring`).
    /// Nothing was written, and no other key was used in its place.
    #[error("keychain entry {service}/{account}: {problem}")]
    Keychain {
        /// The entry's service.
        service: String,
        /// The entry's account.
        account: String,
        /// What went wrong.
        problem: KeychainProblem,
    },

    /// A keychain entry exists, but what it holds is not a usable Ed25519 key; the
    /// [`source`](std::error::Error::source) says why. It was left unchanged.
    #[error(
        "keychain entry {service}/{account} is not a usable Ed25519 key; it was left unchanged"
    )]
    InvalidKeychainKey {
        /// The entry's service.
        service: String,
        /// The entry's account.
        account: String,
        /// What is wrong with what it holds.
        #[source]
        problem: KeyProblem,
    },

    /// A key was to be stored in a keychain entry that exists already. It was left
    /// unchanged: an entry is never replaced.
    #[error("keychain entry {service}/{account} already exists; it was left unchanged")]
    KeychainEntryExists {
        /// The entry's service.
        service: String,
        /// The entry's account.
        account: String,
    },

    /// The identity's lease is held by another endpoint, on this machine or another,
    /// and was not released within the [lock wait](crate::Builder::lock_wait) (feature
    /// `etcd`).
    #[error(
        "the identity's lease {key} is held by {holder} (waited {waited:?}); stop that \
         endpoint, or wait longer for it (lock_wait)"
    )]
    LeaseHeld {
        /// The lease's key.
        key: String,
        /// Who holds it, as the holder wrote it.
        holder: String,
        /// How long this open waited, to the millisecond.
        waited: Duration,
    },

    /// The lease store could not be reached, or answered with errors that may pass (a
    /// member down, no leader, a timeout), for all of the wait (feature `etcd`). Nothing
    /// was bound.
    #[error(
        "cannot take the identity's lease from etcd at {endpoints} (waited {waited:?}): {reason}"
    )]
    LeaseUnavailable {
        /// The store's endpoints.
        endpoints: String,
        /// How long this open tried, to the millisecond.
        waited: Duration,
        /// The last error, in the store's (or the connection's) words.
        reason: String,
    },

    /// The lease store refuses the lease in a way that waiting does not mend: a mistake in
    /// the configuration or the cluster, reported at once whatever the lock wait (feature
    /// `etcd`). Nothing was bound.
    #[error("etcd at {endpoint} refuses the identity's lease ({said}): {refusal}")]
    LeaseRefused {
        /// The endpoint that refused.
        endpoint: String,
        /// What is wrong, and what to do.
        refusal: LeaseRefusal,
        /// The store's (or the TLS library's) own words.
        said: String,
    },

    /// The identity's lease was lost, or may have been, so its endpoint was closed before
    /// another could take over (feature `etcd`).
    #[error(
        "the identity's lease {key} is lost: {cause}; the endpoint was closed so that \
         another can take over"
    )]
    LeaseLost {
        /// The lease's key.
        key: String,
        /// How it was lost.
        cause: LeaseLoss,
    },

    /// The lease's prefix does not end in `/` (feature `etcd`): `/iroh-identity` would
    /// name another key than the `/iroh-identity/` of another machine, and both would hold.
    #[error(
        "the lease prefix {prefix:?} does not end in '/'; give every machine the same prefix, \
         ending in '/' (/iroh-identity/ unless set)"
    )]
    LeasePrefix {
        /// The prefix given.
        prefix: String,
    },

    /// The default per-user location cannot be determined (no home directory).
    #[error("no home directory to hold the default key file; give a key path instead")]
    NoHomeDirectory,

    /// The environment variable that names the per-user data directory (`HOME` or
    /// `XDG_DATA_HOME`) holds a relative path, which would put the key under whatever the
    /// current directory happens to be.
    #[error(
        "{variable} is a relative path ({}), so the default key location would depend on \
         the current directory; set it to an absolute path or give a key path",
        value.display()
    )]
    RelativeDataDirectory {
        /// `HOME` or `XDG_DATA_HOME`.
        variable: String,
        /// Its value.
        value: PathBuf,
    },

    /// The key path ends in `/` or `.`: it names a directory, not a file.
    #[error("key path {} ends in `/` or `.`: a key path must name a file", path.display())]
    NotAFileName {
        /// The key path.
        path: PathBuf,
    },

    /// A symbolic link on the way to the key leads to another, and so on, more than 40
    /// times (as many as Linux follows): a loop, most likely.
    #[error(
        "key path {} goes through more than 40 symbolic links (a loop?); fix the links",
        path.display()
    )]
    TooManyLinks {
        /// The key path.
        path: PathBuf,
    },

    /// The key path goes up (`..`) or through a symbolic link from a directory that does
    /// not exist: nothing there could be created safely, so nothing is.
    #[error(
        "key path {} goes up (`..`) or through a link from a directory that does not exist; \
         give a path without them, or make the directory",
        path.display()
    )]
    UncreatablePath {
        /// The key path.
        path: PathBuf,
    },

    /// The key file's name is too long to create: its temporary file, which adds a
    /// prefix and a random suffix, would not fit in a file name.
    #[error(
        "key file {} has a name of {len} bytes, too long to create it safely (at most \
         {max}); choose a shorter name",
        path.display()
    )]
    NameTooLong {
        /// The key path.
        path: PathBuf,
        /// The length of its file name, in bytes.
        len: usize,
        /// The longest name that can be created.
        max: usize,
    },

    /// iroh failed to bind the endpoint; the source is iroh's own error.
    #[error("cannot bind the iroh endpoint")]
    Bind(#[source] iroh::endpoint::BindError),
}

/// The holder of an identity in an [`Error::InUse`] message, as far as it is known.
struct Holder(Option<u32>, Option<u32>);

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self(Some(pid), Some(uid)) => write!(f, " (process {pid}, uid {uid})"),
            Self(None, Some(uid)) => write!(f, " (a process of uid {uid})"),
            _ => Ok(()),
        }
    }
}

impl Error {
    pub(crate) fn io(operation: Operation, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// What was being done when an [`Error::Io`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Opening the key file.
    OpenKeyFile,
    /// Reading the key file's owner, mode and size.
    ReadKeyMetadata,
    /// Reading the key file.
    ReadKeyFile,
    /// Giving a new key file its name.
    PublishKeyFile,
    /// Finding the current directory, to check a relative key path.
    FindCurrentDirectory,
    /// Reading the owner and mode of a directory on the way to the key.
    CheckDirectory,
    /// Opening a directory.
    OpenDirectory,
    /// Creating a directory.
    CreateDirectory,
    /// Creating the temporary file that becomes a key file or a ports file.
    CreateTemporaryFile,
    /// Writing a temporary file.
    WriteTemporaryFile,
    /// Syncing a temporary file to disk.
    SyncTemporaryFile,
    /// Giving a new ports file its name.
    ReplacePortsFile,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OpenKeyFile => "open key file",
            Self::ReadKeyMetadata => "read the owner, mode and size of key file",
            Self::ReadKeyFile => "read key file",
            Self::PublishKeyFile => "publish key file",
            Self::FindCurrentDirectory => "find the current directory to check key path",
            Self::CheckDirectory => "read the owner and mode of",
            Self::OpenDirectory => "open directory",
            Self::CreateDirectory => "create directory",
            Self::CreateTemporaryFile => "create temporary file",
            Self::WriteTemporaryFile => "write temporary file",
            Self::SyncTemporaryFile => "sync temporary file",
            Self::ReplacePortsFile => "replace ports file",
        })
    }
}
