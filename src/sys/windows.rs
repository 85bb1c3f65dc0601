//! Windows: directories opened one name at a time, files and directories created with an
//! owner-only DACL, security descriptors read through handles, and byte-range locks. No
//! policy: what is trusted is decided in [`crate::trust`].
//!
//! Windows has no `openat` in its documented API: a file in a directory is reached by the
//! directory's path and its name. What keeps that path from being redirected is the
//! trust rules, which refuse a path where another may rename or remove a folder on the
//! way (`DELETE` on it, `FILE_DELETE_CHILD` on its parent), and that each name is opened
//! with `FILE_OPEN_REPARSE_POINT`, so that a symbolic link or junction is seen as what it
//! is, never followed unawares. A directory is opened for its attributes and its
//! security descriptor only: rights that no sharing mode can refuse, so that another
//! user who holds a folder such as `C:\Users` open with no sharing stalls nothing.
//!
//! Everything here goes through [`windows_sys`]; what std offers (opening with flags,
//! renaming over a file, hard links, reading links) goes through std.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    fs::{self, File, Metadata, OpenOptions},
    io,
    os::windows::{
        ffi::OsStrExt,
        fs::OpenOptionsExt,
        io::{AsRawHandle, FromRawHandle},
    },
    path::{Path, PathBuf},
    ptr::{null, null_mut},
    sync::OnceLock,
};

use windows_sys::Win32::{
    Foundation::{
        CloseHandle, ERROR_INSUFFICIENT_BUFFER, ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION,
        GENERIC_ALL, GENERIC_EXECUTE, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
        LocalFree,
    },
    Security::{
        ACCESS_ALLOWED_ACE, ACE_HEADER, ACL,
        Authorization::{
            ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo, SDDL_REVISION_1,
            SE_FILE_OBJECT,
        },
        DACL_SECURITY_INFORMATION, GetAce, GetLengthSid, GetSecurityDescriptorDacl,
        GetSecurityDescriptorOwner, GetTokenInformation, INHERIT_ONLY_ACE, LookupAccountSidW,
        OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES, TOKEN_OWNER,
        TOKEN_QUERY, TOKEN_USER, TokenOwner, TokenUser,
    },
    Storage::FileSystem::{
        BY_HANDLE_FILE_INFORMATION, CREATE_NEW, CreateDirectoryW, CreateFileW, DELETE,
        FILE_ALL_ACCESS, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_REPARSE_POINT,
        FILE_DISPOSITION_INFO, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT,
        FILE_GENERIC_EXECUTE, FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_READ_ATTRIBUTES,
        FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, FileDispositionInfo,
        GetFileInformationByHandle, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx,
        MOVEFILE_WRITE_THROUGH, MoveFileExW, OPEN_ALWAYS, READ_CONTROL, SYNCHRONIZE,
        SetFileInformationByHandle, UnlockFileEx,
    },
    System::{
        IO::OVERLAPPED,
        SystemServices::{
            ACCESS_ALLOWED_ACE_TYPE, ACCESS_ALLOWED_CALLBACK_ACE_TYPE, ACCESS_DENIED_ACE_TYPE,
        },
        Threading::{GetCurrentProcess, OpenProcessToken},
    },
};

use super::{FileKind, Ownership, Principal, Stat};

/// The longest file name NTFS accepts, in UTF-16 units; names are measured in the bytes
/// of their encoding, which is at least as long, so a name that fits here fits there.
pub(crate) const NAME_MAX: usize = 255;

/// A security identifier: a user, a group, or a well-known principal such as SYSTEM.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Sid(Box<[u8]>);

impl Sid {
    /// `S-1-5-18`, the operating system itself.
    pub(crate) fn system() -> Self {
        Self::of(5, &[18])
    }

    /// `S-1-5-32-544`, the local Administrators.
    pub(crate) fn administrators() -> Self {
        Self::of(5, &[32, 544])
    }

    /// `S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464`, the service
    /// that owns the system's own files.
    pub(crate) fn trusted_installer() -> Self {
        Self::of(
            5,
            &[
                80, 956008885, 3418522649, 1831038044, 1853292631, 2271478464,
            ],
        )
    }

