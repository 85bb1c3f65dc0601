//! The thread that serves the host locks this process holds: it accepts every connection
//! to their sockets, so that their queues never fill, and answers the question of a
//! process of another user that asks a holder to prove it knows the lock's key.
//!
//! One thread for the whole process, outside any async runtime: a holder answers even
//! when the application's runtime is busy or stalled. A lock is let go of at once when its
//! [`Served`] is dropped: its socket is closed before `drop` returns, once the thread no
//! longer waits on it (a socket being polled stays open until the poll returns).

use std::{
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::net::{UnixListener, UnixStream},
    },
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use tracing::debug;
use zeroize::Zeroizing;

use super::socket::{PROOF_LEN, PROOF_WAIT, answer};
use crate::sys::{self, Waker};

/// How many connections may wait for their question at once; beyond that the oldest is
/// dropped (a flood by another user costs it nothing but its own connections).
const MAX_WAITING: usize = 64;

/// A lock's socket, served until this is dropped.
#[derive(Debug)]
pub(super) struct Served {
    id: u64,
}

/// What the thread and the holders share.
struct Shared {
    state: Mutex<State>,
    /// Signalled each time the thread comes back from waiting.
    returned: Condvar,
    waker: Waker,
}

#[derive(Default)]
struct State {
    sockets: Vec<Socket>,
    next_id: u64,
    /// Whether the thread waits on the sockets now, and how many waits it has ended.
    polling: bool,
    polls: u64,
}

struct Socket {
    id: u64,
    listener: UnixListener,
    proof: Arc<Proof>,
}

/// What a holder answers with: the name it listens on, and the lock's key (none for a lock
/// whose holders need not prove themselves).
struct Proof {
    name: Vec<u8>,
    key: Option<Zeroizing<[u8; 32]>>,
}

/// A connection accepted, waiting for its question.
struct Waiting {
    stream: UnixStream,
    proof: Arc<Proof>,
    question: [u8; PROOF_LEN],
    read: usize,
    until: Instant,
}

static SHARED: OnceLock<io::Result<Arc<Shared>>> = OnceLock::new();

/// Serves `listener`, listening on `name`, until the result is dropped; with `key`, a
/// question is answered.
pub(super) fn serve(
    listener: UnixListener,
    name: Vec<u8>,
    key: Option<Zeroizing<[u8; 32]>>,
) -> io::Result<Served> {
    let shared = shared()?;
    let mut state = lock(shared);
    let id = state.next_id;
    state.next_id += 1;
    state.sockets.push(Socket {
        id,
        listener,
        proof: Arc::new(Proof { name, key }),
    });
    drop(state);
    shared.waker.wake();
    Ok(Served { id })
}

impl Drop for Served {
    fn drop(&mut self) {
        let Some(Ok(shared)) = SHARED.get() else {
            return;
        };
        let mut state = lock(shared);
        let Some(index) = state.sockets.iter().position(|socket| socket.id == self.id) else {
            return;
        };
        let socket = state.sockets.swap_remove(index);
        if state.polling {
            let polls = state.polls;
            shared.waker.wake();
            // Within microseconds; the bound is for a thread that is gone.
            let until = Instant::now() + Duration::from_secs(1);
            while state.polling && state.polls == polls {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared
                    .returned
                    .wait_timeout(state, left)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
        }
        // The thread no longer has it: closing it frees the name now.
        drop(state);
        drop(socket);
    }
}

fn shared() -> io::Result<&'static Arc<Shared>> {
    SHARED
        .get_or_init(|| {
            let shared = Arc::new(Shared {
                state: Mutex::default(),
                returned: Condvar::new(),
                waker: Waker::new()?,
            });
            let thread = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("iroh-identity host lock".into())
                .spawn(move || run(&thread))?;
            Ok(shared)
        })
        .as_ref()
        .map_err(|err| io::Error::new(err.kind(), err.to_string()))
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(shared: &Shared) {
    let mut waiting: Vec<Waiting> = Vec::new();
    loop {
        let mut state = lock(shared);
        // What to wait on: the waker, every socket, every connection that owes a question.
        let mut fds: Vec<(i32, bool)> = vec![(shared.waker.fd(), false)];
        let ids: Vec<u64> = state.sockets.iter().map(|socket| socket.id).collect();
        fds.extend(
            state
                .sockets
                .iter()
                .map(|socket| (socket.listener.as_raw_fd(), false)),
        );
        fds.extend(waiting.iter().map(|one| (one.stream.as_raw_fd(), false)));
        let now = Instant::now();
        let timeout = waiting
            .iter()
            .map(|one| one.until.saturating_duration_since(now))
            .min();
        state.polling = true;
        drop(state);
        let polled = sys::poll_readable(&mut fds, timeout);
        let mut state = lock(shared);
        state.polling = false;
        state.polls += 1;
        shared.returned.notify_all();
        if let Err(err) = polled {
            debug!(%err, "the host lock's thread cannot wait; trying again");
            drop(state);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if fds[0].1 {
            shared.waker.clear();
        }
        // New connections, on the sockets still held (by id: one may be gone meanwhile).
        let mut accepted = Vec::new();
        for (&id, _) in ids.iter().zip(&fds[1..]).filter(|(_, (_, ready))| *ready) {
            let Some(socket) = state.sockets.iter().find(|socket| socket.id == id) else {
                continue;
            };
            loop {
                match socket.listener.accept() {
                    // A lock whose holders need not prove themselves has nothing to say.
                    Ok((stream, _)) if socket.proof.key.is_some() => {
                        if stream.set_nonblocking(true).is_ok() {
                            accepted.push(Waiting {
                                stream,
                                proof: Arc::clone(&socket.proof),
                                question: [0; PROOF_LEN],
                                read: 0,
                                until: Instant::now() + PROOF_WAIT,
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => {
                        debug!(%err, "cannot accept a connection to a host lock");
                        break;
                    }
                }
            }
        }
        drop(state);
        // Questions, answered; connections that said nothing in time, dropped.
        let ready = fds[1 + ids.len()..].iter().map(|&(_, ready)| ready);
        let now = Instant::now();
        let mut still = Vec::with_capacity(waiting.len() + accepted.len());
        for (mut one, ready) in waiting.drain(..).zip(ready) {
            if ready && !one.hear() {
                continue;
            }
            if one.until > now {
                still.push(one);
            }
        }
        still.extend(accepted);
        let excess = still.len().saturating_sub(MAX_WAITING);
        still.drain(..excess);
        waiting = still;
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
        if let Some(key) = &self.proof.key {
            let proof = answer(key, &self.proof.name, &self.question);
            let _ = self.stream.write_all(proof.as_bytes());
        }
        false
    }
}
