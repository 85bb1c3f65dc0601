//! The platform, behind one set of functions and types: directories used through their
//! descriptor (unix) or held open so that they stay where they are (Windows), files
//! opened without hanging or following links, owners and modes or DACLs, locks and the
//! identity of the process. Mechanism only: what is trusted is decided in
//! [`crate::trust`].

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use linux::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

// A system without a room of its own would get none of the checks: refused, not built.
#[cfg(not(any(unix, windows)))]
compile_error!("iroh-identity runs on unix and Windows only");

use std::{fmt, fs::FileType};

/// Who owns a file and who may use it: its user, group and permission bits (unix
/// notions; on Windows a [`Principal`] is named instead).
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

/// A user, a group or a well-known principal of Windows (`BUILTIN\Users`, Everyone), as
/// an [`Error::UntrustedPath`](crate::Error::UntrustedPath) names one.
///
/// Boxed, so that an [`Error`](crate::Error) stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(Box<Named>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    sid: String,
    name: Option<String>,
}

impl Principal {
    #[cfg_attr(not(windows), allow(dead_code, reason = "named on Windows only"))]
    pub(crate) fn new(sid: String, name: Option<String>) -> Self {
        Self(Box::new(Named { sid, name }))
    }

    /// Its security identifier, as Windows writes it (`S-1-5-32-545`); `icacls` takes it
    /// as `*S-1-5-32-545`.
    pub fn sid(&self) -> &str {
        &self.0.sid
    }

    /// Its account name (`BUILTIN\Users`), where this host knows one.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.sid()),
            None => f.write_str(self.sid()),
        }
    }
}

/// What a file is: its kind, who owns it and may change it (unix: its [`Ownership`];
/// Windows: its owner and DACL), and how many names it has.
#[derive(Debug, Clone)]
pub(crate) struct Stat {
    pub(crate) kind: FileKind,
    pub(crate) owner: Owner,
    pub(crate) links: u64,
}