    /// `S-1-1-0`, Everyone.
    pub(crate) fn everyone() -> Self {
        Self::of(1, &[0])
    }

    /// `S-1-3-0`, `S-1-3-1` and `S-1-3-4`: CREATOR OWNER and CREATOR GROUP, which stand
    /// for whoever creates a child and grant nothing on the object itself, and OWNER
    /// RIGHTS, which is its owner.
    pub(crate) fn is_placeholder(&self) -> bool {
        [Self::of(3, &[0]), Self::of(3, &[1]), Self::of(3, &[4])].contains(self)
    }

    /// The SID of `authority` and `sub_authorities`, as `S-1-AUTHORITY-SUB-...` reads.
    fn of(authority: u8, sub_authorities: &[u32]) -> Self {
        let mut bytes = vec![1, sub_authorities.len() as u8, 0, 0, 0, 0, 0, authority];
        for sub in sub_authorities {
            bytes.extend_from_slice(&sub.to_le_bytes());
        }
        Self(bytes.into())
    }

    /// A copy of the SID at `sid`.
    ///
    /// # Safety
    ///
    /// `sid` points to a valid SID.
    #[allow(unsafe_code)]
    unsafe fn copy_from(sid: PSID) -> Self {
        // SAFETY: a valid SID, as the caller promised; its length is what it says.
        unsafe {
            let len = GetLengthSid(sid) as usize;
            Self(std::slice::from_raw_parts(sid.cast::<u8>(), len).into())
        }
    }

    fn as_psid(&self) -> PSID {
        // The API takes a mutable pointer for SIDs it only reads.
        self.0.as_ptr().cast_mut().cast()
    }

    /// Who it is, with its account name where this host knows one.
    pub(crate) fn principal(&self) -> Principal {
        Principal::new(self.to_string(), self.account_name())
    }

    /// `DOMAIN\name`, or the name alone for a principal of no domain (Everyone).
    #[allow(unsafe_code)]
    fn account_name(&self) -> Option<String> {
        // The SID of a token that could not be read (see `process`) is no SID at all.
        if self.0.is_empty() {
            return None;
        }
        let (mut name, mut domain) = (vec![0u16; 256], vec![0u16; 256]);
        loop {
            let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
            let mut kind = 0;
            // SAFETY: buffers of the lengths given, and a valid SID, all outliving the call.
            let found = unsafe {
                LookupAccountSidW(
                    null(),
                    self.as_psid(),
                    name.as_mut_ptr(),
                    &mut name_len,
                    domain.as_mut_ptr(),
                    &mut domain_len,
                    &mut kind,
                )
            };
            if found != 0 {
                let name = String::from_utf16_lossy(&name[..name_len as usize]);
                let domain = String::from_utf16_lossy(&domain[..domain_len as usize]);
                return Some(if domain.is_empty() {
                    name
                } else {
                    format!("{domain}\\{name}")
                });
            }
            let too_small = io::Error::last_os_error().raw_os_error()
                == Some(ERROR_INSUFFICIENT_BUFFER as i32)
                && (name_len as usize > name.len() || domain_len as usize > domain.len());
            if !too_small {
                return None;
            }
            name.resize(name_len as usize, 0);
            domain.resize(domain_len as usize, 0);
        }
    }
}

