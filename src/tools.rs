//! The key tool's ways in: reading, storing and inspecting a key where it is kept, without
//! taking its identity. They sit above the store and the guard, because inspecting a key
//! asks both (what is stored, and whether an endpoint holds it).

use std::path::Path;

use iroh::{EndpointId, SecretKey};
use tracing::info;

#[cfg(feature = "keyring")]
use crate::store::keychain::{self, KeychainProblem};
use crate::{
    error::{Error, Operation},
    fs::temp::Published,
    guard::host,
    identity::DEFAULT_LOCK_WAIT,
    key::KeyFormat,
    store::file,
    sys::{self, Ownership},
    wait::Deadline,
};

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
    Ok(file::read(path.as_ref())?.key)
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
    match file::create_new(path, key, format, Deadline::after(DEFAULT_LOCK_WAIT))? {
        Published::Published => {
            info!(path = %path.display(), id = %key.public(), %format, "stored an endpoint key");
            Ok(())
        }
        Published::AlreadyThere => Err(Error::AlreadyExists { path: path.into() }),
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
    /// The file's owner, group and permission bits (unix).
    pub owner: Option<Ownership>,
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
/// looking never makes an open fail: on Linux by looking at the names of the host lock.
/// Elsewhere the lock file is locked and let go of at once, and an open that tries it in
/// that instant, with no wait, finds the identity in use.
///
/// # Errors
///
/// As [`load_key`], except for [`Error::UntrustedPath`] and
/// [`Error::InsecurePermissions`], which are in [`KeyReport::refused`].
pub fn inspect_key(path: impl AsRef<Path>) -> Result<KeyReport, Error> {
    let path = path.as_ref();
    let (loaded, refused) = file::inspect(path)?;
    let metadata = loaded
        .file
        .metadata()
        .map_err(|err| Error::io(Operation::ReadKeyMetadata, path, err))?;
    Ok(KeyReport {
        id: loaded.key.public(),
        format: loaded.format,
        owner: sys::owner(&metadata),
        refused,
        in_use: host::is_held(&loaded.key),
    })
}

/// Loads the key of the keychain entry `service`/`account`; never creates one.
///
/// For a tool that reports or moves a key (`iroh-identity keychain id`). To run an
/// endpoint with it, take an [`Identity`](crate::Identity) with
/// [`KeyLocation::keychain`](crate::KeyLocation::keychain). The call blocks on the store,
/// [`DEFAULT_LOCK_WAIT`] at most.
///
/// # Errors
///
/// - [`Error::Keychain`] with [`KeychainProblem::Missing`]: there is no such entry;
///   with another problem: the store cannot be reached, is locked, failed or did not
///   answer in time.
/// - [`Error::InvalidKeychainKey`]: the entry holds something that is not a key.
#[cfg(feature = "keyring")]
pub fn load_keychain_key(service: &str, account: &str) -> Result<SecretKey, Error> {
    bounded(service, account, |service, account, _| {
        keychain::load(service, account)?
            .ok_or_else(|| keychain::entry_error(service, account, KeychainProblem::Missing))
    })
}

/// Stores `key` in a new keychain entry `service`/`account`, and reads it back to check
/// that the store keeps it: how a key file's identity moves into the secret store. It
/// holds the lock that keeps creators of the entry in turn. The call blocks,
/// [`DEFAULT_LOCK_WAIT`] at most.
///
/// # Errors
///
/// - [`Error::KeychainEntryExists`]: the entry exists; it is left unchanged.
/// - [`Error::Keychain`]: the store cannot be reached, is locked, failed or did not
///   answer in time.
#[cfg(feature = "keyring")]
pub fn store_new_keychain_key(service: &str, account: &str, key: &SecretKey) -> Result<(), Error> {
    let key = key.clone();
    bounded(service, account, move |service, account, deadline| {
        keychain::store_new(service, account, &key, deadline)
    })
}

/// Deletes the keychain entry `service`/`account`, and with it the identity it holds:
/// there is no way back. The call blocks, [`DEFAULT_LOCK_WAIT`] at most.
///
/// # Errors
///
/// [`Error::Keychain`]: there is no such entry ([`KeychainProblem::Missing`]), an
/// endpoint runs its identity now, or the store cannot be reached, is locked, failed or
/// did not answer in time.
#[cfg(feature = "keyring")]
pub fn delete_keychain_entry(service: &str, account: &str) -> Result<(), Error> {
    bounded(service, account, |service, account, _| {
        // Not while an endpoint runs the identity: held here until the entry is gone.
        let _held = match keychain::load(service, account) {
            Ok(Some(key)) => match host::try_lock_identity(&key)? {
                Some(lock) => Some(lock),
                None => {
                    let id = key.public();
                    let problem = KeychainProblem::InUse { id };
                    return Err(keychain::entry_error(service, account, problem));
                }
            },
            _ => None,
        };
        keychain::delete(service, account)
    })
}

#[cfg(feature = "keyring")]
/// Runs `call` on a thread of its own and waits for it [`DEFAULT_LOCK_WAIT`] at most: the
/// calls of the key tool, which block.
fn bounded<T: Send + 'static>(
    service: &str,
    account: &str,
    call: impl FnOnce(&str, &str, Deadline) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let deadline = Deadline::after(DEFAULT_LOCK_WAIT);
    let (sender, answer) = std::sync::mpsc::channel();
    let (task_service, task_account) = (service.to_owned(), account.to_owned());
    std::thread::spawn(move || {
        let _ = sender.send(call(&task_service, &task_account, deadline));
    });
    answer
        .recv_timeout(DEFAULT_LOCK_WAIT)
        .unwrap_or_else(|_| Err(keychain::no_answer(service, account)))
}
