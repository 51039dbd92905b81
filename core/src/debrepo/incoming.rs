//! Deciding which files of an incoming directory are complete `.deb`s.
//!
//! A file is taken when all of these hold:
//! - its name ends in `.deb`, does not start with `.` (rsync's and many
//!   uploaders' temporary names are `.NAME.XXXXXX`), and it is a regular file
//!   directly in the directory (symlinks and subdirectories are ignored);
//! - with inotify: its writer closed it (`IN_CLOSE_WRITE`) or it was moved in
//!   (`IN_MOVED_TO`) since it was last modified — a file still open for
//!   writing is never taken. Files already there when watching began (or after
//!   an inotify queue overflow) count as closed;
//! - its size and modification time have not changed for `settle`;
//! - no process this daemon can see (`/proc/PID/fd`, all of them when it runs
//!   as root) holds it open for writing — which also covers polling mode,
//!   where close events are not seen.
//!
//! A file that failed for a reason outside the package (reprepro missing,
//! timed out) is retried after a delay; one that could not be moved away is
//! left alone until it changes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Whether `name` looks like a `.deb` to take (not hidden, not a temporary name).
pub fn is_candidate_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    name.len() > 4 && name.ends_with(".deb") && !name.starts_with('.') && !name.chars().any(char::is_control)
}

#[derive(Debug, Clone)]
struct FileState {
    size: u64,
    mtime: SystemTime,
    /// Since when size and mtime are unchanged.
    stable_since: Instant,
    /// A close-after-write (or move-in) was seen since the last modification.
    closed: bool,
    /// Not before this instant (retry delay).
    not_before: Option<Instant>,
    /// Left alone until it changes.
    given_up: bool,
}

/// The completeness state of one incoming directory.
#[derive(Debug)]
pub struct Tracker {
    dir: PathBuf,
    settle: Duration,
    require_close: bool,
    check_writers: bool,
    files: HashMap<PathBuf, FileState>,
    scanned: bool,
}

impl Tracker {
    /// A tracker for `dir`; `require_close` when close events are delivered (inotify).
    pub fn new(dir: impl Into<PathBuf>, settle: Duration, require_close: bool) -> Tracker {
        Tracker { dir: dir.into(), settle, require_close, check_writers: true, files: HashMap::new(), scanned: false }
    }

