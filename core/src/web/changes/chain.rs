//! The push chain: which pushes of a repository a commit contains, as far as
//! the pushes kept tell. A push's `oldrev` is the head before it (usually the
//! previous push's `newrev`), and the commits it lists are its new ones; so
//! from a commit C the walk finds the pushes whose `newrev` is C, then follows
//! their `oldrev`s (and the heads of other pushes among their listed commits).
//! A commit that is only listed by a push (a tag in the middle of it) enters
//! the chain at that push's `oldrev`.
//!
//! Everything walked is bus input: the walk visits at most [`MAX_HOPS`]
//! revisions, each once (cycles end), and keeps at most [`MAX_REVS`] of them.

use super::{token_ok, Changes, ChangesError};
use crate::message::Commit;
use rusqlite::{params, Connection};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Most revisions one walk visits.
pub const MAX_HOPS: usize = 1_000;
/// Most commits kept of one push (its newest).
pub const MAX_LISTED: usize = 256;
/// Most revisions a [`Reach`] remembers as known ancestors.
pub const MAX_REVS: usize = 20_000;
/// Most walks cached (the cache is emptied when full, and on every new push).
const CACHE_SIZE: usize = 4_096;

/// What a commit contains, as far as the push chain tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// The changes (pushes) whose `newrev` it contains, itself included.
    pub changes: HashSet<String>,
    /// The revisions known to be it or its ancestors (visited, or listed by a push it contains).
    pub revs: HashSet<String>,
    /// The walk stopped at [`MAX_HOPS`]: older pushes may be contained too.
    pub truncated: bool,
}

impl Reach {
    /// Whether `rev` is known to be contained (an ancestor or the commit itself).
    pub fn contains_rev(&self, rev: &str) -> bool {
        self.revs.contains(rev)
    }
}

/// Walks cached by (repo, commit); emptied when a push arrives or changes are pruned.
#[derive(Debug, Default)]
pub(super) struct Cache(Mutex<HashMap<(String, String), Arc<Reach>>>);

impl Cache {
    pub(super) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn get(&self, repo: &str, commit: &str) -> Option<Arc<Reach>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&(repo.to_owned(), commit.to_owned())).cloned()
    }

    fn put(&self, repo: &str, commit: &str, reach: Arc<Reach>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_SIZE {
            m.clear();
        }
        m.insert((repo.to_owned(), commit.to_owned()), reach);
    }
}

/// An all-zero revision: no commit (a branch created, or deleted).
pub fn is_zero(rev: &str) -> bool {
    !rev.is_empty() && rev.bytes().all(|b| b == b'0')
}

/// The commits a push lists that the chain keeps: (position, id), at most [`MAX_LISTED`], the newest.
pub(super) fn listed(c: &Commit) -> Vec<(usize, String)> {
    let skip = c.commits.len().saturating_sub(MAX_LISTED);
    c.commits.iter().enumerate().skip(skip).filter(|(_, k)| token_ok(&k.id)).map(|(i, k)| (i, k.id.clone())).collect()
}

/// The walk itself, over the store's tables.
fn walk(db: &Connection, repo: &str, commit: &str, max_hops: usize) -> rusqlite::Result<Reach> {
    let mut reach = Reach::default();
    let mut queue: VecDeque<String> = VecDeque::from([commit.to_owned()]);
    let mut hops = 0;
    let mut heads = db.prepare_cached("SELECT id, oldrev FROM changes WHERE repo = ?1 AND newrev = ?2")?;
    let mut listing = db.prepare_cached(
        "SELECT k.change_id, k.pos, c.oldrev FROM change_commits k JOIN changes c ON c.id = k.change_id WHERE k.commit_id = ?2 AND c.repo = ?1 AND c.newrev <> ?2",
    )?;
    let mut listed = db.prepare_cached("SELECT commit_id FROM change_commits WHERE change_id = ?1 AND pos < ?2")?;
    let mut listed_heads =
        db.prepare_cached("SELECT DISTINCT c.newrev FROM change_commits k JOIN changes c ON c.newrev = k.commit_id AND c.repo = ?1 WHERE k.change_id = ?2 AND k.pos < ?3")?;
    // What came before `upto` in push `id` is contained: its oldrev first (the chain), then other pushes' heads it lists.
    let mut contain = |reach: &mut Reach, queue: &mut VecDeque<String>, id: &str, upto: i64, oldrev: Option<String>| -> rusqlite::Result<()> {
        if let Some(o) = oldrev.filter(|o| token_ok(o) && !is_zero(o)) {
            queue.push_front(o);
        }
        if reach.revs.len() < MAX_REVS {
            for c in listed.query_map(params![id, upto], |r| r.get::<_, String>(0))? {
                reach.revs.insert(c?);
                if reach.revs.len() >= MAX_REVS {
                    break;
                }
            }
        }
        for h in listed_heads.query_map(params![repo, id, upto], |r| r.get::<_, String>(0))? {
            if queue.len() >= MAX_HOPS {
                break;
            }
            queue.push_back(h?);
        }
        Ok(())
    };
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(rev) = queue.pop_front() {
        if is_zero(&rev) || seen.contains(&rev) {
            continue;
        }
        if hops >= max_hops {
            reach.truncated = true;
            break;
        }
        hops += 1;
        seen.insert(rev.clone());
        if reach.revs.len() < MAX_REVS {
            reach.revs.insert(rev.clone());
        }
        let pushes: Vec<(String, Option<String>)> = heads.query_map(params![repo, rev], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (id, oldrev) in pushes {
            if reach.changes.insert(id.clone()) {
                contain(&mut reach, &mut queue, &id, i64::MAX, oldrev)?;
            }
        }
        let within: Vec<(String, i64, Option<String>)> = listing.query_map(params![repo, rev], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
        for (id, pos, oldrev) in within {
            contain(&mut reach, &mut queue, &id, pos, oldrev)?;
        }
    }
    Ok(reach)
}

impl Changes {
    /// What `commit` of `repo` contains ([`Reach`]); cached until the next push.
    pub fn reach(&self, repo: &str, commit: &str) -> Result<Arc<Reach>, ChangesError> {
        if !token_ok(commit) {
            return Ok(Arc::default());
        }
        if let Some(r) = self.reaches.get(repo, commit) {
            return Ok(r);
        }
        let r = Arc::new(self.with(|db| walk(db, repo, commit, MAX_HOPS))?);
        self.reaches.put(repo, commit, r.clone());
        Ok(r)
    }
}
