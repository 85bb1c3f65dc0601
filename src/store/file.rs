//! The key file: reading one without ever changing it, and creating one so that a crash,
//! a race or another local user can never leave a torn key or a second identity.
//!
//! Before anything is read or created, the key's location is checked
//! ([`crate::fs::walk`]):
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
    path::Path,
    sync::Arc,
    time::Duration,
};

use iroh::SecretKey;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::Options;
use crate::{
    error::{Error, Operation},
    fs::{
        dirs,
        temp::{self, Published},
        walk::{Checks, Reached, Walk},
    },
    key::{self, KeyFormat, KeyProblem},
    sys::{Dir, FileKind, Stat},
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

/// Reads the key file at `path`, checked; never creates one. [`Error::NotFound`] when
/// there is none.
pub(crate) fn read(path: &Path) -> Result<Loaded, Error> {
    KeyFile::check(path, Options::default())?
        .load()?
        .ok_or_else(|| Error::NotFound { path: path.into() })
}

/// Reads the key file at `path` whatever its own owner and mode, which are reported
/// instead: the key, and why [`read`] would refuse it, if it would. A directory or link
/// on the way that another user could change is still an error.
pub(crate) fn inspect(path: &Path) -> Result<(Loaded, Option<Error>), Error> {
    let mut key_file = KeyFile::walk(path, Checks::Report(None))?;
    let loaded = key_file
        .load()?
        .ok_or_else(|| Error::NotFound { path: path.into() })?;
    let refused = match key_file.walk.checks {
        Checks::Report(first) => first,
        Checks::Enforce | Checks::Off => None,
    };
    Ok((loaded, refused))
}

/// Stores `key` in a new key file at `path`, written in `format`, waiting for another
/// creator in the directory until `deadline`; the calling thread sleeps.
pub(crate) fn create_new(
    path: &Path,
    key: &SecretKey,
    format: KeyFormat,
    deadline: Deadline,
) -> Result<Published, Error> {
    let mut creation = KeyFile::check(path, Options::default())?.prepare_creation()?;
    let locked = wait::blocking_until(
        deadline.at_most(MAX_DIRECTORY_LOCK_WAIT),
        DIR_LOCK_RETRY,
        || creation.try_lock(),
        || creation.announce_wait(),
    );
    creation.create(key, format, locked)
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
                kind: FileKind::of(metadata.file_type()),
            });
        }
        let stat = Stat::of_file(&file, &metadata)
            .map_err(|err| Error::io(Operation::ReadKeyMetadata, path, err))?;
        self.walk.check_key_file(&stat)?;
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
        if self.name.len() > temp::MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                path: self.path.into(),
                len: self.name.len(),
                max: temp::MAX_NAME_LEN,
            });
        }
        dirs::create_missing(&mut self.walk, &mut self.reached)?;
        Ok(Creation { key_file: self })
    }
}

/// The file name of a key path. A path that ends in `/` or `.` names a directory, even
/// when `Path::file_name` finds a name in it.
fn file_name(path: &Path) -> Result<&OsStr, Error> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let names_a_directory = bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes == b".";
    match path.file_name() {
        Some(name) if !names_a_directory => Ok(name),
        _ => Err(Error::NotAFileName { path: path.into() }),
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
        if let Published::Published = self.create(key, KeyFormat::Pkcs8Pem, locked)? {
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
    ) -> Result<Published, Error> {
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
        let encoded = key::encode_key(key, format);
        let created = temp::publish_new(
            self.dir(),
            &self.key_file.name,
            &encoded,
            Operation::PublishKeyFile,
            "key file",
        );
        if locked && let Err(err) = self.dir().unlock() {
            debug!(dir = %self.dir().path().display(), %err, "cannot unlock the key's directory");
        }
        created
    }
}
