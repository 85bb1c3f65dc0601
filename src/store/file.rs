//! The key file: reading one without ever changing it, and creating one so that a crash,
//! a race or another local user can never leave a torn key or a second identity.
//!
//! Before anything is read or created, the key's location is checked ([`super::trust`]):
//! no one but this user and root may change the directories above it. A key is read by
//! its checked path, through a link only once the link is checked too. A new one is made
//! through the descriptor of its directory: missing directories with `mkdirat`, their
//! mode set through their own descriptor; the key written to an unpredictable temporary
//! file (created `0600`), synced, published under its name with a rename or link that
//! fails if anything is already there, and the directory synced. Creators take a lock on
//! the directory, so that one at a time creates, and remove the temporary files that
//! their user's killed runs left behind. The lock is waited for no longer than the
//! caller's wait: creation is correct without it, so a lock that another user holds on
//! a shared directory cannot stop it.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use directories::ProjectDirs;

use iroh::{EndpointId, SecretKey};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::trust::{Checks, Reached, Walk};
use crate::{
    DEFAULT_LOCK_WAIT, Error, KeyFormat, KeyProblem, Operation, key,
    sys::{self, Dir},
    temp_file::{self, TempFile},
    wait::{self, Deadline, Waited},
};

/// The largest key file that is read. Real ones are a few hundred bytes; anything far
/// larger is not a key and is refused without being read.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

/// How often a locked directory is tried again while creating.
const DIR_LOCK_RETRY: Duration = Duration::from_millis(5);

/// The longest wait for the directory lock that keeps creators in turn, whatever the
/// lock wait: a creator holds it for milliseconds, and creating without it is correct,
/// so one who holds it longer (stuck, or another user who can read the directory) must
/// not hold up a first start for long, even one that waits for ever for its identity.
const MAX_DIRECTORY_LOCK_WAIT: Duration = Duration::from_secs(5);

/// How a key file is read, and whether a missing one is created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Skip the checks of who owns and may write the key and the directories above it.
    pub(crate) allow_insecure_permissions: bool,
    /// Create a key when there is none; otherwise that is [`Error::NotFound`].
    pub(crate) create_if_missing: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_insecure_permissions: false,
            create_if_missing: true,
        }
    }
}

/// The name of the key file in a [default location](crate::Builder::default_location).
pub const DEFAULT_KEY_FILE_NAME: &str = "endpoint.key";

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

/// Loads the Ed25519 secret key stored at `path`; never creates one, and takes no lock.
///
/// For a tool that reports or converts a key (`iroh-identity id`, say). To run an
/// endpoint with the key, open an [`Identity`](crate::Identity): it holds the key and its
/// lock together. It reads every format [`decode_key`](crate::decode_key) reads, with the
/// same checks.
///
/// ```no_run
/// let key = iroh_identity::load_key("endpoint.key")?;
/// println!("{}", key.public());
/// # Ok::<(), iroh_identity::Error>(())
/// ```
///
/// # Errors
///
/// - [`Error::NotFound`]: there is no file at `path`.
/// - [`Error::InvalidKey`], [`Error::NotAFile`], [`Error::DanglingSymlink`]: something
///   is at `path` that is not a usable key. It is left exactly as it was.
/// - [`Error::UntrustedPath`], [`Error::InsecurePermissions`] (unix): another user could
///   change the key or a directory above it, or the key is yours and group or others may
///   read or write it.
/// - [`Error::Io`]: the file cannot be read; the error names the path and what failed.
pub fn load_key(path: impl AsRef<Path>) -> Result<SecretKey, Error> {
    let path = path.as_ref();
    KeyFile::check(path, Options::default())?
        .load()?
        .map(|loaded| loaded.key)
        .ok_or_else(|| Error::NotFound { path: path.into() })
}

