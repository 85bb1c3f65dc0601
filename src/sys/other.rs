//! Platforms without unix permissions and descriptor-relative calls: directories are used
//! by path, files get no modes, and keys are published with a hard link.
//!
//! These platforms are not tested in CI; see the crate's *Limitations*.

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File, Metadata, OpenOptions},
    io,
    path::{Path, PathBuf},
};

use super::{Ownership, Stat};

/// The longest file name most file systems accept, in bytes.
pub(crate) const NAME_MAX: usize = 255;

/// Files have no unix owner here: nothing is judged by it.
pub(crate) fn owner(_metadata: &Metadata) -> Option<Ownership> {
    None
}

/// The users whose UDP sockets are bound to a port: not told here.
pub(crate) fn udp_port_users(_port: u16) -> Option<Vec<u32>> {
    None
}

/// How many names the file has: not told here, so one.
pub(crate) fn links(_metadata: &Metadata) -> u64 {
    1
}

/// Who this process acts as; unused where files have no unix owner.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process {
    pub(crate) uid: u32,
}

impl Process {
    pub(crate) fn in_group(self, _gid: u32) -> bool {
        false
    }
}

pub(crate) fn process() -> Process {
    Process { uid: 0 }
}

/// A directory, used by path.
#[derive(Debug)]
pub(crate) struct Dir {
    path: PathBuf,
}

impl Dir {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        if fs::metadata(path)?.is_dir() {
            Ok(Self { path: path.into() })
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ))
        }
    }

    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<Self> {
        Self::open(&self.path.join(name))
    }

    pub(crate) fn create_dir(&self, name: &OsStr, _mode: u32) -> io::Result<Self> {
        fs::create_dir(self.path.join(name))?;
        self.open_dir(name)
    }

    pub(crate) fn open_file_no_follow(&self, name: &OsStr) -> io::Result<Option<File>> {
        let path = self.path.join(name);
        if fs::symlink_metadata(&path)?.is_symlink() {
            return Ok(None);
        }
        File::open(path).map(Some)
    }

    pub(crate) fn stat_at(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        match fs::symlink_metadata(self.path.join(name)) {
            Ok(metadata) => Ok(Some(Stat::of(&metadata))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub(crate) fn stat(&self) -> io::Result<Stat> {
        Ok(Stat::of(&fs::metadata(&self.path)?))
    }

    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        fs::read_link(self.path.join(name))
    }

    pub(crate) fn open_lock_file(&self, name: &OsStr) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join(name))
    }

    pub(crate) fn create_private_file(&self, name: &OsStr) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path.join(name))
    }

    /// A hard link, which fails if anything is already at `to`; `from` is left for the
    /// caller to remove.
    pub(crate) fn publish_no_clobber(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        fs::hard_link(self.path.join(from), self.path.join(to))
    }

    pub(crate) fn replace(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        fs::rename(self.path.join(from), self.path.join(to))
    }

    pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    pub(crate) fn names(&self) -> Vec<OsString> {
        fs::read_dir(&self.path)
            .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
            .unwrap_or_default()
    }

    /// Directories cannot be synced here; renames are as durable as the platform makes
    /// them.
    pub(crate) fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    /// Directories cannot be locked here.
    pub(crate) fn try_lock(&self) -> io::Result<bool> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "directories cannot be locked on this platform",
        ))
    }

    pub(crate) fn unlock(&self) -> io::Result<()> {
        Ok(())
    }

    /// Whether `name` is the file `file` is open on: not told here, so assumed.
    pub(crate) fn is_same_file(&self, _name: &OsStr, _file: &File) -> io::Result<bool> {
        Ok(true)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
