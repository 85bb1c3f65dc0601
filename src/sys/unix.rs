//! Unix: directories held open and used through their descriptor (`openat`, `mkdirat`,
//! `renameat2`), owners and modes, opens that cannot hang, and the identity of the
//! process. No policy: what is trusted is decided in `store::trust`.

use std::{
    ffi::{CString, OsStr, OsString},
    fs::{self, File, Metadata, Permissions, TryLockError},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::{MetadataExt, PermissionsExt},
        },
    },
    path::{Path, PathBuf},
};

use super::{FileKind, Ownership, Stat};

/// The longest file name the file systems this crate runs on accept, in bytes.
pub(crate) const NAME_MAX: usize = 255;

/// Who owns a file and who may use it, as the rules judge it: its user, group and mode.
pub(crate) type Owner = Ownership;

/// The owner and mode in `metadata`.
pub(crate) fn owner(metadata: &Metadata) -> Option<Ownership> {
    Some(Stat::of(metadata).owner)
}

/// The owner and mode of `owner`, for an error to name.
pub(crate) fn ownership(owner: &Owner) -> Option<Ownership> {
    Some(*owner)
}

/// The users whose UDP sockets are bound to a port: not told on this system.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn udp_port_users(_port: u16) -> Option<Vec<u32>> {
    None
}

/// Who this process acts as when it touches files: its effective user, and (asked only
/// when a group's rights matter) its groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process {
    pub(crate) uid: u32,
}

impl Process {
    /// Whether `owner` is this process's user.
    pub(crate) fn owns(self, owner: &Owner) -> bool {
        owner.uid == self.uid
    }

    /// Whether `uid` is this process's user.
    pub(crate) fn is_user(self, uid: u32) -> bool {
        uid == self.uid
    }

    /// Whether `gid` is the process's effective group or one of its supplementary groups.
    #[allow(unsafe_code)]
    pub(crate) fn in_group(self, gid: u32) -> bool {
        // SAFETY: getegid takes no arguments and cannot fail.
        if unsafe { libc::getegid() } == gid {
            return true;
        }
        // SAFETY: with a size of 0, getgroups only returns the number of groups.
        let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let Ok(count) = usize::try_from(count) else {
            return false;
        };
        let mut groups: Vec<libc::gid_t> = vec![0; count];
        // SAFETY: the buffer has room for `count` groups, and getgroups writes at most that.
        let written = unsafe { libc::getgroups(count as libc::c_int, groups.as_mut_ptr()) };
        usize::try_from(written).is_ok_and(|written| groups[..written.min(count)].contains(&gid))
    }
}

#[allow(unsafe_code)]
pub(crate) fn process() -> Process {
    // SAFETY: geteuid takes no arguments and cannot fail.
    Process {
        uid: unsafe { libc::geteuid() },
    }
}

/// The home directory of the user `uid` in the user database (`getpwuid_r`), whatever
/// `$HOME` says; `None` when the user has no entry or no absolute home.
#[allow(unsafe_code)]
#[cfg_attr(
    all(
        any(target_os = "linux", target_os = "android"),
        not(feature = "keyring")
    ),
    allow(dead_code)
)]
pub(crate) fn home_of(uid: u32) -> Option<PathBuf> {
    use std::ffi::CStr;

    let mut buffer = vec![0_u8; 4096];
    loop {
        // SAFETY: `passwd` is plain data that getpwuid_r fills in; all-zero is valid.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid pointers to `entry`, the buffer and its length, and `found`, all
        // of which outlive the call.
        let result = unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        if result == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        if result != 0 || found.is_null() || entry.pw_dir.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded, so `pw_dir` points to a NUL-terminated string
        // in `buffer`, which is still alive.
        let home = unsafe { CStr::from_ptr(entry.pw_dir) };
        let home = PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes()));
        return home.is_absolute().then_some(home);
    }
}

/// An open directory. Files in it are opened, created, renamed and removed through its
/// descriptor, so that nothing done in it can be redirected elsewhere by replacing a
/// directory on its path with a symbolic link.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    /// Where it was opened, for messages and for listing it.
    path: PathBuf,
    /// Whether it was opened for reading: without that it can be neither synced, nor
    /// locked, nor listed (a directory its owner may write and search but not read).
    readable: bool,
}

