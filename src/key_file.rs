//! The key file: reading one without ever changing it, and creating one so that a crash,
//! a race or another local user can never leave a torn key or a second identity.
//!
//! Before anything is read or created, the key's location is checked (`trust`): no one
//! but this user and root may change the directories above it. Then its directory is
//! opened, and everything else happens through that descriptor: missing directories are
//! created with `mkdirat` and their mode set through their own descriptor, the key is
//! written to an unpredictable temporary file (created `0600`), synced, published under
//! its name with a rename or link that fails if anything is already there, and the
//! directory is synced. Creators take a lock on the directory, so that one at a time
//! creates, and remove the temporary files that their user's killed runs left behind.
//! The lock is waited for no longer than the caller's wait: creation is correct without
//! it, so a lock that another user holds on a shared directory cannot stop it.

use std::{
    ffi::OsStr,
    fs::File,
    io::{self, Read},
    path::{Component, Path},
    time::Duration,
};

use iroh::{EndpointId, SecretKey};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::{
    DEFAULT_LOCK_WAIT, Error, KeyFormat, KeyProblem, key,
    sys::{self, Dir, Process},
    temp_file::{self, TempFile},
    trust,
    wait::{self, Deadline, Waited},
};

/// The largest key file that is read. Real ones are a few hundred bytes; anything far
/// larger is not a key and is refused without being read.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

/// How often a locked directory is tried again while creating.
const DIR_LOCK_RETRY: Duration = Duration::from_millis(5);

/// How an existing key file and its location are judged.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOptions {
    /// Skip the checks of who owns and may write the key and the directories above it.
    pub(crate) allow_insecure_permissions: bool,
}

/// Loads the Ed25519 secret key stored at `path`, or generates one and stores it there.
///
/// This is the key alone, for those who build their [`iroh::Endpoint`] themselves; it
/// gives the same guarantees about the file as [`PersistentEndpoint::open`]. The call
/// blocks on file I/O (and on first use, on `fsync`, and on another process creating
/// the same key, for up to [`DEFAULT_LOCK_WAIT`]): from async code, run it with
/// [`tokio::task::spawn_blocking`] if a few milliseconds matter.
///
/// It takes no lock: to keep a second endpoint from running the same identity, hold an
/// [`IdentityLock`] for as long as yours is open.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// use iroh::{Endpoint, endpoint::presets};
///
/// let key = iroh_identity::load_or_generate("endpoint.key")?;
/// let endpoint = Endpoint::builder(presets::N0).secret_key(key).bind().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// - [`Error::InvalidKey`], [`Error::NotAFile`], [`Error::DanglingSymlink`]: something
///   is at `path` that is not a usable key. It is left exactly as it was.
/// - [`Error::UntrustedPath`], [`Error::InsecurePermissions`] (unix): another user could
///   change the key or a directory above it, or the key is yours and group or others may
///   read or write it.
/// - [`Error::NameTooLong`]: there is no key, and its name is too long to create one.
/// - [`Error::Io`]: the file or its directory cannot be read or created; the error names
///   the path and the operation.
///
/// # Security
///
/// A new key file is created with mode `0600` and missing directories with `0700`,
/// whatever the umask. An existing file is never written, replaced or deleted.
///
/// [`PersistentEndpoint::open`]: crate::PersistentEndpoint::open
/// [`IdentityLock`]: crate::IdentityLock
pub fn load_or_generate(path: impl AsRef<Path>) -> Result<SecretKey, Error> {
    let location = KeyLocation::check(path.as_ref(), ReadOptions::default())?;
    if let Some(loaded) = location.load()? {
        return Ok(loaded.key);
    }
    let creation = location.prepare_creation()?;
    let locked = wait::blocking_until(
        Deadline::after(DEFAULT_LOCK_WAIT),
        DIR_LOCK_RETRY,
        || creation.try_lock(),
        || creation.announce_wait(),
    );
    creation
        .create_and_load(&SecretKey::generate(), locked)
        .map(|loaded| loaded.key)
}

