//! The deploy history: one SQLite row per deploy or rollback, started from
//! this dk-web or recorded by another controller (dk-deploy, another dk-web)
//! on the bus: who, when, site, tag, servers, reason, result, and the full
//! report as JSON. Rows of a process that died mid-deploy are marked
//! `interrupted` on open.
//!
//! The schema is versioned (`PRAGMA user_version`, [`rusqlite_migration`]):
//! a file written by an older dk-web is upgraded in place on open; one
//! written by a newer dk-web is refused, untouched.

use crate::deploy::controller::RolloutReport;
use crate::deploy::record::RolloutRecord;
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, SchemaVersion, M};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A history database failure.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite refused an operation.
    #[error("history database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The schema could not be brought up to date.
    #[error("history database {path}: schema upgrade failed: {source}")]
    Migrate {
        /// The database file.
        path: String,
        /// Why.
        #[source]
        source: rusqlite_migration::Error,
    },
    /// A newer dk-web wrote the file.
    #[error("history database {path} has schema version {found}, newer than this dk-web's {known}: run the dk-web that wrote it, or move the file aside")]
    TooNew {
        /// The database file.
        path: String,
        /// The file's version.
        found: usize,
        /// The newest this build knows.
        known: usize,
    },
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
    /// `running`, `ok`, `failed`, `stopped`, `error`, `interrupted`, or for approvals [`AWAITING`], `rejected`, `cancelled`, `expired`.
    pub result: String,
    /// One line: why it failed or stopped.
    pub detail: Option<String>,
    /// The report (JSON), when finished.
    pub report: Option<String>,
    /// The tool that ran it (`dk-web`, `dk-deploy`, …).
    pub controller: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// The id of its rollout record (set for every row since schema 2).
    pub record_id: Option<String>,
    /// Who approved it (sites with approvers).
    pub approved_by: Option<String>,
    /// Unix seconds, when approved.
    pub approved_at: Option<i64>,
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
    conn: Arc<Mutex<Connection>>,
}

/// The schema, one step per version; never edit a released step, add one.
const MIGRATIONS: &[M<'static>] = &[
    // 1: the first dk-web's table (files made before versioning have user_version 0 and this table).
    M::up(
        "CREATE TABLE IF NOT EXISTS deploys (
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
        CREATE INDEX IF NOT EXISTS deploys_site ON deploys (site, id);",
    ),
    // 2: rollouts recorded by other controllers, and reasons.
    M::up(
        "ALTER TABLE deploys ADD COLUMN controller TEXT NOT NULL DEFAULT 'dk-web';
        ALTER TABLE deploys ADD COLUMN reason TEXT;
        ALTER TABLE deploys ADD COLUMN record_id TEXT;
        CREATE UNIQUE INDEX deploys_record ON deploys (record_id);
        CREATE INDEX deploys_started ON deploys (started_at, id);",
    ),
    // 3: the changes seen on the bus and their journeys (see `changes.rs`).
    M::up(
        "CREATE TABLE changes (
            id TEXT PRIMARY KEY,
            repo TEXT NOT NULL,
            refname TEXT NOT NULL,
            newrev TEXT NOT NULL,
            source TEXT NOT NULL,
            author TEXT,
            subject TEXT,
            pushed_at INTEGER NOT NULL
        );
        CREATE INDEX changes_pushed ON changes (pushed_at);
        CREATE INDEX changes_rev ON changes (repo, newrev);
        CREATE TABLE change_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            change_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            stage TEXT NOT NULL,
            node TEXT,
            ok INTEGER,
            data TEXT NOT NULL
        );
        CREATE INDEX change_events_change ON change_events (change_id, seq);",
    ),
    // 4: the newest build per commit and job, for `require_build` (see `changes.rs`).
    M::up(
        "CREATE TABLE builds (
            commit_id TEXT NOT NULL,
            job TEXT NOT NULL,
            number INTEGER NOT NULL,
            status TEXT NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (commit_id, job)
        );
        CREATE INDEX builds_at ON builds (at);",
    ),
    // 5: deploys that wait for an approval (see `approvals.rs`): the request, and who approved it.
    M::up(
        "ALTER TABLE deploys ADD COLUMN request TEXT;
        ALTER TABLE deploys ADD COLUMN approved_by TEXT;
        ALTER TABLE deploys ADD COLUMN approved_at INTEGER;
        CREATE INDEX deploys_result ON deploys (result);",
    ),
    // 6: the push chain (each push's oldrev and listed commits) and the servers rollout
    // records made a commit live on (see `changes/chain.rs`, `changes/live.rs`).
    M::up(
        "ALTER TABLE changes ADD COLUMN oldrev TEXT;
        CREATE TABLE change_commits (
            change_id TEXT NOT NULL,
            pos INTEGER NOT NULL,
            commit_id TEXT NOT NULL,
            PRIMARY KEY (change_id, pos)
        );
        CREATE INDEX change_commits_commit ON change_commits (commit_id);
        CREATE TABLE live_marks (
            record_id TEXT NOT NULL,
            node TEXT NOT NULL,
            repo TEXT NOT NULL,
            site TEXT NOT NULL,
            commit_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (record_id, node)
        );
        CREATE INDEX live_marks_node ON live_marks (repo, node, at);
        CREATE INDEX live_marks_at ON live_marks (at);",
    ),
];