impl fmt::Display for Sid {
    /// `S-1-5-21-...`, as Windows writes a SID.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = &self.0;
        let authority = bytes.get(2..8).map_or(0, |six| {
            six.iter().fold(0u64, |all, &b| all << 8 | u64::from(b))
        });
        write!(f, "S-{}-{authority}", bytes.first().copied().unwrap_or(0))?;
        for sub in bytes.get(8..).unwrap_or_default().chunks_exact(4) {
            write!(
                f,
                "-{}",
                u32::from_le_bytes([sub[0], sub[1], sub[2], sub[3]])
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The rights a principal is given on a file or directory: what an ACE of its DACL
/// allows, with generic rights mapped to the file rights they stand for.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) sid: Sid,
    pub(crate) rights: u32,
}

/// Who owns a file or directory and who may do what to it: its owner and the rights its
/// DACL grants, read from its security descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) owner: Sid,
    grants: Vec<Grant>,
}

impl Owner {
    /// What each ACE that applies to the object itself allows (inherit-only ones are
    /// templates for children), less what a deny ACE before it denies the same
    /// principal or Everyone. A deny ACE for a group is not taken from the allowances of
    /// other principals, who may not be in it: a DACL is judged at least as open as it
    /// is, never less. A missing (NULL) DACL allows Everyone everything.
    pub(crate) fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// The owner and DACL of the object `handle` is open on (with `READ_CONTROL`).
    #[allow(unsafe_code)]
    fn of_handle(handle: HANDLE) -> io::Result<Self> {
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: a valid handle and a pointer to write the descriptor to, which is freed
        // when `Local` is dropped.
        let error = unsafe {
            GetSecurityInfo(
                handle,
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                null_mut(),
                null_mut(),
                null_mut(),
                null_mut(),
                &mut descriptor,
            )
        };
        if error != 0 {
            return Err(io::Error::from_raw_os_error(error as i32));
        }
        let descriptor = Local(descriptor);
        // SAFETY: the descriptor GetSecurityInfo gave, alive until the end.
        unsafe { Self::of_descriptor(descriptor.0) }
    }

    /// The owner and DACL in the security descriptor `descriptor` (as SDDL writes it:
    /// `O:...D:(...)`), made by Windows: for the tests of the rules on what no file system
    /// under Wine keeps.
    #[cfg(test)]
    #[allow(unsafe_code)]
    pub(crate) fn of_sddl(sddl: &str) -> io::Result<Self> {
        let descriptor = descriptor_of(sddl)?;
        // SAFETY: the descriptor just made, alive until the end.
        unsafe { Self::of_descriptor(descriptor.0) }
    }

    /// The owner `user` and a missing (NULL) DACL, as Windows makes them: for the tests
    /// of what that means (Wine's SDDL makes an empty DACL of `NO_ACCESS_CONTROL`).
    #[cfg(test)]
    #[allow(unsafe_code)]
    pub(crate) fn without_dacl(user: &Sid) -> io::Result<Self> {
        use windows_sys::Win32::{
            Security::{
                InitializeSecurityDescriptor, SECURITY_DESCRIPTOR, SetSecurityDescriptorDacl,
                SetSecurityDescriptorOwner,
            },
            System::SystemServices::SECURITY_DESCRIPTOR_REVISION,
        };

        let mut descriptor = SECURITY_DESCRIPTOR::default();
        let at: PSECURITY_DESCRIPTOR = std::ptr::from_mut(&mut descriptor).cast();
        // SAFETY: a descriptor on the stack and a SID that outlive the calls; the
        // descriptor points to the SID, which is copied from before either goes.
        unsafe {
            if InitializeSecurityDescriptor(at, SECURITY_DESCRIPTOR_REVISION) == 0
                || SetSecurityDescriptorOwner(at, user.as_psid(), 0) == 0
                || SetSecurityDescriptorDacl(at, 1, null(), 0) == 0
            {
                return Err(io::Error::last_os_error());
            }
            Self::of_descriptor(at)
        }
    }

