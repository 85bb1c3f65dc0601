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
//! **Windows.** The same rules, read from each path's owner and DACL instead of its owner
//! and mode:
//!
//! - **Owners.** Each must be this process's user, the owner its token gives what it
//!   creates (Administrators, for an elevated administrator), SYSTEM, Administrators or
//!   TrustedInstaller (the owners of Windows' own folders, as root's are accepted on
//!   unix).
//! - **Directories.** Refused when the DACL lets any other principal remove or rename
//!   what is in it (`FILE_DELETE_CHILD`), remove or rename it (`DELETE`), or change its
//!   DACL or owner (`WRITE_DAC`, `WRITE_OWNER`). One where others may only add files or
//!   folders is the sticky directory of Windows, accepted above the key's directory as
//!   `/tmp` is: `C:\` lets Authenticated Users make folders, `C:\ProgramData` lets Users
//!   make files, and what they make is theirs and refused in turn. The key's own
//!   directory, and the directory of the user's lock files, must let no one else add
//!   anything: a folder where `Users` may create files is no home for a key, since a name
//!   planted there before its first start keeps the identity from starting (guarantee 9).
//!   The directories the crate makes let no one else in.
//! - **Links** (symbolic links and junctions): refused when another may remove them or
//!   change their DACL.
//! - **The key file.** Refused when another may write it, remove it or change its DACL,
//!   or read it at all, whoever owns it: as Win32-OpenSSH refuses an "UNPROTECTED
//!   PRIVATE KEY FILE". There is no exception for a key of SYSTEM's that others read, and
//!   no hard-link check beyond unix's: a folder where others may add files, the only
//!   place another user could link a file of the user's, is refused as the key's home.
//! - **Groups** are not looked at: `BUILTIN\Users` holds every user, so a right given to
//!   any group but Administrators is a right given to others.
//! - A deny ACE counts only against the principal it names, or against all when it names
//!   Everyone: a DACL is judged at least as open as it is, never less.
//!
//! How a path is walked so that what is judged is what is used is [`crate::fs::walk`]'s.

use std::{fmt, path::Path};

#[cfg(windows)]
use crate::sys::Sid;
use crate::sys::{Owner, Ownership, Principal, Process};

/// What the rules say of `owner`, the owner and mode of a path of `kind`, for `process`:
/// who else could change it, if anyone.
#[cfg(unix)]
pub(crate) fn problem(owner: &Owner, process: Process, kind: PathKind) -> Option<TrustProblem> {
    if owner.uid != process.uid && owner.uid != 0 {
        return Some(TrustProblem::OtherOwner { user: process.uid });
    }
    match kind {
        // A link's own mode means nothing: only who may replace it, its directory.
        PathKind::SymbolicLink => None,
        PathKind::Directory | PathKind::KeyDirectory => writable_by_others(owner, process, true),
        PathKind::KeyFile => writable_by_others(owner, process, false),
    }
}