/// Loads the Ed25519 secret key stored at `path`; never creates one.
///
/// This is [`load_or_generate`] for when a missing key is an error: a tool that reports
/// a key's id, say. It reads every format [`decode_key`] reads.
///
/// ```no_run
/// let key = iroh_identity::load_key("endpoint.key")?;
/// println!("{}", key.public());
/// # Ok::<(), iroh_identity::Error>(())
/// ```
///
/// # Errors
///
/// As [`load_or_generate`], and [`Error::Io`] when there is no file at `path`.
///
/// # Security
///
/// The file is only read, and judged as [`load_or_generate`] judges it.
///
/// [`decode_key`]: crate::decode_key
pub fn load_key(path: impl AsRef<Path>) -> Result<SecretKey, Error> {
    let path = path.as_ref();
    KeyLocation::check(path, ReadOptions::default())?
        .load()?
        .map(|loaded| loaded.key)
        .ok_or_else(|| Error::io("open key file", path, io::ErrorKind::NotFound.into()))
}

/// Stores `key` in a new key file at `path`, written in `format`, with the same care as a
/// generated key: a temporary file, synced, published without replacing anything.
///
/// This is how a key from elsewhere (an `IROH_SECRET`, a key converted to another
/// format) becomes a key file. [`load_or_generate`] and [`decode_key`] read it back in
/// every format.
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
///
/// # Security
///
/// The file is created `0600` and missing directories `0700` (unix), whatever the umask.
///
/// [`decode_key`]: crate::decode_key
pub fn store_new_key(
    path: impl AsRef<Path>,
    key: &SecretKey,
    format: KeyFormat,
) -> Result<(), Error> {
    let path = path.as_ref();
    let location = KeyLocation::check(path, ReadOptions::default())?;
    let creation = location.prepare_creation()?;
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
    /// Why [`load_key`] and the endpoint builder refuse this key, if they do: another
    /// user could change it or a directory above it ([`Error::UntrustedPath`]), or
    /// others may read it ([`Error::InsecurePermissions`]).
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
    let relaxed = ReadOptions {
        allow_insecure_permissions: true,
    };
    let location = KeyLocation::check(path, relaxed)?;
    let loaded = location
        .load()?
        .ok_or_else(|| Error::io("open key file", path, io::ErrorKind::NotFound.into()))?;
    let metadata = loaded
        .file
        .metadata()
        .map_err(|err| Error::io("read metadata of key file", path, err))?;
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|found| found.is_symlink());
    let where_it_is = if is_link {
        trust::check_link(path, &location.process)
    } else {
        trust::check_location(path, &location.process)
    };
    let refused = where_it_is
        .and_then(|trust| trust::check_key_file(path, &metadata, &location.process, trust))
        .err();
    Ok(KeyReport {
        id: loaded.key.public(),
        format: loaded.format,
        owner: sys::owner(&metadata).map(|owner| (owner.uid, owner.mode)),
        refused,
        in_use: crate::lock::is_held(&loaded.file),
    })
}

/// Loads the key at `path`, creating the file first if nothing is there, waiting for a
/// racing creator until `deadline` at most.
pub(crate) async fn load_or_create(
    path: &Path,
    options: ReadOptions,
    deadline: Deadline,
) -> Result<Loaded, Error> {
    let location = KeyLocation::check(path, options)?;
    if let Some(loaded) = location.load()? {
        return Ok(loaded);
    }
    let creation = location.prepare_creation()?;
    let locked = wait::until(
        deadline,
        DIR_LOCK_RETRY,
        || creation.try_lock(),
        || creation.announce_wait(),
    )
    .await;
    creation.create_and_load(&SecretKey::generate(), locked)
}

/// A key read from its file, with the open file: to lock exactly the file that was read.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) key: SecretKey,
    pub(crate) format: KeyFormat,
    pub(crate) file: File,
}

/// The key file at a path whose location has been checked.
struct KeyLocation<'a> {
    path: &'a Path,
    dir: &'a Path,
    name: &'a OsStr,
    options: ReadOptions,
    process: Process,
    trust: trust::Location,
}

