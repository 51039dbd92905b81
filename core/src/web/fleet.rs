//! What the servers say: the agents seen (announcements and discovery answers,
//! with when), and per site the servers, their releases, the tags they hold and
//! any lock. Discovery stops as soon as every server seen before has answered.
//! Announcements and answers that fail the trust check are kept apart, marked
//! untrusted with the reason: shown greyed, never counted or planned.

use crate::deploy::controller::{vet, ControlError, Controller, Window};
use crate::deploy::filters::{matches, Candidate};
use crate::deploy::trust::TrustStore;
use crate::message::deploy::{LockInfo, TagList};
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
    /// `Some(why)` when its signature or identity is not trusted.
    pub untrusted: Option<String>,
}

impl Server {
    /// Whether it may be planned and counted.
    pub fn trusted(&self) -> bool {
        self.untrusted.is_none()
    }

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
    /// The commit it names (on the first server that answered).
    pub commit: String,
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
    /// Answers claiming to serve the site that failed the trust check (never planned).
    pub untrusted: Vec<Server>,
}

/// Servers remembered at most ([`KnownServers`] drops the least recently seen first).
pub const MAX_SERVERS: usize = 10_000;
/// Servers not heard from for this long are forgotten, unless configured (`server_expiry`).
pub const SERVER_EXPIRY: Duration = Duration::from_secs(3600);
/// Larger announcements (as JSON) are not remembered.
pub const MAX_ANNOUNCE_BYTES: usize = 64 * 1024;

/// The servers seen, bounded: at most `cap` (the least recently seen is dropped to
/// make room) and none older than `expiry`. Times are unix seconds, passed in.
#[derive(Debug)]
pub struct KnownServers {
    cap: usize,
    expiry: i64,
    by_id: HashMap<String, Server>,
    /// (last seen, sequence) → identity: the least recently seen first.
    order: BTreeMap<(i64, u64), String>,
    /// Each entry's key in `order`.
    keys: HashMap<String, (i64, u64)>,
    next: u64,
}

