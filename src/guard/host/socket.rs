//! The host lock of an identity on Linux: an abstract unix socket, named by the lock's
//! key.
//!
//! A lock has [`SLOTS`] names. Its holder listens on one of them, and the kernel lets one
//! socket at a time have a name: that is the mutual exclusion. Several names are there
//! because another user can see a holder's name in `/proc/net/unix` and bind it once the
//! holder is gone, to keep the identity from opening. Such a squatter is told from a
//! holder: a holder is a socket that listens, made by this process's user or root (the
//! kernel says who, `SO_PEERCRED`), or by another user that proves it knows the lock's key
//! (it answers a random question with a keyed hash of it, within [`PROOF_WAIT`]). A
//! squatted name is passed over for the next; only when every name is taken does an open
//! fail, naming the squatters.
//!
//! An attempt binds the first name it can, starts listening, then looks at every other
//! name: if a holder listens on one, it lets go of its own and waits. Two processes can
//! never both keep a lock: each listens before it looks, so the later of the two to look
//! sees the other. (Two that look at the same instant may both let go; they try again.)
//! A squatter that comes and goes can only make an attempt try another name.
//!
//! That holds for any two processes of one user, whatever else happens: the kernel names
//! a listener's user even while it is stopped, flooded or starved. A holder of another user
//! must answer in time to be told from a squatter, so two users' copies of one secret are
//! kept apart only while their holders answer (see the crate's *Limitations*): letting an
//! unanswered listener count as a holder would let any user stall any identity.

use std::{
    io::{self, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    time::{Duration, Instant},
};

use iroh::SecretKey;
use tracing::debug;
use zeroize::Zeroizing;

use super::{
    Attempt, Holder, lock_key,
    proof::{PROOF_LEN, PROOF_WAIT, answer},
    responder,
};
use crate::{
    error::Error,
    sys::{self, Reached},
};

/// How many names a lock may have.
pub(super) const SLOTS: u8 = 8;

/// How long the kernel's table of unix sockets is read for, at most, to name who has a
/// name: another user can make it long.
const TABLE_WAIT: Duration = Duration::from_millis(100);

/// A lock this process holds: its socket, listening, served by the responder.
#[derive(Debug)]
pub(super) struct Held {
    _served: responder::Served,
}

/// The names of a lock, and a socket to look at them with.
struct Names {
    key: Zeroizing<[u8; 32]>,
    prober: sys::Prober,
}

impl Names {
    fn of(key: &SecretKey) -> Self {
        Self {
            key: lock_key(key),
            prober: sys::Prober::default(),
        }
    }

    /// The name of `slot`: each derived on its own, so that a name seen tells nothing of
    /// the others.
    fn name(&self, slot: u8) -> Vec<u8> {
        let tag = blake3::keyed_hash(&self.key, &[b"name ".as_slice(), &[slot]].concat());
        format!(
            "iroh-identity/1/{}",
            data_encoding::HEXLOWER.encode(&tag.as_bytes()[..16])
        )
        .into_bytes()
    }
}

fn unreachable(source: io::Error) -> Error {
    Error::HostLock { path: None, source }
}

/// Who has a name.
#[derive(Debug)]
enum Found {
    Nobody,
    /// A holder of the lock: who, where it can be told.
    Holder(Option<Holder>),
    /// A socket of another user that does not hold the lock; its uid, where known.
    Squatter(Option<u32>),
    /// A socket of another user that was asked to prove it holds the lock.
    Asked(Question),
}

/// A question put to a listener of another user, and what has come of its answer.
#[derive(Debug)]
struct Question {
    stream: UnixStream,
    holder: Holder,
    expected: blake3::Hash,
    answer: [u8; PROOF_LEN],
    read: usize,
}

/// What looking at every name of a lock found, before the answers of other users'
/// listeners are read.
#[derive(Debug)]
pub(super) struct Looked {
    outcome: Outcome,
    asked: Vec<Question>,
}

#[derive(Debug)]
enum Outcome {
    Held(Option<Holder>),
    /// A name bound and listened on: the lock is this process's unless a listener asked
    /// proves it holds it.
    Taken {
        listener: UnixListener,
        name: Vec<u8>,
        key: Zeroizing<[u8; 32]>,
    },
    /// Every name taken: by squatters, unless a listener asked proves it holds it. The
    /// users of those known, and the names bound by a socket that does not listen.
    AllTaken {
        squatters: Vec<u32>,
        silent: Vec<Vec<u8>>,
    },
}

/// Binds the first name of the lock of `key` that it can, and looks at every other.
pub(super) fn look(key: &SecretKey) -> Result<Looked, Error> {
    let mut names = Names::of(key);
    let mut squatters = Vec::new();
    let mut silent = Vec::new();
    let mut asked = Vec::new();
    for slot in 0..SLOTS {
        let name = names.name(slot);
        let listener = match sys::listen_abstract(&name) {
            Ok(listener) => listener,
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
                match found(&mut names, &name).map_err(unreachable)? {
                    Found::Holder(holder) => return Ok(Looked::held(holder)),
                    // Bound, and no one listens: a squatter's, or a holder's in the instant
                    // before it listens, which looks at this slot's successor (where this
                    // attempt goes) once it does.
                    Found::Nobody => silent.push(name),
                    Found::Squatter(uid) => squatters.extend(uid),
                    // Passed over for now; decided once the answers are read.
                    Found::Asked(question) => asked.push(question),
                }
                continue;
            }
            Err(err) => return Err(unreachable(err)),
        };
        for other in (0..SLOTS).filter(|&other| other != slot) {
            let other = names.name(other);
            match found(&mut names, &other).map_err(unreachable)? {
                // Dropping the listener lets go of the name at once.
                Found::Holder(holder) => return Ok(Looked::held(holder)),
                Found::Asked(question) => asked.push(question),
                Found::Nobody | Found::Squatter(_) => {}
            }
        }
        let key = names.key.clone();
        return Ok(Looked {
            outcome: Outcome::Taken {
                listener,
                name,
                key,
            },
            asked,
        });
    }
    Ok(Looked {
        outcome: Outcome::AllTaken { squatters, silent },
        asked,
    })
}

