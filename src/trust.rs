//! Who may change a path: the rules a directory, a link or a key file on the way to a key
//! is judged by, as OpenSSH's `safe_path` and Tor's `check_private_dir` judge theirs.
//!
//! Another local user who can write any directory above the key can replace it, swap it
//! for one whose secret they know, or plant one before it is first created. So every
//! directory from `/` down to the key, every symbolic link followed on the way, and the
//! key file itself must belong to this process's effective user or to root, and must not
//! be writable by anyone else:
//!
//! - **Other users.** Writable by others is refused, except for a sticky directory
//!   (`/tmp`, mode `1777`): there others may add names but not rename or remove ours, so
//!   what they plant (a key, a link) is theirs and refused in turn.
//! - **Groups.** Writable by a group is accepted when this process is a member of the
//!   group, and refused otherwise. The members of one's own group are trusted like the
//!   user: that is a Kubernetes volume with `fsGroup` (directories `2775`, the group a
//!   supplementary group of the pod's processes). A group the process is not in is
//!   someone else's, as good as other users. OpenSSH refuses group-writable directories
//!   outright; this is where the crate differs from it.
//! - **The key file.** A key of this user must not be readable or writable by group or
//!   others (mode `0600` or stricter), as OpenSSH has it for `~/.ssh/id_*`. A key owned
//!   by root and read by another user (a mounted secret) is readable through its group
//!   or other bits by necessity: that is root's choice, accepted as OpenSSH accepts it,
//!   but it must not be writable by a group the process is not in, or by others. A key
//!   file with more than one name in a directory where others may add names is refused:
//!   another user may have linked a file of the user's there.
//!
//! How a path is walked so that what is judged is what is used is [`crate::fs::walk`]'s.

use std::{fmt, path::Path};

use crate::sys::{Ownership, Process};

/// What the rules say of `owner`, the owner and mode of a path of `kind`, for `process`:
/// who else could change it, if anyone.
pub(crate) fn problem(owner: Ownership, process: Process, kind: PathKind) -> Option<TrustProblem> {
    if owner.uid != process.uid && owner.uid != 0 {
        return Some(TrustProblem::OtherOwner { user: process.uid });
    }
    match kind {
        // A link's own mode means nothing: only who may replace it, its directory.
        PathKind::SymbolicLink => None,
        PathKind::Directory => writable_by_others(owner, process, true),
        PathKind::KeyFile => writable_by_others(owner, process, false),
    }
}

/// Whether someone besides the owner, root and the process's own groups may write.
fn writable_by_others(
    owner: Ownership,
    process: Process,
    sticky_protects: bool,
) -> Option<TrustProblem> {
    if sticky_protects && owner.mode & 0o1000 != 0 {
        return None;
    }
    if owner.mode & 0o002 != 0 {
        Some(TrustProblem::WritableByOthers)
    } else if owner.mode & 0o020 != 0 && !process.in_group(owner.gid) {
        Some(TrustProblem::WritableByGroup)
    } else {
        None
    }
}

/// What an [`Error::UntrustedPath`](crate::Error::UntrustedPath) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// A directory above the key file.
    Directory,
    /// A symbolic link on the way to the key file.
    SymbolicLink,
    /// The key file itself.
    KeyFile,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Directory => "directory",
            Self::SymbolicLink => "symbolic link",
            Self::KeyFile => "key file",
        })
    }
}

/// Who, besides this process's user and root, could change a path on the way to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustProblem {
    /// It belongs to another user.
    OtherOwner {
        /// This process's effective user id.
        user: u32,
    },
    /// Every user may write it (a directory that is not sticky, or a file).
    WritableByOthers,
    /// Its group may write it, and this process is not in that group.
    WritableByGroup,
    /// The key file has this many names (hard links), and its directory lets others add
    /// names: one of them may be another user's link to a file of this user's.
    HardLinked {
        /// How many names the file has.
        links: u64,
    },
}

/// The message of an [`Error::UntrustedPath`](crate::Error::UntrustedPath): what was
/// found, who could change it, and the fix.
pub(crate) struct Untrusted<'a> {
    pub(crate) key: &'a Path,
    pub(crate) path: &'a Path,
    pub(crate) kind: &'a PathKind,
    pub(crate) owner: &'a Ownership,
    pub(crate) problem: &'a TrustProblem,
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            key,
            path,
            kind,
            owner,
            problem,
        } = self;
        let Ownership {
            uid: owner,
            gid: group,
            mode,
        } = owner;
        let shown = path.display();
        write!(
            f,
            "{kind} {shown} (owner uid {owner}, group {group}, mode {mode:04o}) "
        )?;
        match problem {
            TrustProblem::OtherOwner { user } => write!(
                f,
                "belongs to uid {owner}, not to this process's user (uid {user}) or root: uid \
                 {owner}"
            )?,
            TrustProblem::WritableByOthers => {
                f.write_str("may be written by every user: any of them")?;
            }
            TrustProblem::WritableByGroup => write!(
                f,
                "may be written by group {group}, which this process is not a member of: its \
                 members"
            )?,
            TrustProblem::HardLinked { links } => {
                return write!(
                    f,
                    "has {links} names (hard links) in a directory where others may add names: \
                     another user may have linked a file of yours there, to make you run an \
                     identity of their choosing; keep the key in a directory only you can \
                     write, or, if you made the other names, remove them"
                );
            }
        }
        if key == path {
            f.write_str(" could replace the key; ")?;
        } else {
            write!(f, " could replace the key file {}; ", key.display())?;
        }
        match (problem, kind) {
            // Never "chown it": that would adopt what another user may have planted, and
            // chown follows a link to its target.
            (TrustProblem::OtherOwner { .. }, _) => write!(
                f,
                "keep the key where every directory on the way belongs to you or root, and if \
                 you did not put {shown} there, remove it"
            ),
            (TrustProblem::WritableByOthers, PathKind::Directory) => write!(
                f,
                "run `chmod o-w {shown}`, or `chmod +t {shown}` if others must add files there \
                 (sticky, as /tmp, they cannot rename what is yours)"
            ),
            (TrustProblem::WritableByOthers, _) => write!(f, "run `chmod o-w {shown}`"),
            (TrustProblem::WritableByGroup, _) => write!(f, "run `chmod g-w {shown}`"),
            (TrustProblem::HardLinked { .. }, _) => Ok(()),
        }
    }
}