/// Whether someone besides the owner, root and the process's own groups may write.
#[cfg(unix)]
fn writable_by_others(
    owner: &Owner,
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

/// Whether others than its owner may add names to the directory of `owner`: where a key
/// file with a second name may be another user's link.
#[cfg(unix)]
pub(crate) fn others_may_add_names(owner: &Owner, _process: Process) -> bool {
    owner.mode & 0o022 != 0
}

/// The rights on Windows that the rules look at, by what they let another do.
#[cfg(windows)]
mod rights {
    use windows_sys::Win32::Storage::FileSystem::{
        DELETE, FILE_ADD_FILE, FILE_ADD_SUBDIRECTORY, FILE_APPEND_DATA, FILE_DELETE_CHILD,
        FILE_EXECUTE, FILE_READ_DATA, FILE_WRITE_DATA, WRITE_DAC, WRITE_OWNER,
    };

    /// Changing the DACL or the owner gives every other right; `DELETE` removes or
    /// renames the object itself.
    const TAKE_OVER: u32 = DELETE | WRITE_DAC | WRITE_OWNER;
    /// What lets another replace what is in a directory, or the directory.
    pub(super) const REPLACE_IN_DIRECTORY: u32 = TAKE_OVER | FILE_DELETE_CHILD;
    /// Adding a file or a folder to a directory.
    pub(super) const ADD_NAMES: u32 = FILE_ADD_FILE | FILE_ADD_SUBDIRECTORY;
    /// What lets another replace a link.
    pub(super) const REPLACE_LINK: u32 = TAKE_OVER;
    /// What lets another change or replace a file.
    pub(super) const CHANGE_FILE: u32 = TAKE_OVER | FILE_WRITE_DATA | FILE_APPEND_DATA;
    /// Reading a file's content.
    /// Executing a file maps it into memory, where its bytes can be read.
    pub(super) const READ: u32 = FILE_READ_DATA | FILE_EXECUTE;
}

/// What the rules say of `owner`, the owner and DACL of a path of `kind`, for `process`:
/// who else could change (or, for the key file, read) it, if anyone.
#[cfg(windows)]
pub(crate) fn problem(owner: &Owner, process: Process, kind: PathKind) -> Option<TrustProblem> {
    if !trusted(&owner.owner, process) {
        return Some(TrustProblem::OwnedBy {
            owner: owner.owner.principal(),
            user: process.user.principal(),
        });
    }
    let (change, read) = match kind {
        PathKind::Directory => (rights::REPLACE_IN_DIRECTORY, 0),
        PathKind::KeyDirectory => (rights::REPLACE_IN_DIRECTORY | rights::ADD_NAMES, 0),
        PathKind::SymbolicLink => (rights::REPLACE_LINK, 0),
        PathKind::KeyFile => (rights::CHANGE_FILE, rights::READ),
    };
    let others = owner.grants().iter().filter(|g| !trusted(&g.sid, process));
    for grant in others {
        if grant.rights & change != 0 {
            return Some(TrustProblem::WritableBy {
                principal: grant.sid.principal(),
            });
        }
        if grant.rights & read != 0 {
            return Some(TrustProblem::ReadableBy {
                principal: grant.sid.principal(),
            });
        }
    }
    None
}

/// Whether others may add names to the directory of `owner`: where a key file with a
/// second name may be another user's link.
#[cfg(windows)]
pub(crate) fn others_may_add_names(owner: &Owner, process: Process) -> bool {
    owner
        .grants()
        .iter()
        .any(|grant| !trusted(&grant.sid, process) && grant.rights & rights::ADD_NAMES != 0)
}

/// Whether `sid` may do anything to the key: this process's user or the owner it gives
/// what it makes, the system, its administrators, or a placeholder that stands for no
/// one else (CREATOR OWNER, OWNER RIGHTS).
#[cfg(windows)]
fn trusted(sid: &Sid, process: Process) -> bool {
    sid == process.user
        || sid == process.default_owner
        || sid.is_placeholder()
        || [
            Sid::system(),
            Sid::administrators(),
            Sid::trusted_installer(),
        ]
        .contains(sid)
}

/// What an [`Error::UntrustedPath`](crate::Error::UntrustedPath) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// A directory above the key file.
    Directory,
    /// The directory the key file is in (or is to be created in), or the directory of
    /// the user's lock files: on Windows no one else may add anything to it; on unix it
    /// is judged as any directory.
    KeyDirectory,
    /// A symbolic link (or, on Windows, a junction) on the way to the key file.
    SymbolicLink,
    /// The key file itself.
    KeyFile,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Directory => "directory",
            Self::KeyDirectory => "key directory",
            Self::SymbolicLink => "symbolic link",
            Self::KeyFile => "key file",
        })
    }
}

