//! The site's git clone: validating and resolving tags and branches, listing
//! them newest first, and the commit log between two releases (libgit2; no shell).

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A tag or branch problem.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The name is not a valid git tag or branch name (or could be read as an option).
    #[error("{0:?} is not a valid tag or branch name")]
    BadName(String),
    /// No such tag or branch in the site's clone.
    #[error("no tag or branch {0:?} in the site's repository")]
    NotFound(String),
    /// libgit2 failed.
    #[error("{path}: {message}")]
    Git {
        /// The clone.
        path: String,
        /// libgit2's message.
        message: String,
    },
}

fn git_err(path: &Path, e: git2::Error) -> RepoError {
    RepoError::Git { path: path.display().to_string(), message: e.message().to_owned() }
}

/// Checks `name` is usable as a tag or branch: git's ref-name rules, at most 200
/// bytes, no leading `-`, no control characters, no `..` components.
pub fn validate_name(name: &str) -> Result<(), RepoError> {
    crate::git::refs::validate_tag_name(name).map_err(|_| RepoError::BadName(name.chars().take(200).collect()))
}

/// A resolved tag or branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The name asked for.
    pub name: String,
    /// The full ref it came from.
    pub refname: String,
    /// The commit id.
    pub commit: git2::Oid,
}

/// Resolves `name` as a tag, else a branch (local, then `origin/`), to a commit.
pub fn resolve(repo: &git2::Repository, name: &str) -> Result<Resolved, RepoError> {
    validate_name(name)?;
    for refname in [format!("refs/tags/{name}"), format!("refs/heads/{name}"), format!("refs/remotes/origin/{name}")] {
        if let Ok(r) = repo.find_reference(&refname) {
            let commit = r.peel_to_commit().map_err(|e| git_err(repo.path(), e))?;
            return Ok(Resolved { name: name.to_owned(), refname, commit: commit.id() });
        }
    }
    Err(RepoError::NotFound(name.to_owned()))
}

pub use crate::message::deploy::{RefInfo, TagList};

/// Lists tags and branches newest first, at most `limit` of each.
pub fn list(path: &Path, limit: usize) -> Result<TagList, RepoError> {
    let repo = git2::Repository::open(path).map_err(|e| git_err(path, e))?;
    let mut tags = Vec::new();
    let mut branches = Vec::new();
    let refs = repo.references().map_err(|e| git_err(path, e))?;
    for r in refs.flatten() {
        let Ok(full) = r.name() else { continue };
        let (short, is_tag) = if let Some(s) = full.strip_prefix("refs/tags/") {
            (s, true)
        } else if let Some(s) = full.strip_prefix("refs/heads/") {
            (s, false)
        } else if let Some(s) = full.strip_prefix("refs/remotes/origin/") {
            if s == "HEAD" {
                continue;
            }
            (s, false)
        } else {
            continue;
        };
        let Ok(commit) = r.peel_to_commit() else {
            continue;
        };
        let date = if is_tag { r.peel_to_tag().ok().and_then(|t| t.tagger().map(|s| s.when().seconds())).unwrap_or(commit.time().seconds()) } else { commit.time().seconds() };
        let info = RefInfo { name: short.to_owned(), commit: commit.id().to_string(), date };
        if is_tag {
            tags.push(info)
        } else if !branches.iter().any(|b: &RefInfo| b.name == info.name) {
            branches.push(info)
        }
    }
    let newest = |a: &RefInfo, b: &RefInfo| b.date.cmp(&a.date).then_with(|| b.name.cmp(&a.name));
    tags.sort_by(newest);
    branches.sort_by(newest);
    let (tag_count, branch_count) = (tags.len(), branches.len());
    tags.truncate(limit);
    branches.truncate(limit);
    Ok(TagList { tags, branches, tag_count, branch_count })
}

/// One commit in a dry run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Commit id.
    pub commit: String,
    /// First line of the message.
    pub subject: String,
    /// Author name.
    pub author: String,
    /// Unix seconds.
    pub date: i64,
}

/// Commits reachable from `to` and not from `from` (newest first, at most `max`).
pub fn log_between(path: &Path, from: Option<&str>, to: git2::Oid, max: usize) -> Result<Vec<LogEntry>, RepoError> {
    let repo = git2::Repository::open(path).map_err(|e| git_err(path, e))?;
    let mut walk = repo.revwalk().map_err(|e| git_err(path, e))?;
    walk.push(to).map_err(|e| git_err(path, e))?;
    if let Some(from) = from.and_then(|f| git2::Oid::from_str(f).ok()) {
        if repo.find_commit(from).is_ok() {
            walk.hide(from).map_err(|e| git_err(path, e))?;
        }
    }
    let mut out = Vec::new();
    for oid in walk.flatten().take(max) {
        if let Ok(c) = repo.find_commit(oid) {
            out.push(LogEntry {
                commit: oid.to_string(),
                subject: c.summary().ok().flatten().unwrap_or_default().to_owned(),
                author: c.author().name().unwrap_or_default().to_owned(),
                date: c.time().seconds(),
            });
        }
    }
    Ok(out)
}

/// What deploying `tag` removes from a server whose live release is at `live`:
/// the commits reachable from `live` and not from `tag` (newest first, at most
/// `max`). Empty when `tag` is `live` or descends from it; `Ok(None)` when
/// `live` is not a commit id of the clone (nothing can be said).
pub fn removed_by(path: &Path, tag: git2::Oid, live: &str, max: usize) -> Result<Option<Vec<LogEntry>>, RepoError> {
    let Ok(live) = git2::Oid::from_str(live) else { return Ok(None) };
    let repo = git2::Repository::open(path).map_err(|e| git_err(path, e))?;
    if repo.find_commit(live).is_err() {
        return Ok(None);
    }
    log_between(path, Some(&tag.to_string()), live, max).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["--upload-pack=touch /tmp/pwned", "../../etc", "-x", "a b", "a..b", "", "x\n", "refs/../x", "a/.b", "a.lock"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["v1.2.3", "release/2024-01", "feature_x"] {
            validate_name(good).unwrap();
        }
    }
}
