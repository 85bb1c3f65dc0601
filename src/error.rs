//! The crate's one error type.

use std::{fmt, io, path::PathBuf, time::Duration};

use crate::{
    KeyFormat,
    guard::lease::{LeaseLoss, LeaseRefusal},
};

/// Everything that can go wrong while loading, creating or locking a key, or binding.
///
/// Every variant that concerns a file names its path. No variant ever holds key material,
/// so errors are safe to log and print.
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

    /// The key file belongs to the current user and group or others may access it.
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
    /// could then replace the identity (or plant one whose secret they know).
    ///
    /// Checked before a key is read or created, like OpenSSH's `StrictModes`. Accepted
    /// anyway with
    /// [`Builder::allow_insecure_permissions`](crate::Builder::allow_insecure_permissions).
    #[error("{}", Untrusted(self))]
    UntrustedPath {
        /// The key file whose location is refused.
        key: PathBuf,
        /// The directory, link or file that others could change.
        path: PathBuf,
        /// What `path` is.
        kind: PathKind,
        /// Its owner's user id.
        owner: u32,
        /// Its group id.
        group: u32,
        /// Its permission bits.
        mode: u32,
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
        variable: &'static str,
        /// Its value.
        value: PathBuf,
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

/// What an [`Error::UntrustedPath`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// A directory above the key file.
    Directory,
    /// A symbolic link on the way to the key file.
    SymbolicLink,
    /// The key file itself.
    KeyFile,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Directory => "directory",
            Self::SymbolicLink => "symbolic link",
            Self::KeyFile => "key file",
        })
    }
}

/// Who, besides this process's user and root, could change a path on the way to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustProblem {
    /// It belongs to another user.
    OtherOwner {
        /// This process's effective user id.
        user: u32,
    },
    /// Every user may write it (a directory that is not sticky, or a file).
    WritableByOthers,
    /// Its group may write it, and this process is not in that group.
    WritableByGroup,
    /// The key file has this many names (hard links), and its directory lets others add
    /// names: one of them may be another user's link to a file of this user's.
    HardLinked {
        /// How many names the file has.
        links: u64,
    },
}

/// The message of an [`Error::UntrustedPath`].
struct Untrusted<'a>(&'a Error);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Error::UntrustedPath {
            key,
            path,
            kind,
            owner,
            group,
            mode,
            problem,
        } = self.0
        else {
            return Ok(());
        };
        let shown = path.display();
        write!(
            f,
            "{kind} {shown} (owner uid {owner}, group {group}, mode {mode:04o}) "
        )?;
        match problem {
            TrustProblem::OtherOwner { user } => write!(
                f,
                "belongs to uid {owner}, not to this process's user (uid {user}) or root: uid \
                 {owner}"
            )?,
            TrustProblem::WritableByOthers => {
                f.write_str("may be written by every user: any of them")?;
            }
            TrustProblem::WritableByGroup => write!(
                f,
                "may be written by group {group}, which this process is not a member of: its \
                 members"
            )?,
            TrustProblem::HardLinked { links } => {
                return write!(
                    f,
                    "has {links} names (hard links) in a directory where others may add names: \
                     another user may have linked a file of yours there, to make you run an \
                     identity of their choosing; keep the key in a directory only you can \
                     write, or, if you made the other names, remove them"
                );
            }
        }
        if key == path {
            f.write_str(" could replace the key; ")?;
        } else {
            write!(f, " could replace the key file {}; ", key.display())?;
        }
        match (problem, kind) {
            // Never "chown it": that would adopt what another user may have planted, and
            // chown follows a link to its target.
            (TrustProblem::OtherOwner { .. }, _) => write!(
                f,
                "keep the key where every directory on the way belongs to you or root, and if \
                 you did not put {shown} there, remove it"
            ),
            (TrustProblem::WritableByOthers, PathKind::Directory) => write!(
                f,
                "run `chmod o-w {shown}`, or `chmod +t {shown}` if others must add files there \
                 (sticky, as /tmp, they cannot rename what is yours)"
            ),
            (TrustProblem::WritableByOthers, _) => write!(f, "run `chmod o-w {shown}`"),
            (TrustProblem::WritableByGroup, _) => write!(f, "run `chmod g-w {shown}`"),
            (TrustProblem::HardLinked { .. }, _) => Ok(()),
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

/// What went wrong with an entry of the secret store: [`Error::Keychain`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeychainProblem {
    /// There is no such entry, and creating one was not asked for
    /// ([`Builder::create_if_missing(false)`](crate::Builder::create_if_missing)).
    Missing,
    /// There is no secret store to reach: no session bus or no Secret Service on it, no
    /// keychain. The store's own words.
    Unavailable(String),
    /// The store is locked, or refused access. The store's own words.
    Locked(String),
    /// The store failed otherwise. The store's own words.
    Failed(String),
    /// The store did not answer by the open's deadline (the
    /// [lock wait](crate::Builder::lock_wait)): its daemon is stopped or hung, or it waits
    /// for an unlock prompt that nobody answered.
    NoAnswer,
}

impl fmt::Display for KeychainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str(
                "there is no such entry, and creating one was not asked for; nothing was \
                 created",
            ),
            Self::Unavailable(reason) => write!(
                f,
                "there is no secret store to reach ({reason}); nothing was written: start one \
                 (a desktop session's keyring), or keep the key in a file"
            ),
            Self::Locked(reason) => write!(
                f,
                "the secret store is locked or refused access ({reason}); nothing was written: \
                 unlock it and try again"
            ),
            Self::Failed(reason) => write!(f, "the secret store failed ({reason})"),
            Self::NoAnswer => f.write_str(
                "the secret store did not answer in time (a stopped daemon, or an unlock \
                 prompt nobody answered); no write was started after the wait",
            ),
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