impl<'a> KeyLocation<'a> {
    /// Checks who may change the key's location, unless the options say not to.
    fn check(path: &'a Path, options: ReadOptions) -> Result<Self, Error> {
        let name = path.file_name().ok_or_else(|| {
            let err = io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name");
            Error::io("use key file", path, err)
        })?;
        let process = sys::process();
        let trust = if options.allow_insecure_permissions {
            trust::Location::default()
        } else {
            trust::check_location(path, &process)?
        };
        Ok(Self {
            path,
            dir: parent_dir(path),
            name,
            options,
            process,
            trust,
        })
    }

    /// Opens and reads the key file, or returns `None` if there is none. By path: every
    /// directory on it has been checked, and none can be changed by anyone untrusted.
    fn load(&self) -> Result<Option<Loaded>, Error> {
        let file = match sys::open_file_no_follow(self.path) {
            Ok(Some(file)) => file,
            // A link (a Kubernetes secret's `..data` link): checked, then followed.
            Ok(None) => {
                let mut location = KeyLocation { ..*self };
                if !self.options.allow_insecure_permissions {
                    location.trust = trust::check_link(self.path, &self.process)?;
                }
                return location.load_through_link();
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::io("open key file", self.path, err)),
        };
        self.read(file).map(Some)
    }

    /// Opens the key through the link at its path, once the link is checked.
    fn load_through_link(&self) -> Result<Option<Loaded>, Error> {
        let file = match sys::open_file(self.path) {
            Ok(file) => file,
            // A link to nothing: its target may be a volume not mounted yet, and a key
            // created elsewhere would become a second identity.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(Error::DanglingSymlink {
                    path: self.path.into(),
                });
            }
            Err(err) => return Err(Error::io("open key file", self.path, err)),
        };
        self.read(file).map(Some)
    }

    /// Opens and reads the key file in `dir`, the directory it was just created in. What
    /// this crate publishes is a file: a link there was put by someone else, and is
    /// checked as on any load.
    fn load_from(&self, dir: &Dir) -> Result<Option<Loaded>, Error> {
        match dir.open_file_no_follow(self.name) {
            Ok(Some(file)) => self.read(file).map(Some),
            Ok(None) => self.load(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::io("open key file", self.path, err)),
        }
    }

    /// Checks and reads an open key file.
    fn read(&self, file: File) -> Result<Loaded, Error> {
        let path = self.path;
        let metadata = file
            .metadata()
            .map_err(|err| Error::io("read metadata of key file", path, err))?;
        if !metadata.is_file() {
            return Err(Error::NotAFile {
                path: path.into(),
                kind: sys::describe(metadata.file_type()),
            });
        }
        if !self.options.allow_insecure_permissions {
            trust::check_key_file(path, &metadata, &self.process, self.trust)?;
        }
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
            .map_err(|err| Error::io("read key file", path, err))?;
        if content.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(too_large(content.len() as u64));
        }
        let (key, format) = key::decode_key(&content).map_err(|problem| Error::InvalidKey {
            path: path.into(),
            problem,
        })?;
        debug!(path = %path.display(), id = %key.public(), %format, "loaded endpoint key");
        Ok(Loaded { key, format, file })
    }

    /// Creates the missing directories above the key (`0700`), each one made durable,
    /// and opens the key's directory, ready to create the key in it.
    fn prepare_creation(self) -> Result<Creation<'a>, Error> {
        if self.name.len() > temp_file::MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                path: self.path.into(),
                len: self.name.len(),
                max: temp_file::MAX_NAME_LEN,
            });
        }
        let dir = self.create_dirs()?;
        Ok(Creation {
            location: self,
            dir,
        })
    }

    /// Opens the deepest directory above the key that exists, then creates the rest one
    /// by one through the descriptor of the one above: nothing is ever created or
    /// changed through a path that someone could redirect meanwhile.
    fn create_dirs(&self) -> Result<Dir, Error> {
        let mut missing = Vec::new();
        let mut existing = self.dir;
        let mut dir = loop {
            match Dir::open(existing) {
                Ok(dir) => break dir,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io("open directory", existing, err)),
            }
            if std::fs::symlink_metadata(existing).is_ok_and(|m| m.is_symlink()) {
                return Err(Error::DanglingSymlink {
                    path: existing.into(),
                });
            }
            let mut components = existing.components();
            match components.next_back() {
                Some(Component::Normal(name)) => missing.push(name),
                _ => {
                    let err = io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a missing directory's path must end in a name, not `..`",
                    );
                    return Err(Error::io("create directory", existing, err));
                }
            }
            existing = parent_dir(existing);
        };
        for name in missing.into_iter().rev() {
            let created = match dir.create_dir(name, 0o700) {
                Ok(created) => {
                    if let Err(err) = dir.sync() {
                        debug!(dir = %dir.path().display(), %err, "cannot sync a directory");
                    }
                    created
                }
                // A racing process made it; it is checked like those that were there.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    let path = dir.path().join(name);
                    let found = dir
                        .open_dir(name)
                        .map_err(|err| Error::io("open directory", &path, err))?;
                    if !self.options.allow_insecure_permissions {
                        let metadata = found
                            .metadata()
                            .map_err(|err| Error::io("check", &path, err))?;
                        trust::check_directory(self.path, &path, &metadata, &self.process)?;
                    }
                    found
                }
                Err(err) => {
                    return Err(Error::io("create directory", dir.path().join(name), err));
                }
            };
            dir = created;
        }
        Ok(dir)
    }
}

