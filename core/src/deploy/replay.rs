//! The agent's replay cache: request ids seen, kept until their request
//! expires, bounded, and persisted so a restart does not reopen the window:
//! each id is appended and fsynced before its request runs; the file is
//! compacted with [`crate::durable::write_atomic`].

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

/// Why a request id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The id was seen before.
    #[error("request id {0} was already used (replay)")]
    Seen(String),
    /// The cache is full of unexpired ids (fails closed).
    #[error("replay cache full ({0} unexpired request ids); refusing until some expire")]
    Full(usize),
}

/// Seen request ids with their expiry.
#[derive(Debug)]
pub struct ReplayCache {
    max: usize,
    seen: HashMap<String, u64>,
    file: Option<PathBuf>,
    appended: usize,
}

impl ReplayCache {
    /// An in-memory cache of at most `max` ids.
    pub fn new(max: usize) -> ReplayCache {
        ReplayCache { max, seen: HashMap::new(), file: None, appended: 0 }
    }

    /// A cache persisted in `file` (`ID EXPIRES` lines), loading unexpired ids from it.
    pub fn persistent(max: usize, file: PathBuf, now: u64) -> std::io::Result<ReplayCache> {
        let mut c = ReplayCache::new(max);
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((id, exp)) = line.split_once(' ') {
                    if let Ok(exp) = exp.parse::<u64>() {
                        if exp >= now {
                            c.seen.insert(id.to_owned(), exp);
                        }
                    }
                }
            }
        }
        c.file = Some(file);
        c.compact()?;
        Ok(c)
    }

    fn compact(&mut self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut body = String::new();
        for (id, exp) in &self.seen {
            body.push_str(&format!("{id} {exp}\n"));
        }
        crate::durable::write_atomic(file, body.as_bytes())?;
        self.appended = 0;
        Ok(())
    }

    /// Records `id` (valid until `expires_at`) unless seen; drops expired ids first.
    pub fn check_and_insert(&mut self, id: &str, expires_at: u64, now: u64) -> Result<(), ReplayError> {
        if self.seen.contains_key(id) {
            return Err(ReplayError::Seen(id.to_owned()));
        }
        if self.seen.len() >= self.max {
            self.seen.retain(|_, exp| *exp >= now);
            if self.seen.len() >= self.max {
                return Err(ReplayError::Full(self.seen.len()));
            }
        }
        self.seen.insert(id.to_owned(), expires_at);
        if let Some(file) = &self.file {
            let line = format!("{id} {expires_at}\n");
            let res = std::fs::OpenOptions::new().create(true).append(true).open(file).and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_data()));
            if let Err(e) = res {
                tracing::warn!(file = %file.display(), error = %e, "replay cache not persisted");
            }
            self.appended += 1;
            if self.appended > self.max {
                self.seen.retain(|_, exp| *exp >= now);
                let _ = self.compact();
            }
        }
        Ok(())
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_refused_expired_forgotten_bounded_and_persisted() {
        let mut c = ReplayCache::new(2);
        c.check_and_insert("a", 100, 10).unwrap();
        assert_eq!(c.check_and_insert("a", 100, 10), Err(ReplayError::Seen("a".into())));
        c.check_and_insert("b", 20, 10).unwrap();
        assert_eq!(c.check_and_insert("c", 100, 10), Err(ReplayError::Full(2)));
        c.check_and_insert("c", 100, 50).unwrap(); // b expired at 20

        let file = std::env::temp_dir().join(format!("dk-replay-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let mut p = ReplayCache::persistent(10, file.clone(), 0).unwrap();
        p.check_and_insert("x", 100, 0).unwrap();
        p.check_and_insert("old", 5, 0).unwrap();
        let mut again = ReplayCache::persistent(10, file.clone(), 10).unwrap();
        assert_eq!(again.check_and_insert("x", 100, 10), Err(ReplayError::Seen("x".into())));
        assert_eq!(again.len(), 1, "expired id dropped on load");
        let _ = std::fs::remove_file(&file);
    }
}
