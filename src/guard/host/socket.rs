//! The host lock on Linux: an abstract unix socket, named by the lock's key.
//!
//! A lock has [`SLOTS`] names. Its holder listens on one of them, and the kernel lets one
//! socket at a time have a name: that is the mutual exclusion. Several names are there
//! because another user can see a holder's name in `/proc/net/unix` and bind it once the
//! holder is gone, to keep the identity from opening. Such a squatter is told from a
//! holder: a holder is a socket that listens, made by this process's user or root, or by
//! another user that proves it knows the lock's key (it answers a random question with a
//! keyed hash of it). A squatted name is passed over for the next; only when every name is
//! squatted does an open fail, naming the squatters.
//!
//! An attempt binds the first name it can, starts listening, then looks at every other
//! name: if a holder listens on one, it lets go of its own and waits. Two processes can
//! never both keep a lock: each listens before it looks, so the later of the two to look
//! sees the other. (Two that look at the same instant may both let go; they try again.)
//! A squatter that comes and goes can only make an attempt try another name.

use std::{
    io::{self, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    time::{Duration, Instant},
};

use tracing::debug;
use zeroize::Zeroizing;

use super::{Attempt, Holder, Scope, responder};
use crate::{
    Error,
    sys::{self, Reached},
};

/// How many names a lock may have.
pub(super) const SLOTS: u8 = 8;

/// How long a listener of another user has to prove it holds the lock, before it counts
/// as a squatter: a holder answers from a thread of its own within microseconds.
pub(super) const PROOF_WAIT: Duration = Duration::from_millis(100);

/// The length of a question and of its answer.
pub(super) const PROOF_LEN: usize = 32;

/// A lock this process holds: its socket, listening, served by the responder.
#[derive(Debug)]
pub(super) struct Held {
    _served: responder::Served,
}

/// The names of a lock, and a socket to look at them with.
struct Names {
    key: Zeroizing<[u8; 32]>,
    prefix: String,
    prober: sys::Prober,
}

impl Names {
    fn of(scope: Scope<'_>) -> Self {
        let key = scope.lock_key();
        let tag = blake3::keyed_hash(&key, b"name");
        let prefix = format!(
            "iroh-identity/1/{}/",
            data_encoding::HEXLOWER.encode(&tag.as_bytes()[..16])
        );
        Self {
            key,
            prefix,
            prober: sys::Prober::default(),
        }
    }

    fn name(&self, slot: u8) -> Vec<u8> {
        format!("{}{slot}", self.prefix).into_bytes()
    }
}

/// The answer that proves a holder of the lock's key: a keyed hash of the question and
/// of the name it was asked on (so that an answer got elsewhere does not fit).
pub(super) fn answer(key: &[u8; 32], name: &[u8], question: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"answer").update(name).update(question);
    hasher.finalize()
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
    /// A socket of another user that was asked to prove it holds the lock: the answer is
    /// read with the others' ([`settle`]), so that squatters who never answer cost one
    /// [`PROOF_WAIT`] together.
    Asked(Question),
}

/// A question put to a listener of another user.
#[derive(Debug)]
struct Question {
    stream: UnixStream,
    holder: Holder,
    expected: blake3::Hash,
}

pub(super) fn attempt(scope: Scope<'_>) -> Result<Attempt, Error> {
    let mut names = Names::of(scope);
    let mut squatters = Vec::new();
    let mut asked = Vec::new();
    for slot in 0..SLOTS {
        let name = names.name(slot);
        let listener = match sys::listen_abstract(&name) {
            Ok(listener) => listener,
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
                match look(scope, &mut names, &name).map_err(unreachable)? {
                    Found::Holder(holder) => return Ok(Attempt::Held(holder)),
                    // Bound, and no one listens: a squatter's, or a holder's in the instant
                    // before it listens, which looks at this slot's successor (where this
                    // attempt goes) once it does.
                    Found::Nobody => squatters.push(sys::abstract_name_owner(&name).ok().flatten()),
                    Found::Squatter(uid) => squatters.push(uid),
                    // Passed over for now; looked at again once a name is had, or at the end.
                    Found::Asked(question) => asked.push(question),
                }
                continue;
            }
            Err(err) => return Err(unreachable(err)),
        };
        return keep_unless_held(scope, &mut names, slot, listener);
    }
    let (holder, unproven) = settle(asked);
    if let Some(holder) = holder {
        return Ok(Attempt::Held(Some(holder)));
    }
    squatters.extend(unproven.into_iter().map(Some));
    let mut squatters: Vec<u32> = squatters.into_iter().flatten().collect();
    squatters.sort_unstable();
    squatters.dedup();
    Err(Error::HostLockTaken { squatters })
}

