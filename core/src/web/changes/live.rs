//! Where a change is live. A trusted rollout record ([`super::super::trail`])
//! says which commit each server made live: every change that commit contains
//! ([`super::chain`]) and the server's previous live commit did not gets a
//! `live` step, and every change the previous one contained and this one does
//! not (a rollback) an `off` step. Which
//! servers a change is live on *now* comes from the newest of two sources per
//! server: the fleet's announcements and discovery answers (`SiteStatus.commit`)
//! and the records (kept as `live_marks`, bounded by [`MAX_MARKS`] and the
//! changes' age) — so a later rollback takes a server off, while the steps stay.

use super::{field, token_ok, Changes, ChangesError, Step};
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// Most (record, server) marks kept.
pub const MAX_MARKS: usize = 100_000;

/// One server's live release of a site, as the fleet last heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The site (as web.toml names it).
    pub site: String,
    /// The site's repository (web.toml's `repo`).
    pub repo: String,
    /// The server.
    pub node: String,
    /// The live release, if any.
    pub release: Option<String>,
    /// Its commit (absent from older agents).
    pub commit: Option<String>,
    /// Unix seconds when this was heard.
    pub seen: i64,
}

/// What the fleet says is live, asked when a summary is made (set by dk-web at start).
pub type FleetView = Box<dyn Fn() -> Vec<Deployed> + Send + Sync>;

/// The fleet view, once set.
#[derive(Default)]
pub(super) struct FleetHook(RwLock<Option<FleetView>>);

impl std::fmt::Debug for FleetHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetHook")
    }
}

/// One server a trusted rollout record says ended `ok` with a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WentLive {
    /// The record's id.
    pub record: String,
    /// Its row in the history (`/deploys/ID`), if stored.
    pub deploy: Option<i64>,
    /// `deploy` or `rollback`.
    pub action: String,
    /// The site.
    pub site: String,
    /// The site's repository (web.toml's `repo`).
    pub repo: String,
    /// The server.
    pub node: String,
    /// The commit live there now.
    pub commit: String,
    /// The tag (or release) live there now.
    pub tag: String,
    /// Who ran the rollout.
    pub user: String,
    /// The controller that ran it.
    pub controller: String,
    /// Unix seconds when the rollout finished.
    pub at: i64,
}

/// A `live` step as one line: `live on SERVER (site SITE, TAG; deploy #ID by USER via CONTROLLER)`;
/// an `off` step (the server's new release no longer contains the change): `no longer live on SERVER (…)`.
pub(super) fn describe(stage: &str, node: &str, d: &serde_json::Value) -> String {
    let text = |k: &str| d[k].as_str().unwrap_or("?").to_owned();
    let id = d["deploy"].as_i64().map_or_else(|| text("record"), |n| n.to_string());
    let what = if stage == "off" { "no longer live on" } else { "live on" };
    format!("{what} {node} (site {}, {}; {} #{id} by {} via {})", text("site"), text("tag"), text("action"), text("user"), text("controller"))
}

impl Changes {
    /// Sets where the fleet's view of live releases comes from.
    pub fn set_fleet(&self, view: FleetView) {
        *self.fleet.0.write().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }

