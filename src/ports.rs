//! Stable addressing: the UDP ports of an endpoint, remembered in a file beside its key
//! and bound again on the next open, so that the direct addresses in the tickets it
//! handed out still reach it after a restart.
//!
//! iroh binds one socket on all interfaces for IPv4 and one for IPv6, on random ports.
//! Their ports are remembered in `KEY.ports` ([`file`](mod@file)) and asked for again, as iroh's own
//! sockets: first on the builder, as iroh's defaults are, so that the steps that follow
//! bind what they like. A family the steps bind a default socket of their own for keeps
//! theirs ([`defaults_bound_by`]); `clear_ip_transports()` removes the remembered sockets
//! with the rest. Only sockets on all interfaces are remembered.
//!
//! It is a convenience, never a reason to fail. A remembered port that is still in use
//! is waited for ([`probe`]), then replaced with a fresh one and a warning. A ports file
//! that is missing, damaged, not this crate's, or cannot be written means fresh ports and
//! a line in the log.

mod file;
mod probe;

use std::{
    ffi::{OsStr, OsString},
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use iroh::{
    Endpoint,
    endpoint::{self, BindOpts},
};
use tracing::{debug, info, warn};

use self::file::PortsFile;
use crate::{sys::Dir, wait::Deadline};

/// The longest wait for a remembered port that another program holds, whatever the
/// [lock wait](crate::Builder::lock_wait): beyond the 3 s or so in which a gracefully
/// closing endpoint lets go of its sockets, and short enough that a program squatting
/// the port cannot hold up an open that waits for ever for its identity.
const MAX_PORT_WAIT: Duration = Duration::from_secs(10);

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

    /// The ports to remember of the sockets an endpoint has on all interfaces, given the
    /// ports that were `asked` for: for each family, the asked port if it was bound, else
    /// the one socket on all interfaces. A family with several and none asked for (the
    /// steps bound one of their own beside iroh's) is left out: which one is iroh's cannot
    /// be told, and remembering a step's own fixed port would bind it twice next time.
    /// Sockets bound to one address only are not this crate's to remember.
    fn bound(endpoint: &Endpoint, asked: Self) -> Self {
        let mut ports = Self::default();
        let sockets = endpoint.bound_sockets();
        for family in Family::ALL {
            let on_all: Vec<u16> = sockets
                .iter()
                .filter(|socket| socket.ip().is_unspecified() && Family::of(socket) == family)
                .map(SocketAddr::port)
                .collect();
            let port = match (asked.get(family), on_all.as_slice()) {
                (Some(asked), bound) if bound.contains(&asked) => asked,
                (None, [only]) => *only,
                _ => continue,
            };
            ports.set(family, port);
        }
        ports
    }
}

/// The families for which a default socket is bound by `configure` (the preset and the
/// user's steps, run on a fresh builder): iroh refuses a second default socket for a
/// family (`DuplicateDefaultAddr`), so asking for one says whether there is one. Nothing
/// is bound; `configure` runs once, or twice when it binds one for IPv4.
pub(crate) fn defaults_bound_by(
    configure: impl Fn(endpoint::Builder) -> endpoint::Builder,
) -> FamiliesBound {
    let mut bound = FamiliesBound::default();
    let mut probe = Some(configure(endpoint::Builder::empty()));
    for family in Family::ALL {
        let builder = probe
            .take()
            .unwrap_or_else(|| configure(endpoint::Builder::empty()));
        // On all interfaces, port 0: the only way this can fail is a default socket of
        // the family that is there already.
        match builder.bind_addr_with_opts(family.all_interfaces(0), BindOpts::default()) {
            Ok(builder) => probe = Some(builder),
            Err(_) => bound.insert(family),
        }
    }
    bound
}

/// Families for which a builder's own steps bind a default socket.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FamiliesBound {
    ipv4: bool,
    ipv6: bool,
}

impl FamiliesBound {
    fn insert(&mut self, family: Family) {
        match family {
            Family::Ipv4 => self.ipv4 = true,
            Family::Ipv6 => self.ipv6 = true,
        }
    }

    fn contains(self, family: Family) -> bool {
        match family {
            Family::Ipv4 => self.ipv4,
            Family::Ipv6 => self.ipv6,
        }
    }
}

/// Stable addressing for one bind: the ports file, and the remembered ports that are
/// free to ask for.
#[derive(Debug)]
pub(crate) struct StableAddressing {
    /// The key's directory, where the ports file is.
    dir: Arc<Dir>,
    name: OsString,
    file: PortsFile,
    asked: Ports,
    /// Remembered ports that stayed in use, and who held them.
    taken: Vec<(Family, u16, probe::Taker)>,
}

impl StableAddressing {
    /// Reads the ports remembered beside the key named `key_name` in `dir` and keeps
    /// those that can be bound, waiting for busy ones for `lock_wait`, [`MAX_PORT_WAIT`]
    /// at most (see [`probe`]).
    ///
    /// Call it while holding the identity: the ports file is written by its holder.
    pub(crate) async fn prepare(dir: Arc<Dir>, key_name: &OsStr, lock_wait: Duration) -> Self {
        let mut addressing = Self::remember_only(dir, key_name);
        let remembered = addressing.file.ports();
        let deadline = Deadline::after(lock_wait.min(MAX_PORT_WAIT));
        for family in Family::ALL {
            let Some(port) = remembered.get(family) else {
                continue;
            };
            match probe::wait_until_free(family.all_interfaces(port), deadline).await {
                probe::Free::Yes => addressing.asked.set(family, port),
                probe::Free::No { whom } => addressing.taken.push((family, port, whom)),
                probe::Free::Unusable => {}
            }
        }
        addressing
    }

