//! Atomic checkouts into a target directory.
//!
//! Layout for a target `/srv/www/site` (modes trusting, branch, atomic,
//! puppetmaster's `target/BRANCH`):
//!
//! ```text
//! /srv/www/site -> .site.dk-versions/<commit>-<nanos>     (a relative symlink)
//! /srv/www/.site.dk-versions/<commit>-<nanos>/             the current tree
//! /srv/www/.site.dk-versions/<commit>-<nanos>/             the previous tree (kept one round)
//! ```
//!
//! A new tree is written blob by blob (no index is touched) into
//! `.site.dk-versions/.tmp-…`, renamed to its version name, and a fresh
//! symlink is renamed over `site` with rename(2): a reader resolving `site`
//! sees the old tree or the new one, never a partial one. The previous tree is
//! kept until the next update, so a reader inside it is not pulled out mid-read;
//! older ones are removed. A pre-existing real directory at `site` (a legacy
//! stomp-git target) is exchanged with the symlink atomically with
//! `renameat2(RENAME_EXCHANGE)` and moved into the versions directory.
//!
//! Tag directories (`tags` mode) are never rewritten: a tag's tree is written
//! to a sibling temp directory and renamed to `target/TAG` once.
//!
//! Branch and tag names become one path component by [`dir_name`]: `/` is
//! written `__` (`feature/x` → `feature__x`); git's ref rules already exclude
//! `..`, components starting with `.`, and control characters. The mapping is
//! not injective (`feature__x` maps to itself): puppetmaster mode records each
//! environment's branch and refuses collisions (see `ops`).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// An I/O or libgit2 failure while writing a tree, with the path concerned.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CheckoutError {
    /// The path being written.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> CheckoutError {
    CheckoutError { path: path.to_owned(), message: e.to_string() }
}

/// The directory name for a branch or tag short name: `/` becomes `__`.
/// `None` if the result would not be a safe single path component.
pub fn dir_name(short: &str) -> Option<String> {
    let s = short.replace('/', "__");
    let ok = !s.is_empty() && s != "." && s != ".." && !s.starts_with('.') && !s.bytes().any(|b| b == 0 || b < 0x20 || b == b'/');
    ok.then_some(s)
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn versions_dir(target: &Path) -> Result<(PathBuf, String), CheckoutError> {
    let parent = target.parent().ok_or_else(|| err(target, "target has no parent directory"))?;
    let base = target.file_name().ok_or_else(|| err(target, "target has no file name"))?.to_string_lossy().into_owned();
    Ok((parent.join(format!(".{base}.dk-versions")), base))
}

/// Writes `tree` under `dest` (which must not exist): files with their
/// executable bit, symlinks as symlinks, submodules as empty directories.
pub fn export_tree(repo: &git2::Repository, tree: &git2::Tree<'_>, dest: &Path) -> Result<(), CheckoutError> {
    std::fs::create_dir(dest).map_err(|e| err(dest, e))?;
    for entry in tree.iter() {
        let name = entry.name_bytes();
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
            return Err(err(dest, format!("refusing tree entry {:?}", String::from_utf8_lossy(name))));
        }
        let path = dest.join(std::ffi::OsStr::from_bytes(name));
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = repo.find_tree(entry.id()).map_err(|e| err(&path, e))?;
                export_tree(repo, &sub, &path)?;
            }
            Some(git2::ObjectType::Blob) => {
                let blob = repo.find_blob(entry.id()).map_err(|e| err(&path, e))?;
                let mode = entry.filemode();
                if mode == 0o120000 {
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(blob.content()), &path).map_err(|e| err(&path, e))?;
                } else {
                    use std::os::unix::fs::OpenOptionsExt;
                    let perm = if mode & 0o111 != 0 { 0o777 } else { 0o666 };
                    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(perm).open(&path).map_err(|e| err(&path, e))?;
                    f.write_all(blob.content()).map_err(|e| err(&path, e))?;
                }
            }
            Some(git2::ObjectType::Commit) => std::fs::create_dir(&path).map_err(|e| err(&path, e))?,
            _ => return Err(err(&path, "unexpected object in tree")),
        }
    }
    Ok(())
}

/// The commit the target's symlink points at, if it is one of ours.
pub fn current_commit(target: &Path) -> Option<String> {
    let (_, base) = versions_dir(target).ok()?;
    let link = std::fs::read_link(target).ok()?;
    let prefix = format!(".{base}.dk-versions/");
    let rest = link.to_str()?.strip_prefix(&prefix)?;
    Some(rest.split('-').next()?.to_owned())
}

