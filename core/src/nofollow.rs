//! File operations beneath a trusted directory that never follow a symlink.
//!
//! A release or checkout tree comes from a repository, and a repository may
//! contain symlinks (`public -> /etc`). Every path below a trusted base (a
//! configured directory) is resolved here one component at a time with
//! `openat(O_NOFOLLOW | O_DIRECTORY)` on the previous component's descriptor
//! (rustix), so no operation leaves the tree through a link and no component
//! can be swapped for a link between a check and its use. A symlink component
//! is refused with [`NoFollowError::Symlink`] naming the path; removal
//! ([`DirHandle::remove`]) unlinks symlinks and descends into real directories only.

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A path below a trusted directory could not be used safely.
#[derive(Debug, thiserror::Error)]
pub enum NoFollowError {
    /// A component is a symlink: refused, never followed.
    #[error("{path}: is a symlink; refusing to follow it (a path inside a release or checkout must not lead outside it)")]
    Symlink {
        /// The symlink.
        path: PathBuf,
    },
    /// A component exists but is not a directory.
    #[error("{path}: exists and is not a directory")]
    NotDir {
        /// The path.
        path: PathBuf,
    },
    /// The relative path is absolute, has `..` or is otherwise unusable.
    #[error("{path}: {why}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl NoFollowError {
    /// The path concerned.
    pub fn path(&self) -> &Path {
        match self {
            NoFollowError::Symlink { path } | NoFollowError::NotDir { path } | NoFollowError::BadPath { path, .. } | NoFollowError::Io { path, .. } => path,
        }
    }

    /// What is wrong with it, without the path.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.path().display());
        full.strip_prefix(&prefix).map(str::to_owned).unwrap_or(full)
    }
}

fn io(path: &Path) -> impl FnOnce(rustix::io::Errno) -> NoFollowError + '_ {
    move |e| NoFollowError::Io { path: path.to_owned(), source: e.into() }
}

/// Whether `name` is one plain path component: not empty, not `.`/`..`, no `/`,
/// no control character, not hidden (journal and lock fields are checked with it).
pub fn is_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.starts_with('.') && !name.bytes().any(|b| b == b'/' || b < 0x20 || b == 0x7f)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// An open directory; everything below it is reached without following symlinks.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    path: PathBuf,
}

impl DirHandle {
    /// Opens a trusted directory (a configured path: its own components are resolved normally).
    pub fn open_trusted(path: &Path) -> Result<DirHandle, NoFollowError> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(io(path))?;
        Ok(DirHandle { fd, path: path.to_owned() })
    }

    /// The directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind of entry `name` without following it; `None` when absent.
    pub fn kind(&self, name: &OsStr) -> Result<Option<FileType>, NoFollowError> {
        let path = self.path.join(name);
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Opens the directory `name` directly below, refusing a symlink.
    pub fn child(&self, name: &OsStr) -> Result<DirHandle, NoFollowError> {
        let path = self.path.join(name);
        match self.kind(name)? {
            Some(FileType::Symlink) => return Err(NoFollowError::Symlink { path }),
            Some(FileType::Directory) | None => {}
            Some(_) => return Err(NoFollowError::NotDir { path }),
        }
        match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(DirHandle { fd, path }),
            // Replaced by a symlink between the check and the open.
            Err(rustix::io::Errno::LOOP) => Err(NoFollowError::Symlink { path }),
            Err(rustix::io::Errno::NOTDIR) => Err(NoFollowError::NotDir { path }),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Opens `rel` (relative, plain components) below this directory one
    /// component at a time, refusing symlinks; `create` makes missing directories (0755).
    pub fn open_beneath(&self, rel: &Path, create: bool) -> Result<DirHandle, NoFollowError> {
        let mut cur = DirHandle { fd: self.fd.try_clone().map_err(|source| NoFollowError::Io { path: self.path.clone(), source })?, path: self.path.clone() };
        for c in rel.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => return Err(NoFollowError::BadPath { path: self.path.join(rel), why: "must be a relative path without `..`" }),
            };
            if create && cur.kind(name)?.is_none() {
                match rustix::fs::mkdirat(&cur.fd, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io(&cur.path.join(name))(e)),
                }
            }
            cur = cur.child(name)?;
        }
        Ok(cur)
    }

    /// Checks that no existing component of `rel` below this directory is a
    /// symlink (missing components are fine: nothing is followed through them).
    pub fn check_beneath(&self, rel: &Path) -> Result<(), NoFollowError> {
        let mut cur = self.open_beneath(Path::new(""), false)?;
        for c in rel.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => return Err(NoFollowError::BadPath { path: self.path.join(rel), why: "must be a relative path without `..`" }),
            };
            if cur.kind(name)?.is_none() {
                return Ok(());
            }
            cur = cur.child(name)?;
        }
        Ok(())
    }

    /// Removes entry `name` (a directory with everything in it) without
    /// following any symlink: links are unlinked, never entered. Returns whether it existed.
    pub fn remove(&self, name: &OsStr) -> Result<bool, NoFollowError> {
        check_name(&self.path, name)?;
        match self.kind(name)? {
            None => Ok(false),
            Some(FileType::Directory) => {
                let sub = self.child(name)?;
                sub.empty()?;
                rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(io(&sub.path))?;
                Ok(true)
            }
            Some(_) => {
                let path = self.path.join(name);
                rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io(&path))?;
                Ok(true)
            }
        }
    }

    /// Removes everything inside this directory (not following symlinks).
    fn empty(&self) -> Result<(), NoFollowError> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd).map_err(io(&self.path))? {
            let entry = entry.map_err(io(&self.path))?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_owned());
            }
        }
        for n in names {
            self.remove(&n)?;
        }
        Ok(())
    }

    /// Creates the symlink `name` → `to` in this directory.
    pub fn symlink(&self, to: &Path, name: &OsStr) -> Result<(), NoFollowError> {
        check_name(&self.path, name)?;
        rustix::fs::symlinkat(to, &self.fd, name).map_err(io(&self.path.join(name)))
    }
}