impl Dir {
    /// Opens the directory at `path`, following symbolic links: the caller has checked
    /// who may change them.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let c_path = c_path(path.as_os_str())?;
        Self::open_at(libc::AT_FDCWD, &c_path, 0, path.to_owned())
    }

    /// Opens the directory `name` in this one; fails if `name` is a symbolic link.
    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<Self> {
        let c_name = c_path(name)?;
        Self::open_at(
            self.fd.as_raw_fd(),
            &c_name,
            libc::O_NOFOLLOW,
            self.path.join(name),
        )
    }

    #[allow(unsafe_code)]
    fn open_at(at: RawFd, name: &CString, flags: libc::c_int, path: PathBuf) -> io::Result<Self> {
        let flags = flags | libc::O_DIRECTORY | libc::O_CLOEXEC;
        match open_fd(at, name, flags | libc::O_RDONLY, 0) {
            Ok(fd) => Ok(Self {
                fd,
                path,
                readable: true,
            }),
            // Write and search permission without read (mode 0300): enough to create,
            // open and rename files in it, which is all that is needed.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Err(err) if err.raw_os_error() == Some(libc::EACCES) => Ok(Self {
                fd: open_fd(at, name, flags | libc::O_PATH, 0)?,
                path,
                readable: false,
            }),
            Err(err) => Err(err),
        }
    }

    /// Creates the directory `name` in this one with exactly `mode`, whatever the umask,
    /// and opens it. The mode is set through the new directory's descriptor: if someone
    /// replaces it with a symbolic link in between, the open fails and nothing is changed.
    #[allow(unsafe_code)]
    pub(crate) fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<Self> {
        let c_name = c_path(name)?;
        // SAFETY: a valid descriptor and a NUL-terminated name that outlives the call.
        let result =
            unsafe { libc::mkdirat(self.fd.as_raw_fd(), c_name.as_ptr(), mode as libc::mode_t) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        let created = self.open_dir(name)?;
        let metadata = created.metadata()?;
        if metadata.uid() != process().uid {
            // Whoever may write this directory put one of their own in its place.
            return Err(io::Error::other(
                "it was replaced by another user's directory while it was created",
            ));
        }
        if metadata.mode() & 0o7777 == mode {
            return Ok(created);
        }
        // The umask took bits away. Through the new directory's own descriptor: `fchmod`
        // when it could be opened for reading.
        if created.readable {
            created
                .borrow_file()
                .set_permissions(Permissions::from_mode(mode))?;
            return Ok(created);
        }
        // The umask took away the owner's read bit too, so only an `O_PATH` descriptor
        // could be had, which `fchmod` refuses. On Linux its `/proc/self/fd` link names
        // exactly that directory: change it there, then open it again for reading.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let by_fd = created.path_of_fd();
            std::fs::set_permissions(&by_fd, Permissions::from_mode(mode))?;
            Self::open_at(libc::AT_FDCWD, &c_path(by_fd.as_os_str())?, 0, created.path)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            created.readable()?;
            Ok(created)
        }
    }

    /// Opens the file `name` in this directory for reading, or returns `None` if it is a
    /// symbolic link. `O_NONBLOCK` makes opening a FIFO return at once.
    pub(crate) fn open_file_no_follow(&self, name: &OsStr) -> io::Result<Option<File>> {
        let c_name = c_path(name)?;
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match open_fd(self.fd.as_raw_fd(), &c_name, flags, 0) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(err) if is_link_error(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates the temporary file `name`, that only its owner can read and write (exactly
    /// `0600` whatever the umask), and locks it, so that
    /// [`remove_abandoned`](Self::remove_abandoned) passes it over for as long as it is
    /// open; fails if anything, a symbolic link included, is there.
    pub(crate) fn create_temporary_file(&self, name: &OsStr) -> io::Result<File> {
        let c_name = c_path(name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let file = File::from(open_fd(
            self.fd.as_raw_fd(),
            &c_name,
            flags | libc::O_CLOEXEC,
            0o600,
        )?);
        // The umask may have taken bits away from 0600 (never added any).
        file.set_permissions(Permissions::from_mode(0o600))?;
        // Where files cannot be locked, no sweep can lock one either.
        if let Err(err) = file.try_lock() {
            tracing::debug!(%err, "cannot lock a temporary file");
        }
        Ok(file)
    }

    /// Opens the lock file `name`, creating it (`0600`) if it is missing; fails if it is
    /// a symbolic link. It is never written: only locked.
    #[cfg_attr(
        all(
            any(target_os = "linux", target_os = "android"),
            not(feature = "keyring")
        ),
        allow(dead_code)
    )]
    pub(crate) fn open_lock_file(&self, name: &OsStr) -> io::Result<File> {
        let c_name = c_path(name)?;
        let flags = libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        open_fd(self.fd.as_raw_fd(), &c_name, flags | libc::O_CLOEXEC, 0o600).map(File::from)
    }

    /// What `name` in this directory is, not following a symbolic link; `None` if
    /// nothing is there.
    #[allow(unsafe_code)]
    pub(crate) fn stat_at(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let c_name = c_path(name)?;
        // SAFETY: an all-zero `stat` is a valid value for fstatat to overwrite.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor, a NUL-terminated name and a `stat` to write into,
        // all of which outlive the call.
        let result = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c_name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if result != 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(err),
            };
        }
        Ok(Some(Stat::from_raw(&stat)))
    }

    /// What this directory is: its owner and mode, and which directory it is.
    pub(crate) fn stat(&self) -> io::Result<Stat> {
        Ok(Stat::of(&self.metadata()?))
    }

    /// The target of the symbolic link `name` in this directory.
    #[allow(unsafe_code)]
    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        let c_name = c_path(name)?;
        let mut buffer = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: a valid descriptor, a NUL-terminated name, and a buffer of the length
        // given, all of which outlive the call.
        let len = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c_name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
        buffer.truncate(len);
        Ok(PathBuf::from(OsString::from_vec(buffer)))
    }

    /// Gives the file `from` the name `to`, failing with
    /// [`io::ErrorKind::AlreadyExists`] if anything is already there.
    ///
    /// On Linux this is `renameat2(RENAME_NOREPLACE)`, after which `from` is gone. Where
    /// the kernel or file system lacks it, and on other unixes, it is `linkat`, after
    /// which `from` is still there for the caller to remove.
    pub(crate) fn publish_no_clobber(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (c_from, c_to) = (c_path(from)?, c_path(to)?);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        match self.rename_with(&c_from, &c_to, libc::RENAME_NOREPLACE) {
            // Not supported here: fall back to link, which reports any real error again.
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)
                ) => {}
            result => return result,
        }
        self.link(&c_from, &c_to)
    }

    /// Removes the file `name` if no writer holds it locked: `Ok(false)` while one does.
    /// A temporary file is locked by its writer for as long as it exists, so one that is
    /// not was left by a writer that was killed. The lock taken here is held until the
    /// file is removed.
    pub(crate) fn remove_abandoned(&self, name: &OsStr) -> io::Result<bool> {
        let _abandoned = match self.open_file_no_follow(name)? {
            Some(file) if file.try_lock().is_ok() => file,
            _ => return Ok(false),
        };
        self.remove_file(name)?;
        Ok(true)
    }

    /// Renames `from` to `to`, replacing what is there.
    pub(crate) fn replace(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        self.rename_with(&c_path(from)?, &c_path(to)?, 0)
    }

    #[allow(unsafe_code)]
    fn rename_with(&self, from: &CString, to: &CString, flags: libc::c_uint) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid descriptor and NUL-terminated names that outlive the call.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let result = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                fd,
                from.as_ptr(),
                fd,
                to.as_ptr(),
                flags,
            )
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        // SAFETY: as above.
        let result = {
            debug_assert_eq!(flags, 0, "only Linux renames without replacing");
            unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }
        };
        check(result as libc::c_int)
    }

    #[allow(unsafe_code)]
    fn link(&self, from: &CString, to: &CString) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid descriptor and NUL-terminated names that outlive the call.
        check(unsafe { libc::linkat(fd, from.as_ptr(), fd, to.as_ptr(), 0) })
    }

    /// Removes the file `name`; a symbolic link is removed, not what it points to.
    #[allow(unsafe_code)]
    pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        let c_name = c_path(name)?;
        // SAFETY: a valid descriptor and a NUL-terminated name that outlives the call.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c_name.as_ptr(), 0) })
    }

    /// The names in this directory; empty if it cannot be read.
    pub(crate) fn names(&self) -> Vec<OsString> {
        if !self.readable {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(self.path_of_fd()) else {
            return Vec::new();
        };
        entries.flatten().map(|entry| entry.file_name()).collect()
    }

    /// Makes the entries of the directory durable: after a crash, what was created or
    /// renamed in it is still there.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.readable()?;
        self.borrow_file().sync_all()
    }

    /// Takes an exclusive lock on the directory if no one else holds one: `Ok(false)`
    /// while another does. It lasts until [`unlock`](Self::unlock) or until the
    /// directory is dropped.
    pub(crate) fn try_lock(&self) -> io::Result<bool> {
        self.readable()?;
        match self.borrow_file().try_lock() {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }

    /// Releases the lock taken by [`try_lock`](Self::try_lock).
    pub(crate) fn unlock(&self) -> io::Result<()> {
        self.borrow_file().unlock()
    }

    /// The directory's own metadata (owner, mode), from its descriptor.
    pub(crate) fn metadata(&self) -> io::Result<Metadata> {
        self.borrow_file().metadata()
    }

    /// Whether `name` in this directory is the file `file` is open on.
    #[cfg_attr(
        all(
            any(target_os = "linux", target_os = "android"),
            not(feature = "keyring")
        ),
        allow(dead_code)
    )]
    pub(crate) fn is_same_file(&self, name: &OsStr, file: &File) -> io::Result<bool> {
        let open = file.metadata()?;
        let named = fs::symlink_metadata(self.path_of_fd().join(name))?;
        Ok((open.dev(), open.ino()) == (named.dev(), named.ino()))
    }

    /// Where the directory was opened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn readable(&self) -> io::Result<()> {
        if self.readable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the directory may be written and searched but not read",
            ))
        }
    }

    /// The descriptor as a `File`, for what std does through one (sync, lock,
    /// metadata). Borrowed: dropping it does not close the directory.
    #[allow(unsafe_code)]
    fn borrow_file(&self) -> std::mem::ManuallyDrop<File> {
        // SAFETY: the descriptor is open for as long as `self`, which outlives the
        // borrowed handle, and `ManuallyDrop` keeps the handle from closing it.
        std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.fd.as_raw_fd()) })
    }

    /// A path that names exactly this directory, wherever it has been moved since.
    fn path_of_fd(&self) -> PathBuf {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return self.path.clone();
    }
}