    /// Reads the ports file beside the key named `key_name` in `dir`, to remember the
    /// ports of a builder that was configured elsewhere: nothing is asked for, so nothing
    /// is waited for, except a remembered port that an endpoint of this process held
    /// until a moment ago, which the builder may bind again ([`probe`]).
    pub(crate) async fn for_their_builder(
        dir: Arc<Dir>,
        key_name: &OsStr,
        lock_wait: Duration,
    ) -> Self {
        let deadline = Deadline::after(lock_wait);
        let addressing = Self::remember_only(dir, key_name);
        let remembered = addressing.file.ports();
        for family in Family::ALL {
            if let Some(port) = remembered.get(family) {
                probe::wait_while_held_here(family.all_interfaces(port), deadline).await;
            }
        }
        addressing
    }

    /// The ports file, with nothing asked for yet.
    fn remember_only(dir: Arc<Dir>, key_name: &OsStr) -> Self {
        let name = file::name_beside(key_name);
        let file = PortsFile::read(&dir, &name);
        Self {
            dir,
            name,
            file,
            asked: Ports::default(),
            taken: Vec::new(),
        }
    }

    /// Gives up the remembered ports, after a bind with them failed: another program took
    /// one in the instant between the probe and the bind.
    pub(crate) fn give_up(&mut self) {
        self.asked = Ports::default();
    }

    /// Whether any remembered port can be asked for.
    pub(crate) fn has_ports(&self) -> bool {
        !self.asked.is_empty()
    }

    /// Puts iroh's own sockets on all interfaces, on the remembered ports, on a builder
    /// that nothing has bound anything on yet, except for the families in `theirs`. They
    /// are what iroh's defaults are, sockets that are no default route: steps that follow
    /// may bind any address of their own, and `clear_ip_transports()` removes them.
    pub(crate) fn apply(
        &self,
        builder: endpoint::Builder,
        theirs: FamiliesBound,
    ) -> endpoint::Builder {
        if self.asked.is_empty() {
            return builder;
        }
        let mut builder = builder.clear_ip_transports();
        for family in Family::ALL {
            if theirs.contains(family) {
                continue;
            }
            // As iroh's defaults (IPv6 may be missing on a host), except that a remembered
            // port is required: if it cannot be had, the bind fails and is tried again
            // with fresh ports, instead of going on without the family.
            let port = self.asked.get(family).unwrap_or(0);
            let options = BindOpts::default()
                .set_is_default_route(false)
                .set_is_required(family == Family::Ipv4 || port != 0);
            builder = builder
                .bind_addr_with_opts(family.all_interfaces(port), options)
                .expect("no default socket is bound on a builder whose IP sockets were cleared");
        }
        builder
    }

    /// Warns about remembered ports that could not be kept and remembers the ports
    /// `endpoint` is bound to, if they changed and the ports file is ours to write.
    pub(crate) fn remember(self, endpoint: &Endpoint) {
        let mut bound = Ports::bound(endpoint, self.asked);
        // A family that got no socket this time keeps its remembered port.
        let remembered = self.file.ports();
        for family in Family::ALL {
            if let (None, Some(port)) = (bound.get(family), remembered.get(family)) {
                bound.set(family, port);
            }
        }
        let path = self.dir.path().join(&self.name);
        for &(family, old_port, whom) in &self.taken {
            let new_port = bound.get(family);
            let path = path.display();
            match whom {
                probe::Taker::ThisProcess => warn!(
                    %path, %family, old_port, new_port,
                    "the endpoint's port is still held by an endpoint of this process that \
                     is closed but not dropped, so it has a new port and tickets with the old \
                     one no longer reach it directly: drop every clone of an endpoint before \
                     opening its identity again"
                ),
                probe::Taker::OtherUser(uid) => warn!(
                    %path, %family, old_port, new_port, uid,
                    "the endpoint's port of the last run is taken by a program of another \
                     user, so it has a new port at once and tickets with the old one no longer \
                     reach it directly"
                ),
                probe::Taker::Other => warn!(
                    %path, %family, old_port, new_port,
                    "the endpoint's port of the last run is in use by another program, so it \
                     has a new port and tickets with the old one no longer reach it directly"
                ),
            }
        }
        probe::bound_here(
            Family::ALL
                .into_iter()
                .filter_map(|family| bound.get(family).map(|port| family.all_interfaces(port))),
        );
        if bound.is_empty() || !self.file.should_write(&bound) {
            return;
        }
        match file::write(&self.dir, &self.name, &bound, &self.file) {
            Ok(()) => debug!(path = %path.display(), ?bound, "remembered the endpoint's ports"),
            Err(err) => info!(
                %err,
                "cannot remember the endpoint's ports; after a restart, its tickets will \
                 reach it only through a relay or address lookup"
            ),
        }
    }
}
