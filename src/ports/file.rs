//! The ports file, `KEY.ports` beside the key: its format, and reading and writing it.
//!
//! ```text
//! # UDP ports of the iroh endpoint whose key is beside this file, bound again
//! # on its next start so that its tickets stay valid (iroh-identity).
//! ipv4 41234
//! ipv6 41235
//! ```
//!
//! It is ours or it is left alone: it is replaced only when it is absent or is a ports
//! file this crate wrote (its first line says so), never when it is anything else (a key
//! someone named `KEY.ports`, a link, another user's file). Ports below 1024 are
//! ignored: a ports file never makes the endpoint bind a service's port (53, 123).
//!
//! It is written only by the holder of the identity, so by one process at a time, and
//! like a key: to a temporary file, synced, renamed over the old one, and the directory
//! synced. A crash leaves the old ports or the new ones.

use std::{
    ffi::{OsStr, OsString},
    io::{self, Read},
};

use tracing::{debug, warn};

use super::{Family, Ports};
use crate::{
    error::{Error, Operation},
    fs::temp,
    sys::{Dir, FileKind},
};

/// What is appended to the key file's name to name its ports file.
const SUFFIX: &str = ".ports";

/// The first line of every ports file this crate writes: how it knows its own.
const HEADER: &str = "# UDP ports of the iroh endpoint whose key is beside this file, bound again";

/// The largest ports file that is read; this crate writes under 200 bytes.
const MAX_LEN: u64 = 1024;

/// The lowest port that is remembered: below it are the ports of system services.
const LOWEST_PORT: u16 = 1024;

/// The name of the ports file of the key named `key_name`.
pub(super) fn name_beside(key_name: &OsStr) -> OsString {
    let mut name = key_name.to_owned();
    name.push(SUFFIX);
    name
}

/// What is at the ports file's path.
#[derive(Debug)]
pub(super) enum PortsFile {
    /// Nothing: it may be created.
    Absent,
    /// A ports file this crate wrote, with the ports worth binding: it may be replaced.
    Ours(Ports),
    /// Something else: it is left alone, and nothing is remembered.
    NotOurs,
}

impl PortsFile {
    /// What is at `name` in `dir`, read without following a link; what is not ours is
    /// logged and left alone.
    pub(super) fn read(dir: &Dir, name: &OsStr) -> Self {
        let path = dir.path().join(name);
        let text = match read_text(dir, name) {
            Ok(Some(text)) => text,
            Ok(None) => {
                debug!(path = %path.display(), "no ports file yet");
                return Self::Absent;
            }
            Err(err) => {
                warn!(
                    path = %path.display(),
                    %err,
                    "the ports file cannot be used; binding fresh ports and leaving it as it is"
                );
                return Self::NotOurs;
            }
        };
        match parse(&text) {
            Some(ports) => Self::Ours(ports),
            None => {
                warn!(
                    path = %path.display(),
                    "the ports file is not one this crate wrote; binding fresh ports and \
                     leaving it as it is"
                );
                Self::NotOurs
            }
        }
    }

    /// The ports worth binding: none unless the file is ours.
    pub(super) fn ports(&self) -> Ports {
        match self {
            Self::Ours(ports) => *ports,
            Self::Absent | Self::NotOurs => Ports::default(),
        }
    }

    /// Whether the file should be (re)written to hold `bound`.
    pub(super) fn should_write(&self, bound: &Ports) -> bool {
        match self {
            Self::Absent => true,
            Self::Ours(remembered) => remembered != bound,
            Self::NotOurs => false,
        }
    }
}

