//! Changes: every push seen on the bus (git and SVN hooks, dk-webhook, the
//! original's text bodies) and its journey — the builds of its commit, the
//! fetch on each server, the event lines that name it — kept in dk-web's
//! database (bounded by count and age) and pushed live to journey pages.
//!
//! A push is keyed by its correlation id (`Commit::effective_correlation_id`).
//! A build or fetch result joins it by correlation id, else by the commit it
//! names (`repo` + `newrev`); an event line joins only by correlation id.
//! Everything is bus input: names and texts are checked and cut to size, a
//! change holds at most [`MAX_STEPS`] steps, and nothing here is trusted for
//! anything but display.
//!
//! - [`chain`] — which pushes a commit contains, through the push chain kept here.
//! - [`live`] — `live` and `off` steps from trusted rollout records (what each changed on a server), and the servers a change is live on now.
//! - [`fetched`] — the newest commit each server fetched of a repo, against what is live there.

pub mod chain;
pub mod fetched;
pub mod live;

pub use chain::Reach;
pub use fetched::FetchedLive;
pub use live::{Deployed, FleetView, WentLive};

use crate::message::{decode, one_line, Build, Commit, Dedup, Event, FetchResult, Message, ID_HEADER};
use crate::stomp::{Client, SubscribeOptions};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Most steps one change keeps (a flood of results for one push stops here).
pub const MAX_STEPS: i64 = 5_000;
/// Most servers remembered per repository (for "fetched on N of M").
const MAX_SERVERS: usize = 10_000;
/// Most repositories remembered.
const MAX_REPOS: usize = 1_000;
/// Longest text kept from a message field.
const MAX_FIELD: usize = 500;
/// Pruning runs after this many new changes.
const PRUNE_EVERY: u64 = 64;

/// How many changes are kept, for how long, and when a missing fetch is flagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Most changes kept.
    pub keep: usize,
    /// Changes older than this are dropped.
    pub max_age: Duration,
    /// A change not fetched on every server that carries its repo this long after the push is flagged.
    pub reconcile_after: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds { keep: 1_000, max_age: Duration::from_secs(30 * 86_400), reconcile_after: Duration::from_secs(600) }
    }
}

/// One push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Its correlation id.
    pub id: String,
    /// The repository.
    pub repo: String,
    /// The ref pushed.
    pub refname: String,
    /// The new revision.
    pub newrev: String,
    /// Which hook or forge (`git-hook`, `svn-hook`, `github`, …).
    pub source: String,
    /// The newest commit's author.
    pub author: Option<String>,
    /// The newest commit's subject.
    pub subject: Option<String>,
    /// Unix seconds when dk-web heard of it.
    pub pushed_at: i64,
}

/// One stage of a journey.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The change it belongs to.
    pub change: String,
    /// Order of arrival.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// `pushed`, `build`, `fetch`, `event` or `live`.
    pub stage: String,
    /// The server (fetches, event lines that name a host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Passed or failed, where that applies (`None` for a build that started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// What the stage says (job, status, duration, error, text…).
    pub data: serde_json::Value,
}

/// A journey at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Per job, its newest build: (job, number, status).
    pub builds: Vec<(String, u64, String)>,
    /// Servers whose newest fetch of this change succeeded.
    pub fetched: usize,
    /// Servers known to carry the repository (have ever reported a fetch of it).
    pub servers: usize,
    /// Servers whose newest fetch failed, with the error.
    pub failures: Vec<(String, String)>,
    /// The slowest successful fetch: (server, milliseconds).
    pub slowest: Option<(String, u64)>,
    /// Not fetched everywhere `reconcile_after` after the push.
    pub flagged: bool,
    /// The servers it is live on now, as (site, server), sorted ([`live`]).
    pub live: Vec<(String, String)>,
}

/// What journey pages receive live: the step, its line, and the change's new summary.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    /// The change.
    pub change: Change,
    /// The new step.
    pub step: Step,
    /// The step as one line of text ([`describe`]).
    pub line: String,
    /// The summary after it.
    pub summary: Summary,
    /// The summary as one line ([`Summary::line`]).
    pub summary_line: String,
}

/// One live update as sent: the change's id and the [`Update`] as JSON.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The change's id.
    pub change: String,
    /// The update.
    pub json: String,
}

/// A step as one line of text (the journey page's and the live updates').
pub fn describe(s: &Step) -> String {
    let d = &s.data;
    let text = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    let node = s.node.as_deref().unwrap_or("?");
    match s.stage.as_str() {
        "pushed" => {
            let by = d["author"].as_str().map(|a| format!(" by {a}")).unwrap_or_default();
            let n = d["commits"].as_u64().unwrap_or(0);
            format!("pushed {} ({n} commit{}) via {}{by}", text("refname"), if n == 1 { "" } else { "s" }, text("source"))
        }
        "build" => {
            let took = d["duration_ms"].as_u64().map(|ms| format!(" in {}", human_ms(ms))).unwrap_or_default();
            format!("build {} #{} {}{took}", text("job"), d["number"].as_u64().unwrap_or(0), text("status"))
        }
        "fetch" if s.ok == Some(true) => format!("fetched on {node} in {} ({})", human_ms(d["duration_ms"].as_u64().unwrap_or(0)), text("trigger")),
        "fetch" => format!("fetch failed on {node}: {}", d["error"].as_str().unwrap_or("failed")),
        "live" | "off" => live::describe(&s.stage, node, d),
        _ => format!("{}{}: {}", text("source"), s.node.as_deref().map(|h| format!(" on {h}")).unwrap_or_default(), text("text")),
    }
}

