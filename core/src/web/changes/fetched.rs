//! The newest commit each server fetched of a repository (from the fetch steps
//! kept with the changes), against the commit live there: the site page's
//! "fetched ahead of live".

use super::{Changes, ChangesError};
use rusqlite::params;
use std::collections::BTreeMap;

/// One server's newest fetch of a repository and its live commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedLive {
    /// The newest commit it fetched (a successful fetch that joined a change), if any.
    pub fetched: Option<String>,
    /// Unix seconds of that fetch.
    pub fetched_at: Option<i64>,
    /// The commit live there, if known.
    pub live: Option<String>,
    /// The fetched commit is newer than the live one (the live one is among its ancestors, by the push chain).
    pub ahead: bool,
}

impl Changes {
    /// Per server, the newest commit it fetched of `repo` and when (the fetch's new head, else its change's commit).
    pub fn latest_fetches(&self, repo: &str) -> Result<BTreeMap<String, (String, i64)>, ChangesError> {
        self.with(|db| {
            let mut st = db.prepare_cached(
                "SELECT e.node, MAX(e.seq), coalesce(json_extract(e.data, '$.new_head'), c.newrev), e.at
                 FROM change_events e JOIN changes c ON c.id = e.change_id
                 WHERE c.repo = ?1 AND e.stage = 'fetch' AND e.ok = 1 AND e.node IS NOT NULL GROUP BY e.node",
            )?;
            let rows = st.query_map(params![repo], |r| Ok((r.get::<_, String>(0)?, (r.get::<_, String>(2)?, r.get::<_, i64>(3)?))))?;
            rows.collect()
        })
    }

    /// For each of `servers` (name, live commit), the newest fetch of `repo` beside the live commit.
    pub fn fetched_vs_live(&self, repo: &str, servers: &[(String, Option<String>)]) -> Result<BTreeMap<String, FetchedLive>, ChangesError> {
        let mut fetches = self.latest_fetches(repo)?;
        let mut out = BTreeMap::new();
        for (node, live) in servers {
            let (fetched, fetched_at) = fetches.remove(node).map_or((None, None), |(c, at)| (Some(c), Some(at)));
            let ahead = match (&fetched, live) {
                (Some(f), Some(l)) if !f.eq_ignore_ascii_case(l) => self.reach(repo, f)?.contains_rev(l),
                _ => false,
            };
            out.insert(node.clone(), FetchedLive { fetched, fetched_at, live: live.clone(), ahead });
        }
        Ok(out)
    }
}
