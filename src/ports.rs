//! Stable addressing: the UDP ports of an endpoint, remembered in a file beside its key
//! and bound again on the next open, so that the direct addresses in the tickets it
//! handed out still reach it after a restart.
//!
//! The ports file is a convenience, never a reason to fail: when it is missing, damaged
//! or cannot be written, or a port is taken, the endpoint binds fresh ports and says so
//! in the log. It is written only while the identity lock is held, so by one process at
//! a time, and like a key: to a temporary file, synced, renamed over the old one, and
//! the directory synced. A crash leaves the old ports or the new ones.

use std::{
    ffi::OsString,
    fmt, fs,
    io::{self, Read},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iroh::{
    Endpoint,
    endpoint::{self, BindOpts},
};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use crate::{
    Error, sys,
    temp_file::{self, TempFile},
};

/// What is appended to the key file's name to name its ports file.
pub(crate) const PORTS_FILE_SUFFIX: &str = ".ports";

/// The longest wait for a remembered port that another socket still holds.
///
/// What holds it is nearly always the previous endpoint of this identity, closing: its
/// sockets live until its process exits or its last clone is dropped, a few milliseconds
/// after the lock is released. A port held longer than this is someone else's.
pub(crate) const PORT_WAIT: Duration = Duration::from_secs(1);

/// How often a busy port is tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// The largest ports file that is read; this crate writes under 200 bytes.
const MAX_PORTS_FILE_LEN: u64 = 1024;

/// The sockets iroh binds on all interfaces by default, one per IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    const ALL: [Self; 2] = [Self::Ipv4, Self::Ipv6];

    fn of(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(_) => Self::Ipv4,
            SocketAddr::V6(_) => Self::Ipv6,
        }
    }

    /// The address that means all interfaces, with `port`.
    fn all_interfaces(self, port: u16) -> SocketAddr {
        match self {
            Self::Ipv4 => (Ipv4Addr::UNSPECIFIED, port).into(),
            Self::Ipv6 => (Ipv6Addr::UNSPECIFIED, port).into(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        })
    }
}

/// A port for each family, where there is one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ports {
    ipv4: Option<u16>,
    ipv6: Option<u16>,
}

impl Ports {
    fn get(&self, family: Family) -> Option<u16> {
        match family {
            Family::Ipv4 => self.ipv4,
            Family::Ipv6 => self.ipv6,
        }
    }

    fn set(&mut self, family: Family, port: u16) {
        match family {
            Family::Ipv4 => self.ipv4 = Some(port),
            Family::Ipv6 => self.ipv6 = Some(port),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The ports of the sockets an endpoint has on all interfaces; sockets bound to one
    /// address only are not this crate's to remember.
    fn bound(endpoint: &Endpoint) -> Self {
        let mut ports = Self::default();
        for socket in endpoint.bound_sockets() {
            if socket.ip().is_unspecified() {
                ports.set(Family::of(&socket), socket.port());
            }
        }
        ports
    }

    /// Reads the contents of a ports file: `ipv4 PORT` and `ipv6 PORT` lines, and `#`
    /// comments. `None` if it is anything else.
    fn parse(text: &str) -> Option<Self> {
        let mut ports = Self::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (family, port) = line.split_once(' ')?;
            let family = match family {
                "ipv4" => Family::Ipv4,
                "ipv6" => Family::Ipv6,
                _ => return None,
            };
            let port: u16 = port.trim().parse().ok().filter(|&port| port != 0)?;
            if ports.get(family).is_some() {
                return None;
            }
            ports.set(family, port);
        }
        Some(ports)
    }

    fn render(&self) -> String {
        let mut text = String::from(
            "# UDP ports of the iroh endpoint whose key is beside this file, bound again\n\
             # on its next start so that its tickets stay valid (iroh-identity).\n",
        );
        for family in Family::ALL {
            if let Some(port) = self.get(family) {
                text += &format!("{family} {port}\n");
            }
        }
        text
    }
}

/// Stable addressing for one open: the ports remembered, and those asked of iroh.
#[derive(Debug)]
pub(crate) struct StableAddressing {
    path: PathBuf,
    remembered: Ports,
    asked: Ports,
}

impl StableAddressing {
    /// Reads the ports remembered beside the key at `key_path` and keeps those that can
    /// be bound, waiting up to `wait` (at most [`PORT_WAIT`]) for busy ones.
    ///
    /// Call it while holding the identity lock: the ports file is written by the holder.
    pub(crate) async fn prepare(key_path: &Path, wait: Duration) -> Self {
        let path = ports_file_path(key_path);
        let remembered = read(&path);
        let deadline = Instant::now() + wait.min(PORT_WAIT);
        let mut asked = Ports::default();
        for family in Family::ALL {
            if let Some(port) = remembered.get(family)
                && wait_until_free(family.all_interfaces(port), deadline).await
            {
                asked.set(family, port);
            }
        }
        Self {
            path,
            remembered,
            asked,
        }
    }

