//! A site's releases on disk: one directory per deployed tag (`REPO_TAG`, as
//! the original), a small journal of which are good, and the links that make
//! one of them live.
//!
//! ```text
//! RELEASES/www_v1.4.2/              a release tree
//! RELEASES/.tmp-www_v1.4.3-PID/     a checkout in progress (never the final name)
//! RELEASES/.deploykit/releases.json the journal: dir, tag, commit, state, who, when
//! RELEASES/.deploykit/lock.json     the site's lease lock (see `lock`)
//! ```
//!
//! Links are swapped one at a time in config order, each by a symlink to a
//! temporary name and rename(2) over the link, so a reader sees the old tree
//! or the new one, never a missing path.

use super::config::{Link, SiteConfig};
use crate::nofollow::{is_component, DirHandle};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// A release's state in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseState {
    /// Being made.
    Building,
    /// Every step succeeded.
    Good,
    /// Live, but post-deploy failed or never finished.
    Unverified,
    /// A step failed.
    Failed,
    /// Was live, and was rolled back from: no longer a rollback target.
    RolledBack,
}

/// One release in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Directory name under the releases dir.
    pub dir: String,
    /// The tag or branch.
    pub tag: String,
    /// The commit.
    pub commit: String,
    /// Its state.
    pub state: ReleaseState,
    /// Unix seconds when it was made.
    pub at: u64,
    /// The request that made it.
    pub request_id: String,
    /// Who asked.
    pub user: String,
}

/// A journal or link failure.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReleaseError {
    /// The path concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> ReleaseError {
    ReleaseError { path: path.to_owned(), message: e.to_string() }
}