impl KnownServers {
    /// At most `cap` servers, each forgotten `expiry` after it was last seen.
    pub fn new(cap: usize, expiry: Duration) -> KnownServers {
        let expiry = i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX).max(1);
        KnownServers { cap: cap.max(1), expiry, by_id: HashMap::new(), order: BTreeMap::new(), keys: HashMap::new(), next: 0 }
    }

    /// Records `server` (seen at `server.last_seen`); `now` expires old entries first.
    /// Announcements larger than [`MAX_ANNOUNCE_BYTES`] are ignored.
    pub fn insert(&mut self, server: Server, now: i64) {
        if serde_json::to_vec(&server.announce).map_or(true, |v| v.len() > MAX_ANNOUNCE_BYTES) {
            tracing::warn!(bytes_over = MAX_ANNOUNCE_BYTES, "agent announcement too large: ignored");
            return;
        }
        self.expire(now);
        let id = server.announce.identity.clone();
        self.remove(&id);
        while self.by_id.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.keys.remove(&oldest);
            self.by_id.remove(&oldest);
        }
        let key = (server.last_seen, self.next);
        self.next = self.next.wrapping_add(1);
        self.order.insert(key, id.clone());
        self.keys.insert(id.clone(), key);
        self.by_id.insert(id, server);
    }

    /// Drops the servers last seen `expiry` or longer before `now`.
    pub fn expire(&mut self, now: i64) {
        let cutoff = now.saturating_sub(self.expiry);
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            let id = entry.remove();
            self.keys.remove(&id);
            self.by_id.remove(&id);
        }
    }

    /// Forgets `identity`.
    pub fn remove(&mut self, identity: &str) {
        if let Some(k) = self.keys.remove(identity) {
            self.order.remove(&k);
            self.by_id.remove(identity);
        }
    }

    /// Keeps only the servers `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Server) -> bool) {
        let gone: Vec<String> = self.by_id.iter().filter(|(id, s)| !keep(id, s)).map(|(id, _)| id.clone()).collect();
        for id in gone {
            self.remove(&id);
        }
    }

    /// The server called `identity`.
    pub fn get(&self, identity: &str) -> Option<&Server> {
        self.by_id.get(identity)
    }

    /// Every server, in no order.
    pub fn values(&self) -> impl Iterator<Item = &Server> {
        self.by_id.values()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The agents seen (trusted ones bounded by [`KnownServers`]; untrusted ones apart, at most [`MAX_UNTRUSTED`]).
#[derive(Debug)]
pub struct Fleet {
    seen: Mutex<KnownServers>,
    untrusted: Mutex<HashMap<String, Server>>,
}

impl Default for Fleet {
    fn default() -> Fleet {
        Fleet::with_limits(MAX_SERVERS, SERVER_EXPIRY)
    }
}

/// Untrusted announcers remembered (a flood of forged names cannot grow the map past this).
pub const MAX_UNTRUSTED: usize = 256;
/// Seconds an untrusted announcer stays listed after it was last heard.
pub const UNTRUSTED_TTL: i64 = 600;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Fleet {
    /// A registry of at most `cap` servers, each forgotten `expiry` after it was last seen.
    pub fn with_limits(cap: usize, expiry: Duration) -> Fleet {
        Fleet { seen: Mutex::new(KnownServers::new(cap, expiry)), untrusted: Mutex::new(HashMap::new()) }
    }

    /// Records a trusted announcement or discovery answer.
    pub fn record(&self, announce: AgentAnnounce) {
        self.record_at(announce, now());
    }

    /// Records an announcement seen at `at` (unix seconds).
    pub fn record_at(&self, announce: AgentAnnounce, at: i64) {
        self.untrusted.lock().unwrap_or_else(|p| p.into_inner()).remove(&announce.identity);
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(Server { announce, last_seen: at, untrusted: None }, at);
    }

    /// The servers known at `at` (unix seconds; expired ones are dropped), by identity.
    pub fn known_at(&self, at: i64) -> Vec<Server> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.expire(at);
        let mut v: Vec<Server> = seen.values().cloned().collect();
        v.sort_by(|a, b| a.announce.identity.cmp(&b.announce.identity));
        v
    }

    /// Records an announcement that failed the trust check, with why (it never replaces a trusted one).
    pub fn record_untrusted(&self, announce: AgentAnnounce, why: String) {
        let mut u = self.untrusted.lock().unwrap_or_else(|p| p.into_inner());
        let t = now();
        u.retain(|_, s| s.last_seen + UNTRUSTED_TTL >= t);
        if u.len() >= MAX_UNTRUSTED && !u.contains_key(&announce.identity) {
            return;
        }
        u.insert(announce.identity.clone(), Server { announce, last_seen: now(), untrusted: Some(why) });
    }

    /// The untrusted announcers seen, by identity.
    pub fn untrusted(&self) -> Vec<Server> {
        let t = now();
        let mut v: Vec<Server> = self.untrusted.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|s| s.last_seen + UNTRUSTED_TTL >= t).cloned().collect();
        v.sort_by(|a, b| a.announce.identity.cmp(&b.announce.identity));
        v
    }

    /// How many known trusted servers `filters` select.
    pub fn expected(&self, filters: &Filters) -> usize {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.expire(now());
        seen.values().filter(|s| s.selected_by(filters)).count()
    }

    /// Keeps the registry current from the agents' announcements, each checked against `trust`.
    pub async fn follow(self: &Arc<Self>, client: &Client, destination: &str, trust: Arc<TrustStore>) -> Result<tokio::task::JoinHandle<()>, crate::stomp::Error> {
        let mut sub = client.subscribe(destination, SubscribeOptions::default()).await?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(m) = sub.recv().await {
                if let Ok(Message::AgentAnnounce(a)) = decode(m.destination(), &m.headers, &m.body) {
                    let t = now() as u64;
                    match vet(&trust.get(), &m.headers, &m.body, &a.identity, a.expires_at, t) {
                        Ok(()) => me.record(a),
                        Err(why) => {
                            tracing::warn!(identity = %a.identity, reason = %why, "untrusted announcement");
                            me.record_untrusted(a, why);
                        }
                    }
                }
            }
        }))
    }

    /// Asks the servers `filters` select; stops once all known ones answered.
    /// Known servers that did not answer within `window` are forgotten (so a dead
    /// one costs one full window, not every page load). Untrusted answers come
    /// after the trusted ones, marked.
    pub async fn discover(&self, c: &Controller, filters: &Filters, window: Duration) -> Result<Vec<Server>, ControlError> {
        let expected = self.expected(filters);
        let w = Window { timeout: window, expect: (expected > 0).then_some(expected) };
        let found = c.discover(filters.clone(), w).await?;
        let t = now();
        let mut servers = Vec::new();
        let mut untrusted = Vec::new();
        for d in found {
            let announce = d.announce.unwrap_or_else(|| AgentAnnounce {
                identity: d.reply.node.clone(),
                classes: vec![],
                facts: Default::default(),
                sites: vec![],
                version: String::new(),
                expires_at: 0,
            });
            match d.untrusted {
                None => servers.push(Server { announce, last_seen: t, untrusted: None }),
                Some(why) => untrusted.push(Server { announce, last_seen: t, untrusted: Some(why) }),
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if servers.len() < expected {
            seen.retain(|id, s| !s.selected_by(filters) || servers.iter().any(|x| x.announce.identity == id));
        }
        for s in &servers {
            seen.insert(s.clone(), t);
        }
        drop(seen);
        for s in &untrusted {
            self.record_untrusted(s.announce.clone(), s.untrusted.clone().unwrap_or_default());
        }
        servers.extend(untrusted);
        Ok(servers)
    }

    /// The trusted servers of `site` (selected by `filters` and serving it), by identity.
    pub async fn site_servers(&self, c: &Controller, site: &str, filters: &Filters, window: Duration) -> Result<Vec<Server>, ControlError> {
        Ok(self.site_servers_all(c, site, filters, window).await?.0)
    }

    /// The trusted servers of `site`, and the untrusted answers claiming to serve it.
    async fn site_servers_all(&self, c: &Controller, site: &str, filters: &Filters, window: Duration) -> Result<(Vec<Server>, Vec<Server>), ControlError> {
        let (mut v, mut u): (Vec<Server>, Vec<Server>) = self.discover(c, filters, window).await?.into_iter().filter(|s| s.serves(site)).partition(Server::trusted);
        v.sort_by(|a, b| a.announce.identity.cmp(&b.announce.identity));
        let known = self.untrusted();
        for s in known.into_iter().filter(|s| s.serves(site) && s.selected_by(filters)) {
            if !u.iter().any(|x| x.announce.identity == s.announce.identity) {
                u.push(s);
            }
        }
        u.sort_by(|a, b| a.announce.identity.cmp(&b.announce.identity));
        Ok((v, u))
    }

    /// Servers, tags (at most `limit`), branches and locks of `site`; untrusted answers apart.
    pub async fn site_state(&self, c: &Controller, site: &str, filters: &Filters, limit: usize, window: Duration) -> Result<SiteState, ControlError> {
        let (servers, untrusted) = self.site_servers_all(c, site, filters, window).await?;
        if servers.is_empty() {
            return Ok(SiteState { untrusted, ..SiteState::default() });
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
                            let e = dst.entry(t.name.clone()).or_insert(RefCount { name: t.name.clone(), date: t.date, servers: 0, commit: t.commit.clone() });
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
        Ok(SiteState { servers, tags: newest(tag_count), branches: newest(branch_count), locks, problems, untrusted })
    }
}

impl Fleet {
    /// Each known server's live release and commit per site, for the sites `repo_of` maps to a repository.
    pub fn deployed(&self, repo_of: impl Fn(&str) -> Option<String>) -> Vec<super::changes::Deployed> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.expire(now());
        let mut out = Vec::new();
        for s in seen.values() {
            for st in &s.announce.sites {
                if let Some(repo) = repo_of(&st.name) {
                    out.push(super::changes::Deployed {
                        site: st.name.clone(),
                        repo,
                        node: s.announce.identity.clone(),
                        release: st.current.clone(),
                        commit: st.commit.clone(),
                        seen: s.last_seen,
                    });
                }
            }
        }
        out
    }

    /// Identities of the known servers of `site` that `filters` select (expected to answer a rollout's discovery).
    pub fn known_servers(&self, site: &str, filters: &Filters) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = seen.values().filter(|s| s.serves(site) && s.selected_by(filters)).map(|s| s.announce.identity.clone()).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, at: i64) -> Server {
        Server {
            announce: AgentAnnounce { identity: id.into(), classes: vec![], facts: BTreeMap::new(), sites: vec![], version: "1".into(), expires_at: 0 },
            last_seen: at,
            untrusted: None,
        }
    }

    #[test]
    fn bounded_least_recently_seen_dropped_first_and_expiring() {
        let mut k = KnownServers::new(3, Duration::from_secs(100));
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            k.insert(server(id, 1000 + i as i64), 1000 + i as i64);
        }
        k.insert(server("a", 1010), 1010); // seen again: now the newest
        k.insert(server("d", 1011), 1011);
        let mut ids: Vec<&str> = k.values().map(|s| s.announce.identity.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c", "d"], "b was the least recently seen");
        k.expire(1101);
        assert_eq!(k.len(), 3);
        k.expire(1109);
        assert_eq!(k.len(), 2, "c (seen at 1002) expired");
        k.expire(1111);
        assert!(k.get("d").is_none() && k.get("a").is_none() && k.is_empty());
        k.insert(server("e", 2000), 2000);
        k.retain(|id, _| id != "e");
        assert!(k.is_empty());
        let mut big = server("huge", 3000);
        big.announce.classes = vec!["x".repeat(MAX_ANNOUNCE_BYTES)];
        k.insert(big, 3000);
        assert!(k.is_empty(), "oversized announcements are not kept");
    }
}
