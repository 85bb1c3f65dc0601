//! Who may run an identity right now: one live endpoint per identity.
//!
//! Two endpoints with the same key do not fail in iroh: their connections silently split
//! between them. A guard turns that into a clear error at start-up, and holds until the
//! endpoint closes. Today the guard is the lock on the key file ([`lock`]).

pub(crate) mod lock;

use iroh::Endpoint;

use self::lock::FileLock;

/// What keeps a second endpoint from running an identity while this process holds it.
#[derive(Debug)]
pub(crate) struct Guard {
    /// The key file's lock; none for a key from the environment, which has no file.
    lock: Option<FileLock>,
}

impl Guard {
    /// A guard that holds the key file's lock.
    pub(crate) fn file(lock: FileLock) -> Self {
        Self { lock: Some(lock) }
    }

    /// No guard: nothing to lock.
    pub(crate) fn none() -> Self {
        Self { lock: None }
    }

    /// Keeps the guard until `endpoint` closes: until [`Endpoint::close`] is called on
    /// any clone of it, or the last clone is dropped. Released as soon as closing starts:
    /// a closing endpoint accepts no new connections, and a restart need not wait for old
    /// connections to drain.
    pub(crate) fn hold_until_closed(self, endpoint: &Endpoint) {
        if let Some(lock) = self.lock {
            lock.hold_until_closed(endpoint);
        }
    }
}