/// Makes `target` show `commit`'s tree (see the module doc). Returns whether
/// anything changed (false when the target already shows that commit).
pub fn swap_in(repo: &git2::Repository, commit: &git2::Commit<'_>, target: &Path) -> Result<bool, CheckoutError> {
    let oid = commit.id().to_string();
    if current_commit(target).as_deref() == Some(oid.as_str()) {
        return Ok(false);
    }
    let (versions, base) = versions_dir(target)?;
    let parent = target.parent().expect("checked by versions_dir");
    std::fs::create_dir_all(&versions).map_err(|e| err(&versions, e))?;
    let stamp = nanos();
    let version = format!("{oid}-{stamp}");
    let tmp = versions.join(format!(".tmp-{version}"));
    let tree = commit.tree().map_err(|e| err(target, e))?;
    if let Err(e) = export_tree(repo, &tree, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let final_dir = versions.join(&version);
    std::fs::rename(&tmp, &final_dir).map_err(|e| err(&final_dir, e))?;
    let link_text = PathBuf::from(format!(".{base}.dk-versions/{version}"));
    let tmp_link = parent.join(format!(".{base}.dk-link-{}-{stamp}", std::process::id()));
    std::os::unix::fs::symlink(&link_text, &tmp_link).map_err(|e| err(&tmp_link, e))?;
    let previous = std::fs::read_link(target).ok();
    match std::fs::symlink_metadata(target) {
        Ok(md) if md.is_dir() => {
            // A real directory (legacy target): exchange atomically, then file it away.
            exchange(&tmp_link, target).map_err(|e| err(target, e))?;
            let keep = versions.join(format!("legacy-{stamp}"));
            std::fs::rename(&tmp_link, &keep).map_err(|e| err(&keep, e))?;
        }
        _ => std::fs::rename(&tmp_link, target).map_err(|e| err(target, e))?,
    }
    // Keep the current and the previous version; drop the rest and stray temps.
    let keep: Vec<OsString> = [Some(link_text), previous].into_iter().flatten().filter_map(|p| p.file_name().map(|n| n.to_owned())).collect();
    if let Ok(rd) = std::fs::read_dir(&versions) {
        for e in rd.flatten() {
            let name = e.file_name();
            if !keep.contains(&name) && !name.as_bytes().starts_with(b"legacy-") {
                let _ = crate::nofollow::DirHandle::open_trusted(&versions).and_then(|d| d.remove(&name));
            }
        }
    }
    Ok(true)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Without renameat2: move the old directory aside, then rename the link in
/// (a reader may see the target missing for the instant between the two).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let aside = b.with_extension(format!("dk-old-{}", nanos()));
    std::fs::rename(b, &aside)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&aside, a)
}

/// Removes a target made by [`swap_in`]: the symlink first (atomically), then
/// its versions. Returns whether something was removed.
pub fn remove(target: &Path) -> Result<bool, CheckoutError> {
    let (versions, _) = versions_dir(target)?;
    let mut removed = false;
    if std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(target).map_err(|e| err(target, e))?;
        removed = true;
    }
    if let (Some(parent), Some(name)) = (versions.parent(), versions.file_name()) {
        let dir = crate::nofollow::DirHandle::open_trusted(parent).map_err(|e| err(&versions, e.reason()))?;
        removed |= dir.remove(name).map_err(|e| err(e.path(), e.reason()))?;
    }
    Ok(removed)
}

/// Writes `commit`'s tree to `dest` once (tags): `Ok(false)` if `dest` exists.
pub fn create_once(repo: &git2::Repository, commit: &git2::Commit<'_>, dest: &Path) -> Result<bool, CheckoutError> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Ok(false);
    }
    let parent = dest.parent().ok_or_else(|| err(dest, "no parent directory"))?;
    let name = dest.file_name().ok_or_else(|| err(dest, "no file name"))?.to_string_lossy().into_owned();
    let tmp = parent.join(format!(".{name}.dk-tmp-{}", nanos()));
    let tree = commit.tree().map_err(|e| err(dest, e))?;
    if let Err(e) = export_tree(repo, &tree, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        if std::fs::symlink_metadata(dest).is_ok() {
            return Ok(false);
        }
        return Err(err(dest, e));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::dir_name;

    #[test]
    fn names() {
        assert_eq!(dir_name("feature/x").as_deref(), Some("feature__x"));
        assert_eq!(dir_name("v1.0").as_deref(), Some("v1.0"));
        assert_eq!(dir_name(".."), None);
        assert_eq!(dir_name(".hidden"), None);
        assert_eq!(dir_name(""), None);
    }
}
