//! Who may change the key: the location of a key is checked before the key is read or
//! created, as OpenSSH's `safe_path` and Tor's `check_private_dir` check theirs.
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
//!   but it must not be writable by a group the process is not in, or by others.
//!
//! `allow_insecure_permissions` turns all of this off. The directories are checked on the
//! path as given, links followed as the kernel follows them; no directory is opened
//! until all have been checked, and a trusted directory cannot be changed by anyone the
//! checks did not trust.

use std::{
    ffi::OsString,
    fs::{self, Metadata},
    path::{Component, Path, PathBuf},
};

use crate::{
    Error,
    error::{PathKind, TrustProblem},
    sys::{self, Owner, Process},
};

/// As many symbolic links as Linux follows in one path.
const MAX_LINKS: usize = 40;

/// What checking a key's location found, besides that it can be trusted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Location {
    /// The key is reached through a Kubernetes secret volume (a `..data` link).
    pub(crate) kubernetes_secret: bool,
}

/// One step of a path still to be walked.
enum Step {
    Root,
    Parent,
    Name(OsString),
}

/// Checks every directory from `/` down to the one the key at `key` is in, and every
/// symbolic link on the way, following links as the kernel does. Stops where the path
/// stops existing: what is missing is created later, by this process, private.
///
/// The key file itself is checked once it is open ([`check_key_file`]); when its name
/// is a symbolic link, [`check_link`] checks the link and where it leads.
pub(crate) fn check_location(key: &Path, process: &Process) -> Result<Location, Error> {
    match key.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => walk(key, dir, false, process),
        _ => walk(key, Path::new("."), false, process),
    }
}

/// Checks the key's name when it is a symbolic link (a Kubernetes secret's
/// `endpoint.key -> ..data/endpoint.key`): the link, and the links and directories on
/// the way to its target.
pub(crate) fn check_link(key: &Path, process: &Process) -> Result<Location, Error> {
    walk(key, key, true, process)
}

/// Walks `path`, the key at `key` or a directory above it (`to_key` says which).
fn walk(key: &Path, path: &Path, to_key: bool, process: &Process) -> Result<Location, Error> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|err| Error::io("find the current directory for", key, err))?
            .join(path)
    };
    let mut steps = Vec::new();
    push_steps(&mut steps, &absolute);
    let mut location = Location::default();
    let mut current = PathBuf::new();
    let mut links = 0;
    while let Some(step) = steps.pop() {
        let name = match step {
            Step::Root => {
                current = PathBuf::from("/");
                let metadata =
                    fs::metadata(&current).map_err(|err| Error::io("check", &current, err))?;
                judge(key, &current, PathKind::Directory, &metadata, process)?;
                continue;
            }
            Step::Parent => {
                current.pop();
                continue;
            }
            Step::Name(name) => name,
        };
        let next = current.join(&name);
        // Missing (created later), or not reachable (the open then says why).
        let Ok(metadata) = fs::symlink_metadata(&next) else {
            return Ok(location);
        };
        if metadata.is_symlink() {
            judge(key, &next, PathKind::SymbolicLink, &metadata, process)?;
            links += 1;
            let Ok(target) = fs::read_link(&next) else {
                return Ok(location);
            };
            if links > MAX_LINKS {
                return Ok(location); // The open fails with "too many levels of links".
            }
            location.kubernetes_secret |= name == "..data";
            push_steps(&mut steps, &target);
        } else if metadata.is_dir() {
            // The key path itself being a directory is reported once it is opened.
            if !(to_key && steps.is_empty()) {
                judge(key, &next, PathKind::Directory, &metadata, process)?;
            }
            current = next;
        } else {
            // The key file (checked once open), or a file where a directory should be
            // (the open says so).
            return Ok(location);
        }
    }
    Ok(location)
}

/// Checks a directory that this process did not create and did not check on the way:
/// one that a racing process made while this one was creating the same path.
pub(crate) fn check_directory(
    key: &Path,
    dir: &Path,
    metadata: &Metadata,
    process: &Process,
) -> Result<(), Error> {
    judge(key, dir, PathKind::Directory, metadata, process)
}

/// Checks the open key file: owner and mode.
pub(crate) fn check_key_file(
    key: &Path,
    metadata: &Metadata,
    process: &Process,
    location: Location,
) -> Result<(), Error> {
    let Some(owner) = sys::owner(metadata) else {
        return Ok(());
    };
    if owner.uid == process.uid {
        if owner.mode & 0o077 != 0 {
            return Err(Error::InsecurePermissions {
                path: key.to_owned(),
                mode: owner.mode,
                kubernetes_secret: location.kubernetes_secret,
            });
        }
        return Ok(());
    }
    judge(key, key, PathKind::KeyFile, metadata, process)
}

/// The rules of the module's documentation for one directory, link or foreign key file.
fn judge(
    key: &Path,
    path: &Path,
    kind: PathKind,
    metadata: &Metadata,
    process: &Process,
) -> Result<(), Error> {
    let Some(owner) = sys::owner(metadata) else {
        return Ok(());
    };
    let problem = if owner.uid != process.uid && owner.uid != 0 {
        Some(TrustProblem::OtherOwner { user: process.uid })
    } else {
        match kind {
            // A link's own mode means nothing: only who may replace it, its directory.
            PathKind::SymbolicLink => None,
            PathKind::Directory => writable_by_others(owner, process, true),
            PathKind::KeyFile => writable_by_others(owner, process, false),
        }
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::UntrustedPath {
            key: key.to_owned(),
            path: path.to_owned(),
            kind,
            owner: owner.uid,
            group: owner.gid,
            mode: owner.mode,
            problem,
        }),
    }
}

/// Whether someone besides the owner, root and the process's own groups may write.
fn writable_by_others(
    owner: Owner,
    process: &Process,
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

/// Puts the steps of `path` on the stack, the first to walk on top.
fn push_steps(steps: &mut Vec<Step>, path: &Path) {
    for component in path.components().rev() {
        steps.push(match component {
            Component::RootDir | Component::Prefix(_) => Step::Root,
            Component::ParentDir => Step::Parent,
            Component::CurDir => continue,
            Component::Normal(name) => Step::Name(name.to_owned()),
        });
    }
}
