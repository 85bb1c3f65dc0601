//! Who may run an identity across machines: a lease that one holder has at a time, in a
//! store every machine reaches. The host's locks cannot see another machine; a lease can.
//!
//! A lease is a second kind of guard, beside the locks. It is taken after them, kept alive
//! in the background, released when the endpoint closes, and when it may have been lost
//! the holder closes its endpoint itself (self-fencing) before anyone else can take it.
//! Only etcd is built ([`etcd`], feature `etcd`); another store (a Kubernetes `Lease`,
//! Consul, a database lock) is one more implementation of [`Lease`].

#[cfg(feature = "etcd")]
pub(crate) mod etcd;
pub(crate) mod problem;

use std::{fmt, future::Future, pin::Pin};

use iroh::{Endpoint, EndpointId};

use crate::{error::Error, wait::Deadline};

/// A future of a lease's, boxed so that the trait can be a trait object.
pub(crate) type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store of leases, one per identity.
pub(crate) trait Lease: fmt::Debug + Send + Sync {
    /// Takes the lease of `id`, waiting for another holder to let it go until
    /// `deadline`, and keeps it alive until it is released or lost.
    fn acquire(
        &self,
        id: EndpointId,
        deadline: Deadline,
    ) -> Pending<'_, Result<Box<dyn Held>, Error>>;
}

/// A lease this process holds. Dropped before it was given an endpoint, it is released.
pub(crate) trait Held: fmt::Debug + Send + Sync {
    /// The error that says why, if the lease was lost already.
    fn check(&self) -> Result<(), Error>;

    /// Hands the lease over to `endpoint`: released when it closes; when the lease may
    /// have been lost, the endpoint is closed.
    fn hold_until_closed(self: Box<Self>, endpoint: &Endpoint);
}
