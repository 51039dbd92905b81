//! What the servers say: the agents seen (announcements and discovery answers,
//! with when), and per site the servers, their releases, the tags they hold and
//! any lock. Discovery stops as soon as every server seen before has answered.

use crate::deploy::agent::lock::LockInfo;
use crate::deploy::agent::repo::TagList;
use crate::deploy::controller::{ControlError, Controller, Window};
use crate::deploy::filters::{matches, Candidate};
use crate::message::{decode, AgentAnnounce, Filters, Message};
use crate::stomp::{Client, SubscribeOptions};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One server as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its announcement.
    pub announce: AgentAnnounce,
    /// Unix seconds when it last answered or announced.
    pub last_seen: i64,
}

impl Server {
    /// The live release of `site` here.
    pub fn release(&self, site: &str) -> Option<&str> {
        self.announce.sites.iter().find(|s| s.name == site).and_then(|s| s.current.as_deref())
    }

    /// The live release of `site` as its tag (the `REPO_` prefix of the release directory dropped).
    pub fn release_tag(&self, site: &str) -> Option<&str> {
        let s = self.announce.sites.iter().find(|s| s.name == site)?;
        let dir = s.current.as_deref()?;
        Some(dir.strip_prefix(s.repo.as_str()).and_then(|r| r.strip_prefix('_')).unwrap_or(dir))
    }

    /// Whether it serves `site`.
    pub fn serves(&self, site: &str) -> bool {
        self.announce.sites.iter().any(|s| s.name == site)
    }

    /// Whether `filters` select it.
    pub fn selected_by(&self, filters: &Filters) -> bool {
        let a = &self.announce;
        matches(filters, Candidate { identity: &a.identity, classes: &a.classes, facts: &a.facts }).unwrap_or(false)
    }
}

/// A tag or branch with how many servers hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefCount {
    /// Short name.
    pub name: String,
    /// Unix seconds (tagger or commit date).
    pub date: i64,
    /// Servers holding it.
    pub servers: usize,
}

/// A lock held on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// The server.
    pub node: String,
    /// The lock.
    pub lock: LockInfo,
}

/// Everything the site page shows about the servers.
#[derive(Debug, Clone, Default)]
pub struct SiteState {
    /// The servers, by identity.
    pub servers: Vec<Server>,
    /// Tags, newest first.
    pub tags: Vec<RefCount>,
    /// Branches, newest first.
    pub branches: Vec<RefCount>,
    /// Locks in force.
    pub locks: Vec<HeldLock>,
    /// Servers whose answers failed, with why.
    pub problems: Vec<(String, String)>,
}

/// The agents seen.
#[derive(Debug, Default)]
pub struct Fleet {
    seen: Mutex<HashMap<String, Server>>,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Fleet {
    /// Records an announcement or discovery answer.
    pub fn record(&self, announce: AgentAnnounce) {
        let s = Server { announce, last_seen: now() };
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(s.announce.identity.clone(), s);
    }

    /// How many known servers `filters` select.
    pub fn expected(&self, filters: &Filters) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|s| s.selected_by(filters)).count()
    }

    /// Keeps the registry current from the agents' announcements.
    pub async fn follow(self: &Arc<Self>, client: &Client, destination: &str) -> Result<tokio::task::JoinHandle<()>, crate::stomp::Error> {
        let mut sub = client.subscribe(destination, SubscribeOptions::default()).await?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(m) = sub.recv().await {
                if let Ok(Message::AgentAnnounce(a)) = decode(&m.destination, &m.headers, &m.body) {
                    me.record(a);
                }
            }
        }))
    }

    /// Asks the servers `filters` select; stops once all known ones answered.
    /// Known servers that did not answer within `window` are forgotten (so a dead
    /// one costs one full window, not every page load).
    pub async fn discover(&self, c: &Controller, filters: &Filters, window: Duration) -> Result<Vec<Server>, ControlError> {
        let expected = self.expected(filters);
        let w = Window { timeout: window, expect: (expected > 0).then_some(expected) };
        let found = c.discover(filters.clone(), w).await?;
        let t = now();
        let servers: Vec<Server> = found.into_iter().filter_map(|(_, a)| a).map(|announce| Server { announce, last_seen: t }).collect();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if servers.len() < expected {
            seen.retain(|id, s| !s.selected_by(filters) || servers.iter().any(|x| &x.announce.identity == id));
        }
        for s in &servers {
            seen.insert(s.announce.identity.clone(), s.clone());
        }
        Ok(servers)
    }

    /// The servers of `site` (selected by `filters` and serving it), by identity.
    pub async fn site_servers(&self, c: &Controller, site: &str, filters: &Filters, window: Duration) -> Result<Vec<Server>, ControlError> {
        let mut v: Vec<Server> = self.discover(c, filters, window).await?.into_iter().filter(|s| s.serves(site)).collect();
        v.sort_by(|a, b| a.announce.identity.cmp(&b.announce.identity));
        Ok(v)
    }

    /// Servers, tags (at most `limit`), branches and locks of `site`.
    pub async fn site_state(&self, c: &Controller, site: &str, filters: &Filters, limit: usize, window: Duration) -> Result<SiteState, ControlError> {
        let servers = self.site_servers(c, site, filters, window).await?;
        if servers.is_empty() {
            return Ok(SiteState::default());
        }
        let names: Vec<String> = servers.iter().map(|s| s.announce.identity.clone()).collect();
        let only = Filters { identity: names.clone(), ..Filters::default() };
        let w = Window { timeout: window, expect: Some(names.len()) };
        let (tags, status) = tokio::join!(c.tags(site, only.clone(), limit, w), c.status(site, only, w));
        let (tags, status) = (tags?, status?);
        let mut problems = Vec::new();
        let mut tag_count: BTreeMap<String, RefCount> = BTreeMap::new();
        let mut branch_count: BTreeMap<String, RefCount> = BTreeMap::new();
        for r in &tags {
            match serde_json::from_value::<TagList>(r.data.clone()) {
                Ok(list) if r.error.is_none() => {
                    for (src, dst) in [(&list.tags, &mut tag_count), (&list.branches, &mut branch_count)] {
                        for t in src {
                            let e = dst.entry(t.name.clone()).or_insert(RefCount { name: t.name.clone(), date: t.date, servers: 0 });
                            e.servers += 1;
                            e.date = e.date.max(t.date);
                        }
                    }
                }
                _ => problems.push((r.node.clone(), r.error.clone().unwrap_or_else(|| "unreadable tag list".into()))),
            }
        }
        let newest = |m: BTreeMap<String, RefCount>| {
            let mut v: Vec<RefCount> = m.into_values().collect();
            v.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| b.name.cmp(&a.name)));
            v.truncate(limit);
            v
        };
        let t = now() as u64;
        let locks = status
            .iter()
            .filter_map(|r| {
                let lock: LockInfo = serde_json::from_value(r.data.get("lock")?.clone()).ok()?;
                (lock.expires_at > t).then(|| HeldLock { node: r.node.clone(), lock })
            })
            .collect();
        for n in &names {
            if !tags.iter().any(|r| &r.node == n) {
                problems.push((n.clone(), format!("no tag list within {window:?}")));
            }
        }
        Ok(SiteState { servers, tags: newest(tag_count), branches: newest(branch_count), locks, problems })
    }
}

impl Fleet {
    /// Identities of the known servers of `site` that `filters` select (expected to answer a rollout's discovery).
    pub fn known_servers(&self, site: &str, filters: &Filters) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = seen.values().filter(|s| s.serves(site) && s.selected_by(filters)).map(|s| s.announce.identity.clone()).collect();
        v.sort();
        v
    }
}
