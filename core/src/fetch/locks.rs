//! Stale git lock files left by a killed git (`index.lock`, `shallow.lock`, …).
//!
//! A lock is removed only when it is older than the configured bound (mtime)
//! and no live process holds it open: every `/proc/PID/fd/*` link is compared
//! with the lock's path (git keeps a lock file open from creation to commit).
//! Processes of other users whose `/proc/PID/fd` we cannot read are not seen,
//! so then age alone decides; run as root, or as the repository's user, to
//! see them. A young lock is never touched and is reported as a warning.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Lock files (relative to the git dir) that block fetches or checkouts.
pub const LOCKS: [&str; 5] = ["index.lock", "shallow.lock", "packed-refs.lock", "HEAD.lock", "config.lock"];

/// Whether any process has `path` open (per `/proc/*/fd`).
pub fn held_open(path: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    for p in procs.flatten() {
        if !p.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l == want) {
                return true;
            }
        }
    }
    false
}

/// What [`heal`] did and saw.
#[derive(Debug, Default)]
pub struct Healing {
    /// Locks removed (`removed stale index.lock (age 3600s)`).
    pub removed: Vec<String>,
    /// Locks left alone (young or held open).
    pub kept: Vec<String>,
}

/// Removes stale locks in `git_dir` (see the module doc).
pub fn heal(git_dir: &Path, stale_after: Duration) -> Healing {
    let mut h = Healing::default();
    for name in LOCKS {
        let path: PathBuf = git_dir.join(name);
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let age = md.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or(Duration::ZERO);
        if age < stale_after {
            h.kept.push(format!("{} is recent (age {}s < {}s): left alone, another git may be running", path.display(), age.as_secs(), stale_after.as_secs()));
        } else if held_open(&path) {
            h.kept.push(format!("{} is old (age {}s) but held open by a live process: left alone", path.display(), age.as_secs()));
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => h.removed.push(format!("removed stale {} (age {}s)", path.display(), age.as_secs())),
                Err(e) => h.kept.push(format!("cannot remove stale {}: {e}", path.display())),
            }
        }
    }
    h
}