/// Who, besides this process's user and root (on Windows: SYSTEM and Administrators),
/// could change a path on the way to a key, or read the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustProblem {
    /// It belongs to another user (unix).
    OtherOwner {
        /// This process's effective user id.
        user: u32,
    },
    /// Every user may write it (a directory that is not sticky, or a file) (unix).
    WritableByOthers,
    /// Its group may write it, and this process is not in that group (unix).
    WritableByGroup,
    /// The key file has this many names (hard links), and its directory lets others add
    /// names: one of them may be another user's link to a file of this user's.
    HardLinked {
        /// How many names the file has.
        links: u64,
    },
    /// It belongs to another principal than this process's user, SYSTEM,
    /// Administrators or TrustedInstaller (Windows).
    OwnedBy {
        /// Its owner.
        owner: Principal,
        /// This process's user.
        user: Principal,
    },
    /// Its DACL lets this principal change it (Windows): write, remove or rename it,
    /// or what is in it, or change its DACL or owner; for the key's directory, add
    /// anything to it.
    WritableBy {
        /// The first principal found that may.
        principal: Principal,
    },
    /// The key file's DACL lets this principal read it (Windows).
    ReadableBy {
        /// The first principal found that may.
        principal: Principal,
    },
}

/// The message of an [`Error::UntrustedPath`](crate::Error::UntrustedPath): what was
/// found, who could change it, and the fix.
pub(crate) struct Untrusted<'a> {
    pub(crate) key: &'a Path,
    pub(crate) path: &'a Path,
    pub(crate) kind: &'a PathKind,
    pub(crate) owner: &'a Option<Ownership>,
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
        let shown = path.display();
        write!(f, "{kind} {shown} ")?;
        if let Some(Ownership { uid, gid, mode }) = owner {
            write!(f, "(owner uid {uid}, group {gid}, mode {mode:04o}) ")?;
        }
        let (owner, group) = owner.map_or((0, 0), |owner| (owner.uid, owner.gid));
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
            TrustProblem::OwnedBy { owner, user } => {
                // As on unix, never only "take it over": that would adopt what another
                // user may have planted.
                return write!(
                    f,
                    "belongs to {owner}, not to this process's user ({user}), SYSTEM or \
                     Administrators: {owner} could replace the key; keep the key where every \
                     folder on the way belongs to you, SYSTEM or Administrators, and if you did \
                     not put {shown} there, remove it; if you did, as another user, run \
                     `icacls \"{shown}\" /setowner *{sid}`",
                    sid = user.sid(),
                );
            }
            TrustProblem::WritableBy { principal } => write!(
                f,
                "may be changed by {principal} (for a folder: what is in it added, removed or \
                 renamed; or its permissions): they"
            )?,
            TrustProblem::ReadableBy { principal } => {
                return write!(
                    f,
                    "may be read by {principal}: they could copy the identity and run it; \
                     {}",
                    Icacls { path, principal }
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
            (TrustProblem::WritableByOthers, PathKind::Directory | PathKind::KeyDirectory) => {
                write!(
                    f,
                    "run `chmod o-w {shown}`, or `chmod +t {shown}` if others must add files \
                     there (sticky, as /tmp, they cannot rename what is yours)"
                )
            }
            (TrustProblem::WritableByOthers, _) => write!(f, "run `chmod o-w {shown}`"),
            (TrustProblem::WritableByGroup, _) => write!(f, "run `chmod g-w {shown}`"),
            (TrustProblem::WritableBy { principal }, _) => {
                write!(f, "{}", Icacls { path, principal })
            }
            (
                TrustProblem::HardLinked { .. }
                | TrustProblem::OwnedBy { .. }
                | TrustProblem::ReadableBy { .. },
                _,
            ) => Ok(()),
        }
    }
}

/// The fix for a principal's rights on a Windows path: `icacls`, to turn what it inherits
/// into rights of its own, then to remove the principal's.
struct Icacls<'a> {
    path: &'a Path,
    principal: &'a Principal,
}

impl fmt::Display for Icacls<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        write!(
            f,
            "run `icacls \"{path}\" /inheritance:d` then `icacls \"{path}\" /remove:g *{}`",
            self.principal.sid()
        )
    }
}

/// The rules on Windows, on security descriptors that Windows makes from SDDL: what a DACL
/// says of users, groups and folders that Wine's file system cannot keep (it keeps an
/// owner, Everyone and SYSTEM only), judged as a file's would be.
#[cfg(all(test, windows))]
mod tests {
    use super::*;
    use crate::sys::{self, Owner};