/// A key about to be created in its directory.
struct Creation<'a> {
    location: KeyLocation<'a>,
    dir: Dir,
}

impl Creation<'_> {
    /// Tries to take the directory lock that keeps creators one at a time: `Some(true)`
    /// taken, `None` held by another, `Some(false)` not supported here.
    fn try_lock(&self) -> Result<Option<bool>, std::convert::Infallible> {
        Ok(match self.dir.try_lock() {
            Ok(true) => Some(true),
            Ok(false) => None,
            Err(err) => {
                debug!(dir = %self.dir.path().display(), %err, "cannot lock the key's directory");
                Some(false)
            }
        })
    }

    fn announce_wait(&self) {
        debug!(
            dir = %self.dir.path().display(),
            "another process holds the key's directory lock; waiting for it"
        );
    }

    /// Creates the key, unless another process has by now, and reads back what is there.
    fn create_and_load(
        self,
        key: &SecretKey,
        locked: Result<Waited<bool>, std::convert::Infallible>,
    ) -> Result<Loaded, Error> {
        let path = self.location.path;
        if let Created::Published = self.create(key, KeyFormat::Pkcs8Pem, locked)? {
            info!(path = %path.display(), id = %key.public(), "generated a new endpoint key");
        }
        // Ours or, if another process won the race, theirs; from the directory it was
        // created in.
        self.location
            .load_from(&self.dir)?
            .ok_or_else(|| Error::io("open key file", path, io::ErrorKind::NotFound.into()))
    }

    /// Creates a key file holding `key` where there was none. Returns once something is
    /// at the path: this key, or what another process put there first.
    fn create(
        &self,
        key: &SecretKey,
        format: KeyFormat,
        locked: Result<Waited<bool>, std::convert::Infallible>,
    ) -> Result<Created, Error> {
        let dir = &self.dir;
        let locked = match locked {
            Ok(Waited::Done(locked)) => locked,
            Ok(Waited::TimedOut(waited)) => {
                // Creation is correct without the lock (publishing never replaces
                // anything); only leftover temporary files stay. Whoever holds it for
                // this long is stuck, or another user keeping keys from being created.
                warn!(
                    dir = %dir.path().display(),
                    ?waited,
                    "the key's directory is still locked by another process; creating the \
                     key without the lock"
                );
                false
            }
            Err(never) => match never {},
        };
        let created = self.publish(key, format);
        if locked && let Err(err) = dir.unlock() {
            debug!(dir = %dir.path().display(), %err, "cannot unlock the key's directory");
        }
        created
    }

    /// Writes the key to a temporary file and publishes it under its name, unless
    /// something is there.
    fn publish(&self, key: &SecretKey, format: KeyFormat) -> Result<Created, Error> {
        let (path, name, dir) = (self.location.path, self.location.name, &self.dir);
        if dir.entry(name).ok().flatten().is_some() {
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
                Err(err) => return Err(Error::io("publish key file", path, err)),
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

/// The directory a path is in; `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Opens the existing key file at `path` (for the lock), without judging it.
pub(crate) fn open_existing(path: &Path) -> io::Result<File> {
    sys::open_file(path)
}