    /// Adds a `live` step to every change `w.commit` brings to the server and an `off`
    /// step to every change it takes off, and sends each to the journey pages; returns the steps added.
    pub fn went_live(&self, w: &WentLive) -> Result<Vec<Step>, ChangesError> {
        if !token_ok(&w.commit) || !token_ok(&w.record) || w.node.is_empty() {
            return Ok(Vec::new());
        }
        let (node, site, repo) = (field(&w.node), field(&w.site), field(&w.repo));
        let fresh = self.with(|db| {
            db.execute(
                "INSERT OR IGNORE INTO live_marks (record_id, node, repo, site, commit_id, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![w.record, node, repo, site, w.commit, w.at],
            )
        })?;
        if fresh == 0 {
            return Ok(Vec::new());
        }
        let reach = self.reach(&repo, &w.commit)?;
        let data = serde_json::json!({
            "site": site, "tag": field(&w.tag), "record": w.record, "deploy": w.deploy, "action": field(&w.action),
            "user": field(&w.user), "controller": field(&w.controller), "commit": w.commit,
        });
        // Steps mark transitions on this server: the changes the new commit brings (not
        // contained by the server's previous live commit) went live; the ones it drops
        // (a rollback, or a downgrade) are off. A deploy adds steps only for what it changes,
        // however long the chain; a record older than the server's newest adds none.
        let (prev, newer): (Option<String>, bool) = self.with(|db| {
            let mut st = db.prepare_cached("SELECT commit_id, at FROM live_marks WHERE repo = ?1 AND node = ?2 AND record_id != ?3 ORDER BY at DESC, rowid DESC LIMIT 1")?;
            let row: Option<(String, i64)> = st.query_row(params![repo, node, w.record], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            Ok(match row {
                Some((c, at)) if at > w.at => (Some(c), true),
                Some((c, _)) => (Some(c), false),
                None => (None, false),
            })
        })?;
        if newer {
            return Ok(Vec::new());
        }
        let before = match &prev {
            Some(c) => self.reach(&repo, c)?,
            None => std::sync::Arc::default(),
        };
        let mut went: Vec<(&String, &str)> = reach.changes.iter().filter(|id| !before.changes.contains(*id)).map(|id| (id, "live")).collect();
        went.extend(before.changes.iter().filter(|id| !reach.changes.contains(*id)).map(|id| (id, "off")));
        went.sort();
        let mut out = Vec::new();
        for (id, stage) in went {
            if let Some(s) = self.add(id, stage, Some(node.clone()), (stage == "live").then_some(true), data.clone())? {
                self.broadcast(&s)?;
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Each server's live commit now (of `repo`, if given): the newer of the fleet's
    /// word and the newest record's, a tie going to the record.
    pub fn deployed_now(&self, repo: Option<&str>) -> Result<Vec<Deployed>, ChangesError> {
        let fleet: Vec<Deployed> = match &*self.fleet.0.read().unwrap_or_else(|p| p.into_inner()) {
            Some(view) => view().into_iter().filter(|d| repo.is_none_or(|r| d.repo == r)).collect(),
            None => Vec::new(),
        };
        let marks: Vec<Deployed> = self.with(|db| {
            // Each server's newest mark; records of one second are told apart by arrival (rowid).
            let mut st = db.prepare_cached(
                "SELECT repo, node, site, commit_id, at FROM live_marks m WHERE (?1 IS NULL OR repo = ?1) \
                 AND rowid = (SELECT rowid FROM live_marks WHERE repo = m.repo AND node = m.node ORDER BY at DESC, rowid DESC LIMIT 1)",
            )?;
            let rows = st.query_map(params![repo], |r| Ok(Deployed { repo: r.get(0)?, node: r.get(1)?, site: r.get(2)?, commit: r.get(3)?, release: None, seen: r.get(4)? }))?;
            rows.collect()
        })?;
        let mut now: BTreeMap<(String, String), Deployed> = fleet.into_iter().map(|d| ((d.repo.clone(), d.node.clone()), d)).collect();
        for m in marks {
            let key = (m.repo.clone(), m.node.clone());
            // An older agent says what is live but not its commit: the record tells.
            let take = now.get(&key).is_none_or(|f| m.seen >= f.seen || (f.commit.is_none() && f.release.is_some()));
            if take {
                now.insert(key, m);
            }
        }
        Ok(now.into_values().filter(|d| d.commit.is_some()).collect())
    }

    /// What is live now (of `repo`, if given): per distinct live commit, what it contains and
    /// the (site, server) pairs it is live on — one cached chain walk per commit.
    pub(super) fn live_now(&self, repo: Option<&str>) -> Result<LiveNow, ChangesError> {
        let mut by_commit: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
        for d in self.deployed_now(repo)? {
            if let Some(c) = d.commit {
                by_commit.entry((d.repo, c)).or_default().push((d.site, d.node));
            }
        }
        let mut out = Vec::with_capacity(by_commit.len());
        for ((repo, commit), servers) in by_commit {
            out.push((self.reach(&repo, &commit)?, servers));
        }
        Ok(LiveNow(out))
    }
}

/// The (site, server) pairs one commit is live on.
type Servers = Vec<(String, String)>;

/// What is live now: per distinct live commit, its reach and the servers it is live on.
#[derive(Debug, Default)]
pub(super) struct LiveNow(Vec<(std::sync::Arc<super::chain::Reach>, Servers)>);

impl LiveNow {
    /// The (site, server) pairs change `id` is live on, sorted.
    pub fn of(&self, id: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self.0.iter().filter(|(reach, _)| reach.changes.contains(id)).flat_map(|(_, servers)| servers.iter().cloned()).collect();
        v.sort();
        v.dedup();
        v
    }
}
