//! Durable state files: [`write_atomic`] writes a temp file beside the target,
//! fsyncs it, renames it over the target and fsyncs the directory, so a crash
//! leaves either the old content or the new, never a torn file, and a rename
//! that returned is not lost by a power cut. Every state writer uses it (the
//! agent's lock and release journal, the replay cache, the spool, dk-fetch's
//! environment records).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A durable write failed; nothing was renamed over the target.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct DurableError {
    /// The file being written (or its directory).
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

impl From<DurableError> for std::io::Error {
    fn from(e: DurableError) -> std::io::Error {
        std::io::Error::new(e.source.kind(), e.to_string())
    }
}

/// Writes `bytes` to `path` durably (mode 0600): temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with the new file's permission bits.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DurableError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let fail = |p: &Path| {
        let p = p.to_owned();
        move |source| DurableError { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| DurableError { path: path.to_owned(), source: std::io::Error::other("no file name") })?;
    let tmp = dir.join(format!(".{}.dk-tmp-{}-{}", name.to_string_lossy(), std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(fail(&tmp))?;
        f.write_all(bytes).map_err(fail(&tmp))?;
        f.sync_all().map_err(fail(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(fail(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory, so renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| DurableError { path: dir.to_owned(), source })
}

/// Removes a file and fsyncs its directory; a missing file is not an error.
pub fn remove(path: &Path) -> Result<(), DurableError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(DurableError { path: path.to_owned(), source }),
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => sync_dir(d),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("dk-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("state.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two, longer").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two, longer");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        assert!(write_atomic(&dir.join("missing/x"), b"x").is_err());
        remove(&f).unwrap();
        remove(&f).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
