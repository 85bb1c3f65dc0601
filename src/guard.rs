//! Who may run an identity right now: one live endpoint per identity.
//!
//! Two endpoints with the same key do not fail in iroh: their connections silently split
//! between them. A guard turns that into a clear error at start-up, and holds until the
//! endpoint closes: the host lock on the identity ([`host`]), whatever its key came from;
//! and across machines, a lease ([`lease`]) when one is asked for.

pub(crate) mod host;
pub(crate) mod lease;

use iroh::{Endpoint, SecretKey};
use tracing::debug;

use self::host::HostLock;
use crate::{error::Error, wait::Deadline};

/// What keeps a second endpoint from running an identity while this process holds it.
#[derive(Debug)]
pub(crate) struct Guard {
    host: HostLock,
    /// The lease held across machines, if one was asked for.
    lease: Option<Box<dyn lease::Held>>,
}

impl Guard {
    /// Takes the identity of `key`, waiting until `deadline` for another holder: the host
    /// lock, then the `lease` if there is one. The lease is taken last, so that a standby
    /// waits for it with its host's lock already held, and is the first to bind when the
    /// lease comes free.
    pub(crate) async fn take(
        key: &SecretKey,
        lease: Option<&dyn lease::Lease>,
        deadline: Deadline,
    ) -> Result<Self, Error> {
        let host = host::lock_identity(key, deadline).await?;
        let lease = match lease {
            Some(lease) => Some(lease.acquire(key.public(), deadline).await?),
            None => None,
        };
        Ok(Self { host, lease })
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
        let host = self.host;
        // `closed()` holds no clone of the endpoint, so this task does not keep it alive.
        let closed = endpoint.closed();
        tokio::spawn(async move {
            closed.await;
            debug!(?host, "endpoint closed; identity released");
            drop(host);
        });
    }
}