    /// The user this process runs as, as SDDL writes a SID.
    fn me() -> String {
        sys::process().user.to_string()
    }

    fn judged(owner: &str, dacl: &str, kind: PathKind) -> Option<TrustProblem> {
        let sddl = format!("O:{owner}D:{dacl}");
        let owner = Owner::of_sddl(&sddl).unwrap_or_else(|err| panic!("{sddl}: {err}"));
        problem(&owner, sys::process(), kind)
    }

    fn message(path: &str, kind: PathKind, problem: &TrustProblem) -> String {
        let key = Path::new(r"C:\ProgramData\app\endpoint.key");
        Untrusted {
            key,
            path: Path::new(path),
            kind: &kind,
            owner: &None,
            problem,
        }
        .to_string()
    }

    #[test]
    fn a_key_of_the_user_system_and_administrators_alone_passes() {
        let dacl = format!("P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;{})", me());
        assert_eq!(judged(&me(), &dacl, PathKind::KeyFile), None);
        // Owned by SYSTEM or Administrators (an elevated administrator's files), too.
        assert_eq!(judged("SY", &dacl, PathKind::KeyFile), None);
        assert_eq!(judged("BA", &dacl, PathKind::KeyFile), None);
    }

    #[test]
    fn a_key_users_everyone_or_authenticated_users_may_read_is_refused_with_the_fix() {
        let key = r"C:\ProgramData\app\endpoint.key";
        for (who, sid, name) in [
            ("BU", "S-1-5-32-545", "Users"),
            ("WD", "S-1-1-0", "Everyone"),
            ("AU", "S-1-5-11", "Authenticated Users"),
        ] {
            let dacl = format!("P(A;;FA;;;{})(A;;FR;;;{who})", me());
            let problem = judged(&me(), &dacl, PathKind::KeyFile);
            let Some(TrustProblem::ReadableBy { principal }) = &problem else {
                panic!("{who}: {problem:?}");
            };
            assert_eq!(principal.sid(), sid);
            assert!(
                principal.name().is_some_and(|n| n.ends_with(name)),
                "{principal}"
            );
            let message = message(key, PathKind::KeyFile, problem.as_ref().expect("refused"));
            for part in [
                format!("key file {key} may be read by {principal}"),
                format!(
                    "`icacls \"{key}\" /inheritance:d` then `icacls \"{key}\" /remove:g *{sid}`"
                ),
            ] {
                assert!(message.contains(&part), "{part:?} missing in: {message}");
            }
        }
    }

    #[test]
    fn a_key_others_may_execute_is_refused_as_read() {
        // FX: generic execute (a file executed is mapped, and its bytes read). (A
        // conditional allow, counted as an allow too, cannot be made here: Wine's SDDL
        // has no conditional ACEs.)
        let dacl = format!("P(A;;FA;;;{})(A;;FX;;;BU)", me());
        assert!(matches!(
            judged(&me(), &dacl, PathKind::KeyFile),
            Some(TrustProblem::ReadableBy { principal }) if principal.sid() == "S-1-5-32-545"
        ));
    }

    #[test]
    fn a_key_others_may_write_or_whose_dacl_they_may_change_is_refused() {
        // FW: generic write; WD (in the rights' place): WRITE_DAC; SD: DELETE.
        for rights in ["FW", "WD", "SD", "GA"] {
            let dacl = format!("P(A;;FA;;;{})(A;;{rights};;;BU)", me());
            assert!(
                matches!(
                    judged(&me(), &dacl, PathKind::KeyFile),
                    Some(TrustProblem::WritableBy { principal }) if principal.sid() == "S-1-5-32-545"
                ),
                "{rights}"
            );
        }
    }

