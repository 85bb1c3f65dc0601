//! The thread that serves the host locks this process holds: it accepts every connection
//! to their sockets, so that their queues never fill, and answers the question of a
//! process of another user that asks a holder to prove it knows the lock's key.
//!
//! One thread for the whole process, outside any async runtime: a holder answers even
//! when the application's runtime is busy or stalled. It waits with `epoll`, which holds
//! no reference to what it watches: a lock is let go of the instant its [`Served`] is
//! dropped, which closes its socket (the kernel then forgets it in the `epoll` set too),
//! without waiting for the thread.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::net::{UnixListener, UnixStream},
    },
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tracing::debug;
use zeroize::Zeroizing;

use super::proof::{PROOF_LEN, PROOF_WAIT, answer};
use crate::sys::Epoll;

/// How many connections may wait for their question at once; one more is closed at once,
/// and a flood by another user costs the holder no more descriptors than this.
const MAX_WAITING: usize = 64;

/// How many connections are accepted on one socket before the next wait: the lock the
/// holders take to let go of a socket is held no longer than that.
const ACCEPT_BURST: usize = 16;

/// Tokens of the `epoll` set: a socket's is its id; a waiting connection's has this bit.
const CONNECTION: u64 = 1 << 63;

/// A lock's socket, served until this is dropped.
#[derive(Debug)]
pub(super) struct Served {
    id: u64,
}

/// What the thread and the holders share.
struct Shared {
    sockets: Mutex<Sockets>,
    epoll: Epoll,
}

#[derive(Default)]
struct Sockets {
    by_id: HashMap<u64, Socket>,
    next_id: u64,
}

struct Socket {
    listener: UnixListener,
    proof: Arc<Proof>,
}

/// What a holder answers with: the name it listens on, and the lock's key.
struct Proof {
    name: Vec<u8>,
    key: Zeroizing<[u8; 32]>,
}

/// A connection accepted, waiting for its question.
struct Waiting {
    stream: UnixStream,
    proof: Arc<Proof>,
    question: [u8; PROOF_LEN],
    read: usize,
    until: Instant,
}

/// The thread and what it shares, made on first use; made again if that failed (no
/// descriptor or thread to be had then).
static SHARED: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

/// Serves `listener`, listening on `name`, until the result is dropped: a question is
/// answered with `key`.
pub(super) fn serve(
    listener: UnixListener,
    name: Vec<u8>,
    key: Zeroizing<[u8; 32]>,
) -> io::Result<Served> {
    let shared = shared()?;
    let mut sockets = lock(&shared);
    let id = sockets.next_id;
    sockets.next_id += 1;
    shared.epoll.add(listener.as_raw_fd(), id)?;
    let proof = Arc::new(Proof { name, key });
    sockets.by_id.insert(id, Socket { listener, proof });
    Ok(Served { id })
}

impl Drop for Served {
    fn drop(&mut self) {
        let shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(shared) = shared {
            // Closed under the lock: the thread touches a socket only under it, and only
            // one it finds there.
            let mut sockets = lock(&shared);
            drop(sockets.by_id.remove(&self.id));
        }
    }
}

fn shared() -> io::Result<Arc<Shared>> {
    let mut slot = SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(shared) = slot.as_ref() {
        return Ok(Arc::clone(shared));
    }
    let shared = Arc::new(Shared {
        sockets: Mutex::default(),
        epoll: Epoll::new()?,
    });
    let thread = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("iroh-identity host lock".into())
        .spawn(move || run(&thread))?;
    *slot = Some(Arc::clone(&shared));
    Ok(shared)
}

fn lock(shared: &Shared) -> MutexGuard<'_, Sockets> {
    shared
        .sockets
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(shared: &Shared) {
    let mut waiting: HashMap<u64, Waiting> = HashMap::new();
    let mut next_connection = 0u64;
    loop {
        let now = Instant::now();
        let timeout = waiting
            .values()
            .map(|one| one.until.saturating_duration_since(now))
            .min();
        let ready = match shared.epoll.wait(timeout) {
            Ok(ready) => ready,
            Err(err) => {
                debug!(%err, "the host lock's thread cannot wait; trying again");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        for token in ready {
            if token & CONNECTION != 0 {
                if let Some(one) = waiting.get_mut(&token)
                    && !one.hear()
                {
                    waiting.remove(&token);
                }
                continue;
            }
            // A socket still held (one let go of meanwhile is no longer there): accept.
            let sockets = lock(shared);
            let Some(socket) = sockets.by_id.get(&token) else {
                continue;
            };
            for _ in 0..ACCEPT_BURST {
                match socket.listener.accept() {
                    // Closed at once when too many wait already.
                    Ok(_) if waiting.len() >= MAX_WAITING => {}
                    Ok((stream, _)) => {
                        let token = CONNECTION | next_connection;
                        next_connection = (next_connection + 1) & !CONNECTION;
                        if stream.set_nonblocking(true).is_err()
                            || shared.epoll.add(stream.as_raw_fd(), token).is_err()
                        {
                            continue;
                        }
                        waiting.insert(
                            token,
                            Waiting {
                                stream,
                                proof: Arc::clone(&socket.proof),
                                question: [0; PROOF_LEN],
                                read: 0,
                                until: Instant::now() + PROOF_WAIT,
                            },
                        );
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => {
                        debug!(%err, "cannot accept a connection to a host lock");
                        break;
                    }
                }
            }
        }
        // Connections that said nothing in time are dropped.
        let now = Instant::now();
        waiting.retain(|_, one| one.until > now);
    }
}

impl Waiting {
    /// Reads what has come of the question, and answers once it is whole: whether the
    /// connection is still waiting.
    fn hear(&mut self) -> bool {
        match self.stream.read(&mut self.question[self.read..]) {
            Ok(0) => return false,
            Ok(n) => self.read += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
        if self.read < PROOF_LEN {
            return true;
        }
        let proof = answer(&self.proof.key, &self.proof.name, &self.question);
        let _ = self.stream.write_all(proof.as_bytes());
        false
    }
}