/// Stores `key` in a new key file at `path`, written in `format`, with the same care as a
/// generated key: a temporary file, synced, published without replacing anything.
///
/// This is how a key from elsewhere (an `IROH_SECRET`, a key converted to another
/// format) becomes a key file. [`load_key`] and [`decode_key`](crate::decode_key) read
/// it back in every format. It may wait for another process creating a key in the same
/// directory, [`DEFAULT_LOCK_WAIT`] at most.
///
/// ```no_run
/// use iroh_identity::{KeyFormat, store_new_key};
///
/// let key: iroh::SecretKey = std::env::var("IROH_SECRET")?.parse()?;
/// store_new_key("endpoint.key", &key, KeyFormat::Pkcs8Pem)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// - [`Error::AlreadyExists`]: something is at `path` (or was put there while this call
///   ran). It is left unchanged.
/// - [`Error::UntrustedPath`] (unix): another user could change a directory above `path`.
/// - [`Error::NameTooLong`]: the file name is too long to create safely.
/// - [`Error::Io`]: the directory or the file cannot be created or written; nothing is
///   left at `path`.
///
/// Once the key is published, a failure to sync its directory (a directory that may be
/// written but not read, say) is logged as a warning, not returned: the key is there.
pub fn store_new_key(
    path: impl AsRef<Path>,
    key: &SecretKey,
    format: KeyFormat,
) -> Result<(), Error> {
    let path = path.as_ref();
    let mut creation = KeyFile::check(path, Options::default())?.prepare_creation()?;
    let locked = wait::blocking_until(
        Deadline::after(DEFAULT_LOCK_WAIT),
        DIR_LOCK_RETRY,
        || creation.try_lock(),
        || creation.announce_wait(),
    );
    match creation.create(key, format, locked)? {
        Created::Published => {
            info!(path = %path.display(), id = %key.public(), %format, "stored an endpoint key");
            Ok(())
        }
        Created::AlreadyThere => Err(Error::AlreadyExists { path: path.into() }),
    }
}

/// What [`inspect_key`] found out about a key file.
#[derive(Debug)]
#[non_exhaustive]
pub struct KeyReport {
    /// The identity: the public half of the key.
    pub id: EndpointId,
    /// The format the file is written in.
    pub format: KeyFormat,
    /// The file's owner and permission bits (unix).
    pub owner: Option<(u32, u32)>,
    /// Why [`load_key`] and [`Identity`](crate::Identity) refuse this key, if they do:
    /// another user could change it or a directory above it ([`Error::UntrustedPath`]),
    /// or others may read it ([`Error::InsecurePermissions`]).
    pub refused: Option<Error>,
    /// Whether an endpoint holds the identity right now; `None` when that cannot be
    /// told.
    pub in_use: Option<bool>,
}

/// Reads the key file at `path` once and tells what it is, whether the crate would
/// accept where it is kept, and whether an endpoint holds it: what `iroh-identity
/// inspect` prints.
///
/// Unlike [`load_key`], a key that is exposed to other users is reported rather than
/// refused. Whether an endpoint holds it is found without taking its lock, so that
/// looking never makes an open fail: on Linux from the kernel's table of locks
/// (`/proc/locks`). Elsewhere the lock is taken and released at once, and an open that
/// tries the lock in that instant, with no wait, finds the identity in use.
///
/// # Errors
///
/// As [`load_key`], except for [`Error::UntrustedPath`] and
/// [`Error::InsecurePermissions`], which are in [`KeyReport::refused`].
pub fn inspect_key(path: impl AsRef<Path>) -> Result<KeyReport, Error> {
    let path = path.as_ref();
    let mut key_file = KeyFile::walk(path, Checks::Report(None))?;
    let loaded = key_file
        .load()?
        .ok_or_else(|| Error::NotFound { path: path.into() })?;
    let metadata = loaded
        .file
        .metadata()
        .map_err(|err| Error::io(Operation::ReadKeyMetadata, path, err))?;
    let refused = match key_file.walk.checks {
        Checks::Report(first) => first,
        Checks::Enforce | Checks::Off => None,
    };
    Ok(KeyReport {
        id: loaded.key.public(),
        format: loaded.format,
        owner: sys::owner(&metadata).map(|owner| (owner.uid, owner.mode)),
        refused,
        in_use: crate::guard::host::is_held(&loaded.key),
    })
}

/// Loads the key at `path`, creating the file first if nothing is there and `options`
/// say so, waiting for a racing creator until `deadline` at most.
pub(crate) async fn open(
    path: &Path,
    options: Options,
    deadline: Deadline,
) -> Result<Loaded, Error> {
    let mut key_file = KeyFile::check(path, options)?;
    if let Some(loaded) = key_file.load()? {
        return Ok(loaded);
    }
    if !options.create_if_missing {
        return Err(Error::NotFound { path: path.into() });
    }
    let creation = key_file.prepare_creation()?;
    let locked = wait::until(
        deadline.at_most(MAX_DIRECTORY_LOCK_WAIT),
        DIR_LOCK_RETRY,
        || creation.try_lock(),
        || creation.announce_wait(),
    )
    .await;
    creation.create_and_load(&SecretKey::generate(), locked)
}

/// A key read from its file, with the open file (to lock exactly the file that was read)
/// and the directory it is in (for the ports file beside it).
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) key: SecretKey,
    pub(crate) format: KeyFormat,
    pub(crate) file: File,
    pub(crate) dir: Arc<Dir>,
}

/// The key file at a path that has been walked and checked.
struct KeyFile<'a> {
    path: &'a Path,
    name: OsString,
    walk: Walk<'a>,
    reached: Reached,
}