    #[test]
    fn another_owner_is_refused_and_named_with_the_fix() {
        let other = "S-1-5-21-1111-2222-3333-1001";
        let dacl = format!("P(A;;FA;;;{})", me());
        for kind in [PathKind::KeyFile, PathKind::Directory] {
            let problem = judged(other, &dacl, kind);
            let Some(TrustProblem::OwnedBy { owner, user }) = &problem else {
                panic!("{problem:?}");
            };
            assert_eq!(owner.sid(), other);
            assert_eq!(user.sid(), me());
            let path = r"C:\keys\endpoint.key";
            let message = message(path, kind, problem.as_ref().expect("refused"));
            assert!(
                message.contains(&format!("belongs to {owner}")),
                "{message}"
            );
            assert!(
                message.contains(&format!("`icacls \"{path}\" /setowner *{}`", me())),
                "{message}"
            );
        }
    }

    #[test]
    fn a_folder_where_others_may_only_add_names_is_sticky_above_the_key_but_no_home_for_it() {
        // `C:\`: Authenticated Users may make folders (AD, 0x4). `C:\ProgramData`: Users
        // may make files and folders and write their attributes (0x116).
        for (rights, who, sid) in [("0x4", "AU", "S-1-5-11"), ("0x116", "BU", "S-1-5-32-545")] {
            let dacl = format!(
                "(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)(A;CI;{rights};;;{who})\
                 (A;OICIIO;GA;;;CO)"
            );
            assert_eq!(judged("SY", &dacl, PathKind::Directory), None, "{rights}");
            let problem = judged("SY", &dacl, PathKind::KeyDirectory);
            assert!(
                matches!(&problem, Some(TrustProblem::WritableBy { principal }) if principal.sid() == sid),
                "{rights}: {problem:?}"
            );
            let path = r"C:\ProgramData\app";
            let message = message(
                path,
                PathKind::KeyDirectory,
                problem.as_ref().expect("refused"),
            );
            assert!(message.starts_with(&format!("key directory {path} may be changed by")));
            assert!(
                message.contains(&format!("`icacls \"{path}\" /remove:g *{sid}`")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_folder_where_others_may_remove_or_rename_entries_or_change_its_dacl_is_refused() {
        // 0x40: FILE_DELETE_CHILD; SD: DELETE; WD: WRITE_DAC; WO: WRITE_OWNER; FA: all.
        for rights in ["0x40", "SD", "WD", "WO", "FA"] {
            let dacl = format!("(A;;FA;;;{})(A;;{rights};;;BU)", me());
            for kind in [PathKind::Directory, PathKind::KeyDirectory] {
                assert!(
                    matches!(
                        judged(&me(), &dacl, kind),
                        Some(TrustProblem::WritableBy { .. })
                    ),
                    "{rights} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn what_an_ace_for_children_only_or_a_deny_takes_away_is_not_counted() {
        // Inherit-only: a template for what is made inside, nothing on the folder itself.
        let dacl = format!("(A;;FA;;;{})(A;OICIIO;FA;;;BU)", me());
        assert_eq!(judged(&me(), &dacl, PathKind::KeyDirectory), None);
        // A deny for Everyone, before the allow, takes it from everyone.
        let dacl = format!("(D;;FR;;;WD)(A;;FA;;;{})(A;;FR;;;BU)", me());
        assert_eq!(judged(&me(), &dacl, PathKind::KeyFile), None);
        // A deny for Users says nothing of Authenticated Users, who may not be in it.
        let dacl = format!("(D;;FR;;;BU)(A;;FA;;;{})(A;;FR;;;AU)", me());
        assert!(matches!(
            judged(&me(), &dacl, PathKind::KeyFile),
            Some(TrustProblem::ReadableBy { principal }) if principal.sid() == "S-1-5-11"
        ));
    }

    #[test]
    fn a_missing_dacl_lets_everyone_do_anything() {
        let owner = Owner::without_dacl(sys::process().user).expect("a descriptor");
        let problem = problem(&owner, sys::process(), PathKind::KeyFile);
        assert!(
            matches!(
                &problem,
                Some(TrustProblem::WritableBy { principal }) if principal.sid() == "S-1-1-0"
            ),
            "{problem:?}"
        );
    }
}
