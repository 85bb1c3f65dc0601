//! The entries of the secret store, through the `keyring` crate (feature `keyring`).

use std::time::Duration;

use iroh::SecretKey;
use tracing::{debug, info};
use zeroize::Zeroizing;

use super::KeychainProblem;
use crate::{
    error::Error,
    fs::lock,
    key::{self, KeyFormat},
    wait::{self, Deadline, Waited},
};

/// How often the creation lock is tried again while another creator holds it.
const LOCK_RETRY: Duration = Duration::from_millis(20);

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
    // The thread's sender dropped without an answer: it panicked.
    let stopped = |_| {
        let reason = "the call to the store stopped".to_owned();
        entry_error(&service, &account, KeychainProblem::Failed(reason))
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
        return Err(entry_error(service, account, KeychainProblem::Missing));
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

/// Runs `then` holding the lock that keeps creators of the entry in turn, waiting for it
/// until `deadline`.
fn creating<T>(
    service: &str,
    account: &str,
    deadline: Deadline,
    then: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let name = [service.as_bytes(), &[0], account.as_bytes()].concat();
    let tag = blake3::derive_key("iroh-identity 2026-12-03 keychain entry", &name);
    let name = format!(
        "keychain-{}.lock",
        data_encoding::HEXLOWER.encode(&tag[..16])
    )
    .into();
    match wait::blocking_until(deadline, LOCK_RETRY, || lock::try_lock(&name), || {})? {
        Waited::Done(_lock) => then(),
        Waited::TimedOut(waited) => Err(entry_error(
            service,
            account,
            KeychainProblem::StillCreating { waited },
        )),
    }
}

/// Stores `key` in the new entry `service`/`account`, under the creation lock, waiting for
/// it until `deadline`: [`Error::KeychainEntryExists`] when there is one.
pub(crate) fn store_new(
    service: &str,
    account: &str,
    key: &SecretKey,
    deadline: Deadline,
) -> Result<(), Error> {
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
        set(service, account, key)
    })?;
    info!(service, account, id = %key.public(), "stored an endpoint key in the keychain");
    Ok(())
}

/// Deletes the entry `service`/`account`.
pub(crate) fn delete(service: &str, account: &str) -> Result<(), Error> {
    match entry(service, account)?.delete_credential() {
        Ok(()) => Ok(()),
        Err(keyring::Error::NoEntry) => {
            Err(entry_error(service, account, KeychainProblem::Missing))
        }
        Err(err) => Err(store_error(service, account, err)),
    }
}

/// The key in the entry, or `None` if there is no entry.
pub(crate) fn load(service: &str, account: &str) -> Result<Option<SecretKey>, Error> {
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
        Some(_) => Err(entry_error(service, account, KeychainProblem::Replaced)),
        None => Err(entry_error(service, account, KeychainProblem::NotKept)),
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
            entry_error(service, account, KeychainProblem::Unavailable(reason))
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
    entry_error(service, account, kind)
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

pub(crate) fn entry_error(service: &str, account: &str, problem: KeychainProblem) -> Error {
    Error::Keychain {
        service: service.to_owned(),
        account: account.to_owned(),
        problem,
    }
}

/// The error when the store did not answer by the deadline.
pub(crate) fn no_answer(service: &str, account: &str) -> Error {
    entry_error(service, account, KeychainProblem::NoAnswer)
}