/// Who has `name`.
fn found(names: &mut Names, name: &[u8]) -> io::Result<Found> {
    let me = sys::process().uid;
    let trusted = |uid| uid == me || uid == 0;
    match names.prober.connect(name)? {
        Reached::Nothing => Ok(Found::Nobody),
        Reached::Listener { mut stream, peer } => {
            let holder = Holder {
                uid: peer.uid,
                pid: (peer.pid != 0).then_some(peer.pid),
            };
            if trusted(peer.uid) {
                return Ok(Found::Holder(Some(holder)));
            }
            let mut question = [0u8; PROOF_LEN];
            getrandom::fill(&mut question).map_err(|err| io::Error::other(err.to_string()))?;
            // 32 bytes fit in any socket's buffer: this does not wait.
            stream.set_nonblocking(true)?;
            if stream.write_all(&question).is_err() {
                return Ok(Found::Squatter(Some(peer.uid)));
            }
            Ok(Found::Asked(Question {
                stream,
                holder,
                expected: answer(&names.key, name, &question),
                answer: [0; PROOF_LEN],
                read: 0,
            }))
        }
        // Who has it only the kernel's table tells: a holder of this user flooded with
        // connections (which must count as one), or a squatter that never accepts any.
        Reached::QueueFull => Ok(match sys::abstract_name_owners(&[name], TABLE_WAIT) {
            Ok(owners) => match owners.first().copied().flatten() {
                Some(uid) if trusted(uid) => Found::Holder(Some(Holder { uid, pid: None })),
                Some(uid) => Found::Squatter(Some(uid)),
                None => Found::Nobody,
            },
            // Not told (a kernel before 5.3, or a table too long): it may be a holder, so
            // it counts as one.
            Err(err) => {
                debug!(%err, "cannot tell who has a lock's name");
                Found::Holder(None)
            }
        }),
        // Never a holder's: a holder listens on a stream socket.
        Reached::OtherType => Ok(Found::Squatter(None)),
    }
}

