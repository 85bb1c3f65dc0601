//! A persistent echo server, and a client for it.
//!
//! ```text
//! cargo run --example echo -- serve KEY_PATH
//! cargo run --example echo -- connect TICKET MESSAGE
//! ```
//!
//! `serve` prints its endpoint id and a ticket, and echoes until Ctrl-C or SIGTERM
//! (`systemctl stop`, `docker stop`), then closes gracefully. Restart it with the same
//! KEY_PATH and it prints the same id and, when its port was still free, the same
//! ticket: `Builder::bind` binds the ports it had last time, so a ticket handed
//! out before the restart still reaches it, with no relay needed. `connect` sends
//! MESSAGE to the ticket's endpoint and prints the reply.
//!
//! With `--features etcd`, `serve KEY_PATH --etcd URL[,URL...] [--lease-ttl SECONDS]`
//! runs the identity on one machine at a time: a second server with a copy of the key
//! prints `waiting for the identity lease: ...` and takes over when the first stops, or
//! within the TTL when it dies. A server that loses the lease exits with an error. A
//! production etcd takes etcdctl's flags: `--etcd-cacert FILE` (`https://` URLs),
//! `--etcd-cert FILE --etcd-key FILE` (a client certificate), `--etcd-user USER` with the
//! password in `ETCD_PASSWORD` (never on the command line, where `ps` shows it).

mod protocol;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use iroh::{Endpoint, EndpointAddr, endpoint::presets, protocol::Router};
use iroh_identity::Identity;
use iroh_tickets::endpoint::EndpointTicket;

use self::protocol::{ALPN, Echo};

const USAGE: &str = "usage: echo serve KEY_PATH [--etcd URL[,URL...] [--lease-ttl SECONDS] \
                     [--etcd-cacert FILE] [--etcd-cert FILE --etcd-key FILE] \
                     [--etcd-user USER (password in ETCD_PASSWORD)]] | echo connect TICKET MESSAGE";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [command, path, options @ ..] if command == "serve" => match Lease::parse(options) {
            Some(lease) => serve(PathBuf::from(path), lease).await,
            None => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
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

/// Where the identity's lease is kept, if anywhere, and how to reach it: etcdctl's flags.
#[derive(Default)]
struct Lease {
    etcd: Option<String>,
    ttl: Option<Duration>,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    user: Option<String>,
}

impl Lease {
    fn parse(options: &[String]) -> Option<Self> {
        let mut lease = Self::default();
        for pair in options.chunks(2) {
            let [flag, value] = pair else { return None };
            match flag.as_str() {
                "--etcd" => lease.etcd = Some(value.clone()),
                "--lease-ttl" => lease.ttl = Some(Duration::from_secs(value.parse().ok()?)),
                "--etcd-cacert" => lease.cacert = Some(value.into()),
                "--etcd-cert" => lease.cert = Some(value.into()),
                "--etcd-key" => lease.key = Some(value.into()),
                "--etcd-user" => lease.user = Some(value.clone()),
                _ => return None,
            }
        }
        let any_option = lease.ttl.is_some()
            || lease.cacert.is_some()
            || lease.cert.is_some()
            || lease.key.is_some()
            || lease.user.is_some();
        let pair = lease.cert.is_some() == lease.key.is_some();
        ((lease.etcd.is_some() || !any_option) && pair).then_some(lease)
    }

    /// The lease the flags describe.
    #[cfg(feature = "etcd")]
    fn etcd(&self, urls: &str) -> anyhow::Result<iroh_identity::EtcdLease> {
        use iroh_identity::etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut options = ConnectOptions::new();
        if let Some(ca) = &self.cacert {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.user {
            let password = std::env::var("ETCD_PASSWORD")
                .context("--etcd-user needs the password in ETCD_PASSWORD")?;
            options = options.with_user(user, password);
        }
        let mut lease = iroh_identity::EtcdLease::new(urls.split(','))
            .connect_options(options)
            .on_wait(|why| eprintln!("waiting for the identity lease: {why}"));
        if let Some(ttl) = self.ttl {
            lease = lease.ttl(ttl);
        }
        Ok(lease)
    }
}

async fn serve(path: PathBuf, lease: Lease) -> anyhow::Result<()> {
    // Ctrl-C and SIGTERM are handled from the start: a stop while the lease is being
    // taken lets it go, instead of leaving it to expire.
    let stop = stopped()?;
    let builder = Identity::builder(&path);
    let Some(urls) = &lease.etcd else {
        // The same id and, with stable addressing, the same ports as the last run.
        return run(builder.bind().await?, stop, std::future::pending()).await;
    };
    #[cfg(feature = "etcd")]
    {
        let etcd = lease.etcd(urls)?;
        // A standby waits for as long as it takes.
        let builder = builder.lease(etcd.clone()).lock_wait(Duration::MAX);
        let mut stop = std::pin::pin!(stop);
        let endpoint = tokio::select! {
            bound = builder.bind() => bound?,
            stopped = &mut stop => {
                // Whatever was taken is let go of when the open is dropped.
                etcd.released().await;
                return stopped;
            }
        };
        let lost = etcd.clone();
        let result = run(endpoint, stop, async move { Err(lost.lost().await.into()) }).await;
        // The lease is let go of in the background once the endpoint is closed: wait for
        // it, so that a standby takes over now rather than after the TTL.
        etcd.released().await;
        result
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (builder, urls, stop);
        anyhow::bail!("--etcd needs the example built with `--features etcd`")
    }
}

/// Serves echo until `stop`, or until `lost` (the identity's lease) ends it with an
/// error.
async fn run(
    endpoint: Endpoint,
    stop: impl std::future::Future<Output = anyhow::Result<()>>,
    lost: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // The endpoint goes to the router as it is: it is a plain `iroh::Endpoint`, and the
    // identity stays locked while the router's clone of it is open.
    let router = Router::builder(endpoint).accept(ALPN, Echo).spawn();
    let endpoint = router.endpoint();
    let ticket = EndpointTicket::new(with_loopback(endpoint.addr(), &endpoint.bound_sockets()));
    println!("endpoint id: {}", endpoint.id());
    println!("ticket: {ticket}");
    tokio::select! {
        stop = stop => stop?,
        // The endpoint is closed already.
        lost = lost => return lost,
    }
    // Closes the endpoint gracefully, which releases the identity.
    router.shutdown().await?;
    Ok(())
}

/// Handles Ctrl-C and SIGTERM (how `systemctl stop` and `docker stop` ask) from now on;
/// the future ends when one comes.
fn stopped() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};

        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            Ok(())
        })
    }
    #[cfg(not(unix))]
    Ok(async { Ok(tokio::signal::ctrl_c().await?) })
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
    let limit = Duration::from_secs(10);
    let result = protocol::echo(&endpoint, ticket.endpoint_addr(), message.as_bytes(), limit)
        .await
        .context("no answer from the server");
    endpoint.close().await;
    result?;
    // The echo is the message, checked.
    println!("{message}");
    Ok(())
}
