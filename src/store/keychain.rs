//! A key in the OS secret store, through the `keyring` crate: the Secret Service (over
//! D-Bus) on Linux and other unixes, the Keychain on macOS, the Credential Manager on
//! Windows.
//!
//! An entry is named by a service and an account. Its secret is the key as a key file
//! holds it, PKCS#8 v2 PEM: text, which every store keeps byte for byte, and with the
//! public key beside the secret one, so that a damaged entry is detected instead of
//! becoming another identity. An entry that exists but does not decode is an error that
//! names it, and is never replaced. A store that is missing, locked or refuses access is
//! an error too, never a silent new key.
//!
//! The stores have no "create if absent", so creation is serialised with a lock of this
//! user's ([`guard::host`](crate::guard::host)): the first creator stores a key; the
//! others, once they hold the lock, read it back.

use iroh::SecretKey;
use tracing::{debug, info};
use zeroize::Zeroizing;

use crate::{
    Error, KeyFormat, KeychainProblem,
    guard::host,
    key,
    wait::{Deadline, Waited, blocking_until},
};

/// How often the lock of a racing creator is tried again.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Loads the key of the entry `service`/`account`, or generates and stores one when
/// there is none and `create` says so, waiting for a racing creator until `deadline`.
///
/// All of it runs off the runtime's threads in one call, creation lock included: if the
/// caller stops waiting, a write already under way still ends before the lock goes.
pub(crate) async fn open(
    service: &str,
    account: &str,
    create: bool,
    deadline: Deadline,
) -> Result<SecretKey, Error> {
    blocking(service, account, move |service, account| {
        if let Some(key) = load(service, account)? {
            return Ok(key);
        }
        if !create {
            return Err(problem(service, account, KeychainProblem::Missing));
        }
        // One creator at a time; the others read what it stored.
        let key = creating(service, account, deadline, || match load(service, account)? {
            Some(key) => Ok(key),
            None => {
                let key = SecretKey::generate();
                set(service, account, &key)?;
                info!(service, account, id = %key.public(), "generated a new endpoint key in the keychain");
                Ok(key)
            }
        })?;
        Ok(key)
    })
    .await
}

/// Runs `then` holding the lock that keeps creators of the entry in turn, waiting for it
/// until `deadline`.
fn creating<T>(
    service: &str,
    account: &str,
    deadline: Deadline,
    then: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let name = lock_name(service, account);
    match blocking_until(deadline, LOCK_RETRY, || host::try_lock(&name), || {})? {
        Waited::Done(_lock) => then(),
        Waited::TimedOut(waited) => Err(still_creating(service, account, waited)),
    }
}

/// Loads the key of the keychain entry `service`/`account`; never creates one.
///
/// For a tool that reports or moves a key (`iroh-identity keychain id`). To run an
/// endpoint with it, take an [`Identity`](crate::Identity) with
/// [`Builder::keychain`](crate::Builder::keychain). The call blocks on the store.
///
/// # Errors
///
/// - [`Error::Keychain`] with [`KeychainProblem::Missing`]: there is no such entry;
///   with another problem: the store cannot be reached, is locked or failed.
/// - [`Error::InvalidKeychainKey`]: the entry holds something that is not a key.
pub fn load_keychain_key(service: &str, account: &str) -> Result<SecretKey, Error> {
    load(service, account)?.ok_or_else(|| problem(service, account, KeychainProblem::Missing))
}

/// Stores `key` in a new keychain entry `service`/`account`, and reads it back to check
/// that the store keeps it: how a key file's identity moves into the secret store. It
/// holds the lock that keeps creators of the entry in turn, waiting for it
/// [`DEFAULT_LOCK_WAIT`](crate::DEFAULT_LOCK_WAIT) at most. The call blocks.
///
/// # Errors
///
/// - [`Error::KeychainEntryExists`]: the entry exists; it is left unchanged.
/// - [`Error::Keychain`]: the store cannot be reached, is locked or failed.
pub fn store_new_keychain_key(service: &str, account: &str, key: &SecretKey) -> Result<(), Error> {
    let deadline = Deadline::after(crate::DEFAULT_LOCK_WAIT);
    creating(service, account, deadline, || {
        if load(service, account)?.is_some() {
            return Err(Error::KeychainEntryExists {
                service: service.to_owned(),
                account: account.to_owned(),
            });
        }
        set(service, account, key)
    })?;
    info!(service, account, id = %key.public(), "stored an endpoint key in the keychain");
    Ok(())
}

/// Deletes the keychain entry `service`/`account`, and with it the identity it holds:
/// there is no way back. The call blocks.
///
/// # Errors
///
/// [`Error::Keychain`]: there is no such entry ([`KeychainProblem::Missing`]), or the
/// store cannot be reached, is locked or failed.
pub fn delete_keychain_entry(service: &str, account: &str) -> Result<(), Error> {
    // Not while an endpoint runs the identity: held here until the entry is gone.
    let _held = match load(service, account) {
        Ok(Some(key)) => {
            let id = key.public();
            match host::try_lock_identity(id)? {
                Some(lock) => Some(lock),
                None => {
                    return Err(problem(
                        service,
                        account,
                        KeychainProblem::Failed(format!(
                            "an endpoint runs its identity {id} now; close it first"
                        )),
                    ));
                }
            }
        }
        _ => None,
    };
    match entry(service, account)?.delete_credential() {
        Ok(()) => Ok(()),
        Err(keyring::Error::NoEntry) => Err(problem(service, account, KeychainProblem::Missing)),
        Err(err) => Err(store_error(service, account, err)),
    }
}

