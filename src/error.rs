//! The crate's one error type.

use std::{fmt, io, path::PathBuf, time::Duration};

/// Everything that can go wrong while loading, creating or locking a key, or binding.
///
/// Every variant that concerns a file names its path. No variant ever holds key material,
/// so errors are safe to log and print.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on the key file or its directory failed.
    ///
    /// `action` says what was being done (`"open key file"`, `"create directory"`, ...)
    /// and `path` what it was done to; the underlying error is the [`source`].
    ///
    /// [`source`]: std::error::Error::source
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, e.g. `"read key file"`.
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error the operating system reported.
        #[source]
        source: io::Error,
    },

    /// The key file exists, but its content is not a usable Ed25519 secret key.
    ///
    /// The file is left exactly as it was: a damaged identity is never replaced.
    #[error("key file {} {problem}; the file was left unchanged", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its content.
        problem: KeyProblem,
    },

    /// Something other than a regular file (a directory, a FIFO, ...) is at the key path.
    #[error("key file {} is {kind}, not a regular file; it was left unchanged", path.display())]
    NotAFile {
        /// The key path.
        path: PathBuf,
        /// What is there instead, e.g. `"a directory"`.
        kind: &'static str,
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

    /// Another endpoint holds this identity, and it was not released within the wait.
    ///
    /// Only one live endpoint may use an identity at a time. See
    /// [`Builder::lock_wait`](crate::Builder::lock_wait).
    #[error(
        "key file {} is in use by another endpoint (waited {waited:?}); close that endpoint \
         or stop its process first",
        path.display()
    )]
    InUse {
        /// The key file.
        path: PathBuf,
        /// How long this open waited for the other endpoint to close, to the millisecond.
        waited: Duration,
    },

    /// [`store_new_key`](crate::store_new_key) found something at the path already. It was
    /// left as it was: a key file is never replaced.
    #[error("key file {} already exists; it was left unchanged", path.display())]
    AlreadyExists {
        /// The key path.
        path: PathBuf,
    },

    /// The environment variable chosen with [`Builder::key_from_env`](crate::Builder::key_from_env)
    /// is set, but does not hold a key.
    ///
    /// The key file is not used as a fallback: that would silently run another identity.
    #[error("environment variable {name} {problem}; unset it to use the key file")]
    InvalidEnvKey {
        /// The variable's name.
        name: String,
        /// What is wrong with its value.
        problem: KeyProblem,
    },

    /// No key location was given: neither a path nor a default location.
    #[error("no key file location: set one with Builder::key_path or Builder::default_location")]
    NoKeyPath,

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
        }
        if key == path {
            f.write_str(" could replace the key; ")?;
        } else {
            write!(f, " could replace the key file {}; ", key.display())?;
        }
        match (problem, kind) {
            (TrustProblem::OtherOwner { user }, _) => write!(
                f,
                "keep the key where only you and root own the directories, or run \
                 `chown {user} {shown}` as root"
            ),
            (TrustProblem::WritableByOthers, PathKind::Directory) => write!(
                f,
                "run `chmod o-w {shown}`, or `chmod +t {shown}` so that, as in /tmp, others \
                 cannot rename what is yours"
            ),
            (TrustProblem::WritableByOthers, _) => write!(f, "run `chmod o-w {shown}`"),
            (TrustProblem::WritableByGroup, _) => write!(
                f,
                "run `chmod g-w {shown}`, or add this user to group {group}"
            ),
        }
    }
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What is wrong with the content of a key file or environment variable.
///
/// Its `Display` completes a sentence that starts with the key's source, e.g.
/// "key file endpoint.key *is empty*".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// There is nothing in it (or only white space).
    Empty,
    /// It is larger than any key file could be, so it was not read.
    TooLarge {
        /// Its size in bytes.
        len: u64,
    },
    /// Its content matches none of the formats this crate reads.
    UnknownFormat {
        /// Its size in bytes.
        len: usize,
    },
    /// It is not 64 hex or 52 base32 characters (environment variables only).
    NotHexOrBase32 {
        /// Its length in characters, after trimming white space.
        len: usize,
    },
    /// It has the length of a hex or base32 key but characters outside that alphabet.
    InvalidText {
        /// `"hex"` or `"base32"`.
        encoding: &'static str,
    },
    /// It starts like a known format but does not decode: truncated or corrupted.
    Damaged {
        /// The format it claims to be, e.g. `"PKCS#8 PEM"`.
        format: &'static str,
    },
    /// It is 32 bytes of text: too short to be a hex (64) or base32 (52) key, and not
    /// read as a raw key (32 binary bytes), which would make it another identity: a PEM
    /// line or a text key cut short, or a password.
    AmbiguousText,
    /// It is a hex key written with a `0x` in front.
    HexPrefix,
    /// The public key stored beside the secret key does not match it.
    PublicKeyMismatch,
    /// It is an encrypted private key.
    Encrypted,
    /// It is a PKCS#8 key of another algorithm.
    OtherAlgorithm {
        /// The algorithm's name, or its OID when the name is not known.
        algorithm: String,
    },
    /// It is a public key (PEM `PUBLIC KEY`, or an OpenSSH `.pub` line): the secret key
    /// is in another file.
    PublicKey,
    /// It is PEM, but of something other than a private key.
    OtherPem {
        /// The PEM label, e.g. `"RSA PRIVATE KEY"`.
        label: String,
    },
}

/// An error in its own right for [`decode_key`](crate::decode_key), whose caller knows
/// where the bytes came from: its message completes "the key …".
impl std::error::Error for KeyProblem {}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::TooLarge { len } => write!(f, "is {len} bytes, too large to be a key"),
            Self::UnknownFormat { len } => write!(
                f,
                "is not a key in a known format ({len} byte{}; expected PKCS#8 or OpenSSH \
                 PEM, PKCS#8 DER, 32 raw bytes, or 64 hex or 52 base32 characters)",
                if *len == 1 { "" } else { "s" }
            ),
            Self::NotHexOrBase32 { len } => write!(
                f,
                "is not a key ({len} characters; expected 64 hex or 52 base32 characters)"
            ),
            Self::InvalidText { encoding } => {
                write!(
                    f,
                    "has the length of a {encoding} key but is not valid {encoding}"
                )
            }
            Self::AmbiguousText => f.write_str(
                "is 32 bytes of text, not a key: a raw key is 32 binary bytes and a text key \
                 64 hex or 52 base32 characters (a key cut short, or a password?)",
            ),
            Self::HexPrefix => {
                f.write_str("is hex with a `0x` in front; write the 64 hex digits alone")
            }
            Self::Damaged { format } => write!(f, "is a damaged or truncated {format} key"),
            Self::PublicKeyMismatch => f.write_str(
                "holds a public key that does not match its secret key (the file is damaged)",
            ),
            Self::Encrypted => f.write_str(
                "is an encrypted private key; store it unencrypted, protected by file permissions",
            ),
            Self::OtherAlgorithm { algorithm } => {
                write!(f, "holds a key for {algorithm}, not for Ed25519")
            }
            Self::PublicKey => f.write_str(
                "is a public key; give the secret key instead (for OpenSSH, the file \
                 without .pub)",
            ),
            Self::OtherPem { label } => {
                write!(f, "is a PEM \"{label}\", not an Ed25519 private key")
            }
        }
    }
}
