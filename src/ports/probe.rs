//! Whether a remembered port is free: a socket bound as iroh binds it and closed again,
//! tried until the port is free or the wait ends.
//!
//! What holds a busy port is nearly always the previous endpoint of this identity. It
//! releases the identity when it starts closing, but keeps its sockets while its
//! connections drain (iroh allows up to about 3 s) and until its last clone is dropped or
//! its process exits. So a busy port is waited for until the lock wait ends,
//! [`MAX_PORT_WAIT`](super::MAX_PORT_WAIT) at most. When the port is held by an endpoint
//! of this process that is closed but not dropped, the wait is [`WAIT_FOR_THIS_PROCESS`]
//! at most: a clone still in scope never goes. When the kernel's tables say that only
//! programs of other users hold it (Linux), it is not waited for at all: UDP ports are
//! shared by every user of the host, and another user who took it (reading the new port
//! from `/proc/net/udp` each time) would otherwise delay every restart by the whole wait.

use std::{collections::BTreeSet, io, net::SocketAddr, sync::Mutex, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use crate::{
    sys,
    wait::{self, Deadline, Waited},
};

/// The longest wait for a remembered port held by an endpoint of this process.
///
/// Such an endpoint is closed (it released the identity) but not dropped. A clone in a
/// task that ends once the endpoint closes (an accept loop) goes within milliseconds; a
/// clone still in scope never will, and a longer wait would only delay the open.
const WAIT_FOR_THIS_PROCESS: Duration = Duration::from_millis(250);

/// How often a busy port is tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// The sockets on all interfaces that endpoints of this process have bound with stable
/// addressing. Never emptied: it says who most likely holds a busy port, no more.
static BOUND_HERE: Mutex<BTreeSet<SocketAddr>> = Mutex::new(BTreeSet::new());

/// Notes that an endpoint of this process has bound these sockets.
pub(super) fn bound_here(sockets: impl IntoIterator<Item = SocketAddr>) {
    if let Ok(mut here) = BOUND_HERE.lock() {
        here.extend(sockets);
    }
}

/// Whether a remembered port can be asked for.
#[derive(Debug)]
pub(super) enum Free {
    Yes,
    /// It stayed in use, by `whom`.
    No {
        whom: Taker,
    },
    /// It cannot be bound at all (no IPv6 on this host, say): iroh will not either.
    Unusable,
}

/// Who holds a remembered port that could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taker {
    /// An endpoint of this process, closed but not dropped.
    ThisProcess,
    /// Another user's program: this uid.
    OtherUser(u32),
    /// A program of this user's, or one this host does not name.
    Other,
}

/// Binds `addr` and closes it again, trying again until `deadline` while a program of
/// this user's holds it: the last run of the identity, closing. A port that another
/// user's program holds is not waited for (it would not be let go of; waiting would let
/// any user delay every restart).
pub(super) async fn wait_until_free(addr: SocketAddr, deadline: Deadline) -> Free {
    let here = BOUND_HERE.lock().is_ok_and(|here| here.contains(&addr));
    let deadline = if here {
        deadline.at_most(WAIT_FOR_THIS_PROCESS)
    } else {
        deadline
    };
    let me = sys::process();
    let mut other_user = None;
    let mut attempt = || match try_bind(addr) {
        Ok(()) => Ok(Some(true)),
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
            let users = sys::udp_port_users(addr.port()).unwrap_or_default();
            other_user = users.iter().copied().find(|&uid| !me.is_user(uid));
            let ours = users.iter().any(|&uid| me.is_user(uid));
            Ok((!here && !ours && other_user.is_some()).then_some(false))
        }
        Err(err) => Err(err),
    };
    let announce = || debug!(%addr, "the remembered port is in use; waiting for it");
    let whom = |other_user: Option<u32>| match (here, other_user) {
        (true, _) => Taker::ThisProcess,
        (false, Some(uid)) => Taker::OtherUser(uid),
        (false, None) => Taker::Other,
    };
    match wait::until(deadline, RETRY_INTERVAL, &mut attempt, announce).await {
        Ok(Waited::Done(true)) => Free::Yes,
        Ok(Waited::Done(false)) => Free::No {
            whom: whom(other_user),
        },
        Ok(Waited::TimedOut(_)) => Free::No {
            whom: whom(other_user),
        },
        Err(err) => {
            debug!(%addr, %err, "cannot bind the remembered port");
            Free::Unusable
        }
    }
}

/// Waits, [`WAIT_FOR_THIS_PROCESS`] at most, while `addr` is held by an endpoint of this
/// process that was closed (its sockets go a moment later): for a builder configured
/// elsewhere, which may bind that very port again. A port held by anything else is not
/// waited for.
pub(super) async fn wait_while_held_here(addr: SocketAddr, deadline: Deadline) {
    if BOUND_HERE.lock().is_ok_and(|here| here.contains(&addr)) {
        wait_until_free(addr, deadline).await;
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
