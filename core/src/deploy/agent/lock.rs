//! A site's lease lock: one deploy or rollback per site at a time.
//!
//! The lock is `RELEASES/.deploykit/lock.json`, naming its owner (request id,
//! user, process id) and an expiry. It doubles as the deploy's journal: the
//! release being made, the one it replaces, and how far it got, so that an
//! agent restarted after a crash can put the site back on a complete release
//! (see `Agent::recover`). A lock whose process is gone, or whose lease has
//! expired, is taken over; read-modify-write is serialised by flock(2) on
//! `lock.guard`.

use std::path::{Path, PathBuf};

pub use crate::message::deploy::{LockInfo, Phase};

/// The request id given to an unreadable lock record.
pub const UNREADABLE_LOCK: &str = "(unreadable lock.json)";

impl LockInfo {
    /// The stand-in record for a lock file that does not parse: stale at once, so recovery runs.
    pub fn unreadable() -> LockInfo {
        LockInfo {
            request_id: UNREADABLE_LOCK.into(),
            user: "(unknown)".into(),
            action: "unknown".into(),
            pid: 0,
            acquired_at: 0,
            expires_at: 0,
            release: None,
            previous: None,
            phase: Phase::Preparing,
            created: false,
            unreadable: true,
        }
    }
}

/// The lock could not be taken or written.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error("site is locked by request {} ({} by {}) until {}", .0.request_id, .0.action, .0.user, crate::git::push::rfc3339(.0.expires_at as i64, 0))]
    Held(Box<LockInfo>),
    /// The lock file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn io(path: &Path, e: impl std::fmt::Display) -> LockError {
    LockError::Io { path: path.to_owned(), message: e.to_string() }
}

/// A held lock; released by [`SiteLock::release`] (or left for recovery if the process dies).
#[derive(Debug)]
pub struct SiteLock {
    dir: PathBuf,
    /// The owner record (and journal).
    pub info: LockInfo,
}

/// Holds flock(2) on `lock.guard` until dropped.
struct Guard {
    _file: std::fs::File,
}

impl Guard {
    fn take(dir: &Path) -> Result<Guard, LockError> {
        use std::os::fd::AsRawFd;
        let path = dir.join("lock.guard");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| io(&path, e))?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&path, std::io::Error::last_os_error()));
        }
        Ok(Guard { _file: f })
    }
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pid != 0 && (unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Reads the current lock record of a state directory, if any. A file that
/// does not parse is not "no lock": it reads as [`LockInfo::unreadable`], so
/// the next owner runs recovery before anything else.
pub fn read(dir: &Path) -> Result<Option<LockInfo>, LockError> {
    let path = dir.join("lock.json");
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(lock = %path.display(), error = %e, "site lock unreadable: treating it as an interrupted deploy");
            LockInfo::unreadable()
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

fn write(dir: &Path, info: &LockInfo) -> Result<(), LockError> {
    let path = dir.join("lock.json");
    let body = serde_json::to_vec_pretty(info).map_err(|e| io(&path, e))?;
    crate::durable::write_atomic(&path, &body).map_err(|e| io(&e.path, e.source))
}

/// Whether a lock record no longer binds: its lease ended or its process is gone
/// (and is not this process, whose live requests are tracked in memory).
pub fn is_stale(info: &LockInfo, now: u64) -> bool {
    info.expires_at <= now || (info.pid != std::process::id() && !alive(info.pid))
}

impl SiteLock {
    /// Takes the lock in state directory `dir`, unless a live owner holds it.
    /// A stale record is returned alongside, for recovery.
    pub fn acquire(dir: &Path, info: LockInfo) -> Result<(SiteLock, Option<LockInfo>), LockError> {
        let _g = Guard::take(dir)?;
        let old = read(dir)?;
        if let Some(o) = &old {
            if !is_stale(o, super::releases::now()) {
                return Err(LockError::Held(Box::new(o.clone())));
            }
        }
        write(dir, &info)?;
        Ok((SiteLock { dir: dir.to_owned(), info }, old))
    }

    /// Records progress (phase, release) in the lock file.
    pub fn update(&mut self, f: impl FnOnce(&mut LockInfo)) -> Result<(), LockError> {
        f(&mut self.info);
        let _g = Guard::take(&self.dir)?;
        write(&self.dir, &self.info)
    }

    /// Releases the lock (only if it is still ours).
    pub fn release(self) -> Result<(), LockError> {
        let _g = Guard::take(&self.dir)?;
        if read(&self.dir)?.is_some_and(|o| o.request_id == self.info.request_id) {
            crate::durable::remove(&self.dir.join("lock.json")).map_err(|e| io(&e.path, e.source))?;
        }
        Ok(())
    }

    /// Removes a stale record (after recovery).
    pub fn clear_stale(dir: &Path, request_id: &str) -> Result<(), LockError> {
        let _g = Guard::take(dir)?;
        if read(dir)?.is_some_and(|o| o.request_id == request_id) {
            crate::durable::remove(&dir.join("lock.json")).map_err(|e| io(&e.path, e.source))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, pid: u32, expires_at: u64) -> LockInfo {
        LockInfo {
            request_id: id.into(),
            user: "ann".into(),
            action: "deploy".into(),
            pid,
            acquired_at: 0,
            expires_at,
            release: None,
            previous: None,
            phase: Phase::Preparing,
            created: false,
            unreadable: false,
        }
    }

    #[test]
    fn held_refused_stale_taken_over() {
        let dir = std::env::temp_dir().join(format!("dk-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let far = super::super::releases::now() + 3600;
        let (l, old) = SiteLock::acquire(&dir, info("a", std::process::id(), far)).unwrap();
        assert!(old.is_none());
        let e = SiteLock::acquire(&dir, info("b", std::process::id(), far)).unwrap_err();
        assert!(e.to_string().contains("locked by request a (deploy by ann)"), "{e}");
        l.release().unwrap();
        // A dead process's lock is taken over and handed back for recovery.
        let (_l, _) = SiteLock::acquire(&dir, info("dead", 0x3fff_fff0, far)).unwrap();
        let (l2, old) = SiteLock::acquire(&dir, info("c", std::process::id(), far)).unwrap();
        assert_eq!(old.unwrap().request_id, "dead");
        l2.release().unwrap();
        // An expired lease is taken over even if its process lives.
        let (_l, _) = SiteLock::acquire(&dir, info("old", std::process::id(), 1)).unwrap();
        let (l, _) = SiteLock::acquire(&dir, info("d", std::process::id(), far)).unwrap();
        l.release().unwrap();
        // A torn lock file is an interrupted deploy, not "no lock".
        std::fs::write(dir.join("lock.json"), br#"{"request_id": "torn", "user": "#).unwrap();
        let (l, old) = SiteLock::acquire(&dir, info("e", std::process::id(), far)).unwrap();
        assert!(old.is_some_and(|o| o.unreadable && o.request_id == UNREADABLE_LOCK));
        l.release().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
