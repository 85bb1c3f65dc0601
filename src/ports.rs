//! Stable addressing: the UDP ports of an endpoint, remembered in a file beside its key
//! and bound again on the next open, so that the direct addresses in the tickets it
//! handed out still reach it after a restart.
//!
//! The ports file is a convenience, never a reason to fail: when it is missing, damaged
//! or cannot be written, or a port is taken, the endpoint binds fresh ports and says so
//! in the log. It is written only while the identity lock is held, so by one process at
//! a time, and like a key: to a temporary file, synced, renamed over the old one, and
//! the directory synced. A crash leaves the old ports or the new ones.
//!
//! It is ours or it is left alone: it is replaced only when it is absent or is a ports
//! file this crate wrote (its first line says so), never when it is anything else (a key
//! someone named `KEY.ports`, a link, another user's file). Remembered ports below 1024
//! are ignored: a ports file never makes the endpoint bind a service's port (53, 123).

use std::{
    collections::BTreeSet,
    ffi::{OsStr, OsString},
    fmt,
    io::{self, Read},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::Mutex,
    time::Duration,
};

use iroh::{
    Endpoint,
    endpoint::{self, BindOpts},
};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use crate::{
    Error, MAX_PORT_WAIT,
    sys::{self, Dir},
    temp_file::TempFile,
    wait::{self, Deadline, Waited},
};

/// What is appended to the key file's name to name its ports file.
const PORTS_FILE_SUFFIX: &str = ".ports";

/// The first line of every ports file this crate writes: how it knows its own.
const HEADER: &str = "# UDP ports of the iroh endpoint whose key is beside this file, bound again";

/// The longest wait for a remembered port held by an endpoint of this process.
///
/// Such an endpoint is closed (it released the identity) but not dropped. A clone in a
/// task that ends once the endpoint closes (an accept loop) goes within milliseconds; a
/// clone still in scope never will, and a longer wait would only delay the open.
const WAIT_FOR_THIS_PROCESS: Duration = Duration::from_millis(250);

/// The sockets on all interfaces that endpoints of this process have bound with stable
/// addressing. Never emptied: it says who most likely holds a busy port, no more.
static BOUND_HERE: Mutex<BTreeSet<SocketAddr>> = Mutex::new(BTreeSet::new());

/// How often a busy port is tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// The largest ports file that is read; this crate writes under 200 bytes.
const MAX_PORTS_FILE_LEN: u64 = 1024;

/// The lowest port that is remembered: below it are the ports of system services.
const LOWEST_PORT: u16 = 1024;

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

    /// Reads the contents of a ports file this crate wrote: its header line, then
    /// `ipv4 PORT` and `ipv6 PORT` lines and `#` comments. `None` if it is anything
    /// else. Ports below [`LOWEST_PORT`] are left out.
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()?.trim_end() != HEADER {
            return None;
        }
        let mut ports = Self::default();
        let mut seen = Self::default();
        for line in lines.map(str::trim) {
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
            if seen.get(family).is_some() {
                return None;
            }
            seen.set(family, port);
            if port < LOWEST_PORT {
                warn!(%family, port, "a remembered port below 1024 is ignored");
            } else {
                ports.set(family, port);
            }
        }
        Some(ports)
    }

    fn render(&self) -> String {
        let mut text = format!(
            "{HEADER}\n# on its next start so that its tickets stay valid (iroh-identity).\n"
        );
        for family in Family::ALL {
            if let Some(port) = self.get(family) {
                text += &format!("{family} {port}\n");
            }
        }
        text
    }
}

/// What is at the ports file's path.
#[derive(Debug)]
enum PortsFile {
    /// Nothing: it may be created.
    Absent,
    /// A ports file this crate wrote, with the ports worth binding: it may be replaced.
    Ours(Ports),
    /// Something else: it is left alone, and nothing is remembered.
    NotOurs,
}

