//! The one-line way in: [`PersistentEndpoint::open`], an [`Identity`]'s builder with every
//! option at its default, bound.

use std::path::Path;

use iroh::Endpoint;

use crate::{error::Error, identity::Identity};

/// Opens iroh endpoints whose identity survives restarts. It is never a value: it names
/// [`open`](Self::open), the one call most programs need.
///
/// It gives back a plain [`iroh::Endpoint`], usable wherever one is (a
/// [`Router`](iroh::protocol::Router), your own protocols), at no cost: there is no
/// wrapper to unwrap. Close it as any endpoint, with [`Endpoint::close`]; that also
/// releases the identity for the next open. For every option, see [`Identity::builder`].
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// let endpoint = iroh_identity::PersistentEndpoint::open("endpoint.key").await?;
/// println!("{}", endpoint.id()); // the same on every run
/// endpoint.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub enum PersistentEndpoint {}

impl PersistentEndpoint {
    /// Binds an endpoint with the key stored at `path`, generating and storing one on
    /// first use, with iroh's [`N0`](iroh::endpoint::presets::N0) preset and every other
    /// option at its default: the same as `Identity::builder(path).bind()`.
    ///
    /// # Errors
    ///
    /// See [`Builder::open`](crate::Builder::open) and
    /// [`Builder::bind`](crate::Builder::bind).
    pub async fn open(path: impl AsRef<Path>) -> Result<Endpoint, Error> {
        Identity::builder(path.as_ref()).bind().await
    }
}