impl Stat {
    /// What the file of `metadata` is.
    pub(crate) fn of(metadata: &Metadata) -> Self {
        Self {
            kind: FileKind::of(metadata.file_type()),
            owner: Ownership {
                uid: metadata.uid(),
                gid: metadata.gid(),
                mode: metadata.mode() & 0o7777,
            },
            links: metadata.nlink(),
        }
    }

    /// What the open file `file`, of `metadata`, is.
    pub(crate) fn of_file(_file: &File, metadata: &Metadata) -> io::Result<Self> {
        Ok(Self::of(metadata))
    }

    fn from_raw(stat: &libc::stat) -> Self {
        let kind = match stat.st_mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFREG => FileKind::File,
            libc::S_IFLNK => FileKind::SymbolicLink,
            libc::S_IFIFO => FileKind::NamedPipe,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharacterDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Other,
        };
        Self {
            kind,
            owner: Ownership {
                uid: stat.st_uid,
                gid: stat.st_gid,
                // `mode_t` is u32 on Linux and u16 on macOS.
                #[allow(clippy::useless_conversion)]
                mode: u32::from(stat.st_mode) & 0o7777,
            },
            // `nlink_t` is u64 on Linux x86_64 and u16 or u32 elsewhere.
            #[allow(clippy::useless_conversion)]
            links: u64::from(stat.st_nlink),
        }
    }
}

#[allow(unsafe_code)]
fn open_fd(at: RawFd, name: &CString, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `at` is a descriptor or AT_FDCWD and `name` a NUL-terminated string; both
    // outlive the call.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether opening with `O_NOFOLLOW` failed because the name is a symbolic link:
/// `ELOOP`, or `EMLINK` on the BSDs.
fn is_link_error(err: &io::Error) -> bool {
    #[cfg(any(target_os = "freebsd", target_os = "dragonfly", target_os = "netbsd"))]
    if err.raw_os_error() == Some(libc::EMLINK) {
        return true;
    }
    err.raw_os_error() == Some(libc::ELOOP)
}

fn c_path(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
