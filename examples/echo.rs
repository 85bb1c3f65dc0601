//! A persistent echo server, and a client for it.
//!
//! ```text
//! cargo run --example echo -- serve KEY_PATH
//! cargo run --example echo -- connect TICKET MESSAGE
//! ```
//!
//! `serve` prints its endpoint id and a ticket, and echoes until Ctrl-C. Restart it with
//! the same KEY_PATH and it prints the same id and, when its port was still free, the
//! same ticket: `PersistentEndpoint::open` binds the ports it had last time, so a ticket
//! handed out before the restart still reaches it, with no relay needed. `connect`
//! sends MESSAGE to the ticket's endpoint and prints the reply.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use iroh::{
    Endpoint, EndpointAddr,
    endpoint::{Connection, presets},
    protocol::{AcceptError, ProtocolHandler, Router},
};
use iroh_identity::PersistentEndpoint;
use iroh_tickets::endpoint::EndpointTicket;

const ALPN: &[u8] = b"iroh-identity/echo/0";
const USAGE: &str = "usage: echo serve KEY_PATH | echo connect TICKET MESSAGE";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [command, path] if command == "serve" => serve(PathBuf::from(path)).await,
        [command, ticket, message] if command == "connect" => connect(ticket, message).await,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    // The same id and, with stable addressing, the same ports as the last run.
    let endpoint = PersistentEndpoint::open(&path).await?;
    // The endpoint goes to the router as it is: it is a plain `iroh::Endpoint`, and the
    // identity stays locked while the router's clone of it is open.
    let router = Router::builder(endpoint).accept(ALPN, Echo).spawn();
    let endpoint = router.endpoint();
    let ticket = EndpointTicket::new(with_loopback(endpoint.addr(), &endpoint.bound_sockets()));
    println!("endpoint id: {}", endpoint.id());
    println!("ticket: {ticket}");
    tokio::signal::ctrl_c().await?;
    // Closes the endpoint gracefully, which releases the identity.
    router.shutdown().await?;
    Ok(())
}

/// Adds loopback addresses for sockets bound to all interfaces, so that the ticket also
/// works on this machine when it has no network at all.
fn with_loopback(mut addr: EndpointAddr, bound: &[SocketAddr]) -> EndpointAddr {
    for socket in bound.iter().filter(|socket| socket.ip().is_unspecified()) {
        let loopback = match socket {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        addr = addr.with_ip_addr(SocketAddr::new(loopback, socket.port()));
    }
    addr
}

async fn connect(ticket: &str, message: &str) -> anyhow::Result<()> {
    let ticket: EndpointTicket = ticket.parse().context("invalid ticket")?;
    // The client needs no persistent identity.
    let endpoint = Endpoint::bind(presets::N0).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        let connection = endpoint
            .connect(ticket.endpoint_addr().clone(), ALPN)
            .await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(message.as_bytes()).await?;
        send.finish()?;
        let reply = recv.read_to_end(64 * 1024).await?;
        connection.close(0u32.into(), b"done");
        anyhow::Ok(reply)
    })
    .await
    .context("no answer from the server within 10 s")?;
    endpoint.close().await;
    println!(
        "{}",
        String::from_utf8(reply?).context("the reply is not UTF-8")?
    );
    Ok(())
}

/// Sends back whatever a peer sends on one stream.
#[derive(Debug, Clone)]
struct Echo;

impl ProtocolHandler for Echo {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        let (mut send, mut recv) = connection.accept_bi().await?;
        let message = recv
            .read_to_end(64 * 1024)
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