/// Runs a call to the store, which blocks, off the runtime's threads.
async fn blocking<T: Send + 'static>(
    service: &str,
    account: &str,
    call: impl FnOnce(&str, &str) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let (service, account) = (service.to_owned(), account.to_owned());
    let (task_service, task_account) = (service.clone(), account.clone());
    tokio::task::spawn_blocking(move || call(&task_service, &task_account))
        .await
        .map_err(|err| {
            problem(
                &service,
                &account,
                KeychainProblem::Failed(format!("the call to the store stopped: {err}")),
            )
        })?
}

/// The key in the entry, or `None` if there is no entry.
fn load(service: &str, account: &str) -> Result<Option<SecretKey>, Error> {
    let secret = match entry(service, account)?.get_secret() {
        Ok(secret) => Zeroizing::new(secret),
        Err(keyring::Error::NoEntry) => return Ok(None),
        Err(err) => return Err(store_error(service, account, err)),
    };
    let (key, format) = key::decode_key(&secret).map_err(|problem| Error::InvalidKeychainKey {
        service: service.to_owned(),
        account: account.to_owned(),
        problem,
    })?;
    debug!(service, account, id = %key.public(), %format, "loaded endpoint key from the keychain");
    Ok(Some(key))
}

/// Stores `key` in the entry and reads it back: what the store keeps must be the key.
fn set(service: &str, account: &str, key: &SecretKey) -> Result<(), Error> {
    let pem = key::encode_key(key, KeyFormat::Pkcs8Pem);
    entry(service, account)?
        .set_secret(&pem)
        .map_err(|err| store_error(service, account, err))?;
    match load(service, account)? {
        Some(stored) if stored.public() == key.public() => Ok(()),
        Some(_) => Err(problem(
            service,
            account,
            KeychainProblem::Failed(
                "another writer replaced the key while it was stored; the entry holds theirs"
                    .to_owned(),
            ),
        )),
        None => Err(problem(
            service,
            account,
            KeychainProblem::Failed("the store did not keep the key".to_owned()),
        )),
    }
}

fn entry(service: &str, account: &str) -> Result<keyring::Entry, Error> {
    keyring::Entry::new(service, account).map_err(|err| match err {
        // The store could not be set up; the reason is kept for the whole process.
        keyring::Error::NoDefaultStore => {
            let reason = match keyring::Entry::store_status() {
                Err(reason) => describe(reason),
                Ok(()) => "no default store".to_owned(),
            };
            problem(service, account, KeychainProblem::Unavailable(reason))
        }
        other => store_error(service, account, other),
    })
}

/// The error for a failure of the store. Never the store's error itself: some hold the
/// bytes of the secret.
fn store_error(service: &str, account: &str, err: keyring::Error) -> Error {
    let kind = match &err {
        keyring::Error::NoStorageAccess(_) => KeychainProblem::Locked(describe(&err)),
        keyring::Error::PlatformFailure(_) | keyring::Error::NoDefaultStore => {
            KeychainProblem::Unavailable(describe(&err))
        }
        _ => KeychainProblem::Failed(describe(&err)),
    };
    problem(service, account, kind)
}

/// A store error in words, without the secret bytes that some of them carry.
fn describe(err: &keyring::Error) -> String {
    match err {
        keyring::Error::PlatformFailure(inner) | keyring::Error::NoStorageAccess(inner) => {
            inner.to_string()
        }
        keyring::Error::BadEncoding(_) => "the stored secret is not text".to_owned(),
        keyring::Error::BadDataFormat(_, inner) => {
            format!("the stored secret is malformed: {inner}")
        }
        keyring::Error::Ambiguous(entries) => {
            format!("{} entries match", entries.len())
        }
        other => other.to_string(),
    }
}

fn problem(service: &str, account: &str, problem: KeychainProblem) -> Error {
    Error::Keychain {
        service: service.to_owned(),
        account: account.to_owned(),
        problem,
    }
}

/// The error when another process held the creation lock for all of the wait: its store
/// is slow, or waits for the user to unlock it.
fn still_creating(service: &str, account: &str, waited: std::time::Duration) -> Error {
    let reason = format!("another process has been creating the entry for {waited:?}");
    problem(service, account, KeychainProblem::Failed(reason))
}

/// The name of the lock file that keeps creators of an entry in turn.
fn lock_name(service: &str, account: &str) -> String {
    format!("keychain-{:016x}.lock", fnv1a(service, account))
}

/// A stable 64-bit hash of an entry's name (FNV-1a).
fn fnv1a(service: &str, account: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in service.bytes().chain([0]).chain(account.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
