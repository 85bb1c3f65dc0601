//! A key's path, walked from `/` through descriptors: every directory and link on the way
//! is judged by the rules of [`crate::trust`] before the key is read or created.
//!
//! The walk resolves the path itself, one name at a time, as the kernel would: each
//! directory is opened without following a link and judged by its own descriptor, each
//! link is judged and its target walked in turn. Nothing is looked up by path again
//! afterwards: the key is opened, and missing directories are created, through the
//! descriptor of the last directory walked. So nothing that appears on the path after it
//! was checked (a directory or link planted in the instant between) is ever followed.

use std::{
    collections::VecDeque,
    ffi::{OsStr, OsString},
    fs::File,
    io,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use crate::{
    error::{Error, Operation},
    sys::{self, Dir, FileKind, Owner, Process, Stat},
    trust::{self, PathKind, TrustProblem},
};

/// As many symbolic links as Linux follows in one path.
const MAX_LINKS: usize = 40;

/// What a walk does with a path it should not trust.
#[derive(Debug)]
pub(crate) enum Checks {
    /// Refuses it: the walk fails.
    Enforce,
    /// Notes a key file's own problem and goes on (`inspect_key`); a directory or link
    /// that another user could change still ends the walk.
    Report(Option<Error>),
    /// Trusts everything (`allow_insecure_permissions`).
    Off,
}

/// One step of a path still to be walked.
enum Step {
    /// The root a path starts at: `/`, or on Windows a drive or share (`C:\`).
    Root(PathBuf),
    Parent,
    Name(OsString),
    /// The end of a link's target: what follows is the path after the link.
    EndOfLink(PathBuf),
}

/// The directories of a path, from `/` down to the deepest one that exists, held open.
#[derive(Debug, Clone)]
pub(crate) struct Reached {
    chain: Vec<Arc<Dir>>,
    /// The names below the deepest directory that do not exist yet, in order.
    pub(crate) missing: Vec<OsString>,
}

impl Reached {
    /// The deepest directory reached.
    pub(crate) fn dir(&self) -> &Arc<Dir> {
        self.chain.last().expect("a walk starts at /")
    }

    /// Goes down into `dir`, a directory just made (or found) in the deepest one.
    pub(crate) fn enter(&mut self, dir: Dir) {
        self.chain.push(Arc::new(dir));
    }
}

/// A walk of the path of the key at `key`.
#[derive(Debug)]
pub(crate) struct Walk<'a> {
    key: &'a Path,
    process: Process,
    pub(crate) checks: Checks,
    links: usize,
    /// The key is reached through a Kubernetes secret volume (a `..data` link).
    pub(crate) kubernetes_secret: bool,
    /// The directory the key file was opened in.
    key_dir: Option<Arc<Dir>>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(key: &'a Path, checks: Checks) -> Self {
        Self {
            key,
            process: sys::process(),
            checks,
            links: 0,
            kubernetes_secret: false,
            key_dir: None,
        }
    }

    /// Walks to the directory the key is in, checking every directory and link on the
    /// way, and the key's directory as its home ([`PathKind::KeyDirectory`]). It stops
    /// where the path stops existing: what is missing is created later, by this process,
    /// private, from the deepest directory reached.
    pub(crate) fn walk_to_key_dir(&mut self) -> Result<Reached, Error> {
        let key = self.key;
        self.walk_to_home(key.parent().unwrap_or(Path::new("/")))
    }

    /// Walks to the directory `dir` (relative to the current directory when relative),
    /// as [`walk_to_key_dir`](Self::walk_to_key_dir) walks to the key's, and judges it as
    /// the home of what the crate keeps there when it exists.
    pub(crate) fn walk_to_home(&mut self, dir: &Path) -> Result<Reached, Error> {
        let reached = self.walk_to(dir)?;
        if reached.missing.is_empty() {
            self.check_directory(reached.dir(), PathKind::KeyDirectory)?;
        }
        Ok(reached)
    }

    /// Walks to the directory `dir`, every directory and link on the way checked.
    fn walk_to(&mut self, dir: &Path) -> Result<Reached, Error> {
        let absolute = if dir.is_absolute() {
            dir.to_owned()
        } else {
            std::env::current_dir()
                .map_err(|err| Error::io(Operation::FindCurrentDirectory, self.key, err))?
                .join(dir)
        };
        let mut steps = steps(&absolute);
        let Some(Step::Root(root)) = steps.pop_front() else {
            unreachable!(
                "an absolute path starts at its root: {}",
                absolute.display()
            );
        };
        let mut chain = vec![self.open_root(&root)?];
        let missing = self.walk(&mut chain, &mut steps)?;
        Ok(Reached { chain, missing })
    }

    /// Opens and checks the root directory `root`.
    fn open_root(&mut self, root: &Path) -> Result<Arc<Dir>, Error> {
        let dir = Dir::open(root).map_err(|err| Error::io(Operation::OpenDirectory, root, err))?;
        let stat = dir
            .stat()
            .map_err(|err| Error::io(Operation::CheckDirectory, root, err))?;
        self.judge(dir.path(), PathKind::Directory, &stat.owner)?;
        Ok(Arc::new(dir))
    }

    /// Opens the file `name` in the directory reached, following a link as the kernel
    /// would (a Kubernetes secret's `endpoint.key -> ..data/endpoint.key`), each link
    /// checked and its target walked. `None` when nothing is there; a link to nothing is
    /// [`Error::DanglingSymlink`]. The file itself is checked once read
    /// ([`Walk::check_key_file`]).
    pub(crate) fn open_key(
        &mut self,
        reached: &Reached,
        name: &OsStr,
    ) -> Result<Option<File>, Error> {
        let mut chain = reached.chain.clone();
        let mut name = name.to_owned();
        let mut through_link = None;
        loop {
            let dir = Arc::clone(chain.last().expect("a walk starts at /"));
            let path = dir.path().join(&name);
            match dir.open_file_no_follow(&name) {
                Ok(Some(file)) => {
                    if through_link.is_some() {
                        // A link led to another directory: the key's home is that one.
                        self.check_directory(&dir, PathKind::KeyDirectory)?;
                    }
                    self.key_dir = Some(dir);
                    return Ok(Some(file));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return match through_link {
                        Some(link) => Err(Error::DanglingSymlink { path: link }),
                        None => Ok(None),
                    };
                }
                Err(err) => return Err(Error::io(Operation::OpenKeyFile, self.key, err)),
                Ok(None) => {}
            }
            // A link: checked, then its target walked to the file it names.
            let link = dir
                .stat_at(&name)
                .map_err(|err| Error::io(Operation::CheckDirectory, &path, err))?
                .ok_or_else(|| {
                    let gone = io::ErrorKind::NotFound.into();
                    Error::io(Operation::CheckDirectory, &path, gone)
                })?;
            let target = self.follow(&dir, &name, &path, &link.owner)?;
            let mut steps = steps(&target);
            let Some(Step::Name(file)) = steps.pop_back() else {
                return Err(Error::NotAFile {
                    path: self.key.into(),
                    kind: FileKind::Directory,
                });
            };
            through_link.get_or_insert_with(|| path.clone());
            let missing = self.walk(&mut chain, &mut steps)?;
            if !missing.is_empty() {
                return Err(Error::DanglingSymlink { path });
            }
            name = file;
        }
    }

    /// Checks the open key file, of `stat`: owner, mode (unix) or DACL (Windows), and
    /// links.
    pub(crate) fn check_key_file(&mut self, stat: &Stat) -> Result<(), Error> {
        let Stat { owner, links, .. } = stat;
        if *links > 1 && self.key_dir_is_shared()? {
            // In a directory where others may add names (a sticky `/tmp`, a group's),
            // a second name may be another user's link to a file of this user's: a
            // planted identity that passes every check of owner and mode.
            return self.refuse(Error::UntrustedPath {
                key: self.key.to_owned(),
                path: self.key.to_owned(),
                kind: PathKind::KeyFile,
                owner: sys::ownership(owner),
                problem: TrustProblem::HardLinked { links: *links },
            });
        }
        // Unix's mode bits; on Windows who may read the key is the trust rules' (its
        // DACL names each reader).
        #[cfg(unix)]
        {
            if owner.uid == self.process.uid && owner.mode & 0o077 != 0 {
                let exposed = Error::InsecurePermissions {
                    path: self.key.to_owned(),
                    mode: owner.mode,
                    kubernetes_secret: self.kubernetes_secret,
                };
                return self.refuse(exposed);
            }
            if owner.uid == self.process.uid {
                return Ok(());
            }
            if owner.uid == 0 && owner.mode & 0o004 != 0 {
                // Root's choice, and the default of a Kubernetes secret: accepted, but
                // every user of the host can copy this identity (and hold its lock).
                tracing::warn!(
                    path = %self.key.display(),
                    mode = format_args!("{:04o}", owner.mode),
                    "the key file is readable by every user of this host; make it readable \
                     only by this process's user or group (for a Kubernetes secret: fsGroup \
                     with defaultMode: 0440)"
                );
            }
        }
        self.judge(self.key, PathKind::KeyFile, owner)
    }

    /// Whether others than its owner may add names to the directory the key was opened in.
    fn key_dir_is_shared(&self) -> Result<bool, Error> {
        let Some(dir) = &self.key_dir else {
            return Ok(false);
        };
        let stat = dir
            .stat()
            .map_err(|err| Error::io(Operation::CheckDirectory, dir.path(), err))?;
        Ok(trust::others_may_add_names(&stat.owner, self.process))
    }

    /// Checks `dir` as a directory of `kind`: one that this process did not walk (a
    /// racing process made it while this one was creating the same path), or the home of
    /// a key.
    pub(crate) fn check_directory(&mut self, dir: &Dir, kind: PathKind) -> Result<(), Error> {
        let stat = dir
            .stat()
            .map_err(|err| Error::io(Operation::CheckDirectory, dir.path(), err))?;
        self.judge(dir.path(), kind, &stat.owner)
    }

    /// Walks `steps` down from the last directory of `chain`, pushing every directory it
    /// enters. Returns the names of the missing end of the path (none when it all
    /// exists).
    fn walk(
        &mut self,
        chain: &mut Vec<Arc<Dir>>,
        steps: &mut VecDeque<Step>,
    ) -> Result<Vec<OsString>, Error> {
        while let Some(step) = steps.pop_front() {
            let name = match step {
                Step::Root(root) => {
                    if chain[0].path() == root {
                        chain.truncate(1);
                    } else {
                        // Another drive (Windows): its root is walked from as `/` is.
                        *chain = vec![self.open_root(&root)?];
                    }
                    continue;
                }
                Step::Parent => {
                    if chain.len() > 1 {
                        chain.pop();
                    }
                    continue;
                }
                Step::EndOfLink(_) => continue,
                Step::Name(name) => name,
            };
            let dir = Arc::clone(chain.last().expect("a walk starts at /"));
            let path = dir.path().join(&name);
            let not_a_dir = match dir.open_dir(&name) {
                Ok(entered) => {
                    let stat = entered
                        .stat()
                        .map_err(|err| Error::io(Operation::CheckDirectory, &path, err))?;
                    self.judge(&path, PathKind::Directory, &stat.owner)?;
                    chain.push(Arc::new(entered));
                    continue;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return missing_end(self.key, name, steps);
                }
                // A link (or something that is not a directory): looked at below.
                Err(err) => err,
            };
            match dir
                .stat_at(&name)
                .map_err(|err| Error::io(Operation::CheckDirectory, &path, err))?
            {
                None => return missing_end(self.key, name, steps),
                Some(stat) if stat.kind == FileKind::SymbolicLink => {
                    let target = self.follow(&dir, &name, &path, &stat.owner)?;
                    steps.push_front(Step::EndOfLink(path));
                    for step in self::steps(&target).into_iter().rev() {
                        steps.push_front(step);
                    }
                }
                Some(_) => {
                    // A file where a directory should be, or a directory that could not
                    // be opened: as the kernel said.
                    return Err(Error::io(Operation::OpenDirectory, &path, not_a_dir));
                }
            }
        }
        Ok(Vec::new())
    }

    /// Checks the link `name` in `dir`, owned by `owner`, and returns its target.
    fn follow(
        &mut self,
        dir: &Dir,
        name: &OsStr,
        path: &Path,
        owner: &Owner,
    ) -> Result<PathBuf, Error> {
        self.judge(path, PathKind::SymbolicLink, owner)?;
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(Error::TooManyLinks {
                path: self.key.to_owned(),
            });
        }
        self.kubernetes_secret |= name == "..data";
        dir.read_link(name)
            .map_err(|err| Error::io(Operation::CheckDirectory, path, err))
    }

    /// The rules of [`trust`] for one directory, link or foreign key file.
    fn judge(&mut self, path: &Path, kind: PathKind, owner: &Owner) -> Result<(), Error> {
        let Some(problem) = trust::problem(owner, self.process, kind) else {
            return Ok(());
        };
        let err = Error::UntrustedPath {
            key: self.key.to_owned(),
            path: path.to_owned(),
            kind,
            owner: sys::ownership(owner),
            problem,
        };
        match (&self.checks, kind) {
            // What lies beyond a directory or link that another user controls is theirs:
            // not even a report follows it.
            (
                Checks::Report(_),
                PathKind::Directory | PathKind::KeyDirectory | PathKind::SymbolicLink,
            ) => Err(err),
            _ => self.refuse(err),
        }
    }

    fn refuse(&mut self, err: Error) -> Result<(), Error> {
        match &mut self.checks {
            Checks::Enforce => Err(err),
            Checks::Report(first) => {
                first.get_or_insert(err);
                Ok(())
            }
            Checks::Off => Ok(()),
        }
    }
}