/// The contents of the ports file; `None` if there is none. An error for anything that
/// is not a small regular file of this user.
fn read_text(dir: &Dir, name: &OsStr) -> io::Result<Option<String>> {
    let file = match dir.open_file_no_follow(name) {
        Ok(Some(file)) => file,
        Ok(None) => return Err(io::Error::other("it is a symbolic link")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        let kind = FileKind::of(metadata.file_type());
        return Err(io::Error::other(format!("it is {kind}, not a file")));
    }
    // Unix owners and modes. On Windows the ports file is in the key's directory, where
    // no one else may add or change a file (its home rule, `crate::trust`), and is made
    // private like the key.
    #[cfg(unix)]
    if let Some(owner) = crate::sys::owner(&metadata) {
        let uid = crate::sys::process().uid;
        if owner.uid != uid {
            return Err(io::Error::other(format!(
                "it belongs to uid {}, not to this process's user (uid {uid})",
                owner.uid
            )));
        }
        if owner.mode & 0o022 != 0 {
            return Err(io::Error::other(format!(
                "its group or others may write it (mode {:04o})",
                owner.mode
            )));
        }
    }
    if metadata.len() > MAX_LEN {
        return Err(io::Error::other(format!(
            "it has {} bytes, more than a ports file",
            metadata.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_LEN).read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Reads the contents of a ports file this crate wrote: its header line, then `ipv4
/// PORT` and `ipv6 PORT` lines and `#` comments. `None` if it is anything else. Ports
/// below [`LOWEST_PORT`] are left out.
fn parse(text: &str) -> Option<Ports> {
    let mut lines = text.lines();
    if lines.next()?.trim_end() != HEADER {
        return None;
    }
    let mut ports = Ports::default();
    let mut seen = Ports::default();
    for line in lines.map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (family, port) = line.split_once(' ')?;
        let family = match family {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            _ => return None,
        };
        let port: u16 = port.trim().parse().ok().filter(|&port| port != 0)?;
        if seen.get(family).is_some() {
            return None;
        }
        seen.set(family, port);
        if port < LOWEST_PORT {
            warn!(%family, port, "a remembered port below 1024 is ignored");
        } else {
            ports.set(family, port);
        }
    }
    Some(ports)
}

fn render(ports: &Ports) -> String {
    let mut text =
        format!("{HEADER}\n# on its next start so that its tickets stay valid (iroh-identity).\n");
    for family in Family::ALL {
        if let Some(port) = ports.get(family) {
            text += &format!("{family} {port}\n");
        }
    }
    text
}

/// Writes the ports file crash-safely: over the one this crate wrote, or where there was
/// none, without replacing what appeared there since it was read.
pub(super) fn write(dir: &Dir, name: &OsStr, ports: &Ports, was: &PortsFile) -> Result<(), Error> {
    // Never asked for a file not ours (see `should_write`); were it, that file stays.
    let replace = matches!(was, PortsFile::Ours(_));
    temp::publish_over(
        dir,
        name,
        render(ports).as_bytes(),
        replace,
        Operation::ReplacePortsFile,
    )
}

#[cfg(test)]
mod tests {
    use super::{HEADER, Ports, parse, render};

    #[test]
    fn ports_read_back_and_anything_else_is_refused() {
        for ports in [
            Ports::default(),
            Ports {
                ipv4: Some(1024),
                ipv6: None,
            },
            Ports {
                ipv4: Some(40000),
                ipv6: Some(65535),
            },
        ] {
            assert_eq!(parse(&render(&ports)), Some(ports));
        }
        for bad in [
            "ipv4 0",
            "ipv4 65536",
            "ipv4 -1",
            "ipv4",
            "ipv5 4000",
            "ipv4 4000\nipv4 4001",
            "4000",
            "ipv4 4000x",
        ] {
            let text = format!("{HEADER}\n{bad}\n");
            assert_eq!(parse(&text), None, "{bad:?}");
        }
        // Without the header line, it is not ours, however it looks.
        assert_eq!(parse("ipv4 40000\n"), None);
        // Ports of system services are never remembered.
        let low = format!("{HEADER}\nipv4 53\nipv6 40000\n");
        assert_eq!(
            parse(&low),
            Some(Ports {
                ipv4: None,
                ipv6: Some(40000)
            })
        );
    }
}