/// Having the name of `slot`, looks at every other: keeps the lock if no holder listens on
/// any.
fn keep_unless_held(
    scope: Scope<'_>,
    names: &mut Names,
    slot: u8,
    listener: UnixListener,
) -> Result<Attempt, Error> {
    let mut asked = Vec::new();
    for other in (0..SLOTS).filter(|&other| other != slot) {
        let name = names.name(other);
        match look(scope, names, &name).map_err(unreachable)? {
            // Dropping the listener lets go of the name at once.
            Found::Holder(holder) => return Ok(Attempt::Held(holder)),
            Found::Asked(question) => asked.push(question),
            Found::Nobody | Found::Squatter(_) => {}
        }
    }
    if let (Some(holder), _) = settle(asked) {
        debug!(slot, "another user's process holds the lock; letting go");
        return Ok(Attempt::Held(Some(holder)));
    }
    let name = names.name(slot);
    let key = scope.proves_itself().then(|| names.key.clone());
    let served = responder::serve(listener, name, key).map_err(unreachable)?;
    Ok(Attempt::Taken(Held { _served: served }))
}

/// Who has `name`.
fn look(scope: Scope<'_>, names: &mut Names, name: &[u8]) -> io::Result<Found> {
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
            if !scope.proves_itself() {
                return Ok(Found::Squatter(Some(peer.uid)));
            }
            let mut question = [0u8; PROOF_LEN];
            getrandom::fill(&mut question).map_err(|err| io::Error::other(err.to_string()))?;
            // 32 bytes fit in any socket's buffer: this does not wait.
            stream.set_write_timeout(Some(PROOF_WAIT))?;
            if stream.write_all(&question).is_err() {
                return Ok(Found::Squatter(Some(peer.uid)));
            }
            Ok(Found::Asked(Question {
                stream,
                holder,
                expected: answer(&names.key, name, &question),
            }))
        }
        // Who has it only the kernel's table tells: a holder flooded with connections, or
        // a squatter that never accepts any.
        Reached::QueueFull => Ok(match sys::abstract_name_owner(name) {
            Ok(Some(uid)) if trusted(uid) => Found::Holder(Some(Holder { uid, pid: None })),
            Ok(Some(uid)) => Found::Squatter(Some(uid)),
            Ok(None) => Found::Nobody,
            // Not told (a kernel before 5.3): it may be a holder, so it counts as one.
            Err(err) => {
                debug!(%err, "cannot tell who has a lock's name");
                Found::Holder(None)
            }
        }),
        Reached::OtherType => Ok(Found::Squatter(
            sys::abstract_name_owner(name).ok().flatten(),
        )),
    }
}

/// Reads the answers to the questions asked, all within one [`PROOF_WAIT`]: the first
/// listener that proves it holds the lock, and the users of those that did not.
fn settle(asked: Vec<Question>) -> (Option<Holder>, Vec<u32>) {
    let deadline = Instant::now() + PROOF_WAIT;
    let mut unproven = Vec::new();
    for mut question in asked {
        let mut got = [0u8; PROOF_LEN];
        if read_by(&mut question.stream, &mut got, deadline).is_ok()
            && blake3::Hash::from(got) == question.expected
        {
            return (Some(question.holder), unproven);
        }
        unproven.push(question.holder.uid);
    }
    (None, unproven)
}

/// Fills `buffer` from `stream` by `deadline`.
fn read_by(stream: &mut UnixStream, buffer: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut read = 0;
    while read < buffer.len() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buffer[read..])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => read += n,
        }
    }
    Ok(())
}

/// Whether a holder listens on any name of the lock.
pub(super) fn is_held(scope: Scope<'_>) -> Option<bool> {
    let mut names = Names::of(scope);
    let mut asked = Vec::new();
    for slot in 0..SLOTS {
        let name = names.name(slot);
        match look(scope, &mut names, &name).ok()? {
            Found::Holder(_) => return Some(true),
            Found::Asked(question) => asked.push(question),
            Found::Nobody | Found::Squatter(_) => {}
        }
    }
    Some(settle(asked).0.is_some())
}
