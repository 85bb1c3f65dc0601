//! A key in the OS secret store, through the `keyring` crate: the Secret Service (over
//! D-Bus) on Linux and other unixes, the Keychain on macOS, the Credential Manager on
//! Windows.
//!
//! An entry is named by a service and an account. Its secret is the key as a key file holds
//! it, PKCS#8 v2 PEM: text, which every store keeps byte for byte, and with the public key
//! beside the secret one, so that a damaged entry is detected instead of becoming another
//! identity. An entry that exists but does not decode is an error that names it, and is
//! never replaced. A store that is missing, locked or refuses access is an error too, never
//! a silent new key.
//!
//! The stores have no "create if absent", so creation is serialised with a lock file of
//! this user's for the entry ([`crate::fs::lock`], in a directory only the user can write:
//! the entry's name is no secret): the first creator stores a key; the others, once they
//! hold the lock, read it back.
//!
//! Every call into a store is waited for until the open's deadline at most (the key tool's,
//! [`DEFAULT_LOCK_WAIT`](crate::DEFAULT_LOCK_WAIT)): a daemon that is stopped, a prompt
//! nobody answers or a bus that vanished is an error then, never a hang.

#[cfg(feature = "keyring")]
mod entry;
pub(crate) mod problem;

#[cfg(feature = "keyring")]
pub(crate) use self::entry::{delete, entry_error, load, no_answer, open, store_new};
pub use self::problem::KeychainProblem;