    /// Whether `/proc` is searched for writers (default on; tests turn it off to see the close rule alone).
    pub fn check_writers(mut self, on: bool) -> Tracker {
        self.check_writers = on;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A write to `path` finished (close after write, or moved in).
    pub fn note_closed(&mut self, path: &Path) {
        if let Some(s) = self.files.get_mut(path) {
            s.closed = true;
        } else if let Some((size, mtime)) = stat(path) {
            self.files.insert(path.to_owned(), FileState { size, mtime, stable_since: Instant::now(), closed: true, not_before: None, given_up: false });
        }
    }

    /// `path` was created or written to: it is open until a close is seen.
    pub fn note_modified(&mut self, path: &Path) {
        let now = Instant::now();
        match self.files.get_mut(path) {
            Some(s) => {
                s.closed = false;
                s.stable_since = now;
            }
            None => {
                if let Some((size, mtime)) = stat(path) {
                    self.files.insert(path.to_owned(), FileState { size, mtime, stable_since: now, closed: false, not_before: None, given_up: false });
                }
            }
        }
    }

    /// Events were lost (inotify overflow): every present file counts as closed.
    pub fn rescan(&mut self) {
        for s in self.files.values_mut() {
            s.closed = true;
        }
        self.scanned = false;
    }

    /// Lists the directory, updates what is known and returns the complete
    /// files, oldest first (by modification time, then name).
    pub fn scan(&mut self, now: Instant) -> io::Result<Vec<PathBuf>> {
        let initial = !self.scanned;
        self.scanned = true;
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !is_candidate_name(&entry.file_name()) {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_file() {
                continue;
            }
            let path = entry.path();
            let Some((size, mtime)) = stat(&path) else { continue };
            present.push(path.clone());
            match self.files.get_mut(&path) {
                Some(s) if s.size == size && s.mtime == mtime => {}
                Some(s) => {
                    s.size = size;
                    s.mtime = mtime;
                    s.stable_since = now;
                    s.given_up = false;
                }
                None => {
                    let closed = initial || !self.require_close;
                    self.files.insert(path, FileState { size, mtime, stable_since: now, closed, not_before: None, given_up: false });
                }
            }
        }
        self.files.retain(|p, _| present.contains(p));
        let mut ready: Vec<(SystemTime, PathBuf)> = self.files.iter().filter(|(_, s)| self.is_ready(s, now)).map(|(p, s)| (s.mtime, p.clone())).collect();
        ready.sort();
        let mut out = Vec::new();
        for (_, p) in ready {
            if self.check_writers && open_for_writing(&p) {
                tracing::debug!(file = %p.display(), "still open for writing; not taken yet");
                if let Some(s) = self.files.get_mut(&p) {
                    s.stable_since = now;
                }
                continue;
            }
            out.push(p);
        }
        Ok(out)
    }

    fn is_ready(&self, s: &FileState, now: Instant) -> bool {
        !s.given_up && (s.closed || !self.require_close) && now.duration_since(s.stable_since) >= self.settle && s.not_before.is_none_or(|t| t <= now)
    }

    /// When a known file may next become ready (for scheduling a scan).
    pub fn next_check(&self) -> Option<Instant> {
        self.files
            .values()
            .filter(|s| !s.given_up && (s.closed || !self.require_close))
            .map(|s| {
                let settled = s.stable_since + self.settle;
                s.not_before.map_or(settled, |t| t.max(settled))
            })
            .min()
    }

    /// Retry `path` no earlier than `at` (a failure outside the package).
    pub fn retry_at(&mut self, path: &Path, at: Instant) {
        if let Some(s) = self.files.get_mut(path) {
            s.not_before = Some(at);
        }
    }

    /// Leave `path` alone until it changes (it could not be moved away).
    pub fn give_up(&mut self, path: &Path) {
        if let Some(s) = self.files.get_mut(path) {
            s.given_up = true;
        }
    }

    /// Forget `path` (it was moved away).
    pub fn forget(&mut self, path: &Path) {
        self.files.remove(path);
    }
}

fn stat(path: &Path) -> Option<(u64, SystemTime)> {
    let md = std::fs::symlink_metadata(path).ok()?;
    md.is_file().then(|| (md.len(), md.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

/// Whether a process visible in `/proc` holds `path` open for writing.
pub fn open_for_writing(path: &Path) -> bool {
    let Ok(target) = std::fs::canonicalize(path) else { return false };
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_str().is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).ok().as_deref() != Some(target.as_path()) {
                continue;
            }
            let info = std::fs::read_to_string(p.path().join("fdinfo").join(fd.file_name())).unwrap_or_default();
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
            // O_ACCMODE: 1 = O_WRONLY, 2 = O_RDWR. Unknown flags: assume a writer.
            if flags.is_none_or(|f| f & 3 != 0) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names() {
        for ok in ["a_1_all.deb", "x.deb"] {
            assert!(is_candidate_name(OsStr::new(ok)), "{ok}");
        }
        for no in [".a.deb.Xy12", ".a.deb", "a.deb.part", "a.deb~", ".deb", "a.udeb.tmp", "a\n.deb"] {
            assert!(!is_candidate_name(OsStr::new(no)), "{no}");
        }
    }

    #[test]
    fn writers_are_seen_in_proc() {
        let dir = std::env::temp_dir().join(format!("dk-incoming-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w.deb");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(b"half").unwrap();
        assert!(open_for_writing(&p));
        drop(f);
        assert!(!open_for_writing(&p));
        let _r = std::fs::File::open(&p).unwrap();
        assert!(!open_for_writing(&p), "a reader is not a writer");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn with_inotify_only_closed_and_settled_files_are_taken() {
        let dir = std::env::temp_dir().join(format!("dk-incoming-unit-close-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("old.deb"), b"there before").unwrap();
        let mut t = Tracker::new(&dir, Duration::from_millis(100), true).check_writers(false);
        let t0 = Instant::now();
        assert!(t.scan(t0).unwrap().is_empty(), "not settled yet");
        let p = dir.join("new.deb");
        std::fs::write(&p, b"being written").unwrap();
        t.note_modified(&p);
        let later = t0 + Duration::from_millis(500);
        assert_eq!(t.scan(later).unwrap(), vec![dir.join("old.deb")], "the new file was never closed");
        t.note_closed(&p);
        t.forget(&dir.join("old.deb"));
        std::fs::remove_file(dir.join("old.deb")).unwrap();
        // note_closed keeps stable_since from the last modification (t0), so it is ready now.
        assert_eq!(t.scan(later).unwrap(), vec![p.clone()]);
        t.retry_at(&p, later + Duration::from_secs(5));
        assert!(t.scan(later).unwrap().is_empty());
        assert_eq!(t.next_check(), Some(later + Duration::from_secs(5)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