    /// Asks iroh to bind the remembered ports that are free, on all interfaces, where it
    /// would otherwise bind random ones. Apply it to an empty builder.
    pub(crate) fn apply(&self, mut builder: endpoint::Builder) -> endpoint::Builder {
        for family in Family::ALL {
            if let Some(port) = self.asked.get(family) {
                // IPv6 may be missing on a host: iroh does not require it either.
                let options = BindOpts::default().set_is_required(family == Family::Ipv4);
                builder = builder
                    .bind_addr_with_opts(family.all_interfaces(port), options)
                    .expect("an empty builder has no bind address to conflict with");
            }
        }
        builder
    }

    /// Warns about remembered ports that could not be kept and remembers the ports
    /// `endpoint` is bound to, if they changed.
    pub(crate) fn remember(self, endpoint: &Endpoint) {
        let bound = Ports::bound(endpoint);
        for family in Family::ALL {
            if let Some(old) = self.remembered.get(family)
                && self.asked.get(family).is_none()
            {
                warn!(
                    path = %self.path.display(),
                    family = %family,
                    old_port = old,
                    new_port = bound.get(family),
                    "the endpoint's port of the last run is in use, so it has a new one: \
                     tickets with the old port no longer reach it directly. If an earlier \
                     endpoint in this process held the port, drop every clone of it before \
                     opening again"
                );
            }
        }
        if bound.is_empty() || bound == self.remembered {
            return;
        }
        match write(&self.path, &bound) {
            Ok(()) => {
                debug!(path = %self.path.display(), ?bound, "remembered the endpoint's ports")
            }
            Err(err) => info!(
                %err,
                "cannot remember the endpoint's ports; after a restart, its tickets will \
                 reach it only through a relay or address lookup"
            ),
        }
    }
}

/// The ports file of the key at `key_path`: the same path with `.ports` appended.
pub(crate) fn ports_file_path(key_path: &Path) -> PathBuf {
    let mut path = OsString::from(key_path.as_os_str());
    path.push(PORTS_FILE_SUFFIX);
    path.into()
}

/// The remembered ports, or none if there is no usable ports file.
fn read(path: &Path) -> Ports {
    let text = match read_text(path) {
        Ok(Some(text)) => text,
        Ok(None) => {
            debug!(path = %path.display(), "no ports file yet");
            return Ports::default();
        }
        Err(err) => {
            warn!(path = %path.display(), %err, "cannot read the ports file; binding fresh ports");
            return Ports::default();
        }
    };
    Ports::parse(&text).unwrap_or_else(|| {
        warn!(
            path = %path.display(),
            "the ports file is not one this crate wrote; binding fresh ports and replacing it"
        );
        Ports::default()
    })
}

/// The contents of the ports file; `None` if there is none.
fn read_text(path: &Path) -> io::Result<Option<String>> {
    let file = match sys::open_key_file(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        let kind = sys::describe(metadata.file_type());
        return Err(io::Error::other(format!("it is {kind}, not a file")));
    }
    if metadata.len() > MAX_PORTS_FILE_LEN {
        return Err(io::Error::other(format!(
            "it has {} bytes, more than a ports file",
            metadata.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_PORTS_FILE_LEN).read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Replaces the ports file crash-safely.
fn write(path: &Path, ports: &Ports) -> Result<(), Error> {
    let dir = temp_file::parent_dir(path);
    let name = path.file_name().unwrap_or(path.as_os_str());
    // The identity lock is held: no other process is writing one.
    temp_file::remove_leftovers(dir, name);
    let temp = TempFile::create(dir, name)?;
    temp.write_durably(ports.render().as_bytes())?;
    fs::rename(&temp.path, path).map_err(|err| Error::io("replace ports file", path, err))?;
    sys::sync_dir(dir).map_err(|err| Error::io("sync directory", dir, err))
}

/// Whether `addr` can be bound, trying again until `deadline` while it is in use.
async fn wait_until_free(addr: SocketAddr, deadline: Instant) -> bool {
    let mut announced = false;
    loop {
        match try_bind(addr) {
            Ok(()) => return true,
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => {}
            Err(err) => {
                // No IPv6 on this host, say: iroh will not bind it either.
                debug!(%addr, %err, "cannot bind the remembered port");
                return false;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        if !announced {
            announced = true;
            debug!(%addr, "the remembered port is in use; waiting for it");
        }
        tokio::time::sleep(RETRY_INTERVAL.min(deadline - now)).await;
    }
}

/// Binds a UDP socket as iroh binds it, and closes it again.
fn try_bind(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

#[cfg(test)]
mod tests {
    use super::Ports;

    #[test]
    fn ports_read_back_and_anything_else_is_refused() {
        for ports in [
            Ports::default(),
            Ports {
                ipv4: Some(1),
                ipv6: None,
            },
            Ports {
                ipv4: Some(40000),
                ipv6: Some(65535),
            },
        ] {
            assert_eq!(Ports::parse(&ports.render()), Some(ports));
        }
        for bad in [
            "ipv4 0",
            "ipv4 65536",
            "ipv4 -1",
            "ipv4",
            "ipv5 4000",
            "ipv4 4000\nipv4 4001",
            "4000",
            "ipv4 4000x",
        ] {
            assert_eq!(Ports::parse(bad), None, "{bad:?}");
        }
    }
}
