//! The platform, behind one set of functions and types: directories used through their
//! descriptor, files opened without hanging or following links, owners and modes, locks
//! and the identity of the process. Mechanism only: what is trusted is decided in
//! `store::trust`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use linux::*;

#[cfg(not(unix))]
mod other;
#[cfg(not(unix))]
pub(crate) use other::*;

use std::fs::Metadata;

/// The owner, group and permission bits of a file: unix notions ([`owner`] has them
/// only on unix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// The permission bits, with setuid, setgid and sticky: `mode & 0o7777`.
    pub(crate) mode: u32,
}

/// What a file is: its type, and its owner and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) kind: Kind,
    pub(crate) owner: Owner,
}

/// The types of file that a path walk tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Directory,
    File,
    SymbolicLink,
    Other,
}

impl Stat {
    /// The stat of an open file. Where files have no unix owner, everything looks like
    /// the process's own, private.
    pub(crate) fn of(metadata: &Metadata) -> Self {
        let file_type = metadata.file_type();
        let kind = if file_type.is_dir() {
            Kind::Directory
        } else if file_type.is_file() {
            Kind::File
        } else if file_type.is_symlink() {
            Kind::SymbolicLink
        } else {
            Kind::Other
        };
        Self {
            kind,
            owner: owner(metadata).unwrap_or(Owner {
                uid: 0,
                gid: 0,
                mode: 0o700,
            }),
        }
    }
}
