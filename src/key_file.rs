//! The key file: reading one without ever changing it, and creating one so that a crash
//! or a race can never leave a torn key or a second identity.
//!
//! Creation writes the key to a temporary file in the key's own directory (created
//! `0600`), syncs it, publishes it under the key's name with a rename or link that fails
//! if anything is already there, and syncs the directory. Creators take a lock on the
//! directory, so that one at a time creates, and remove the temporary files that
//! interrupted runs left behind: a temporary file never outlives the next creation.

use std::{
    fs::{self, File},
    io::{self, Read},
    path::Path,
};

use iroh::SecretKey;
use tracing::{debug, info};
use zeroize::Zeroizing;

use crate::{
    Error, KeyFormat, KeyProblem, key, sys,
    temp_file::{self, TempFile},
};

/// The largest key file that is read. Real ones are a few hundred bytes; anything far
/// larger is not a key and is refused without being read.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

/// How an existing key file is judged.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOptions {
    /// Accept a key file of the current user that group or others may access.
    pub(crate) allow_insecure_permissions: bool,
}

/// Loads the Ed25519 secret key stored at `path`, or generates one and stores it there.
///
/// This is the key alone, for those who build their [`iroh::Endpoint`] themselves; it
/// gives the same guarantees about the file as [`PersistentEndpoint::open`]. The call
/// blocks on file I/O (and on first use, on `fsync`): from async code, run it with
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
/// - [`Error::InsecurePermissions`] (unix): the key is yours and group or others may
///   read or write it.
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
    load_or_create(path.as_ref(), ReadOptions::default()).map(|(key, _file)| key)
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
    load_existing(path, ReadOptions::default())?
        .map(|(key, _file)| key)
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
/// - [`Error::Io`]: the directory or the file cannot be created or written; nothing is
///   left at `path`.
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
    match create(path, key, format)? {
        Created::Published => {
            info!(path = %path.display(), id = %key.public(), %format, "stored an endpoint key");
            Ok(())
        }
        Created::AlreadyThere => Err(Error::AlreadyExists { path: path.into() }),
    }
}

/// Loads the key at `path`, creating the file first if nothing is there. Returns the key
/// and the open key file, so that the caller can lock exactly the file it read.
pub(crate) fn load_or_create(
    path: &Path,
    options: ReadOptions,
) -> Result<(SecretKey, File), Error> {
    if let Some(loaded) = load_existing(path, options)? {
        return Ok(loaded);
    }
    let key = SecretKey::generate();
    if let Created::Published = create(path, &key, KeyFormat::Pkcs8Pem)? {
        info!(path = %path.display(), id = %key.public(), "generated a new endpoint key");
    }
    // Ours or, if another process won the race, theirs.
    load_existing(path, options)?
        .ok_or_else(|| Error::io("open key file", path, io::ErrorKind::NotFound.into()))
}

/// Opens and reads the key file, or returns `None` if there is none.
fn load_existing(path: &Path, options: ReadOptions) -> Result<Option<(SecretKey, File)>, Error> {
    let file = match sys::open_key_file(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            // A link to nothing, or nothing at all (though a racing process may have
            // created the key since: then creating finds it and it is read after all).
            return match fs::symlink_metadata(path) {
                Ok(metadata) if metadata.is_symlink() => {
                    Err(Error::DanglingSymlink { path: path.into() })
                }
                _ => Ok(None),
            };
        }
        Err(err) => return Err(Error::io("open key file", path, err)),
    };
    let key = read(&file, path, options)?;
    Ok(Some((key, file)))
}

/// Checks and reads an open key file.
fn read(file: &File, path: &Path, options: ReadOptions) -> Result<SecretKey, Error> {
    let metadata = file
        .metadata()
        .map_err(|err| Error::io("read metadata of key file", path, err))?;
    if !metadata.is_file() {
        return Err(Error::NotAFile {
            path: path.into(),
            kind: sys::describe(metadata.file_type()),
        });
    }
    if !options.allow_insecure_permissions
        && let Some(mode) = sys::exposed_mode(&metadata)
    {
        return Err(Error::InsecurePermissions {
            path: path.into(),
            mode,
        });
    }
    let too_large = |len| Error::InvalidKey {
        path: path.into(),
        problem: KeyProblem::TooLarge { len },
    };
    if metadata.len() > MAX_KEY_FILE_LEN {
        return Err(too_large(metadata.len()));
    }
    // Room for one byte more than allowed, so that the buffer never grows: growing would
    // leave a copy of the key behind in freed memory.
    let mut content = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
    file.take(MAX_KEY_FILE_LEN + 1)
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
    Ok(key)
}

/// What [`create`] found.
enum Created {
    /// The key given is now at the path.
    Published,
    /// Something was at the path already, or was put there meanwhile.
    AlreadyThere,
}

/// Creates a key file holding `key` where there was none. Returns once something is at
/// `path`: this key, or what another process put there first.
fn create(path: &Path, key: &SecretKey, format: KeyFormat) -> Result<Created, Error> {
    let name = path.file_name().ok_or_else(|| {
        let err = io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name");
        Error::io("create key file", path, err)
    })?;
    let dir = temp_file::parent_dir(path);
    create_dirs(dir)?;

    let dir_lock = sys::lock_dir(dir);
    if fs::symlink_metadata(path).is_ok() {
        debug!(path = %path.display(), "another process created the key file first");
        return Ok(Created::AlreadyThere);
    }
    if dir_lock.is_some() {
        // Every creator holds the directory lock while its temporary file exists, so any
        // temporary file seen now was left by a run that was killed.
        temp_file::remove_leftovers(dir, name);
    }

    let temp = TempFile::create(dir, name)?;
    temp.write_durably(&key::encode_key(key, format))?;
    match sys::publish_no_clobber(&temp.path, path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            debug!(path = %path.display(), "another process created the key file first");
            return Ok(Created::AlreadyThere);
        }
        Err(err) => return Err(Error::io("publish key file", path, err)),
    }
    drop(temp);
    sys::sync_dir(dir).map_err(|err| Error::io("sync directory", dir, err))?;
    Ok(Created::Published)
}

/// Creates the missing directories above a key file, `0700`, each one made durable.
fn create_dirs(dir: &Path) -> Result<(), Error> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|ancestor| {
            !ancestor.as_os_str().is_empty()
                && matches!(fs::metadata(ancestor), Err(err) if err.kind() == io::ErrorKind::NotFound)
        })
        .collect();
    for created in missing.into_iter().rev() {
        match sys::create_private_dir(created) {
            Ok(()) => {}
            // A racing process made it.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(Error::io("create directory", created, err)),
        }
        let parent = temp_file::parent_dir(created);
        sys::sync_dir(parent).map_err(|err| Error::io("sync directory", parent, err))?;
    }
    Ok(())
}
