//! Who may run an identity right now: one live endpoint per identity.
//!
//! Two endpoints with the same key do not fail in iroh: their connections silently split
//! between them. A guard turns that into a clear error at start-up, and holds until the
//! endpoint closes: the lock on the key file, and the host lock on the identity
//! ([`host`]), both OS locks on a file ([`lock`]); and across machines, a lease
//! ([`lease`]) when one is asked for.

pub(crate) mod host;
pub(crate) mod lease;
pub(crate) mod lock;

use std::{fs::File, path::Path};

use iroh::{Endpoint, EndpointId};
use tracing::{debug, warn};

use self::lock::FileLock;
use crate::{Error, wait::Deadline};

/// What keeps a second endpoint from running an identity while this process holds it.
#[derive(Debug)]
pub(crate) struct Guard {
    /// The locks held: the key file's, if there is a file, and the host lock.
    locks: Vec<FileLock>,
    /// The lease held across machines, if one was asked for.
    lease: Option<Box<dyn lease::Held>>,
}

impl Guard {
    /// Takes the identity `id`, waiting until `deadline` for another holder: the lock on
    /// `key_file` (the open key file and its path) when the key came from one, then the
    /// host lock.
    ///
    /// When the host lock cannot be taken at all (its directory is not a private one of
    /// this user's), a key file's own lock still keeps its readers apart: that is a
    /// warning. A key from anywhere else has no other guard: that is the error.
    ///
    /// Then the `lease`, if there is one: taken last, so that a standby waits for it with
    /// its host's locks already held, and is the first to bind when the lease comes free.
    pub(crate) async fn take(
        id: EndpointId,
        key_file: Option<(File, &Path)>,
        lease: Option<&dyn lease::Lease>,
        deadline: Deadline,
    ) -> Result<Self, Error> {
        let mut locks = Vec::with_capacity(2);
        let has_file = key_file.is_some();
        if let Some((file, path)) = key_file {
            locks.push(FileLock::acquire(file, path, deadline, Some(id)).await?);
        }
        match host::lock_identity(id, deadline).await {
            Ok(lock) => locks.push(lock),
            Err(err @ Error::InUse { .. }) => return Err(err),
            Err(err) if has_file => warn!(
                %id,
                %err,
                "cannot take the host lock of the identity; only its key file is locked"
            ),
            Err(err) => return Err(err),
        }
        let lease = match lease {
            Some(lease) => Some(lease.acquire(id, deadline).await?),
            None => None,
        };
        Ok(Self { locks, lease })
    }

    /// Whether the guard still holds: a lease may have been lost before the bind.
    pub(crate) fn check(&self) -> Result<(), Error> {
        self.lease.as_ref().map_or(Ok(()), |lease| lease.check())
    }

    /// Keeps the guard until `endpoint` closes: until [`Endpoint::close`] is called on
    /// any clone of it, or the last clone is dropped (with a lease, whose keeper holds a
    /// clone to close it on a loss, only a close). Released as soon as closing starts:
    /// a closing endpoint accepts no new connections, and a restart need not wait for old
    /// connections to drain.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like everything in iroh.
    pub(crate) fn hold_until_closed(self, endpoint: &Endpoint) {
        if let Some(lease) = self.lease {
            lease.hold_until_closed(endpoint);
        }
        let locks = self.locks;
        // `closed()` holds no clone of the endpoint, so this task does not keep it alive.
        let closed = endpoint.closed();
        tokio::spawn(async move {
            closed.await;
            debug!(?locks, "endpoint closed; identity released");
            drop(locks);
        });
    }
}
