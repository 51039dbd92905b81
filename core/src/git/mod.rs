//! Reading git repositories with libgit2 (git2): what a push brought, the
//! `deploykit.*` settings of a repository, and the repository's name.
//!
//! - [`push`]: the commits of one pushed ref, newest first, for commit messages.
//! - [`refs`]: validation of ref names and revisions received in messages.
//! - `checkout` (feature `daemons`): tree export and atomic checkouts into targets (dk-fetch's modes, dk-agent's releases).
//!
//! Nothing here runs `git`: every read goes through libgit2, and every ref name
//! and object id coming from outside is validated before it is used.

#[cfg(feature = "daemons")]
pub mod checkout;
pub mod push;
pub mod refs;
pub mod timeouts;

pub use push::{read_push, rfc3339};

use std::path::{Path, PathBuf};

/// Why a repository could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The ref name is not a valid git ref name (`git check-ref-format` rules).
    #[error("invalid ref name {0:?}")]
    InvalidRefName(String),
    /// An object id is not a full hexadecimal SHA-1 or SHA-256.
    #[error("invalid revision {0:?}: expected a full hexadecimal object id")]
    InvalidRev(String),
    /// The repository could not be opened.
    #[error("cannot open git repository {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// libgit2's error.
        source: git2::Error,
    },
    /// A pushed object is missing or is not a commit (nor a tag of one).
    #[error("cannot read {what} {rev}: {source}")]
    Object {
        /// What the object is (`new revision`, `old revision`, …).
        what: &'static str,
        /// Its id.
        rev: String,
        /// libgit2's error.
        source: git2::Error,
    },
    /// Walking the history failed.
    #[error("cannot walk the history of {refname}: {source}")]
    Walk {
        /// The ref pushed.
        refname: String,
        /// libgit2's error.
        source: git2::Error,
    },
    /// Only `deploykit.*` keys are read through [`git_config`].
    #[error("invalid config key {0:?}: only deploykit.* keys are read")]
    InvalidConfigKey(String),
    /// The configuration could not be read.
    #[error("cannot read git config {key}: {source}")]
    Config {
        /// The key asked for.
        key: String,
        /// libgit2's error.
        source: git2::Error,
    },
}

/// Opens a repository (bare or not) at exactly `path`, without searching parents.
pub(crate) fn open(path: &Path) -> Result<git2::Repository, GitError> {
    git2::Repository::open_ext(path, git2::RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&std::ffi::OsStr>())
        .map_err(|source| GitError::Open { path: path.to_owned(), source })
}

/// The value of a `deploykit.*` key in the repository's configuration (with the
/// user's and the system's, as git reads them); `None` when unset.
pub fn git_config(repo: &Path, key: &str) -> Result<Option<String>, GitError> {
    let valid = key.strip_prefix("deploykit.").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !valid {
        return Err(GitError::InvalidConfigKey(key.to_owned()));
    }
    let repo = open(repo)?;
    let config = repo.config().and_then(|mut c| c.snapshot()).map_err(|source| GitError::Config { key: key.to_owned(), source })?;
    match config.get_string(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(source) => Err(GitError::Config { key: key.to_owned(), source }),
    }
}

/// The name a repository is published under: its directory name without `.git`
/// (`/srv/git/site.git` → `site`; a work tree's `/src/site/.git` → `site`).
pub fn repo_name(path: &Path) -> String {
    let mut comps = path.components().rev().filter_map(|c| match c {
        std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
        _ => None,
    });
    let last = comps.next().unwrap_or_default();
    let name = if last == ".git" { comps.next().unwrap_or_default() } else { last };
    name.strip_suffix(".git").filter(|n| !n.is_empty()).map(str::to_owned).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        assert_eq!(repo_name(Path::new("/srv/git/site.git")), "site");
        assert_eq!(repo_name(Path::new("/srv/git/site.git/")), "site");
        assert_eq!(repo_name(Path::new("/src/site/.git")), "site");
        assert_eq!(repo_name(Path::new("plain")), "plain");
        assert_eq!(repo_name(Path::new("/x/.git.git")), ".git");
    }

    #[test]
    fn config_keys_are_restricted() {
        for bad in ["user.name", "deploykit.", "deploykit.a b", "core.hooksPath"] {
            assert!(matches!(git_config(Path::new("/nonexistent"), bad), Err(GitError::InvalidConfigKey(_))), "{bad}");
        }
        assert!(matches!(git_config(Path::new("/nonexistent/repo"), "deploykit.brokerUrl"), Err(GitError::Open { .. })));
    }
}
