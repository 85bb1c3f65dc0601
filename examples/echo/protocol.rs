//! The echo protocol: a server that sends back what a peer sends on one stream, and the
//! client side. The `echo` example and the crate's tests share it.

use std::time::{Duration, Instant};

use iroh::{
    Endpoint, EndpointAddr,
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler},
};

/// The protocol's ALPN.
pub(crate) const ALPN: &[u8] = b"iroh-identity/echo/0";

/// The longest message, in bytes.
const MAX_MESSAGE: usize = 64 * 1024;

/// Sends back whatever a peer sends on one stream.
#[derive(Debug, Clone)]
pub(crate) struct Echo;

impl ProtocolHandler for Echo {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        let (mut send, mut recv) = connection.accept_bi().await?;
        let message = recv
            .read_to_end(MAX_MESSAGE)
            .await
            .map_err(AcceptError::from_err)?;
        send.write_all(&message)
            .await
            .map_err(AcceptError::from_err)?;
        send.finish()?;
        connection.closed().await;
        Ok(())
    }
}

/// `client` dials `addr`, sends `message` and waits for it to come back, within `limit`.
/// Returns the time from dialling to the echo.
pub(crate) async fn echo(
    client: &Endpoint,
    addr: &EndpointAddr,
    message: &[u8],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let reply = tokio::time::timeout(limit, async {
        let connection = client.connect(addr.clone(), ALPN).await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(message).await?;
        send.finish()?;
        let reply = recv.read_to_end(MAX_MESSAGE).await?;
        connection.close(0u32.into(), b"done");
        anyhow::Ok(reply)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no echo within {limit:?}"))??;
    anyhow::ensure!(reply == message, "the echo differs from the message");
    Ok(start.elapsed())
}