impl Looked {
    fn held(holder: Option<Holder>) -> Self {
        Self {
            outcome: Outcome::Held(holder),
            asked: Vec::new(),
        }
    }

    /// Reads the answers, the thread sleeping between looks: for code that is not async.
    #[cfg(feature = "keyring")]
    pub(super) fn settle_blocking(mut self) -> Result<Attempt<Held>, Error> {
        let deadline = Instant::now() + PROOF_WAIT;
        while self.answering(deadline) {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.decide()
    }

    /// Reads the answers, yielding to the runtime between looks.
    pub(super) async fn settle(mut self) -> Result<Attempt<Held>, Error> {
        let deadline = Instant::now() + PROOF_WAIT;
        while self.answering(deadline) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.decide()
    }

    /// Reads what has come of every answer: whether to look again, which is until one
    /// proves its listener a holder, every one is read, or `deadline` passes.
    fn answering(&mut self, deadline: Instant) -> bool {
        let mut waiting = false;
        for question in &mut self.asked {
            while question.read < PROOF_LEN {
                match question.stream.read(&mut question.answer[question.read..]) {
                    Ok(0) => break,
                    Ok(n) => question.read += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        waiting = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if question.is_proven() {
                return false;
            }
        }
        waiting && Instant::now() < deadline
    }

    fn decide(self) -> Result<Attempt<Held>, Error> {
        if let Some(question) = self.asked.iter().find(|question| question.is_proven()) {
            debug!("another user's process holds the lock");
            return Ok(Attempt::Held(Some(question.holder)));
        }
        let unproven = self.asked.iter().map(|question| question.holder.uid);
        match self.outcome {
            Outcome::Held(holder) => Ok(Attempt::Held(holder)),
            Outcome::Taken {
                listener,
                name,
                key,
            } => {
                let served = responder::serve(listener, name, key).map_err(unreachable)?;
                Ok(Attempt::Taken(Held { _served: served }))
            }
            Outcome::AllTaken {
                mut squatters,
                silent,
            } => {
                squatters.extend(unproven);
                // Named once, for the error: the table can be long.
                let silent: Vec<&[u8]> = silent.iter().map(Vec::as_slice).collect();
                if let Ok(owners) = sys::abstract_name_owners(&silent, TABLE_WAIT) {
                    squatters.extend(owners.into_iter().flatten());
                }
                squatters.sort_unstable();
                squatters.dedup();
                Err(Error::HostLockTaken { squatters })
            }
        }
    }
}

impl Question {
    fn is_proven(&self) -> bool {
        self.read == PROOF_LEN && blake3::Hash::from(self.answer) == self.expected
    }
}

/// Whether a holder listens on any name of the lock of `key`.
pub(super) fn is_held(key: &SecretKey) -> Option<bool> {
    let mut names = Names::of(key);
    let mut asked = Vec::new();
    for slot in 0..SLOTS {
        let name = names.name(slot);
        match found(&mut names, &name).ok()? {
            Found::Holder(_) => return Some(true),
            Found::Asked(question) => asked.push(question),
            Found::Nobody | Found::Squatter(_) => {}
        }
    }
    let looked = Looked {
        outcome: Outcome::Held(None),
        asked,
    };
    let deadline = Instant::now() + PROOF_WAIT;
    let mut looked = looked;
    while looked.answering(deadline) {
        std::thread::sleep(Duration::from_millis(2));
    }
    Some(looked.asked.iter().any(Question::is_proven))
}
