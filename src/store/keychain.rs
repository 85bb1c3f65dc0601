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
//! The stores have no "create if absent", so creation is serialised with a host lock of
//! this user's for the entry ([`guard::host`](crate::guard::host)): the first creator
//! stores a key; the others, once they hold the lock, read it back.
//!
//! Every call into a store is waited for until the open's deadline at most (the key
//! tool's, [`DEFAULT_LOCK_WAIT`]): a daemon that is stopped, a prompt nobody answers or a
//! bus that vanished is an error then, never a hang.

use std::time::Duration;

use iroh::SecretKey;
use tracing::{debug, info};
use zeroize::Zeroizing;

use crate::{
    DEFAULT_LOCK_WAIT, Error, KeyFormat, KeychainProblem, guard::host, key, wait::Deadline,
};

/// The least time a store is given to answer, whatever the lock wait: an open that should
/// not wait for another endpoint (a lock wait of zero) still lets the store answer once.
const MIN_STORE_WAIT: Duration = Duration::from_secs(1);

/// Loads the key of the entry `service`/`account`, or generates and stores one when
/// there is none and `create` says so, waiting for a racing creator until `deadline`.
///
/// All of it runs off the runtime's threads in one call, creation lock included, and is
/// waited for until `deadline` at most ([`MIN_STORE_WAIT`] at least): a store that does
/// not answer (a stopped daemon, an unlock prompt nobody answers) is an error then. No
/// write is started after that; one the store is still carrying out then holds the lock
/// until it ends.
pub(crate) async fn open(
    service: &str,
    account: &str,
    create: bool,
    deadline: Deadline,
) -> Result<SecretKey, Error> {
    let lock_deadline = deadline;
    let deadline = deadline.at_least(MIN_STORE_WAIT);
    let (service, account) = (service.to_owned(), account.to_owned());
    let (task_service, task_account) = (service.clone(), account.clone());
    // A thread of its own, not the runtime's blocking pool: a call that never returns
    // must not hold up the runtime's shutdown, and with it the program's exit.
    let (sender, call) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let (service, account) = (task_service.as_str(), task_account.as_str());
        let _ = sender.send(load_or_create(
            service,
            account,
            create,
            lock_deadline,
            deadline,
        ));
    });
    let stopped = |_| {
        let reason = "the call to the store stopped".to_owned();
        problem(&service, &account, KeychainProblem::Failed(reason))
    };
    match deadline.left() {
        None => call.await.map_err(stopped)?,
        Some(left) => match tokio::time::timeout(left, call).await {
            Ok(result) => result.map_err(stopped)?,
            Err(_) => Err(no_answer(&service, &account)),
        },
    }
}

/// What [`open`] does on its thread.
fn load_or_create(
    service: &str,
    account: &str,
    create: bool,
    lock_deadline: Deadline,
    deadline: Deadline,
) -> Result<SecretKey, Error> {
    if let Some(key) = load(service, account)? {
        return Ok(key);
    }
    if !create {
        return Err(problem(service, account, KeychainProblem::Missing));
    }
    // One creator at a time; the others read what it stored.
    creating(service, account, lock_deadline, || {
        match load(service, account)? {
            Some(key) => Ok(key),
            None => {
                if deadline.left() == Some(Duration::ZERO) {
                    return Err(no_answer(service, account));
                }
                let key = SecretKey::generate();
                set(service, account, &key)?;
                info!(service, account, id = %key.public(), "generated a new endpoint key in the keychain");
                Ok(key)
            }
        }
    })
}

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
        .unwrap_or_else(|_| Err(no_answer(service, account)))
}

/// Runs `then` holding the lock that keeps creators of the entry in turn, waiting for it
/// until `deadline`.
fn creating<T>(
    service: &str,
    account: &str,
    deadline: Deadline,
    then: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let start = std::time::Instant::now();
    match host::lock_keychain_entry(service, account, deadline)? {
        Some(_lock) => then(),
        None => Err(still_creating(service, account, start.elapsed())),
    }
}

/// Loads the key of the keychain entry `service`/`account`; never creates one.
///
/// For a tool that reports or moves a key (`iroh-identity keychain id`). To run an
/// endpoint with it, take an [`Identity`](crate::Identity) with
/// [`Builder::keychain`](crate::Builder::keychain). The call blocks on the store,
/// [`DEFAULT_LOCK_WAIT`] at most.
///
/// # Errors
///
/// - [`Error::Keychain`] with [`KeychainProblem::Missing`]: there is no such entry;
///   with another problem: the store cannot be reached, is locked, failed or did not
///   answer in time.
/// - [`Error::InvalidKeychainKey`]: the entry holds something that is not a key.
pub fn load_keychain_key(service: &str, account: &str) -> Result<SecretKey, Error> {
    bounded(service, account, |service, account, _| {
        load(service, account)?.ok_or_else(|| problem(service, account, KeychainProblem::Missing))
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
pub fn store_new_keychain_key(service: &str, account: &str, key: &SecretKey) -> Result<(), Error> {
    let key = key.clone();
    bounded(service, account, move |service, account, deadline| {
        creating(service, account, deadline, || {
            if load(service, account)?.is_some() {
                return Err(Error::KeychainEntryExists {
                    service: service.to_owned(),
                    account: account.to_owned(),
                });
            }
            if deadline.left() == Some(Duration::ZERO) {
                return Err(no_answer(service, account));
            }
            set(service, account, &key)
        })?;
        info!(service, account, id = %key.public(), "stored an endpoint key in the keychain");
        Ok(())
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
pub fn delete_keychain_entry(service: &str, account: &str) -> Result<(), Error> {
    bounded(service, account, |service, account, _| {
        // Not while an endpoint runs the identity: held here until the entry is gone.
        let _held = match load(service, account) {
            Ok(Some(key)) => match host::try_lock_identity(&key)? {
                Some(lock) => Some(lock),
                None => {
                    return Err(problem(
                        service,
                        account,
                        KeychainProblem::Failed(format!(
                            "an endpoint runs its identity {} now; close it first",
                            key.public()
                        )),
                    ));
                }
            },
            _ => None,
        };
        match entry(service, account)?.delete_credential() {
            Ok(()) => Ok(()),
            Err(keyring::Error::NoEntry) => {
                Err(problem(service, account, KeychainProblem::Missing))
            }
            Err(err) => Err(store_error(service, account, err)),
        }
    })
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

/// The error when the store did not answer by the deadline.
fn no_answer(service: &str, account: &str) -> Error {
    problem(service, account, KeychainProblem::NoAnswer)
}