    /// The owner and DACL in `descriptor`.
    ///
    /// # Safety
    ///
    /// `descriptor` points to a valid security descriptor.
    #[allow(unsafe_code)]
    unsafe fn of_descriptor(descriptor: PSECURITY_DESCRIPTOR) -> io::Result<Self> {
        let (mut owner, mut dacl): (PSID, *mut ACL) = (null_mut(), null_mut());
        let (mut present, mut defaulted) = (0, 0);
        // SAFETY: a valid descriptor, as the caller promised, and pointers to write to;
        // the owner and DACL point into the descriptor, and are copied from before it
        // goes.
        unsafe {
            if GetSecurityDescriptorOwner(descriptor, &mut owner, &mut defaulted) == 0
                || GetSecurityDescriptorDacl(descriptor, &mut present, &mut dacl, &mut defaulted)
                    == 0
            {
                return Err(io::Error::last_os_error());
            }
            if owner.is_null() {
                return Err(io::Error::other("its security descriptor names no owner"));
            }
            Ok(Self {
                owner: Sid::copy_from(owner),
                grants: if present == 0 || dacl.is_null() {
                    vec![Grant {
                        sid: Sid::everyone(),
                        rights: FILE_ALL_ACCESS,
                    }]
                } else {
                    grants(dacl)?
                },
            })
        }
    }
}

/// The allowances of the ACL at `acl`, as [`Owner::grants`] says.
///
/// # Safety
///
/// `acl` points to a valid ACL.
#[allow(unsafe_code)]
unsafe fn grants(acl: *mut ACL) -> io::Result<Vec<Grant>> {
    let everyone = Sid::everyone();
    let mut denied: Vec<Grant> = Vec::new();
    let mut allowed = Vec::new();
    // SAFETY: a valid ACL, as the caller promised.
    let count = unsafe { (*acl).AceCount };
    for index in 0..u32::from(count) {
        let mut ace = null_mut();
        // SAFETY: an index below the ACL's count, and a pointer to write the ACE's to.
        if unsafe { GetAce(acl, index, &mut ace) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: GetAce gave a pointer to an ACE of the ACL: it starts with its header,
        // and allowed and denied ACEs have the layout of ACCESS_ALLOWED_ACE, their SID
        // at `SidStart`.
        let (header, mask, sid) = unsafe {
            let header = *ace.cast::<ACE_HEADER>();
            let body = ace.cast::<ACCESS_ALLOWED_ACE>();
            let sid = std::ptr::addr_of_mut!((*body).SidStart).cast();
            (header, (*body).Mask, sid)
        };
        if u32::from(header.AceFlags) & INHERIT_ONLY_ACE != 0 {
            continue;
        }
        let kind = match u32::from(header.AceType) {
            // A callback (conditional) allow grants what it says whenever its condition
            // holds: counted as granted, so that a DACL is judged at least as open as it
            // is. Its SID is where an allow's is.
            ACCESS_ALLOWED_ACE_TYPE | ACCESS_ALLOWED_CALLBACK_ACE_TYPE => ACCESS_ALLOWED_ACE_TYPE,
            // A callback deny takes away only when its condition holds: not counted.
            ACCESS_DENIED_ACE_TYPE => ACCESS_DENIED_ACE_TYPE,
            // Object ACEs (of directory objects) and audit ACEs: none grants file access.
            _ => continue,
        };
        // SAFETY: the SID of an allowed or denied ACE, inside the ACL.
        let sid = unsafe { Sid::copy_from(sid) };
        let rights = file_rights(mask);
        if kind == ACCESS_DENIED_ACE_TYPE {
            denied.push(Grant { sid, rights });
            continue;
        }
        let taken = denied
            .iter()
            .filter(|deny| deny.sid == sid || deny.sid == everyone)
            .fold(0, |all, deny| all | deny.rights);
        allowed.push(Grant {
            sid,
            rights: rights & !taken,
        });
    }
    Ok(allowed)
}

/// `mask` with its generic rights replaced by the file rights they stand for.
fn file_rights(mask: u32) -> u32 {
    let mut rights = mask & !(GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE | GENERIC_ALL);
    for (generic, specific) in [
        (GENERIC_READ, FILE_GENERIC_READ),
        (GENERIC_WRITE, FILE_GENERIC_WRITE),
        (GENERIC_EXECUTE, FILE_GENERIC_EXECUTE),
        (GENERIC_ALL, FILE_ALL_ACCESS),
    ] {
        if mask & generic != 0 {
            rights |= specific;
        }
    }
    rights
}

/// The security descriptor that `sddl` writes (`O:...D:P(A;;FA;;;SY)...`), made by
/// Windows.
#[allow(unsafe_code)]
fn descriptor_of(sddl: &str) -> io::Result<Local> {
    let sddl: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
    let mut descriptor = null_mut();
    // SAFETY: a NUL-terminated string, and a pointer to write the descriptor to, which is
    // freed when the result is dropped.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut descriptor,
            null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Local(descriptor))
}

/// Memory that Windows allocated for a result, freed when dropped.
struct Local(*mut core::ffi::c_void);

impl Drop for Local {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: memory that the API allocated with LocalAlloc and handed to us.
        unsafe { LocalFree(self.0) };
    }
}

