//! The deploy history: one SQLite row per deploy or rollback started from the
//! web (who, when, site, tag, servers, result) with its full report as JSON.
//! Rows of a process that died mid-deploy are marked `interrupted` on open.

use crate::deploy::controller::RolloutReport;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

/// A history database failure.
#[derive(Debug, thiserror::Error)]
#[error("history database {path}: {source}")]
pub struct HistoryError {
    /// The database file.
    pub path: String,
    /// SQLite's error.
    #[source]
    pub source: rusqlite::Error,
}

/// One deploy as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRow {
    /// Its id (also the deploy page's).
    pub id: i64,
    /// The site.
    pub site: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// The tag (deploys).
    pub tag: Option<String>,
    /// Who.
    pub user: String,
    /// The selection, as shown (`all`, or the servers).
    pub selection: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, when finished.
    pub finished_at: Option<i64>,
    /// `running`, `ok`, `failed`, `stopped`, `error` or `interrupted`.
    pub result: String,
    /// One line: why it failed or stopped.
    pub detail: Option<String>,
    /// The report (JSON), when finished.
    pub report: Option<String>,
}

impl DeployRow {
    /// The parsed report.
    pub fn report(&self) -> Option<RolloutReport> {
        self.report.as_deref().and_then(|r| serde_json::from_str(r).ok())
    }
}

/// The history store.
#[derive(Debug)]
pub struct History {
    path: String,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    action TEXT NOT NULL,
    tag TEXT,
    user TEXT NOT NULL,
    selection TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    result TEXT NOT NULL,
    detail TEXT,
    report TEXT
);
CREATE INDEX IF NOT EXISTS deploys_site ON deploys (site, id);
";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl History {
    /// Opens (creating) the database at `path`; `:memory:` keeps it in memory.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let name = path.display().to_string();
        let err = |source| HistoryError { path: name.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if name != ":memory:" {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        if name != ":memory:" {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let n = conn
            .execute("UPDATE deploys SET result = 'interrupted', detail = 'dk-web stopped during the deploy', finished_at = ?1 WHERE result = 'running'", params![now()])
            .map_err(err)?;
        if n > 0 {
            tracing::warn!(deploys = n, "deploys interrupted by a restart marked as such");
        }
        Ok(History { path: name, conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, HistoryError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| HistoryError { path: self.path.clone(), source })
    }

    /// Records a deploy that starts now; returns its id.
    pub fn start(&self, site: &str, action: &str, tag: Option<&str>, user: &str, selection: &str) -> Result<i64, HistoryError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO deploys (site, action, tag, user, selection, started_at, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running')",
                params![site, action, tag, user, selection, now()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records how deploy `id` ended.
    pub fn finish(&self, id: i64, result: &str, detail: Option<&str>, report: Option<&RolloutReport>) -> Result<(), HistoryError> {
        let report = report.and_then(|r| serde_json::to_string(r).ok());
        self.with(|c| c.execute("UPDATE deploys SET result = ?2, detail = ?3, report = ?4, finished_at = ?5 WHERE id = ?1", params![id, result, detail, report, now()]).map(drop))
    }

    /// Deploy `id`.
    pub fn get(&self, id: i64) -> Result<Option<DeployRow>, HistoryError> {
        self.with(|c| c.query_row(&format!("SELECT {COLUMNS} FROM deploys WHERE id = ?1"), params![id], row).optional())
    }

    /// The newest `limit` deploys (of `site`, if given), newest first, without reports.
    pub fn list(&self, site: Option<&str>, limit: usize) -> Result<Vec<DeployRow>, HistoryError> {
        let cols = COLUMNS.replace(", report", ", NULL");
        self.with(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {cols} FROM deploys WHERE (?1 IS NULL OR site = ?1) ORDER BY id DESC LIMIT ?2"))?;
            let rows = st.query_map(params![site, limit as i64], row)?;
            rows.collect()
        })
    }
}

const COLUMNS: &str = "id, site, action, tag, user, selection, started_at, finished_at, result, detail, report";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeployRow> {
    Ok(DeployRow {
        id: r.get(0)?,
        site: r.get(1)?,
        action: r.get(2)?,
        tag: r.get(3)?,
        user: r.get(4)?,
        selection: r.get(5)?,
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        result: r.get(8)?,
        detail: r.get(9)?,
        report: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_marks_interrupted() {
        let dir = std::env::temp_dir().join(format!("dk-web-history-{}-{}", std::process::id(), fastrand::u64(..)));
        let path = dir.join("h.sqlite");
        let h = History::open(&path).unwrap();
        let a = h.start("www", "deploy", Some("v1"), "ann", "all").unwrap();
        let b = h.start("api", "deploy", Some("v2"), "bob", "node-a").unwrap();
        h.finish(a, "ok", None, None).unwrap();
        assert_eq!(h.list(None, 10).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(h.list(Some("www"), 10).unwrap().len(), 1);
        drop(h);
        let h = History::open(&path).unwrap();
        assert_eq!(h.get(a).unwrap().unwrap().result, "ok");
        let rb = h.get(b).unwrap().unwrap();
        assert_eq!(rb.result, "interrupted");
        assert!(rb.finished_at.is_some());
        assert!(h.get(999).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
