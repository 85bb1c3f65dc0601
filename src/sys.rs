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

use std::{
    fmt,
    fs::{FileType, Metadata},
};

/// Who owns a file and who may use it: its user, group and permission bits (unix
/// notions; elsewhere there are none to tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// The owner's user id.
    pub uid: u32,
    /// The group's id.
    pub gid: u32,
    /// The permission bits, with setuid, setgid and sticky: `mode & 0o7777`.
    pub mode: u32,
}

/// What is at a path: a regular file, or what else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    SymbolicLink,
    /// A named pipe (FIFO).
    NamedPipe,
    /// A unix socket.
    Socket,
    /// A character device.
    CharacterDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Other,
}

impl FileKind {
    /// The kind of a file of `file_type`, not following a symbolic link.
    pub(crate) fn of(file_type: FileType) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if file_type.is_fifo() {
                return Self::NamedPipe;
            }
            if file_type.is_socket() {
                return Self::Socket;
            }
            if file_type.is_char_device() {
                return Self::CharacterDevice;
            }
            if file_type.is_block_device() {
                return Self::BlockDevice;
            }
        }
        if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_file() {
            Self::File
        } else if file_type.is_symlink() {
            Self::SymbolicLink
        } else {
            Self::Other
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::File => "a regular file",
            Self::Directory => "a directory",
            Self::SymbolicLink => "a symbolic link",
            Self::NamedPipe => "a named pipe (FIFO)",
            Self::Socket => "a socket",
            Self::CharacterDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Other => "something else",
        })
    }
}

/// What a file is: its kind, and its owner and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) kind: FileKind,
    pub(crate) owner: Ownership,
}

impl Stat {
    /// The stat of an open file. Where files have no unix owner, everything looks like
    /// the process's own, private.
    pub(crate) fn of(metadata: &Metadata) -> Self {
        Self {
            kind: FileKind::of(metadata.file_type()),
            owner: owner(metadata).unwrap_or(Ownership {
                uid: 0,
                gid: 0,
                mode: 0o700,
            }),
        }
    }
}