/// Files have no unix owner, group or mode here.
pub(crate) fn owner(_metadata: &Metadata) -> Option<Ownership> {
    None
}

/// The unix owner and mode of `owner`: none here.
pub(crate) fn ownership(_owner: &Owner) -> Option<Ownership> {
    None
}

/// The users whose UDP sockets are bound to a port: not told here.
pub(crate) fn udp_port_users(_port: u16) -> Option<Vec<u32>> {
    None
}

/// Who this process acts as when it touches files: its user, and the owner its token
/// gives what it creates (the user, or Administrators for an elevated administrator).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process {
    pub(crate) user: &'static Sid,
    pub(crate) default_owner: &'static Sid,
}

impl Process {
    /// Whether `owner` is this process's: its user, or the owner its token gives.
    pub(crate) fn owns(self, owner: &Owner) -> bool {
        owner.owner == *self.user || owner.owner == *self.default_owner
    }

    /// Whether the unix user `uid` is this process's: there are none here.
    pub(crate) fn is_user(self, _uid: u32) -> bool {
        false
    }
}

pub(crate) fn process() -> Process {
    static TOKEN: OnceLock<(Sid, Sid)> = OnceLock::new();
    let (user, default_owner) = TOKEN.get_or_init(|| {
        token_sids().unwrap_or_else(|err| {
            // A SID that matches no one: every path is then someone else's, and refused
            // with its owner named, rather than trusted.
            tracing::warn!(%err, "cannot read this process's user from its token");
            (Sid(Box::new([])), Sid(Box::new([])))
        })
    });
    Process {
        user,
        default_owner,
    }
}

/// This process's user and the default owner of what it creates.
#[allow(unsafe_code)]
fn token_sids() -> io::Result<(Sid, Sid)> {
    let mut token: HANDLE = null_mut();
    // SAFETY: the pseudo-handle of this process, and a pointer to write the token to.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let query = |class| -> io::Result<Vec<u64>> {
        // u64s: aligned for the structures the token's information starts with.
        let mut buffer = vec![0u64; 64];
        loop {
            let mut len = 0;
            let size = (buffer.len() * 8) as u32;
            // SAFETY: a token handle, and a buffer of the size given.
            let ok = unsafe {
                GetTokenInformation(token, class, buffer.as_mut_ptr().cast(), size, &mut len)
            };
            if ok != 0 {
                return Ok(buffer);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) || len <= size {
                return Err(err);
            }
            buffer.resize((len as usize).div_ceil(8), 0);
        }
    };
    let sids = (|| {
        let user = query(TokenUser)?;
        let owner = query(TokenOwner)?;
        // SAFETY: GetTokenInformation filled the buffers with a TOKEN_USER and a
        // TOKEN_OWNER, whose SIDs point into them.
        unsafe {
            Ok((
                Sid::copy_from((*user.as_ptr().cast::<TOKEN_USER>()).User.Sid),
                Sid::copy_from((*owner.as_ptr().cast::<TOKEN_OWNER>()).Owner),
            ))
        }
    })();
    // SAFETY: the token opened above.
    unsafe { CloseHandle(token) };
    sids
}

/// A security descriptor that grants full access to this process's user, SYSTEM and
/// Administrators and no one else, inheritance from the parent cut off: what
/// Win32-OpenSSH gives a private key, and Tailscale its state.
struct Private(Local);

impl Private {
    /// For a file, or (`inheritable`) a directory, whose files and subdirectories get
    /// the same.
    #[allow(unsafe_code)]
    fn new(inheritable: bool) -> io::Result<Self> {
        let flags = if inheritable { "OICI" } else { "" };
        let user = process().user;
        let sddl = format!("D:P(A;{flags};FA;;;SY)(A;{flags};FA;;;BA)(A;{flags};FA;;;{user})");
        descriptor_of(&sddl).map(Self)
    }

    fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.0.0,
            bInheritHandle: 0,
        }
    }
}