fn human_ms(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

impl Summary {
    /// The summary as one line: builds, fetched N of M, the slowest, failures, the flag.
    pub fn line(&self, bounds: &Bounds) -> String {
        let mut parts = Vec::new();
        if self.builds.is_empty() {
            parts.push("no build yet".to_owned());
        } else {
            parts.push(self.builds.iter().map(|(job, n, status)| format!("{job} #{n} {status}")).collect::<Vec<_>>().join(", "));
        }
        let mut fetched = format!("fetched on {} of {} servers", self.fetched, self.servers);
        if let Some((node, ms)) = &self.slowest {
            fetched.push_str(&format!(" (slowest {node}, {})", human_ms(*ms)));
        }
        parts.push(fetched);
        parts.push(format!("live on {} server{}", self.live.len(), if self.live.len() == 1 { "" } else { "s" }));
        if !self.failures.is_empty() {
            parts.push(format!("{} failed", self.failures.len()));
        }
        if self.flagged {
            parts.push(format!("NOT on every server {} after the push", humantime::format_duration(bounds.reconcile_after)));
        }
        parts.join("; ")
    }
}

/// A commit's build status, from the newest build of each job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every job's newest build passed (they are named).
    Green(String),
    /// A job's newest build failed, was unstable or aborted (it is named).
    Red(String),
    /// A job's newest build is still running (it is named).
    Running(String),
    /// No build of it was heard.
    Unknown,
}

/// A change store failure.
#[derive(Debug, thiserror::Error)]
#[error("changes in {path}: {source}")]
pub struct ChangesError {
    /// The database file.
    pub path: String,
    /// SQLite's error.
    #[source]
    pub source: rusqlite::Error,
}

/// The store, the live updates and the servers known per repository.
#[derive(Debug)]
pub struct Changes {
    path: String,
    conn: Arc<Mutex<Connection>>,
    /// The bounds it keeps to.
    pub bounds: Bounds,
    servers: Mutex<HashMap<String, BTreeSet<String>>>,
    updates: broadcast::Sender<Arc<Pushed>>,
    added: AtomicU64,
    reaches: chain::Cache,
    fleet: live::FleetHook,
}

/// Appends a step to `change` unless it has [`MAX_STEPS`] already; its sequence number if added.
fn insert_step(db: &Connection, change: &str, at: i64, stage: &str, node: Option<&str>, ok: Option<bool>, data: &str) -> rusqlite::Result<Option<i64>> {
    let n: i64 = db.query_row("SELECT COUNT(*) FROM change_events WHERE change_id = ?1", params![change], |r| r.get(0))?;
    if n >= MAX_STEPS {
        return Ok(None);
    }
    db.execute("INSERT INTO change_events (change_id, at, stage, node, ok, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)", params![change, at, stage, node, ok, data])?;
    Ok(Some(db.last_insert_rowid()))
}

fn now() -> i64 {
    crate::message::unix_now() as i64
}

/// `s` on one line, at most [`MAX_FIELD`] characters.
fn field(s: &str) -> String {
    one_line(s).chars().take(MAX_FIELD).collect()
}

/// A revision or correlation id: 1-128 printable ASCII characters, no spaces.
fn token_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())
}

impl Changes {
    /// The store over dk-web's database (`History::shared`); reads the servers known per repository.
    pub fn open(path: String, conn: Arc<Mutex<Connection>>, bounds: Bounds) -> Result<Changes, ChangesError> {
        let me = Changes {
            path,
            conn,
            bounds,
            servers: Mutex::new(HashMap::new()),
            updates: broadcast::channel(1024).0,
            added: AtomicU64::new(0),
            reaches: chain::Cache::default(),
            fleet: live::FleetHook::default(),
        };
        let known: Vec<(String, String)> = me.with(|c| {
            let mut st = c.prepare("SELECT DISTINCT c.repo, e.node FROM change_events e JOIN changes c ON c.id = e.change_id WHERE e.stage = 'fetch' AND e.node IS NOT NULL")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        for (repo, node) in known {
            me.remember_server(&repo, &node);
        }
        Ok(me)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, ChangesError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| ChangesError { path: self.path.clone(), source })
    }

    fn remember_server(&self, repo: &str, node: &str) {
        let mut s = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains_key(repo) && s.len() >= MAX_REPOS {
            return;
        }
        let set = s.entry(repo.to_owned()).or_default();
        if set.len() < MAX_SERVERS {
            set.insert(node.to_owned());
        }
    }

    /// Servers known to carry `repo`.
    pub fn servers_of(&self, repo: &str) -> usize {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).get(repo).map_or(0, BTreeSet::len)
    }