fn check_name(dir: &Path, name: &OsStr) -> Result<(), NoFollowError> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(NoFollowError::BadPath { path: dir.join(name), why: "must be a single path component" });
    }
    Ok(())
}

/// Removes `parent/name` (`name` one component, `parent` trusted) without
/// following symlinks below `parent`. Returns whether it existed.
pub fn remove_entry(parent: &Path, name: &str) -> Result<bool, NoFollowError> {
    match DirHandle::open_trusted(parent) {
        Ok(d) => d.remove(OsStr::new(name)),
        Err(NoFollowError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_leaves_the_tree() {
        let base = std::env::temp_dir().join(format!("dk-nofollow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (tree, victim) = (base.join("tree"), base.join("victim"));
        std::fs::create_dir_all(tree.join("real/deep")).unwrap();
        std::fs::create_dir_all(victim.join("uploads")).unwrap();
        std::fs::write(victim.join("uploads/keep"), "x").unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("abs")).unwrap();
        std::os::unix::fs::symlink("../victim", tree.join("rel")).unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("real/deep/out")).unwrap();
        let d = DirHandle::open_trusted(&tree).unwrap();
        for l in ["abs/uploads", "rel/uploads", "real/deep/out/x"] {
            let e = d.open_beneath(Path::new(l), true).unwrap_err();
            assert!(matches!(e, NoFollowError::Symlink { .. }), "{l}: {e}");
            assert!(d.check_beneath(Path::new(l)).is_err());
        }
        assert!(d.open_beneath(Path::new("../victim"), false).is_err());
        assert!(d.check_beneath(Path::new("real/missing/x")).is_ok());
        let made = d.open_beneath(Path::new("real/new/dir"), true).unwrap();
        made.symlink(Path::new("/srv/shared"), OsStr::new("link")).unwrap();
        assert_eq!(std::fs::read_link(tree.join("real/new/dir/link")).unwrap(), Path::new("/srv/shared"));
        // Removing the tree unlinks the links and never enters them.
        assert!(remove_entry(&base, "tree").unwrap());
        assert!(!tree.exists());
        assert!(victim.join("uploads/keep").exists());
        assert!(!remove_entry(&base, "tree").unwrap());
        assert!(remove_entry(&base, "../x").is_err());
        assert!(is_component("www_v1") && !is_component("../../etc") && !is_component(".deploykit") && !is_component("a/b"));
        let _ = std::fs::remove_dir_all(&base);
    }
}