impl<'a> KeyFile<'a> {
    /// Walks the key's path, checking who may change it unless the options say not to.
    fn check(path: &'a Path, options: Options) -> Result<Self, Error> {
        let checks = if options.allow_insecure_permissions {
            Checks::Off
        } else {
            Checks::Enforce
        };
        Self::walk(path, checks)
    }

    fn walk(path: &'a Path, checks: Checks) -> Result<Self, Error> {
        let name = file_name(path)?.to_owned();
        let mut walk = Walk::new(path, checks);
        let reached = walk.walk_to_key_dir()?;
        Ok(Self {
            path,
            name,
            walk,
            reached,
        })
    }

    /// Opens and reads the key file, or returns `None` if there is none.
    fn load(&mut self) -> Result<Option<Loaded>, Error> {
        if !self.reached.missing.is_empty() {
            return Ok(None);
        }
        match self.walk.open_key(&self.reached, &self.name)? {
            Some(file) => self.read(file).map(Some),
            None => Ok(None),
        }
    }

    /// Checks and reads an open key file.
    fn read(&mut self, file: File) -> Result<Loaded, Error> {
        let path = self.path;
        let metadata = file
            .metadata()
            .map_err(|err| Error::io(Operation::ReadKeyMetadata, path, err))?;
        if !metadata.is_file() {
            return Err(Error::NotAFile {
                path: path.into(),
                kind: sys::file_kind(metadata.file_type()),
            });
        }
        self.walk.check_key_file(&metadata)?;
        let too_large = |len| Error::InvalidKey {
            path: path.into(),
            problem: KeyProblem::TooLarge { len },
        };
        if metadata.len() > MAX_KEY_FILE_LEN {
            return Err(too_large(metadata.len()));
        }
        // Room for one byte more than allowed, so that the buffer never grows: growing
        // would leave a copy of the key behind in freed memory.
        let mut content = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
        (&file)
            .take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut content)
            .map_err(|err| Error::io(Operation::ReadKeyFile, path, err))?;
        if content.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(too_large(content.len() as u64));
        }
        let (key, format) = key::decode_key(&content).map_err(|problem| Error::InvalidKey {
            path: path.into(),
            problem,
        })?;
        debug!(path = %path.display(), id = %key.public(), %format, "loaded endpoint key");
        Ok(Loaded {
            key,
            format,
            file,
            dir: Arc::clone(self.reached.dir()),
        })
    }

    /// Creates the missing directories above the key, then stands ready to create the
    /// key in its directory.
    fn prepare_creation(mut self) -> Result<Creation<'a>, Error> {
        if self.name.len() > temp_file::MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                path: self.path.into(),
                len: self.name.len(),
                max: temp_file::MAX_NAME_LEN,
            });
        }
        create_missing(&mut self.walk, &mut self.reached)?;
        Ok(Creation { key_file: self })
    }
}

/// Creates the directories the walk found missing (`0700`), each one made durable,
/// through the descriptor of the one above: nothing is ever created or changed through a
/// path that someone could redirect meanwhile. One that a racing process made is checked
/// like those that were there.
fn create_missing(walk: &mut Walk<'_>, reached: &mut Reached) -> Result<(), Error> {
    for name in std::mem::take(&mut reached.missing) {
        let dir = Arc::clone(reached.dir());
        let path = dir.path().join(&name);
        let entered = match dir.create_dir(&name, 0o700) {
            Ok(created) => {
                if let Err(err) = dir.sync() {
                    debug!(dir = %dir.path().display(), %err, "cannot sync a directory");
                }
                created
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let found = dir
                    .open_dir(&name)
                    .map_err(|err| Error::io(Operation::OpenDirectory, &path, err))?;
                walk.check_directory(&found)?;
                found
            }
            Err(err) => return Err(Error::io(Operation::CreateDirectory, path, err)),
        };
        reached.enter(entered);
    }
    Ok(())
}

/// The private directory at `path`, checked as the directories above a key are, and
/// created (`0700`) if it is missing: where the host locks are, where they are files.
#[cfg_attr(
    all(
        any(target_os = "linux", target_os = "android"),
        not(feature = "keyring")
    ),
    allow(dead_code)
)]
pub(crate) fn private_dir(path: &Path) -> Result<Arc<Dir>, Error> {
    let mut walk = Walk::new(path, Checks::Enforce);
    let mut reached = walk.walk_to(path)?;
    create_missing(&mut walk, &mut reached)?;
    Ok(Arc::clone(reached.dir()))
}

