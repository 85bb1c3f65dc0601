//! Linux: abstract unix sockets, which the host lock is made of, and the kernel's own
//! answers about them. No policy: what the host lock does with them is `guard::host`'s.
//!
//! An abstract socket has a name but no file: it is in no directory that a cleaner could
//! age or a logout remove, and the kernel frees its name when the last descriptor of it
//! closes, a killed process's included. Names are shared by every process in the network
//! namespace, of any user.

use std::{
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixListener, UnixStream},
    },
    time::Duration,
};

/// A stream socket listening on the abstract name `name` (without the leading NUL).
/// [`io::ErrorKind::AddrInUse`] when a socket of any process has the name.
pub(crate) fn listen_abstract(name: &[u8]) -> io::Result<UnixListener> {
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name)?)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Who has an abstract name, as a connection to it tells.
#[derive(Debug)]
pub(crate) enum Reached {
    /// No socket listens on the name: none has it, or one has it without listening.
    Nothing,
    /// A listening socket, connected to; `peer` is who made it listen.
    Listener { stream: UnixStream, peer: Peer },
    /// A listening socket whose queue of connections is full: who has it is not told.
    QueueFull,
    /// A socket of another type (datagram): never one of this crate's.
    OtherType,
}

/// The process that made a socket listen, as the kernel recorded it then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) uid: u32,
    /// 0 when the process is not in this process's PID namespace.
    pub(crate) pid: u32,
}

/// Connects to abstract names without waiting: a full queue is an answer, not a wait.
/// A socket whose connection failed is used for the next name (making one costs more
/// than connecting).
#[derive(Debug, Default)]
pub(crate) struct Prober {
    spare: Option<OwnedFd>,
}

impl Prober {
    /// Who has the abstract name `name`, as a connection to it tells.
    #[allow(unsafe_code)]
    pub(crate) fn connect(&mut self, name: &[u8]) -> io::Result<Reached> {
        let (raw, len) = raw_address(name)?;
        let fd = match self.spare.take() {
            Some(fd) => fd,
            None => {
                // SAFETY: socket takes no pointers; a negative result is checked.
                let fd = unsafe {
                    libc::socket(
                        libc::AF_UNIX,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    )
                };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a new descriptor that nothing else owns.
                unsafe { OwnedFd::from_raw_fd(fd) }
            }
        };
        // SAFETY: a valid descriptor, and an address of the length given that outlives
        // the call.
        let result = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if result != 0 {
            let err = io::Error::last_os_error();
            let reached = match err.raw_os_error() {
                Some(libc::ECONNREFUSED | libc::ENOENT) => Reached::Nothing,
                Some(libc::EAGAIN) => Reached::QueueFull,
                Some(libc::EPROTOTYPE) => Reached::OtherType,
                _ => return Err(err),
            };
            // Still unconnected: good for the next name.
            self.spare = Some(fd);
            return Ok(reached);
        }
        let peer = peer_of(&fd)?;
        let stream = UnixStream::from(fd);
        stream.set_nonblocking(false)?;
        Ok(Reached::Listener { stream, peer })
    }
}

/// The credentials the kernel recorded for the other end of a connected socket.
#[allow(unsafe_code)]
fn peer_of(fd: &OwnedFd) -> io::Result<Peer> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid descriptor, and a `ucred` of the length given to write into.
    let result = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        uid: credentials.uid,
        pid: u32::try_from(credentials.pid).unwrap_or(0),
    })
}

/// The `sockaddr_un` of an abstract name, and its length.
#[allow(unsafe_code)]
fn raw_address(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero `sockaddr_un` is a valid value.
    let mut raw: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    raw.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // The path starts with a NUL: the abstract namespace.
    if name.len() + 1 > raw.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name is too long for a socket",
        ));
    }
    for (slot, byte) in raw.sun_path[1..].iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
    Ok((raw, len as libc::socklen_t))
}

