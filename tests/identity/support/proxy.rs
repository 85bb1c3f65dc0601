//! A TCP proxy that injects faults: a real TCP hop between a machine and a service, that
//! can delay each direction, blackhole it (hold its bytes until it heals, as a partition
//! that TCP outlives), refuse new connections and cut the open ones.
//!
//! Each connection is four threads: a reader and a writer per direction. A reader stamps
//! what it reads with when it may be delivered (now plus the direction's delay); the writer
//! delivers it then, in order, unless the direction is blackholed.

use std::{
    collections::VecDeque,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long the proxy waits for the service to accept a connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the client to the service.
    Up = 0,
    /// From the service back to the client.
    Down = 1,
}

/// The faults the proxy injects now.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Added to every byte's trip, per direction.
    pub delay: [Duration; 2],
    /// Bytes are held, not delivered, per direction.
    pub blackhole: [bool; 2],
    /// New connections are closed at once.
    pub refuse: bool,
}

/// A running proxy from [`Proxy::addr`] to one service address.
pub(crate) struct Proxy {
    addr: SocketAddr,
    /// The listener's descriptor, to wake the acceptor when the proxy stops.
    listening: RawFd,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    faults: Faults,
    stopped: bool,
    /// A clone of every stream the proxy opened, to cut them.
    streams: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Accepts on `listener` and forwards every connection to `target`, from the
    /// namespace of the thread that calls this (the listener's may be another).
    pub(crate) fn start(listener: TcpListener, target: SocketAddr) -> Self {
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                faults: Faults::default(),
                stopped: false,
                streams: Vec::new(),
                threads: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        let listening = listener.as_raw_fd();
        let acceptor = std::thread::spawn(move || {
            loop {
                let accepted = listener.accept();
                if accepting.lock().stopped {
                    return;
                }
                if let Ok((client, _)) = accepted {
                    accepting.connect(client, target);
                }
            }
        });
        Self {
            addr,
            listening,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults; bytes already read keep the delay they were read with.
    pub(crate) fn set(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.shared.lock().faults);
        self.shared.changed.notify_all();
    }

    /// Sets a delay each way, so that a round trip takes `round_trip` more.
    pub(crate) fn add_round_trip(&self, round_trip: Duration) {
        self.set(|faults| faults.delay = [round_trip / 2; 2]);
    }

    /// Closes every open connection at once.
    pub(crate) fn cut(&self) {
        for stream in self.shared.lock().streams.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_all();
        self.cut();
        // Wakes the acceptor from its accept, which then sees that it is stopped. (A
        // connection to it would not do: it may listen in a namespace this thread is not in.)
        // SAFETY: the acceptor owns the listener until it is joined, just below.
        unsafe { libc::shutdown(self.listening, libc::SHUT_RDWR) };
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut self.shared.lock().threads);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// Connects `client` to `target` through four pumping threads, or closes it.
    fn connect(self: &Arc<Self>, client: TcpStream, target: SocketAddr) {
        if self.lock().faults.refuse {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let Ok(service) = TcpStream::connect_timeout(&target, CONNECT_WITHIN) else {
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = service.set_nodelay(true);
        let mut state = self.lock();
        for stream in [&client, &service] {
            state
                .streams
                .push(stream.try_clone().expect("clone a stream"));
        }
        for (direction, from, to) in [
            (Direction::Up, &client, &service),
            (Direction::Down, &service, &client),
        ] {
            let queue = Arc::new(Queue::default());
            let (from, reading) = (
                from.try_clone().expect("clone"),
                (Arc::clone(self), Arc::clone(&queue)),
            );
            state.threads.push(std::thread::spawn(move || {
                read(from, direction, &reading.0, &reading.1);
            }));
            let (to, writing) = (to.try_clone().expect("clone"), Arc::clone(self));
            state.threads.push(std::thread::spawn(move || {
                write(to, direction, &writing, &queue);
            }));
        }
    }
}

/// What a reader has read and its writer has yet to deliver: each chunk with when it may
/// be, and `None` at the end of the stream.
#[derive(Default)]
struct Queue {
    chunks: Mutex<VecDeque<(Instant, Option<Vec<u8>>)>>,
}

fn read(mut from: TcpStream, direction: Direction, shared: &Shared, queue: &Queue) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = from.read(&mut buffer);
        let chunk = match read {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(buffer[..n].to_vec()),
        };
        let end = chunk.is_none();
        // Pushed under the state's lock, which the writer holds from its look at the queue
        // to its wait: it cannot miss the notification.
        let state = shared.lock();
        let at = Instant::now() + state.faults.delay[direction as usize];
        queue
            .chunks
            .lock()
            .expect("not poisoned")
            .push_back((at, chunk));
        shared.changed.notify_all();
        drop(state);
        if end {
            return;
        }
    }
}

fn write(mut to: TcpStream, direction: Direction, shared: &Shared, queue: &Queue) {
    let mut state = shared.lock();
    loop {
        if state.stopped {
            return;
        }
        let front = queue
            .chunks
            .lock()
            .expect("not poisoned")
            .front()
            .map(|(at, _)| *at);
        let held = state.faults.blackhole[direction as usize];
        let wait = match front {
            Some(at) if !held && at <= Instant::now() => None,
            Some(at) if !held => Some(at - Instant::now()),
            // Nothing to deliver, or held: until something changes.
            _ => Some(Duration::from_secs(1)),
        };
        if let Some(wait) = wait {
            state = shared
                .changed
                .wait_timeout(state, wait)
                .expect("not poisoned")
                .0;
            continue;
        }
        let (_, chunk) = queue
            .chunks
            .lock()
            .expect("not poisoned")
            .pop_front()
            .expect("a chunk");
        drop(state);
        let delivered = match chunk {
            Some(bytes) => to.write_all(&bytes).is_ok(),
            None => false,
        };
        if !delivered {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        state = shared.lock();
    }
}