    /// Live updates: each an [`Update`] as JSON, with its change's id.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Pushed>> {
        self.updates.subscribe()
    }

    /// Takes in one bus message; returns the step it added, if any.
    pub fn apply(&self, msg: &Message) -> Result<Option<Step>, ChangesError> {
        let step = match msg {
            Message::Commit(c) => self.pushed(c)?,
            Message::Build(b) => self.build(b)?,
            Message::Fetch(f) => self.fetched(f)?,
            Message::Event(e) => self.event(e)?,
            _ => None,
        };
        if let Some(s) = &step {
            self.broadcast(s)?;
        }
        Ok(step)
    }

    /// Sends `s` with its change's new summary to the journey pages watching.
    fn broadcast(&self, s: &Step) -> Result<(), ChangesError> {
        if self.updates.receiver_count() > 0 {
            if let Some((change, _, summary)) = self.journey(&s.change)? {
                let update = Update { line: describe(s), summary_line: summary.line(&self.bounds), step: s.clone(), summary, change };
                if let Ok(json) = serde_json::to_string(&update) {
                    let _ = self.updates.send(Arc::new(Pushed { change: s.change.clone(), json }));
                }
            }
        }
        Ok(())
    }

    fn pushed(&self, c: &Commit) -> Result<Option<Step>, ChangesError> {
        let id = c.effective_correlation_id();
        if c.validate().is_err() || !token_ok(&id) || !token_ok(&c.newrev) {
            return Ok(None);
        }
        let newest = c.commits.last();
        let change = Change {
            id,
            repo: field(&c.repo),
            refname: field(&c.refname),
            newrev: c.newrev.clone(),
            source: serde_json::to_value(c.source).ok().and_then(|v| v.as_str().map(field)).unwrap_or_default(),
            author: newest.map(|n| field(&n.author)),
            subject: newest.map(|n| field(n.message.lines().next().unwrap_or(""))),
            pushed_at: now(),
        };
        let oldrev = Some(c.oldrev.as_str()).filter(|r| token_ok(r) && !chain::is_zero(r));
        let listed = chain::listed(c);
        let data = serde_json::json!({ "repo": change.repo, "refname": change.refname, "newrev": change.newrev, "source": change.source, "author": change.author, "commits": c.commits.len() });
        let text = data.to_string();
        // The change, its commits and its "pushed" step in one transaction, under one
        // hold of the lock: no reader ever sees a change without its first step.
        let seq = self.with(|db| {
            let tx = db.unchecked_transaction()?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO changes (id, repo, refname, newrev, source, author, subject, pushed_at, oldrev) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![change.id, change.repo, change.refname, change.newrev, change.source, change.author, change.subject, change.pushed_at, oldrev],
            )?;
            if n == 0 {
                return Ok(None);
            }
            {
                let mut st = tx.prepare_cached("INSERT OR IGNORE INTO change_commits (change_id, pos, commit_id) VALUES (?1, ?2, ?3)")?;
                for (pos, commit) in &listed {
                    st.execute(params![change.id, *pos as i64, commit])?;
                }
            }
            let seq = insert_step(&tx, &change.id, change.pushed_at, "pushed", None, Some(true), &text)?;
            tx.commit()?;
            Ok(Some(seq))
        })?;
        let Some(seq) = seq else { return Ok(None) };
        self.reaches.clear();
        if self.added.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune()?;
        }
        Ok(seq.map(|seq| Step { change: change.id, seq, at: change.pushed_at, stage: "pushed".into(), node: None, ok: Some(true), data }))
    }

    /// The change `correlation` names, else the newest push of `commit` (in `repo`, if given).
    fn find(&self, correlation: Option<&str>, repo: Option<&str>, commit: Option<&str>) -> Result<Option<String>, ChangesError> {
        self.with(|db| {
            if let Some(id) = correlation.filter(|c| token_ok(c)) {
                if let Some(id) = db.query_row("SELECT id FROM changes WHERE id = ?1", params![id], |r| r.get::<_, String>(0)).optional()? {
                    return Ok(Some(id));
                }
            }
            let Some(commit) = commit.filter(|c| token_ok(c)) else { return Ok(None) };
            db.query_row("SELECT id FROM changes WHERE newrev = ?1 AND (?2 IS NULL OR repo = ?2) ORDER BY pushed_at DESC, rowid DESC LIMIT 1", params![commit, repo], |r| r.get(0))
                .optional()
        })
    }

    fn build(&self, b: &Build) -> Result<Option<Step>, ChangesError> {
        if let Some(commit) = b.commit.as_deref().filter(|c| token_ok(c) && c.bytes().all(|x| x.is_ascii_hexdigit())) {
            let commit = commit.to_ascii_lowercase();
            self.with(|db| {
                db.execute(
                    "INSERT INTO builds (commit_id, job, number, status, at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (commit_id, job) DO UPDATE SET number = excluded.number, status = excluded.status, at = excluded.at
                     WHERE excluded.number >= builds.number",
                    params![commit, field(&b.job), b.number as i64, b.status.as_str(), now()],
                )
            })?;
        }
        let Some(id) = self.find(b.correlation_id.as_deref(), b.repo.as_deref(), b.commit.as_deref())? else { return Ok(None) };
        let ok = b.status.is_final().then_some(b.status == crate::message::BuildStatus::Success);
        let data = serde_json::json!({
            "job": field(&b.job), "number": b.number, "status": b.status.as_str(),
            "url": b.url.as_deref().map(field), "duration_ms": b.duration_ms,
        });
        self.add(&id, "build", None, ok, data)
    }

    fn fetched(&self, f: &FetchResult) -> Result<Option<Step>, ChangesError> {
        let node = field(&f.node);
        if node.is_empty() {
            return Ok(None);
        }
        let Some(id) = self.find(f.correlation_id.as_deref(), Some(&f.repo), f.new_head.as_deref())? else { return Ok(None) };
        self.remember_server(&field(&f.repo), &node);
        let data = serde_json::json!({
            "mode": field(&f.mode), "trigger": field(&f.trigger), "duration_ms": f.duration_ms,
            "new_head": f.new_head.as_deref().map(field), "error": f.error.as_deref().map(field),
        });
        self.add(&id, "fetch", Some(node), Some(f.ok), data)
    }

    fn event(&self, e: &Event) -> Result<Option<Step>, ChangesError> {
        let Some(correlation) = e.correlation_id.as_deref() else { return Ok(None) };
        let Some(id) = self.find(Some(correlation), None, None)? else { return Ok(None) };
        let data = serde_json::json!({ "source": field(&e.source), "text": field(&e.text) });
        self.add(&id, "event", e.host.as_deref().map(field), None, data)
    }

    fn add(&self, change: &str, stage: &str, node: Option<String>, ok: Option<bool>, data: serde_json::Value) -> Result<Option<Step>, ChangesError> {
        let at = now();
        let text = data.to_string();
        let seq = self.with(|db| insert_step(db, change, at, stage, node.as_deref(), ok, &text))?;
        Ok(seq.map(|seq| Step { change: change.to_owned(), seq, at, stage: stage.to_owned(), node, ok, data }))
    }

    /// Drops changes beyond `keep` and older than `max_age`, with their steps.
    pub fn prune(&self) -> Result<usize, ChangesError> {
        let cutoff = now() - self.bounds.max_age.as_secs() as i64;
        let keep = self.bounds.keep as i64;
        self.with(|db| {
            let doomed = "SELECT id FROM changes WHERE pushed_at < ?1 OR id NOT IN (SELECT id FROM changes ORDER BY pushed_at DESC, rowid DESC LIMIT ?2)";
            db.execute(&format!("DELETE FROM change_events WHERE change_id IN ({doomed})"), params![cutoff, keep])?;
            db.execute(&format!("DELETE FROM change_commits WHERE change_id IN ({doomed})"), params![cutoff, keep])?;
            let n = db.execute(&format!("DELETE FROM changes WHERE id IN ({doomed})"), params![cutoff, keep])?;
            db.execute("DELETE FROM builds WHERE at < ?1 OR rowid NOT IN (SELECT rowid FROM builds ORDER BY at DESC LIMIT ?2)", params![cutoff, keep.saturating_mul(20)])?;
            db.execute("DELETE FROM live_marks WHERE at < ?1 OR rowid NOT IN (SELECT rowid FROM live_marks ORDER BY at DESC LIMIT ?2)", params![cutoff, live::MAX_MARKS as i64])?;
            Ok(n)
        })
        .inspect(|_| self.reaches.clear())
    }

    /// The newest `limit` changes (of `repo`, if given), newest first, each with its summary.
    pub fn list(&self, repo: Option<&str>, limit: usize) -> Result<Vec<(Change, Summary)>, ChangesError> {
        let changes: Vec<Change> = self.with(|db| {
            let mut st = db.prepare_cached(&format!("SELECT {CHANGE_COLUMNS} FROM changes WHERE (?1 IS NULL OR repo = ?1) ORDER BY pushed_at DESC, rowid DESC LIMIT ?2"))?;
            let rows = st.query_map(params![repo, limit as i64], change_row)?;
            rows.collect()
        })?;
        let live = self.live_now(repo)?;
        changes
            .into_iter()
            .map(|c| {
                let steps = self.steps(&c.id)?;
                let s = self.summarise(&c, &steps, live.of(&c.id));
                Ok((c, s))
            })
            .collect()
    }

    /// Change `id` with its steps and summary.
    pub fn journey(&self, id: &str) -> Result<Option<(Change, Vec<Step>, Summary)>, ChangesError> {
        let change = self.with(|db| db.query_row(&format!("SELECT {CHANGE_COLUMNS} FROM changes WHERE id = ?1"), params![id], change_row).optional())?;
        let Some(change) = change else { return Ok(None) };
        let steps = self.steps(&change.id)?;
        let live = self.live_now(Some(&change.repo))?.of(&change.id);
        let summary = self.summarise(&change, &steps, live);
        Ok(Some((change, steps, summary)))
    }

    /// What the builds heard on the bus say about `commit` (a full id).
    pub fn verdict(&self, commit: &str) -> Result<Verdict, ChangesError> {
        let commit = commit.to_ascii_lowercase();
        let builds: Vec<(String, i64, String)> = self.with(|db| {
            let mut st = db.prepare_cached("SELECT job, number, status FROM builds WHERE commit_id = ?1 ORDER BY job")?;
            let rows = st.query_map(params![commit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        let show = |(job, n, status): &(String, i64, String)| format!("{job} #{n} {status}");
        Ok(if builds.is_empty() {
            Verdict::Unknown
        } else if let Some(red) = builds.iter().find(|b| !matches!(b.2.as_str(), "success" | "started")) {
            Verdict::Red(show(red))
        } else if let Some(running) = builds.iter().find(|b| b.2 == "started") {
            Verdict::Running(show(running))
        } else {
            Verdict::Green(builds.iter().map(show).collect::<Vec<_>>().join(", "))
        })
    }

    /// The change `id` names: a correlation id, else a full or abbreviated (≥ 7) commit.
    pub fn resolve(&self, id: &str) -> Result<Option<String>, ChangesError> {
        if !token_ok(id) {
            return Ok(None);
        }
        self.with(|db| {
            if let Some(found) = db.query_row("SELECT id FROM changes WHERE id = ?1", params![id], |r| r.get(0)).optional()? {
                return Ok(Some(found));
            }
            if id.len() < 7 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(None);
            }
            db.query_row("SELECT id FROM changes WHERE substr(newrev, 1, ?2) = ?1 ORDER BY pushed_at DESC, rowid DESC LIMIT 1", params![id, id.len() as i64], |r| r.get(0))
                .optional()
        })
    }

    fn steps(&self, id: &str) -> Result<Vec<Step>, ChangesError> {
        self.with(|db| {
            let mut st = db.prepare_cached("SELECT seq, at, stage, node, ok, data FROM change_events WHERE change_id = ?1 ORDER BY seq")?;
            let rows = st.query_map(params![id], |r| {
                let data: String = r.get(5)?;
                Ok(Step {
                    change: id.to_owned(),
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    stage: r.get(2)?,
                    node: r.get(3)?,
                    ok: r.get(4)?,
                    data: serde_json::from_str(&data).unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
    }

    fn summarise(&self, change: &Change, steps: &[Step], live: Vec<(String, String)>) -> Summary {
        let mut builds: BTreeMap<String, (u64, String)> = BTreeMap::new();
        let mut fetches: BTreeMap<&str, &Step> = BTreeMap::new();
        for s in steps {
            match s.stage.as_str() {
                "build" => {
                    let job = s.data["job"].as_str().unwrap_or("").to_owned();
                    let number = s.data["number"].as_u64().unwrap_or(0);
                    let status = s.data["status"].as_str().unwrap_or("").to_owned();
                    if builds.get(&job).is_none_or(|(n, _)| number >= *n) {
                        builds.insert(job, (number, status));
                    }
                }
                "fetch" => {
                    if let Some(n) = s.node.as_deref() {
                        fetches.insert(n, s);
                    }
                }
                _ => {}
            }
        }
        let fetched = fetches.values().filter(|s| s.ok == Some(true)).count();
        let failures = fetches.iter().filter(|(_, s)| s.ok == Some(false)).map(|(n, s)| ((*n).to_owned(), s.data["error"].as_str().unwrap_or("failed").to_owned())).collect();
        let slowest = fetches.iter().filter(|(_, s)| s.ok == Some(true)).map(|(n, s)| ((*n).to_owned(), s.data["duration_ms"].as_u64().unwrap_or(0))).max_by_key(|(_, ms)| *ms);
        let servers = self.servers_of(&change.repo).max(fetches.len());
        let late = now() - change.pushed_at >= self.bounds.reconcile_after.as_secs() as i64;
        Summary {
            builds: builds.into_iter().map(|(job, (n, status))| (job, n, status)).collect(),
            fetched,
            servers,
            failures,
            slowest,
            flagged: late && servers > 0 && fetched < servers,
            live,
        }
    }

    /// Subscribes to `destinations` and takes every commit, build, fetch result and event line in,
    /// each once: a message whose `dk-id` was seen lately (a publisher's resend) is dropped.
    pub async fn follow(self: &Arc<Self>, client: &Client, destinations: &[String]) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::stomp::Error> {
        let mut tasks = Vec::new();
        let seen = Arc::new(Mutex::new(Dedup::default()));
        for d in destinations {
            let mut sub = client.subscribe(d, SubscribeOptions::default()).await?;
            let me = Arc::downgrade(self);
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(m) = sub.recv().await {
                    let Some(me) = me.upgrade() else { break };
                    if !seen.lock().unwrap_or_else(|p| p.into_inner()).first(&m.headers) {
                        tracing::debug!(destination = %m.destination(), id = m.headers.get(ID_HEADER).unwrap_or(""), "a resent message: taken once already");
                        continue;
                    }
                    match decode(m.destination(), &m.headers, &m.body) {
                        Ok(msg) => {
                            if let Err(e) = me.apply(&msg) {
                                tracing::error!(error = %e, "change not recorded");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "not a message the changes page reads"),
                    }
                }
            }));
        }
        Ok(tasks)
    }
}

const CHANGE_COLUMNS: &str = "id, repo, refname, newrev, source, author, subject, pushed_at";

fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Change> {
    Ok(Change { id: r.get(0)?, repo: r.get(1)?, refname: r.get(2)?, newrev: r.get(3)?, source: r.get(4)?, author: r.get(5)?, subject: r.get(6)?, pushed_at: r.get(7)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BuildStatus, CommitInfo, Source};
    use std::path::Path;

    fn store(bounds: Bounds) -> (super::super::history::History, Changes) {
        let h = super::super::history::History::open(Path::new(":memory:")).unwrap();
        let (path, conn) = h.shared();
        let c = Changes::open(path, conn, bounds).unwrap();
        (h, c)
    }

    fn commit(repo: &str, rev: &str, id: Option<&str>) -> Commit {
        Commit {
            repo: repo.into(),
            oldrev: "0".repeat(40),
            newrev: rev.into(),
            refname: "refs/heads/master".into(),
            source: Source::Git,
            svn: None,
            commits: vec![CommitInfo { id: rev.into(), author: "Ann".into(), timestamp: "2026-12-04T00:00:00Z".into(), message: "Fix the login\n\nbody".into() }],
            correlation_id: id.map(str::to_owned),
        }
    }

    fn fetch(node: &str, repo: &str, head: &str, ok: bool, ms: u64) -> FetchResult {
        FetchResult {
            repo: repo.into(),
            node: node.into(),
            mode: "trusting".into(),
            refname: None,
            old_head: None,
            new_head: Some(head.into()),
            duration_ms: ms,
            ok,
            error: (!ok).then(|| "git server unreachable".into()),
            trigger: "commit".into(),
            correlation_id: None,
        }
    }

    #[test]
    fn a_push_gathers_its_builds_and_fetches_in_order() {
        let (_h, c) = store(Bounds::default());
        let rev = "a".repeat(40);
        c.apply(&Message::Commit(commit("www", &rev, Some("corr-1")))).unwrap().unwrap();
        assert!(c.apply(&Message::Commit(commit("www", &rev, Some("corr-1")))).unwrap().is_none(), "the same push twice is one change");
        let build = |status, number| Build {
            job: "www-tests".into(),
            number,
            status,
            url: None,
            repo: Some("www".into()),
            branch: None,
            commit: Some(rev.clone()),
            duration_ms: Some(1200),
            correlation_id: None,
        };
        c.apply(&Message::Build(build(BuildStatus::Started, 7))).unwrap().unwrap();
        c.apply(&Message::Build(build(BuildStatus::Success, 7))).unwrap().unwrap();
        c.apply(&Message::Fetch(fetch("web01", "www", &rev, true, 300))).unwrap().unwrap();
        c.apply(&Message::Fetch(fetch("web02", "www", &rev, false, 10))).unwrap().unwrap();
        c.apply(&Message::Fetch(fetch("web03", "www", &rev, true, 900))).unwrap().unwrap();
        assert!(c.apply(&Message::Fetch(fetch("web04", "other", &rev, true, 1))).unwrap().is_none(), "another repo's fetch of the same commit");
        let (change, steps, s) = c.journey("corr-1").unwrap().unwrap();
        assert_eq!((change.author.as_deref(), change.subject.as_deref()), (Some("Ann"), Some("Fix the login")));
        assert_eq!(steps.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(), ["pushed", "build", "build", "fetch", "fetch", "fetch"]);
        assert_eq!(s.builds, [("www-tests".to_string(), 7, "success".to_string())]);
        assert_eq!((s.fetched, s.servers, s.slowest.clone()), (2, 3, Some(("web03".into(), 900))));
        assert_eq!(s.failures, [("web02".to_string(), "git server unreachable".to_string())]);
        assert!(!s.flagged, "not late yet");
        assert_eq!(c.resolve(&rev[..8]).unwrap().as_deref(), Some("corr-1"));
        assert_eq!(c.resolve("corr-1").unwrap().as_deref(), Some("corr-1"));
        assert!(c.resolve("abc").unwrap().is_none());
    }

    /// A push is recorded whole or not at all: the change and its "pushed" step are one
    /// write. They were two, so a reader could see a change with no steps (`GET
    /// /changes/{id}` once did), and a failure between them left it so for good.
    #[test]
    fn a_push_is_recorded_whole_or_not_at_all() {
        let (_h, c) = store(Bounds::default());
        let rev = "c".repeat(40);
        let push = Message::Commit(commit("www", &rev, Some("whole-1")));
        c.with(|db| db.execute_batch("CREATE TEMP TRIGGER refuse BEFORE INSERT ON change_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;")).unwrap();
        let err = c.apply(&push).expect_err("the step could not be written");
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(c.journey("whole-1").unwrap().is_none(), "a change was kept without its pushed step");
        assert!(c.list(None, 10).unwrap().is_empty());
        c.with(|db| db.execute_batch("DROP TRIGGER refuse;")).unwrap();
        let step = c.apply(&push).unwrap().expect("the same push, heard again, is recorded");
        assert_eq!((step.change.as_str(), step.stage.as_str()), ("whole-1", "pushed"));
        let (_, steps, _) = c.journey("whole-1").unwrap().unwrap();
        assert_eq!(steps.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(), ["pushed"]);
    }

    #[test]
    fn missing_fetches_are_flagged_after_the_reconcile_interval() {
        let (_h, c) = store(Bounds { reconcile_after: Duration::ZERO, ..Bounds::default() });
        let (r1, r2) = ("1".repeat(40), "2".repeat(40));
        c.apply(&Message::Commit(commit("www", &r1, None))).unwrap();
        for n in ["web01", "web02"] {
            c.apply(&Message::Fetch(fetch(n, "www", &r1, true, 5))).unwrap();
        }
        c.apply(&Message::Commit(commit("www", &r2, None))).unwrap();
        c.apply(&Message::Fetch(fetch("web01", "www", &r2, true, 5))).unwrap();
        let list = c.list(None, 10).unwrap();
        assert_eq!(list.iter().map(|(c, s)| (c.newrev.as_str(), s.fetched, s.servers, s.flagged)).collect::<Vec<_>>(), [(r2.as_str(), 1, 2, true), (r1.as_str(), 2, 2, false)]);
    }

    #[test]
    fn the_store_is_bounded_by_count() {
        let (_h, c) = store(Bounds { keep: 3, ..Bounds::default() });
        for i in 0..10 {
            c.apply(&Message::Commit(commit("www", &format!("{i:040}"), None))).unwrap();
        }
        c.prune().unwrap();
        let list = c.list(None, 100).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].0.newrev, format!("{:040}", 9));
    }

    fn push(rev: &str, old: &str, listed: &[&str]) -> Message {
        let mut c = commit("www", rev, Some(&format!("push-{rev}")));
        c.oldrev = old.into();
        c.commits = listed.iter().map(|id| CommitInfo { id: (*id).into(), ..c.commits[0].clone() }).collect();
        Message::Commit(c)
    }

    fn ids(r: &Reach) -> Vec<String> {
        let mut v: Vec<String> = r.changes.iter().cloned().collect();
        v.sort();
        v
    }

    #[test]
    fn the_chain_walk_follows_oldrevs_and_listed_commits() {
        let (_h, c) = store(Bounds::default());
        let zero = "0".repeat(40);
        c.apply(&push("a1", &zero, &["a1"])).unwrap();
        c.apply(&push("a3", "a1", &["a2", "a3"])).unwrap();
        c.apply(&push("a4", "a3", &["a4"])).unwrap();
        c.apply(&push("b1", "zz", &["b1"])).unwrap();
        assert_eq!(ids(&c.reach("www", "a4").unwrap()), ["push-a1", "push-a3", "push-a4"]);
        assert!(c.reach("www", "a4").unwrap().contains_rev("a2"), "a listed commit is a known ancestor");
        // A tag in the middle of a push: that push is not live, the ones before it are.
        assert_eq!(ids(&c.reach("www", "a2").unwrap()), ["push-a1"]);
        assert!(c.reach("www", "unknown").unwrap().changes.is_empty(), "an unknown commit contains nothing known");
        assert!(c.reach("other", "a4").unwrap().changes.is_empty(), "another repo's chain is its own");
        assert_eq!(ids(&c.reach("www", "b1").unwrap()), ["push-b1"], "an oldrev never pushed ends the walk");
        // A push after the walk is seen (the cache is dropped).
        c.apply(&push("a5", "a4", &["a5"])).unwrap();
        assert_eq!(c.reach("www", "a5").unwrap().changes.len(), 4);
    }

    #[test]
    fn the_chain_walk_survives_cycles_and_stops_at_its_bound() {
        let (_h, c) = store(Bounds { keep: 5_000, ..Bounds::default() });
        // Hostile pushes: each other's oldrev, and one its own.
        c.apply(&push("c1", "c2", &["c1", "c2"])).unwrap();
        c.apply(&push("c2", "c1", &["c2", "c1"])).unwrap();
        c.apply(&push("c3", "c3", &["c3"])).unwrap();
        assert_eq!(ids(&c.reach("www", "c1").unwrap()), ["push-c1", "push-c2"]);
        assert_eq!(ids(&c.reach("www", "c3").unwrap()), ["push-c3"]);
        let n = chain::MAX_HOPS + 100;
        for i in 1..=n {
            c.apply(&push(&format!("r{i}"), &format!("r{}", i - 1), &[])).unwrap();
        }
        let r = c.reach("www", &format!("r{n}")).unwrap();
        assert_eq!(r.changes.len(), chain::MAX_HOPS);
        assert!(r.truncated && r.changes.contains(&format!("push-r{n}")) && !r.changes.contains("push-r1"));
    }

    fn went(record: &str, node: &str, commit: &str, at: i64) -> WentLive {
        WentLive {
            record: record.into(),
            deploy: Some(7),
            action: "deploy".into(),
            site: "www".into(),
            repo: "www".into(),
            node: node.into(),
            commit: commit.into(),
            tag: "v3".into(),
            user: "ann".into(),
            controller: "dk-web".into(),
            at,
        }
    }

    #[test]
    fn records_add_live_and_off_steps_for_what_they_change_and_the_newest_word_says_what_is_live_now() {
        let (_h, c) = store(Bounds::default());
        let zero = "0".repeat(40);
        c.apply(&push("a1", &zero, &["a1"])).unwrap();
        c.apply(&push("a2", "a1", &["a2"])).unwrap();
        let steps = c.went_live(&went("rec-1", "web01", "a2", 100)).unwrap();
        assert_eq!(steps.iter().map(|s| s.change.as_str()).collect::<Vec<_>>(), ["push-a1", "push-a2"]);
        assert_eq!(describe(&steps[1]), "live on web01 (site www, v3; deploy #7 by ann via dk-web)");
        assert!(c.went_live(&went("rec-1", "web01", "a2", 100)).unwrap().is_empty(), "the same record twice adds nothing");
        c.went_live(&went("rec-1", "web02", "a2", 100)).unwrap();
        let (_, _, s) = c.journey("push-a2").unwrap().unwrap();
        assert_eq!(s.live, [("www".to_string(), "web01".to_string()), ("www".to_string(), "web02".to_string())]);
        assert!(s.line(&c.bounds).contains("live on 2 servers"), "{}", s.line(&c.bounds));
        // A rollback (newer record) takes web01 off a2; the fleet, newer still, says web02 went back too.
        let off = c.went_live(&went("rec-2", "web01", "a1", 200)).unwrap();
        assert_eq!(off.iter().map(|s| (s.change.as_str(), s.stage.as_str())).collect::<Vec<_>>(), [("push-a2", "off")], "a1 stays live: no step for it");
        assert!(describe(&off[0]).starts_with("no longer live on web01 ("), "{}", describe(&off[0]));
        assert!(c.went_live(&went("rec-0", "web01", "a2", 150)).unwrap().is_empty(), "a record older than the server's newest adds nothing");
        let fleet =
            |commit: &str, seen| Deployed { site: "www".into(), repo: "www".into(), node: "web02".into(), release: Some("www_v1".into()), commit: Some(commit.into()), seen };
        let f = fleet("a1", 300);
        c.set_fleet(Box::new(move || vec![f.clone()]));
        let (_, steps, s) = c.journey("push-a2").unwrap().unwrap();
        assert!(s.live.is_empty(), "{:?}", s.live);
        assert_eq!(steps.iter().filter(|s| s.stage == "live").count(), 2, "the history stays");
        assert_eq!(c.journey("push-a1").unwrap().unwrap().2.live.len(), 2);
        // An older fleet word loses to the record.
        let f = fleet("a2", 50);
        c.set_fleet(Box::new(move || vec![f.clone()]));
        let list = c.list(None, 10).unwrap();
        assert_eq!(list.iter().map(|(c, s)| (c.id.as_str(), s.live.len())).collect::<Vec<_>>(), [("push-a2", 1), ("push-a1", 2)]);
        // Deployed again, web01 gets a live step for a2 only (a1 never left).
        let again = c.went_live(&went("rec-3", "web01", "a2", 400)).unwrap();
        assert_eq!(again.iter().map(|s| (s.change.as_str(), s.stage.as_str())).collect::<Vec<_>>(), [("push-a2", "live")]);
    }

    #[test]
    fn the_newest_fetch_per_server_beside_the_live_commit() {
        let (_h, c) = store(Bounds::default());
        let zero = "0".repeat(40);
        c.apply(&push("a1", &zero, &["a1"])).unwrap();
        c.apply(&push("a2", "a1", &["a2"])).unwrap();
        c.apply(&Message::Fetch(fetch("web01", "www", "a1", true, 5))).unwrap();
        c.apply(&Message::Fetch(fetch("web01", "www", "a2", true, 5))).unwrap();
        c.apply(&Message::Fetch(fetch("web02", "www", "a1", true, 5))).unwrap();
        c.apply(&Message::Fetch(fetch("web03", "www", "a2", false, 5))).unwrap();
        let servers: Vec<(String, Option<String>)> = ["web01", "web02", "web03"].iter().map(|n| (n.to_string(), Some("a1".to_string()))).collect();
        let f = c.fetched_vs_live("www", &servers).unwrap();
        assert_eq!((f["web01"].fetched.as_deref(), f["web01"].ahead), (Some("a2"), true));
        assert_eq!((f["web02"].fetched.as_deref(), f["web02"].ahead), (Some("a1"), false));
        assert_eq!((f["web03"].fetched.as_deref(), f["web03"].ahead), (None, false), "a failed fetch is not a fetched commit");
    }

    #[test]
    fn hostile_values_are_cut_or_refused() {
        let (_h, c) = store(Bounds::default());
        assert!(c.apply(&Message::Commit(commit("www", "a b", None))).unwrap().is_none(), "a revision with a space");
        let mut long = commit("www", &"f".repeat(40), Some("x"));
        long.commits[0].message = format!("{}\nsecond", "s".repeat(10_000));
        long.commits[0].author = "Eve\r\nX-Injected: 1".into();
        c.apply(&Message::Commit(long)).unwrap().unwrap();
        let (change, _, _) = c.journey("x").unwrap().unwrap();
        assert_eq!(change.subject.unwrap().len(), MAX_FIELD);
        assert!(!change.author.unwrap().contains('\n'));
    }
    /// A build its publisher resent (same `dk-id`, as the JVM notifier does after a lost receipt)
    /// adds one step; a build with another id, or none, is a build of its own.
    #[tokio::test]
    async fn follow_takes_a_resent_message_once() {
        use crate::message::Publisher;
        use crate::stomp::{Client, ClientConfig};
        let broker = crate::broker::Broker::start(crate::broker::BrokerConfig::default()).await.unwrap();
        let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
        let (_h, c) = store(Bounds::default());
        let c = Arc::new(c);
        let topic = "/topic/dk.test.changes.dedup".to_owned();
        let mut updates = c.subscribe();
        let _tasks = c.follow(&client, std::slice::from_ref(&topic)).await.unwrap();
        let rev = "a".repeat(40);
        let p = Publisher::new(client.clone(), "test").destinations(crate::message::Destinations {
            commits: topic.clone(),
            builds: topic.clone(),
            events: "/topic/dk.test.nobody".into(),
            ..Default::default()
        });
        p.commit(&commit("site", &rev, None)).await.unwrap();
        let build = |n: u64| Build {
            job: "site-tests".into(),
            number: n,
            status: BuildStatus::Success,
            url: None,
            repo: None,
            branch: None,
            commit: Some(rev.clone()),
            duration_ms: None,
            correlation_id: None,
        };
        p.build_with_id(&build(1), Some("jvm-1")).await.unwrap();
        p.build_with_id(&build(1), Some("jvm-1")).await.unwrap(); // the resend
        p.build(&build(2)).await.unwrap();
        p.build_with_id(&build(3), Some("jvm-2")).await.unwrap(); // the marker: in order, so everything before it is in
        loop {
            let u = tokio::time::timeout(Duration::from_secs(10), updates.recv()).await.expect("an update").unwrap();
            if u.json.contains("#3") {
                break;
            }
        }
        let (_, steps, _) = c.journey(&rev).unwrap().unwrap();
        let builds: Vec<&Step> = steps.iter().filter(|s| s.stage == "build").collect();
        assert_eq!(builds.len(), 3, "builds 1 (once), 2 and 3: {builds:?}");
        broker.shutdown().await;
    }
}