/// Stable addressing for one open: the ports remembered, and those asked of iroh.
#[derive(Debug)]
pub(crate) struct StableAddressing {
    /// The key's directory, where the ports file is.
    dir: Dir,
    name: OsString,
    file: PortsFile,
    asked: Ports,
    /// Remembered ports that stayed in use, and whether this process had bound them.
    taken: Vec<(Family, u16, bool)>,
}

impl StableAddressing {
    /// Reads the ports remembered beside the key at `key_path` and keeps those that can
    /// be bound, waiting until `deadline`, and [`MAX_PORT_WAIT`] at most,
    /// for busy ones.
    ///
    /// What holds a busy port is nearly always the previous endpoint of this identity.
    /// It releases the identity when it starts closing, but keeps its sockets while its
    /// connections drain (iroh allows up to about 3 s) and until its last clone is
    /// dropped or its process exits. When it is an endpoint of this process, the wait
    /// is at most [`WAIT_FOR_THIS_PROCESS`].
    ///
    /// Call it while holding the identity lock: the ports file is written by the holder.
    /// `None` when the key's directory cannot be opened: then nothing is remembered.
    pub(crate) async fn prepare(key_path: &Path, deadline: Deadline) -> Option<Self> {
        let dir = match Dir::open(crate::key_file::parent_dir(key_path)) {
            Ok(dir) => dir,
            Err(err) => {
                info!(path = %key_path.display(), %err, "cannot open the key's directory; binding fresh ports");
                return None;
            }
        };
        let mut name = key_path.file_name()?.to_owned();
        name.push(PORTS_FILE_SUFFIX);
        let file = read(&dir, &name);
        let remembered = match &file {
            PortsFile::Ours(ports) => *ports,
            PortsFile::Absent | PortsFile::NotOurs => Ports::default(),
        };
        let deadline = deadline.at_most(MAX_PORT_WAIT);
        let mut asked = Ports::default();
        let mut taken = Vec::new();
        for family in Family::ALL {
            let Some(port) = remembered.get(family) else {
                continue;
            };
            let addr = family.all_interfaces(port);
            let here = bound_here(addr);
            let deadline = if here {
                deadline.at_most(WAIT_FOR_THIS_PROCESS)
            } else {
                deadline
            };
            match wait_until_free(addr, deadline).await {
                Ok(true) => asked.set(family, port),
                Ok(false) => taken.push((family, port, here)),
                // No IPv6 on this host, say: iroh will not bind it either.
                Err(err) => debug!(%addr, %err, "cannot bind the remembered port"),
            }
        }
        Some(Self {
            dir,
            name,
            file,
            asked,
            taken,
        })
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
    /// `endpoint` is bound to, if they changed and the ports file is ours to write.
    pub(crate) fn remember(self, endpoint: &Endpoint) {
        let bound = Ports::bound(endpoint);
        let path = self.dir.path().join(&self.name);
        for &(family, old_port, here) in &self.taken {
            let new_port = bound.get(family);
            let path = path.display();
            if here {
                warn!(
                    %path, %family, old_port, new_port,
                    "the endpoint's port is still held by an endpoint of this process that \
                     is closed but not dropped, so it has a new port and tickets with the old \
                     one no longer reach it directly: drop every clone of an endpoint before \
                     opening its identity again"
                );
            } else {
                warn!(
                    %path, %family, old_port, new_port,
                    "the endpoint's port of the last run is in use by another program, so it \
                     has a new port and tickets with the old one no longer reach it directly"
                );
            }
        }
        if let Ok(mut here) = BOUND_HERE.lock() {
            here.extend(
                Family::ALL
                    .into_iter()
                    .filter_map(|family| bound.get(family).map(|port| family.all_interfaces(port))),
            );
        }
        let unchanged = match &self.file {
            PortsFile::Ours(remembered) => *remembered == bound,
            PortsFile::Absent => false,
            PortsFile::NotOurs => return,
        };
        if bound.is_empty() || unchanged {
            return;
        }
        match write(&self.dir, &self.name, &bound) {
            Ok(()) => debug!(path = %path.display(), ?bound, "remembered the endpoint's ports"),
            Err(err) => info!(
                %err,
                "cannot remember the endpoint's ports; after a restart, its tickets will \
                 reach it only through a relay or address lookup"
            ),
        }
    }
}

/// Whether an endpoint of this process has bound `addr` with stable addressing.
fn bound_here(addr: SocketAddr) -> bool {
    BOUND_HERE.lock().is_ok_and(|here| here.contains(&addr))
}

/// What is at the ports file's path, read without following a link; what is not ours
/// is logged and left alone.
fn read(dir: &Dir, name: &OsStr) -> PortsFile {
    let path = dir.path().join(name);
    let text = match read_text(dir, name) {
        Ok(Some(text)) => text,
        Ok(None) => {
            debug!(path = %path.display(), "no ports file yet");
            return PortsFile::Absent;
        }
        Err(err) => {
            warn!(
                path = %path.display(),
                %err,
                "the ports file cannot be used; binding fresh ports and leaving it as it is"
            );
            return PortsFile::NotOurs;
        }
    };
    match Ports::parse(&text) {
        Some(ports) => PortsFile::Ours(ports),
        None => {
            warn!(
                path = %path.display(),
                "the ports file is not one this crate wrote; binding fresh ports and leaving \
                 it as it is"
            );
            PortsFile::NotOurs
        }
    }
}

/// The contents of the ports file; `None` if there is none. An error for anything that
/// is not a small regular file of this user.
fn read_text(dir: &Dir, name: &OsStr) -> io::Result<Option<String>> {
    let file = match dir.open_file_no_follow(name) {
        Ok(Some(file)) => file,
        Ok(None) => return Err(io::Error::other("it is a symbolic link")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        let kind = sys::describe(metadata.file_type());
        return Err(io::Error::other(format!("it is {kind}, not a file")));
    }
    if let Some(owner) = sys::owner(&metadata) {
        let uid = sys::process().uid;
        if owner.uid != uid {
            return Err(io::Error::other(format!(
                "it belongs to uid {}, not to this process's user (uid {uid})",
                owner.uid
            )));
        }
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
fn write(dir: &Dir, name: &OsStr, ports: &Ports) -> Result<(), Error> {
    // The identity lock is held: no other process is writing one.
    crate::temp_file::remove_leftovers(dir, name);
    let temp = TempFile::create(dir, name)?;
    temp.write_durably(ports.render().as_bytes())?;
    let path = dir.path().join(name);
    dir.replace(&temp.name, name)
        .map_err(|err| Error::io("replace ports file", &path, err))?;
    if let Err(err) = dir.sync() {
        debug!(path = %path.display(), %err, "the ports file was replaced, but its directory cannot be synced");
    }
    Ok(())
}

/// Binds `addr` and closes it again, trying again until `deadline` while it is in use:
/// `Ok(false)` if it still was then.
async fn wait_until_free(addr: SocketAddr, deadline: Deadline) -> io::Result<bool> {
    let attempt = || match try_bind(addr) {
        Ok(()) => Ok(Some(())),
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(err) => Err(err),
    };
    let announce = || debug!(%addr, "the remembered port is in use; waiting for it");
    Ok(matches!(
        wait::until(deadline, RETRY_INTERVAL, attempt, announce).await?,
        Waited::Done(())
    ))
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
    use super::{HEADER, Ports};

    #[test]
    fn ports_read_back_and_anything_else_is_refused() {
        for ports in [
            Ports::default(),
            Ports {
                ipv4: Some(1024),
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
            let text = format!("{HEADER}\n{bad}\n");
            assert_eq!(Ports::parse(&text), None, "{bad:?}");
        }
        // Without the header line, it is not ours, however it looks.
        assert_eq!(Ports::parse("ipv4 40000\n"), None);
        // Ports of system services are never remembered.
        let low = format!("{HEADER}\nipv4 53\nipv6 40000\n");
        assert_eq!(
            Ports::parse(&low),
            Some(Ports {
                ipv4: None,
                ipv6: Some(40000)
            })
        );
    }
}
