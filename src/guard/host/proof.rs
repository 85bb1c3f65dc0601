//! How a holder of a host lock proves, to a process of another user, that it knows the
//! lock's key: it answers a random question with a keyed hash of it, and of the name it
//! was asked on (so that an answer got elsewhere does not fit). A squatter, who does not
//! know the key, cannot.

use std::time::Duration;

/// How long listeners of other users have, all together, to prove they hold the lock,
/// before they count as squatters: a holder answers from a thread of its own.
pub(super) const PROOF_WAIT: Duration = Duration::from_millis(100);

/// The length of a question and of its answer.
pub(super) const PROOF_LEN: usize = 32;

/// The answer that proves a holder of the lock's key: a keyed hash of the question and
/// of the name it was asked on (so that an answer got elsewhere does not fit).
pub(super) fn answer(key: &[u8; 32], name: &[u8], question: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"answer").update(name).update(question);
    hasher.finalize()
}