/// The missing end of a path: `name` and the names after it. A path that goes on
/// through a link (or up, `..`) from a missing directory leads nowhere that could be
/// created safely.
fn missing_end(
    key: &Path,
    name: OsString,
    steps: &mut VecDeque<Step>,
) -> Result<Vec<OsString>, Error> {
    let mut missing = vec![name];
    for step in steps.drain(..) {
        match step {
            Step::Name(name) => missing.push(name),
            Step::EndOfLink(link) => return Err(Error::DanglingSymlink { path: link }),
            Step::Root(_) | Step::Parent => {
                return Err(Error::UncreatablePath {
                    path: key.to_owned(),
                });
            }
        }
    }
    Ok(missing)
}

/// The steps of `path`, in order. A Windows prefix and the root after it (`C:` and `\`)
/// are one root.
fn steps(path: &Path) -> VecDeque<Step> {
    let mut steps = VecDeque::new();
    for component in path.components() {
        match component {
            Component::Prefix(prefix) => steps.push_back(Step::Root(prefix.as_os_str().into())),
            Component::RootDir => match steps.back_mut() {
                Some(Step::Root(prefix)) => prefix.push(Component::RootDir),
                _ => steps.push_back(Step::Root(Component::RootDir.as_os_str().into())),
            },
            Component::ParentDir => steps.push_back(Step::Parent),
            Component::CurDir => {}
            Component::Normal(name) => steps.push_back(Step::Name(name.to_owned())),
        }
    }
    steps
}