/// The users that own the sockets that have the abstract names `names`, from the kernel's
/// table of unix sockets (`sock_diag`); `None` for a name no socket has. Linux 5.3 or
/// later.
///
/// It lists every unix socket of the network namespace, which another user can make long,
/// so it is read for `limit` at most (then [`io::ErrorKind::TimedOut`]), and only asked
/// when a connection cannot tell.
#[allow(unsafe_code)]
pub(crate) fn abstract_name_owners(
    names: &[&[u8]],
    limit: Duration,
) -> io::Result<Vec<Option<u32>>> {
    // From <linux/sock_diag.h> and <linux/unix_diag.h>.
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_NAME: u32 = 0x01;
    const UDIAG_SHOW_UID: u32 = 0x40;
    const UNIX_DIAG_NAME: u16 = 0;
    const UNIX_DIAG_UID: u16 = 7;
    /// `struct unix_diag_msg`: family, type, state, pad, inode, cookie.
    const MSG_LEN: usize = 16;

    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        family: u8,
        protocol: u8,
        pad: u16,
        states: u32,
        inode: u32,
        show: u32,
        cookie: [u32; 2],
    }

    let mut owners = vec![None; names.len()];
    if names.is_empty() {
        return Ok(owners);
    }
    let deadline = std::time::Instant::now() + limit;
    // SAFETY: socket takes no pointers; a negative result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: libc::AF_UNIX as u8,
        protocol: 0,
        pad: 0,
        states: u32::MAX,
        inode: 0,
        show: UDIAG_SHOW_NAME | UDIAG_SHOW_UID,
        cookie: [u32::MAX; 2],
    };
    // SAFETY: a valid descriptor, and a request of the length given.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&request as *const Request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted: Vec<Vec<u8>> = names.iter().map(|name| [&[0][..], name].concat()).collect();
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        let timeout = libc::timeval {
            tv_sec: left.as_secs() as libc::time_t,
            tv_usec: left.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: a valid descriptor, and a `timeval` of the length given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        // SAFETY: a valid descriptor, and a buffer of the length given to write into.
        let received =
            unsafe { libc::recv(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
        let mut messages = &buffer[..received];
        while let Some((kind, payload, rest)) = netlink_message(messages) {
            messages = rest;
            match kind {
                k if k == libc::NLMSG_DONE as u16 => return Ok(owners),
                k if k == libc::NLMSG_ERROR as u16 => {
                    let code = payload.get(..4).map_or(0, |bytes| {
                        i32::from_ne_bytes(bytes.try_into().unwrap_or([0; 4]))
                    });
                    return Err(io::Error::from_raw_os_error(-code));
                }
                _ => {}
            }
            let (mut found_name, mut uid) = (None, None);
            let mut attributes = payload.get(MSG_LEN..).unwrap_or_default();
            while let Some((kind, value, rest)) = attribute(attributes) {
                attributes = rest;
                match kind {
                    UNIX_DIAG_NAME => found_name = Some(value),
                    UNIX_DIAG_UID => {
                        uid = value
                            .get(..4)
                            .map(|bytes| u32::from_ne_bytes(bytes.try_into().unwrap_or([0; 4])));
                    }
                    _ => {}
                }
            }
            let Some(index) =
                found_name.and_then(|found| wanted.iter().position(|want| want == found))
            else {
                continue;
            };
            owners[index] = Some(uid.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel does not tell a unix socket's owner (Linux 5.3 or later does)",
                )
            })?);
        }
    }
}

/// The first netlink message in `bytes`: its type, its payload and what follows it.
fn netlink_message(bytes: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let len = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let kind = u16::from_ne_bytes(bytes.get(4..6)?.try_into().ok()?);
    let header = size_of::<libc::nlmsghdr>();
    let payload = bytes.get(header..len)?;
    let next = len.next_multiple_of(4).min(bytes.len());
    Some((kind, payload, &bytes[next..]))
}

/// The first netlink attribute in `bytes`: its type, its value and what follows it.
fn attribute(bytes: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let len = usize::from(u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?));
    let kind = u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?);
    let value = bytes.get(4..len)?;
    let next = len.next_multiple_of(4).min(bytes.len());
    Some((kind, value, &bytes[next..]))
}

/// An `epoll` set: descriptors watched for reading, each with a token. It keeps no
/// reference to them: a descriptor closed elsewhere leaves the set by itself.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    #[allow(unsafe_code)]
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a negative result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for reading (and hang-ups), reported as `token`.
    #[allow(unsafe_code)]
    pub(crate) fn add(&self, fd: i32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and an event that outlives the call.
        let result =
            unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until something is ready or `timeout` passes (`None`: no end), and returns
    /// the tokens of what is.
    #[allow(unsafe_code)]
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Vec<u64>> {
        const MAX_EVENTS: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        let timeout = timeout.map_or(-1, |timeout| {
            i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX)
        });
        // SAFETY: a valid descriptor, and an array of the length given to write into.
        let count = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as i32,
                timeout,
            )
        };
        match usize::try_from(count) {
            Ok(count) => Ok(events[..count].iter().map(|event| event.u64).collect()),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    Ok(Vec::new())
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// The users whose UDP sockets (IPv4 or IPv6) are bound to `port`, from the kernel's
/// tables (`/proc/net/udp`, `/proc/net/udp6`), which show every user's sockets of the
/// network namespace; `None` when they cannot be read.
pub(crate) fn udp_port_users(port: u16) -> Option<Vec<u32>> {
    let mut users = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).ok()?;
        // `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...`,
        // the address as hex `IP:PORT`.
        for fields in text
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
        {
            let bound = fields
                .get(1)
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if bound == Some(port)
                && let Some(uid) = fields.get(7).and_then(|uid| uid.parse().ok())
            {
                users.push(uid);
            }
        }
    }
    Some(users)
}