fn nf(e: crate::nofollow::NoFollowError) -> ReleaseError {
    ReleaseError { path: e.path().to_owned(), message: e.reason() }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The release directory name for `tag` of `repo`: `REPO_TAG`, `/` written `__`.
pub fn dir_name(repo: &str, tag: &str) -> Option<String> {
    crate::git::checkout::dir_name(&format!("{repo}_{tag}"))
}

/// The journal of one site.
#[derive(Debug, Clone)]
pub struct Journal {
    root: PathBuf,
    /// The releases, oldest first.
    pub releases: Vec<Release>,
}

impl Journal {
    /// The state directory of a releases dir.
    pub fn state_dir(releases: &Path) -> PathBuf {
        releases.join(".deploykit")
    }

    /// Opens (creating the directories) and reads the journal. Entries whose
    /// `dir` is not one plain path component are dropped (never removed from disk).
    /// A journal that does not parse (torn by a crash, edited by hand) is moved
    /// aside to `releases.json.corrupt-SECONDS` and an empty one started: the
    /// site stays deployable, the live release stays live, older releases are
    /// no longer rollback targets until deployed again.
    pub fn open(releases: &Path) -> Result<Journal, ReleaseError> {
        let state = Journal::state_dir(releases);
        std::fs::create_dir_all(&state).map_err(|e| err(&state, e))?;
        let file = state.join("releases.json");
        let list: Vec<Release> = match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(list) => list,
                Err(e) => {
                    let aside = state.join(format!("releases.json.corrupt-{}", now()));
                    match std::fs::rename(&file, &aside) {
                        // Another request moved it aside first.
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(&aside, e)),
                        _ => {}
                    }
                    tracing::error!(journal = %file.display(), moved_to = %aside.display(), error = %e, "release journal unreadable: moved aside, starting a new one");
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(&file, e)),
        };
        let (list, bad): (Vec<Release>, Vec<Release>) = list.into_iter().partition(|r| is_component(&r.dir));
        for r in &bad {
            tracing::error!(journal = %file.display(), dir = ?r.dir, "journal entry ignored: its dir is not a single path component");
        }
        Ok(Journal { root: releases.to_owned(), releases: list })
    }

    /// The journal's releases, read only (nothing created, moved or logged): empty when
    /// the journal is missing or does not parse. For announcements and replies.
    pub fn peek(releases: &Path) -> Vec<Release> {
        let file = Journal::state_dir(releases).join("releases.json");
        let list: Vec<Release> = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        list.into_iter().filter(|r| is_component(&r.dir)).collect()
    }

    /// Writes the journal durably ([`crate::durable::write_atomic`]).
    pub fn save(&self) -> Result<(), ReleaseError> {
        let file = Journal::state_dir(&self.root).join("releases.json");
        let body = serde_json::to_vec_pretty(&self.releases).map_err(|e| err(&file, e))?;
        crate::durable::write_atomic(&file, &body).map_err(|e| err(&file, e.source))
    }

    /// The journal entry for `dir`.
    pub fn get(&self, dir: &str) -> Option<&Release> {
        self.releases.iter().rev().find(|r| r.dir == dir)
    }

    /// Records (or replaces) a release and saves.
    pub fn put(&mut self, release: Release) -> Result<(), ReleaseError> {
        self.releases.retain(|r| r.dir != release.dir);
        self.releases.push(release);
        self.save()
    }

    /// Sets a release's state and saves.
    pub fn set_state(&mut self, dir: &str, state: ReleaseState) -> Result<(), ReleaseError> {
        if let Some(r) = self.releases.iter_mut().find(|r| r.dir == dir) {
            r.state = state;
        }
        self.save()
    }

    /// Drops a release from the journal and saves.
    pub fn forget(&mut self, dir: &str) -> Result<(), ReleaseError> {
        self.releases.retain(|r| r.dir != dir);
        self.save()
    }

    /// The newest good release other than `except`, whose directory exists.
    pub fn previous_good(&self, except: Option<&str>) -> Option<&Release> {
        self.releases.iter().rev().find(|r| r.state == ReleaseState::Good && Some(r.dir.as_str()) != except && self.root.join(&r.dir).is_dir())
    }

    /// Removes releases beyond the newest `keep` good ones, never the live one
    /// nor the previous good one; also stray failed or building leftovers.
    /// Returns the directories removed.
    pub fn cleanup(&mut self, keep: usize, live: Option<&str>) -> Result<Vec<String>, ReleaseError> {
        let previous = self.previous_good(live).map(|r| r.dir.clone());
        let mut good_seen = 0;
        let mut remove = Vec::new();
        for r in self.releases.iter().rev() {
            let protected = Some(r.dir.as_str()) == live || Some(&r.dir) == previous.as_ref();
            let counts = matches!(r.state, ReleaseState::Good | ReleaseState::RolledBack);
            if counts {
                good_seen += 1;
            }
            if protected {
                continue;
            }
            if (counts && good_seen > keep) || matches!(r.state, ReleaseState::Failed | ReleaseState::Building) || r.state == ReleaseState::Unverified {
                remove.push(r.dir.clone());
            }
        }
        for dir in &remove {
            remove_release(&self.root, dir)?;
        }
        self.releases.retain(|r| !remove.contains(&r.dir));
        self.save()?;
        Ok(remove)
    }
}

/// Where `link` should point for release `dir`.
pub fn link_destination(site: &SiteConfig, link: &Link, dir: &str) -> PathBuf {
    let base = site.releases.join(dir);
    match &link.path {
        Some(p) if p != Path::new(".") && !p.as_os_str().is_empty() => base.join(p),
        _ => base,
    }
}

/// The release a link points at now (its directory name under the releases dir).
pub fn release_of(site: &SiteConfig, link: &Path) -> Option<String> {
    let to = std::fs::read_link(link).ok()?;
    let to = if to.is_absolute() { to } else { link.parent()?.join(to) };
    let rest = to.strip_prefix(&site.releases).ok()?;
    match rest.components().next()? {
        Component::Normal(n) => n.to_str().filter(|n| is_component(n)).map(str::to_owned),
        _ => None,
    }
}

/// The live release: what the first link points at.
pub fn live(site: &SiteConfig) -> Option<String> {
    release_of(site, &site.links.first()?.target)
}

/// The commit of release `dir` in the site's journal (read only).
pub fn commit_of(site: &SiteConfig, dir: &str) -> Option<String> {
    Journal::peek(&site.releases).into_iter().rev().find(|r| r.dir == dir).map(|r| r.commit)
}