/// What is at a key path that is not a regular file: [`Error::NotAFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe (FIFO).
    NamedPipe,
    /// A unix socket.
    Socket,
    /// A character device.
    CharacterDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Other,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Directory => "a directory",
            Self::NamedPipe => "a named pipe (FIFO)",
            Self::Socket => "a socket",
            Self::CharacterDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Other => "something else",
        })
    }
}

/// What is wrong with the content of a key file or environment variable.
///
/// Its message is a sentence about "the key", which reads alone (what
/// [`decode_key`](crate::decode_key) returns) and as the cause of an
/// [`Error::InvalidKey`] or [`Error::InvalidEnvKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// There is nothing in it (or only white space).
    #[error("the key is empty")]
    Empty,
    /// It is larger than any key file could be, so it was not read.
    #[error("the key is {len} bytes, too large to be a key")]
    TooLarge {
        /// Its size in bytes.
        len: u64,
    },
    /// Its content matches none of the formats this crate reads.
    #[error(
        "the key is in no known format ({len} byte{}; expected PKCS#8 or OpenSSH PEM, PKCS#8 \
         DER, 32 raw bytes, or 64 hex or 52 base32 characters)",
        if *len == 1 { "" } else { "s" }
    )]
    UnknownFormat {
        /// Its size in bytes.
        len: usize,
    },
    /// It is not 64 hex or 52 base32 characters (environment variables only).
    #[error("the key is not 64 hex or 52 base32 characters (it has {len})")]
    NotHexOrBase32 {
        /// Its length in characters, after trimming white space.
        len: usize,
    },
    /// It has the length of a hex or base32 key but characters outside that alphabet.
    #[error("the key has the length of a {format} key but is not valid {format}")]
    InvalidText {
        /// [`KeyFormat::Hex`] or [`KeyFormat::Base32`].
        format: KeyFormat,
    },
    /// It is 32 bytes of text: too short to be a hex (64) or base32 (52) key, and not
    /// read as a raw key (32 binary bytes), which would make it another identity: a PEM
    /// line or a text key cut short, or a password.
    #[error(
        "the key is 32 bytes of text: a raw key is 32 binary bytes and a text key 64 hex or \
         52 base32 characters (a key cut short, or a password?)"
    )]
    AmbiguousText,
    /// It is a hex key written with a `0x` in front.
    #[error("the key is hex with a `0x` in front; write the 64 hex digits alone")]
    HexPrefix,
    /// It starts like a known format but does not decode: truncated or corrupted.
    #[error("the key is a damaged or truncated {} key", damaged_name(*format))]
    Damaged {
        /// The format it claims to be. A PEM `PRIVATE KEY` of either version is
        /// [`KeyFormat::Pkcs8Pem`].
        format: KeyFormat,
    },
    /// The public key stored beside the secret key does not match it.
    #[error("the key holds a public key that does not match its secret key (it is damaged)")]
    PublicKeyMismatch,
    /// It is an encrypted private key.
    #[error("the key is encrypted; store it unencrypted, protected by file permissions")]
    Encrypted,
    /// It is a PKCS#8 or OpenSSH key of another algorithm.
    #[error("the key is for {}, not for Ed25519", algorithm.unwrap_or("another algorithm"))]
    OtherAlgorithm {
        /// The algorithm, when it is one the crate knows by name (RSA, ECDSA, X25519,
        /// ...); what the key says otherwise is not repeated.
        algorithm: Option<&'static str>,
    },
    /// It is a public key (PEM `PUBLIC KEY`, or an OpenSSH `.pub` line): the secret key
    /// is in another file.
    #[error(
        "the key is a public key; give the secret key instead (for OpenSSH, the file \
         without .pub)"
    )]
    PublicKey,
    /// It is PEM, but of something other than a private key.
    #[error(
        "the key is PEM of {}, not an Ed25519 private key",
        label.map_or_else(|| "a kind this crate does not know".to_owned(), |label| format!("\"{label}\""))
    )]
    OtherPem {
        /// The PEM label when it is one the crate knows (`RSA PRIVATE KEY`,
        /// `CERTIFICATE`, ...); what the file says otherwise is not repeated.
        label: Option<&'static str>,
    },
    /// It holds several private keys (PEM blocks): which one is the identity is not
    /// guessed.
    #[error("the key file holds {count} private keys; keep the one to use alone in it")]
    SeveralKeys {
        /// How many.
        count: usize,
    },
    /// Its secret is one byte repeated (32 zero bytes, say, from a zeroed file or a
    /// template): a secret everyone knows, so anyone could run the identity.
    #[error(
        "the key is one byte repeated (all zeros, say): everyone knows its secret, so anyone \
         could run this identity; generate a new key"
    )]
    KnownToEveryone,
}

/// A format's name in "a damaged … key": PEM of either PKCS#8 version is one.
fn damaged_name(format: KeyFormat) -> String {
    match format {
        KeyFormat::Pkcs8Pem | KeyFormat::Pkcs8PemV1 => "PKCS#8 PEM".to_owned(),
        other => other.to_string(),
    }
}
