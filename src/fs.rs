//! The file system, safely: the mechanics that the key's store and the guard share, none
//! of which follows a path that someone could redirect meanwhile.
//!
//! - [`walk`]: a key's path walked from `/` through descriptors, every directory, link
//!   and the key judged by the rules of [`crate::trust`] before anything is read or
//!   created.
//! - [`dirs`]: missing directories made private (`0700`) through the descriptor of the
//!   one above, and the user's private directories of lock files.
//! - [`temp`]: temporary files, written and synced, then published under their name
//!   without replacing anything (or replacing only what was there), and cleaned up after
//!   runs that were killed.
//! - [`lock`]: lock files in the user's private directory, removed by their holder.
//!
//! What a file descriptor can do on this platform is [`crate::sys`]'s.

pub(crate) mod dirs;
// On Linux only the keychain's creation lock is a lock file.
#[cfg_attr(
    all(
        any(target_os = "linux", target_os = "android"),
        not(feature = "keyring")
    ),
    allow(dead_code)
)]
pub(crate) mod lock;
pub(crate) mod temp;
pub(crate) mod walk;