/// The commit of the live release, from the journal (read only).
pub fn live_commit(site: &SiteConfig) -> Option<String> {
    commit_of(site, &live(site)?)
}

/// Points `link` at `to` atomically: a fresh symlink under a temp name, renamed over it.
pub fn point(link: &Path, to: &Path) -> Result<(), ReleaseError> {
    let parent = link.parent().ok_or_else(|| err(link, "no parent directory"))?;
    std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
    if let Ok(md) = std::fs::symlink_metadata(link) {
        if !md.file_type().is_symlink() {
            return Err(err(link, "exists and is not a symlink; move it away so deploykit can manage it"));
        }
    }
    let name = link.file_name().ok_or_else(|| err(link, "no file name"))?.to_string_lossy().into_owned();
    let tmp = parent.join(format!(".{name}.dk-link-{}-{}", std::process::id(), now_nanos()));
    std::os::unix::fs::symlink(to, &tmp).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(link, e)
    })?;
    crate::durable::sync_dir(parent).map_err(|e| err(parent, e.source))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Checks every link can be managed (absent or a symlink), before anything runs.
pub fn preflight(site: &SiteConfig) -> Result<(), ReleaseError> {
    for l in &site.links {
        if let Ok(md) = std::fs::symlink_metadata(&l.target) {
            if !md.file_type().is_symlink() {
                return Err(err(&l.target, "exists and is not a symlink; move it away so deploykit can manage it"));
            }
        }
    }
    Ok(())
}

/// Re-points every link at release `dir`, in config order, then absolute user links.
pub fn swap(site: &SiteConfig, dir: &str) -> Result<(), ReleaseError> {
    for l in &site.links {
        point(&l.target, &link_destination(site, l, dir))?;
    }
    for u in site.user_links.iter().filter(|u| u.target.is_absolute()) {
        if std::fs::read_link(&u.target).ok().as_deref() != Some(u.source.as_path()) {
            point(&u.target, &u.source)?;
        }
    }
    Ok(())
}

/// Removes release directory `dir` (one plain component, else refused) without
/// following any symlink in it. Returns whether it existed.
pub fn remove_release(releases: &Path, dir: &str) -> Result<bool, ReleaseError> {
    if !is_component(dir) {
        return Err(err(&releases.join(dir), "refusing to remove: not a single path component"));
    }
    crate::nofollow::remove_entry(releases, dir).map_err(nf)
}

/// Creates the relative user links inside a new release (replacing what the tree has there).
/// Every directory on the way is opened without following symlinks: a symlink
/// from the repository (`public -> /elsewhere`) on the path is refused.
pub fn add_user_links(site: &SiteConfig, release: &Path) -> Result<(), ReleaseError> {
    let root = DirHandle::open_trusted(release).map_err(nf)?;
    for u in site.user_links.iter().filter(|u| u.target.is_relative()) {
        let at = release.join(&u.target);
        let name = u.target.file_name().ok_or_else(|| err(&at, "user link target has no file name"))?;
        let parent = u.target.parent().unwrap_or(Path::new(""));
        let dir = root.open_beneath(parent, true).map_err(nf)?;
        dir.remove(name).map_err(nf)?;
        dir.symlink(&u.source, name).map_err(nf)?;
    }
    Ok(())
}

/// Checks release `dir` before its links are made live: no link's `path` and
/// no relative user link's parent inside it goes through a symlink.
pub fn verify(site: &SiteConfig, dir: &str) -> Result<(), ReleaseError> {
    let path = site.releases.join(dir);
    if !is_component(dir) {
        return Err(err(&path, "not a single path component"));
    }
    let root = DirHandle::open_trusted(&site.releases).map_err(nf)?.child(OsStr::new(dir)).map_err(nf)?;
    for l in &site.links {
        if let Some(p) = &l.path {
            root.check_beneath(p).map_err(nf)?;
        }
    }
    for u in site.user_links.iter().filter(|u| u.target.is_relative()) {
        root.check_beneath(u.target.parent().unwrap_or(Path::new(""))).map_err(nf)?;
    }
    Ok(())
}