/// What a directory is opened for: its attributes and its owner and DACL. Windows checks
/// sharing modes only for the rights to read, write, execute or delete, so an open of
/// these alone cannot be refused by another's handle that shares nothing.
const DIR_ACCESS: u32 = FILE_READ_ATTRIBUTES | READ_CONTROL | SYNCHRONIZE;

/// Every other opener may read and write, but none may rename or remove it meanwhile:
/// no `FILE_SHARE_DELETE`.
const PINNED: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE;

/// Every sharing: for opening what another process may be renaming or removing.
const SHARE_ALL: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

/// An open directory: a handle for its attributes and security descriptor, and its path.
/// Files in it are reached by that path and their name, which lead where they led when it
/// was opened as long as no one may rename or remove a folder on the way, which the
/// trust rules see to.
#[derive(Debug)]
pub(crate) struct Dir {
    handle: File,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path`, following links: the caller has checked who may
    /// change them.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let handle = open_dir_handle(path, FILE_FLAG_BACKUP_SEMANTICS)?;
        if !handle.metadata()?.is_dir() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        Ok(Self {
            handle,
            path: path.to_owned(),
        })
    }

    /// Opens the directory `name` in this one; fails if `name` is a symbolic link or a
    /// junction.
    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<Self> {
        let path = self.path.join(name);
        let handle = open_dir_handle(
            &path,
            FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
        )?;
        let metadata = handle.metadata()?;
        if metadata.file_type().is_symlink() {
            return Err(io::Error::other("it is a symbolic link or a junction"));
        }
        if !metadata.is_dir() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        Ok(Self { handle, path })
    }

    /// Creates the directory `name` in this one, private (see [`Private`]) whatever the
    /// DACL it would inherit, and opens it. `_mode` is unix's.
    #[allow(unsafe_code)]
    pub(crate) fn create_dir(&self, name: &OsStr, _mode: u32) -> io::Result<Self> {
        let private = Private::new(true)?;
        let attributes = private.attributes();
        let wide = wide(&self.path.join(name))?;
        // SAFETY: a NUL-terminated path and security attributes that outlive the call.
        if unsafe { CreateDirectoryW(wide.as_ptr(), &attributes) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let created = self.open_dir(name)?;
        if !process().owns(&created.stat()?.owner) {
            // Whoever may change this directory put one of their own in its place.
            return Err(io::Error::other(
                "it was replaced by another user's directory while it was created",
            ));
        }
        Ok(created)
    }

    /// Opens the file `name` in this directory for reading, or returns `None` if it is a
    /// symbolic link or a junction. A directory opens too (for the caller to tell).
    pub(crate) fn open_file_no_follow(&self, name: &OsStr) -> io::Result<Option<File>> {
        let path = self.path.join(name);
        let open = |flags| {
            OpenOptions::new()
                .read(true)
                .share_mode(SHARE_ALL)
                .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | flags)
                .open(&path)
        };
        let file = open(FILE_FLAG_OPEN_REPARSE_POINT)?;
        let metadata = file.metadata()?;
        if metadata.file_type().is_symlink() {
            return Ok(None);
        }
        if attributes(&metadata) & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
            // A reparse point that is no link (a cloud placeholder, a deduplicated
            // file): its content is what its driver gives, opened normally.
            return open(0).map(Some);
        }
        Ok(Some(file))
    }

    /// Creates the temporary file `name`, private (see [`Private`]) whatever the DACL it
    /// would inherit; fails if anything, a link included, is there. While it is open,
    /// [`remove_abandoned`](Self::remove_abandoned) passes it over; others may open it
    /// only to read it, or to rename or remove it (as
    /// [`publish_no_clobber`](Self::publish_no_clobber) does by name).
    pub(crate) fn create_temporary_file(&self, name: &OsStr) -> io::Result<File> {
        self.open_private(
            name,
            GENERIC_READ | GENERIC_WRITE,
            FILE_SHARE_READ | FILE_SHARE_DELETE,
            CREATE_NEW,
        )
    }

    /// Opens `name` (a link as itself) for `access`, sharing `share`, as `disposition`
    /// says; a file it creates is private (see [`Private`]).
    #[allow(unsafe_code)]
    fn open_private(
        &self,
        name: &OsStr,
        access: u32,
        share: u32,
        disposition: u32,
    ) -> io::Result<File> {
        let private = Private::new(false)?;
        let attributes = private.attributes();
        let wide = wide(&self.path.join(name))?;
        // SAFETY: a NUL-terminated path and security attributes that outlive the call.
        let handle = unsafe {
            CreateFileW(
                wide.as_ptr(),
                access,
                share,
                &attributes,
                disposition,
                FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT,
                null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new handle that nothing else owns.
        Ok(unsafe { File::from_raw_handle(handle) })
    }

    /// Opens the lock file `name`, creating it private (see [`Private`]) if it is
    /// missing, whatever the DACL it would inherit; fails if it is a link. While it is
    /// open no one can rename or remove it. Who else may open it is the caller's to
    /// judge ([`Stat::of_handle`]).
    pub(crate) fn open_lock_file(&self, name: &OsStr) -> io::Result<File> {
        let file = self.open_private(
            name,
            GENERIC_READ | GENERIC_WRITE | READ_CONTROL,
            PINNED,
            OPEN_ALWAYS,
        )?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("it is not a regular file"));
        }
        Ok(file)
    }

    /// What `name` in this directory is, not following a link; `None` if nothing is
    /// there.
    pub(crate) fn stat_at(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let opened = OpenOptions::new()
            .access_mode(READ_CONTROL | FILE_READ_ATTRIBUTES | SYNCHRONIZE)
            .share_mode(SHARE_ALL)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
            .open(self.path.join(name));
        match opened {
            Ok(file) => Stat::of_handle(&file).map(Some),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// What this directory is: its owner and DACL.
    pub(crate) fn stat(&self) -> io::Result<Stat> {
        Stat::of_handle(&self.handle)
    }

    /// The target of the symbolic link or junction `name` in this directory.
    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        fs::read_link(self.path.join(name))
    }

    /// Gives the file `from` the name `to`, failing with
    /// [`io::ErrorKind::AlreadyExists`] if anything is already there: `MoveFileExW`
    /// without `MOVEFILE_REPLACE_EXISTING`, after which `from` is gone.
    ///
    /// `MOVEFILE_WRITE_THROUGH` is asked for, but Windows documents it only for a move
    /// across volumes (a copy, then a delete); for a rename in a directory nothing makes
    /// the new name durable at once: NTFS journals it and writes its log on its own
    /// schedule. See [`sync`](Self::sync).
    #[allow(unsafe_code)]
    pub(crate) fn publish_no_clobber(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (from, to) = (wide(&self.path.join(from))?, wide(&self.path.join(to))?);
        // SAFETY: NUL-terminated paths that outlive the call.
        if unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), MOVEFILE_WRITE_THROUGH) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Renames `from` to `to`, replacing what is there.
    pub(crate) fn replace(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        fs::rename(self.path.join(from), self.path.join(to))
    }

    /// Removes the file `name`; a link is removed, not what it points to.
    pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    /// Removes the file `name` if no process has it open: `Ok(false)` while one does.
    /// A temporary file is open from its creation until it is published or removed by
    /// its writer ([`create_temporary_file`](Self::create_temporary_file)), so one that
    /// no process has open was left by a writer that was killed. It is opened with no sharing at all, which fails while anyone else has it
    /// open and, once it succeeds, keeps anyone from opening it, then removed through
    /// that handle: the file removed is the file found unused.
    #[allow(unsafe_code)]
    pub(crate) fn remove_abandoned(&self, name: &OsStr) -> io::Result<bool> {
        let opened = OpenOptions::new()
            .access_mode(DELETE | FILE_READ_ATTRIBUTES | SYNCHRONIZE)
            .share_mode(0)
            .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
            .open(self.path.join(name));
        let file = match opened {
            Ok(file) => file,
            Err(err) if err.raw_os_error() == Some(ERROR_SHARING_VIOLATION as i32) => {
                return Ok(false);
            }
            Err(err) => return Err(err),
        };
        let remove = FILE_DISPOSITION_INFO { DeleteFile: true };
        // SAFETY: a handle opened with DELETE, and a structure of the size given.
        let ok = unsafe {
            SetFileInformationByHandle(
                file.as_raw_handle(),
                FileDispositionInfo,
                std::ptr::from_ref(&remove).cast(),
                size_of::<FILE_DISPOSITION_INFO>() as u32,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    /// The names in this directory; empty if it cannot be read.
    pub(crate) fn names(&self) -> Vec<OsString> {
        fs::read_dir(&self.path)
            .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
            .unwrap_or_default()
    }

    /// Makes the entries of the directory durable: Windows has no call for it (a
    /// directory cannot be flushed), so this does nothing. What a crash or a power loss
    /// leaves: a file's bytes are flushed (`FlushFileBuffers`) before it is given its
    /// name, so a name is never given to a torn file; NTFS journals the name itself and
    /// commits its log on its own schedule, so a name given just before a power loss may
    /// be missing after it.
    pub(crate) fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    /// A directory cannot be locked on Windows (`LockFileEx` takes files only).
    pub(crate) fn try_lock(&self) -> io::Result<bool> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a directory cannot be locked on Windows",
        ))
    }

    /// Nothing to release: [`try_lock`](Self::try_lock) never takes a lock.
    pub(crate) fn unlock(&self) -> io::Result<()> {
        Ok(())
    }

    /// Where the directory was opened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn open_dir_handle(path: &Path, flags: u32) -> io::Result<File> {
    OpenOptions::new()
        .access_mode(DIR_ACCESS)
        .share_mode(SHARE_ALL)
        .custom_flags(flags)
        .open(path)
}

impl Stat {
    /// What the object `file` is open on (with `READ_CONTROL`) is: its kind, owner, DACL
    /// and number of names.
    #[allow(unsafe_code)]
    pub(crate) fn of_handle(file: &File) -> io::Result<Self> {
        let metadata = file.metadata()?;
        let mut info = BY_HANDLE_FILE_INFORMATION::default();
        // SAFETY: an open handle and a structure to write to.
        if unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            kind: FileKind::of(metadata.file_type()),
            owner: Owner::of_handle(file.as_raw_handle())?,
            links: u64::from(info.nNumberOfLinks),
        })
    }

    /// What the open file `file` is; `_metadata` is unix's.
    pub(crate) fn of_file(file: &File, _metadata: &Metadata) -> io::Result<Self> {
        Self::of_handle(file)
    }
}

fn attributes(metadata: &Metadata) -> u32 {
    use std::os::windows::fs::MetadataExt;
    metadata.file_attributes()
}

/// Takes an exclusive lock on the byte at `offset` of `file`, if no other handle holds
/// it: `Ok(false)` while one does. A byte past the end of the file can be locked; the
/// file does not grow. Windows releases it when the handle is closed, or the process
/// ends, however it ends.
#[allow(unsafe_code)]
pub(crate) fn try_lock_byte(file: &File, offset: u64) -> io::Result<bool> {
    let mut overlapped = at(offset);
    // SAFETY: an open handle, and an OVERLAPPED that outlives the call, which does not
    // wait (LOCKFILE_FAIL_IMMEDIATELY), so nothing refers to it afterwards.
    let ok = unsafe {
        LockFileEx(
            file.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut overlapped,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    // Another handle holds it.
    if err.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Releases the lock [`try_lock_byte`] took on the byte at `offset` of `file`.
#[allow(unsafe_code)]
pub(crate) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    let mut overlapped = at(offset);
    // SAFETY: an open handle, and an OVERLAPPED that outlives the call.
    if unsafe { UnlockFileEx(file.as_raw_handle(), 0, 1, 0, &mut overlapped) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn at(offset: u64) -> OVERLAPPED {
    let mut overlapped = OVERLAPPED::default();
    overlapped.Anonymous.Anonymous.Offset = offset as u32;
    overlapped.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    overlapped
}

/// `path` as Windows takes it, NUL-terminated; a path with a NUL of its own is refused,
/// as std refuses it, since Windows would read it as a shorter path.
fn wide(path: &Path) -> io::Result<Vec<u16>> {
    let wide: Vec<u16> = path.as_os_str().encode_wide().collect();
    if wide.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a path must not contain a NUL character",
        ));
    }
    Ok(wide.into_iter().chain(Some(0)).collect())
}