/// The file name of a key path. A path that ends in `/` or `.` names a directory, even
/// when `Path::file_name` finds a name in it.
fn file_name(path: &Path) -> Result<&OsStr, Error> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let names_a_directory = bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes == b".";
    match path.file_name() {
        Some(name) if !names_a_directory => Ok(name),
        _ => {
            let err = io::Error::new(io::ErrorKind::InvalidInput, "a key path must name a file");
            Err(Error::io(Operation::OpenKeyFile, path, err))
        }
    }
}

/// A key about to be created in its directory, which exists now.
struct Creation<'a> {
    key_file: KeyFile<'a>,
}

impl Creation<'_> {
    fn dir(&self) -> &Dir {
        self.key_file.reached.dir()
    }

    /// Tries to take the directory lock that keeps creators one at a time: `Some(true)`
    /// taken, `None` held by another, `Some(false)` not supported here.
    fn try_lock(&self) -> Result<Option<bool>, std::convert::Infallible> {
        Ok(match self.dir().try_lock() {
            Ok(true) => Some(true),
            Ok(false) => None,
            Err(err) => {
                debug!(dir = %self.dir().path().display(), %err, "cannot lock the key's directory");
                Some(false)
            }
        })
    }

    fn announce_wait(&self) {
        debug!(
            dir = %self.dir().path().display(),
            "another process holds the key's directory lock; waiting for it"
        );
    }

    /// Creates the key, unless another process has by now, and reads back what is there:
    /// through the directory it was created in, a link someone put there checked as on
    /// any load.
    fn create_and_load(
        mut self,
        key: &SecretKey,
        locked: Result<Waited<bool>, std::convert::Infallible>,
    ) -> Result<Loaded, Error> {
        let path = self.key_file.path;
        if let Created::Published = self.create(key, KeyFormat::Pkcs8Pem, locked)? {
            info!(path = %path.display(), id = %key.public(), "generated a new endpoint key");
        }
        self.key_file
            .load()?
            .ok_or_else(|| Error::io(Operation::OpenKeyFile, path, io::ErrorKind::NotFound.into()))
    }

    /// Creates a key file holding `key` where there was none. Returns once something is
    /// at the path: this key, or what another process put there first.
    fn create(
        &mut self,
        key: &SecretKey,
        format: KeyFormat,
        locked: Result<Waited<bool>, std::convert::Infallible>,
    ) -> Result<Created, Error> {
        let locked = match locked {
            Ok(Waited::Done(locked)) => locked,
            Ok(Waited::TimedOut(waited)) => {
                // Creation is correct without the lock (publishing never replaces
                // anything). Whoever holds it for this long is stuck, or another user
                // keeping keys from being created.
                warn!(
                    dir = %self.dir().path().display(),
                    ?waited,
                    "the key's directory is still locked by another process; creating the \
                     key without the lock"
                );
                false
            }
            Err(never) => match never {},
        };
        let created = self.publish(key, format);
        if locked && let Err(err) = self.dir().unlock() {
            debug!(dir = %self.dir().path().display(), %err, "cannot unlock the key's directory");
        }
        created
    }

    /// Writes the key to a temporary file and publishes it under its name, unless
    /// something is there.
    fn publish(&self, key: &SecretKey, format: KeyFormat) -> Result<Created, Error> {
        let (path, name, dir) = (self.key_file.path, &self.key_file.name, self.dir());
        if dir.stat_at(name).ok().flatten().is_some() {
            debug!(path = %path.display(), "another process created the key file first");
            return Ok(Created::AlreadyThere);
        }
        // Every live writer holds its temporary file locked, so what is unlocked was left
        // by a run that was killed.
        temp_file::remove_leftovers(dir, name);
        let encoded = key::encode_key(key, format);
        let mut attempt = 0;
        loop {
            let temp = TempFile::create(dir, name)?;
            temp.write_durably(&encoded)?;
            match dir.publish_no_clobber(&temp.name, name) {
                Ok(()) => break,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    debug!(path = %path.display(), "another process created the key file first");
                    return Ok(Created::AlreadyThere);
                }
                // Removed as a leftover by another creator in the instant between its
                // creation and its lock.
                Err(err) if err.kind() == io::ErrorKind::NotFound && attempt < 3 => {
                    debug!(path = %path.display(), "the temporary file vanished; writing it again");
                    attempt += 1;
                }
                Err(err) => return Err(Error::io(Operation::PublishKeyFile, path, err)),
            }
        }
        if let Err(err) = dir.sync() {
            // The key is there and will be used; only its survival of a power loss is
            // not confirmed.
            warn!(
                path = %path.display(),
                %err,
                "the key file was stored, but its directory cannot be synced: after a power \
                 loss it may be missing"
            );
        }
        Ok(Created::Published)
    }
}

/// What [`Creation::create`] found.
enum Created {
    /// The key given is now at the path.
    Published,
    /// Something was at the path already, or was put there meanwhile.
    AlreadyThere,
}