/// The result of a deploy that waits for its approval.
pub const AWAITING: &str = "awaiting approval";

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl History {
    /// Opens (creating) the database at `path`; `:memory:` keeps it in memory.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let name = path.display().to_string();
        let err = |source| HistoryError::Sqlite { path: name.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if name != ":memory:" {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        if name != ":memory:" {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        let migrations = Migrations::from_slice(MIGRATIONS);
        let migrate = |source| HistoryError::Migrate { path: name.clone(), source };
        if let SchemaVersion::Outside(found) = migrations.current_version(&conn).map_err(migrate)? {
            return Err(HistoryError::TooNew { path: name.clone(), found: found.get(), known: SCHEMA_VERSION });
        }
        migrations.to_latest(&mut conn).map_err(migrate)?;
        let n = conn
            .execute("UPDATE deploys SET result = 'interrupted', detail = 'dk-web stopped during the deploy', finished_at = ?1 WHERE result = 'running'", params![now()])
            .map_err(err)?;
        if n > 0 {
            tracing::warn!(deploys = n, "deploys interrupted by a restart marked as such");
        }
        Ok(History { path: name, conn: Arc::new(Mutex::new(conn)) })
    }

    /// The database connection, for the other stores of the same file ([`super::changes`]).
    pub(crate) fn shared(&self) -> (String, Arc<Mutex<Connection>>) {
        (self.path.clone(), self.conn.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, HistoryError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| HistoryError::Sqlite { path: self.path.clone(), source })
    }

    /// Records a deploy this dk-web starts now, under rollout record id `record_id`; returns its row id.
    pub fn start(&self, start: &Start<'_>) -> Result<i64, HistoryError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO deploys (site, action, tag, user, selection, started_at, result, controller, reason, record_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', 'dk-web', ?7, ?8)",
                params![start.site, start.action, start.tag, start.user, start.selection, now(), start.reason, start.record_id],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records a deploy that waits for an approval (result [`AWAITING`]), with its checked `request` (JSON); returns its row id.
    pub fn request(&self, start: &Start<'_>, request: &str) -> Result<i64, HistoryError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO deploys (site, action, tag, user, selection, started_at, result, controller, reason, record_id, request) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'dk-web', ?8, ?9, ?10)",
                params![start.site, start.action, start.tag, start.user, start.selection, now(), AWAITING, start.reason, start.record_id, request],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Approval of deploy `id` by `by`: the waiting row becomes `running` and its request is returned;
    /// `None` when it is not waiting (approved, rejected or expired already: only one approval ever wins).
    pub fn approve(&self, id: i64, by: &str) -> Result<Option<String>, HistoryError> {
        self.with(|c| {
            let n = c.execute("UPDATE deploys SET result = 'running', approved_by = ?2, approved_at = ?3 WHERE id = ?1 AND result = ?4", params![id, by, now(), AWAITING])?;
            if n == 0 {
                return Ok(None);
            }
            c.query_row("SELECT request FROM deploys WHERE id = ?1", params![id], |r| r.get::<_, Option<String>>(0))
        })
    }

    /// The request kept with waiting deploy `id` (JSON).
    pub fn request_of(&self, id: i64) -> Result<Option<String>, HistoryError> {
        self.with(|c| c.query_row("SELECT request FROM deploys WHERE id = ?1 AND result = ?2", params![id, AWAITING], |r| r.get(0)).optional().map(Option::flatten))
    }

    /// Ends waiting deploy `id` without running it (`rejected`, `cancelled`, `expired`); `false` when it was not waiting.
    pub fn close_request(&self, id: i64, result: &str, detail: &str) -> Result<bool, HistoryError> {
        self.with(|c| {
            c.execute("UPDATE deploys SET result = ?2, detail = ?3, finished_at = ?4, request = NULL WHERE id = ?1 AND result = ?5", params![id, result, detail, now(), AWAITING])
                .map(|n| n > 0)
        })
    }

    /// The deploys waiting for an approval: id, site and when they were asked for.
    pub fn waiting(&self) -> Result<Vec<(i64, String, i64)>, HistoryError> {
        self.with(|c| {
            let mut st = c.prepare_cached("SELECT id, site, started_at FROM deploys WHERE result = ?1 ORDER BY id")?;
            let rows = st.query_map(params![AWAITING], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }

    /// Stores a rollout record from the bus; `false` when one with its id is stored already
    /// (this dk-web's own deploys come back this way).
    pub fn record(&self, r: &RolloutRecord) -> Result<bool, HistoryError> {
        let report = r.report.as_ref().and_then(|r| serde_json::to_string(r).ok());
        let action = match r.action {
            crate::message::DeployAction::Rollback => "rollback",
            _ => "deploy",
        };
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO deploys (site, action, tag, user, selection, started_at, finished_at, result, detail, report, controller, reason, record_id, approved_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![r.site, action, r.tag, r.user, r.selection, r.started_at, r.finished_at, r.result, r.detail, report, r.controller, r.reason, r.id, r.approved_by],
            )
            .map(|n| n > 0)
        })
    }

    /// The row id of the deploy recorded under rollout record `record_id`.
    pub fn row_of(&self, record_id: &str) -> Result<Option<i64>, HistoryError> {
        self.with(|c| c.query_row("SELECT id FROM deploys WHERE record_id = ?1", params![record_id], |r| r.get(0)).optional())
    }

    /// Records how deploy `id` ended.
    pub fn finish(&self, id: i64, result: &str, detail: Option<&str>, report: Option<&RolloutReport>) -> Result<(), HistoryError> {
        let report = report.and_then(|r| serde_json::to_string(r).ok());
        self.with(|c| {
            c.execute("UPDATE deploys SET result = ?2, detail = ?3, report = ?4, finished_at = ?5, request = NULL WHERE id = ?1", params![id, result, detail, report, now()])
                .map(drop)
        })
    }

    /// Deploy `id`.
    pub fn get(&self, id: i64) -> Result<Option<DeployRow>, HistoryError> {
        self.with(|c| c.query_row(&format!("SELECT {COLUMNS} FROM deploys WHERE id = ?1"), params![id], row).optional())
    }

    /// The newest `limit` deploys (of `site`, if given), newest start first, without reports.
    pub fn list(&self, site: Option<&str>, limit: usize) -> Result<Vec<DeployRow>, HistoryError> {
        let cols = COLUMNS.replace(", report", ", NULL");
        self.with(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {cols} FROM deploys WHERE (?1 IS NULL OR site = ?1) ORDER BY started_at DESC, id DESC LIMIT ?2"))?;
            let rows = st.query_map(params![site, limit as i64], row)?;
            rows.collect()
        })
    }
}

const COLUMNS: &str = "id, site, action, tag, user, selection, started_at, finished_at, result, detail, report, controller, reason, record_id, approved_by, approved_at";

/// What [`History::start`] records of a deploy that starts now.
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    /// The site.
    pub site: &'a str,
    /// `deploy` or `rollback`.
    pub action: &'a str,
    /// The tag (deploys).
    pub tag: Option<&'a str>,
    /// Who.
    pub user: &'a str,
    /// The selection, as shown.
    pub selection: &'a str,
    /// Why, when given.
    pub reason: Option<&'a str>,
    /// The id its rollout record will carry.
    pub record_id: &'a str,
}

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
        controller: r.get(11)?,
        reason: r.get(12)?,
        record_id: r.get(13)?,
        approved_by: r.get(14)?,
        approved_at: r.get(15)?,
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
        let a = h.start(&start("www", "ann", "r-a")).unwrap();
        let b = h.start(&start("api", "bob", "r-b")).unwrap();
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

    fn start<'a>(site: &'a str, user: &'a str, record_id: &'a str) -> Start<'a> {
        Start { site, action: "deploy", tag: Some("v1"), user, selection: "all", reason: Some("OPS-1"), record_id }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dk-web-history-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_file_from_before_versioning_upgrades_in_place_and_keeps_its_rows() {
        let path = temp("old.sqlite");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/history-v0.sqlite"), &path).unwrap();
        let h = History::open(&path).unwrap();
        let rows = h.list(None, 10).unwrap();
        assert_eq!(
            rows.iter().map(|r| (r.id, r.site.as_str(), r.result.as_str(), r.controller.as_str())).collect::<Vec<_>>(),
            [(3, "www", "interrupted", "dk-web"), (2, "api", "failed", "dk-web"), (1, "www", "ok", "dk-web")]
        );
        let report = h.get(1).unwrap().unwrap().report().unwrap();
        assert_eq!(report.nodes.iter().map(|n| n.batch).collect::<Vec<_>>(), [0, 1]);
        let c = Connection::open(&path).unwrap();
        let v: usize = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        // New rows go on after the old ones.
        assert_eq!(h.start(&start("www", "cy", "r-new")).unwrap(), 4);
        drop(h);
        History::open(&path).unwrap();
    }

    #[test]
    fn a_file_from_a_newer_dk_web_is_refused_untouched() {
        let path = temp("new.sqlite");
        drop(History::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        let e = History::open(&path).unwrap_err();
        assert!(matches!(e, HistoryError::TooNew { found, known, .. } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION), "{e}");
        assert!(e.to_string().contains("newer than this dk-web"), "{e}");
    }

    #[test]
    fn a_record_is_stored_once_and_sorted_by_start() {
        let h = History::open(Path::new(":memory:")).unwrap();
        let own = h.start(&start("www", "ann", "rec-1")).unwrap();
        let rec = RolloutRecord {
            id: "rec-2".into(),
            controller: "dk-deploy".into(),
            user: "bob".into(),
            reason: None,
            action: crate::message::DeployAction::Rollback,
            site: "www".into(),
            tag: None,
            selection: "web01".into(),
            started_at: 1_000,
            finished_at: 1_010,
            result: "ok".into(),
            detail: None,
            report: None,
            approved_by: None,
        };
        assert!(h.record(&rec).unwrap());
        assert!(!h.record(&rec).unwrap(), "the same record twice is one row");
        assert!(!h.record(&RolloutRecord { id: "rec-1".into(), ..rec.clone() }).unwrap(), "this dk-web's own record is not a second row");
        let rows = h.list(Some("www"), 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].id, rows[1].controller.as_str(), rows[1].action.as_str(), rows[1].started_at), (own, "dk-deploy", "rollback", 1_000));
    }
}
