//! `dk-web --import-legacy`: grubby's `sites.yaml` → the `[sites]` of `web.toml`.
//!
//! Each entry of grubby's sites list (a free-text heading) had `filter`
//! (`identity_filter`, `class_filter` or `fact_filter`), `payload` (what the
//! filter matches: a name or `/regex/`, a class, `fact=value`), `repo`,
//! `tags` and `repo_type` (`git` or `svn`). A site is named after its repo (the
//! name the agents know it by); the heading is kept as a comment. grubby let
//! every user the web server authenticated (REMOTE_USER) deploy; the import
//! uses `[auth] mode = "proxy"` for that front server and lets nobody deploy
//! until `deployers` are listed.

use super::config::WebConfig;
use crate::config::ConfigError;
use crate::legacy::{err, get, key, load_yaml, q, scalar, Builder, ImportOptions, Imported};
use yaml_rust2::Yaml;

/// Converts grubby's `sites.yaml` into a `web.toml` (checked with [`WebConfig::parse`]).
pub fn import_legacy(yaml: &str, options: &ImportOptions) -> Result<Imported, ConfigError> {
    let top = load_yaml(yaml)?;
    let mut b = Builder::new("Imported from grubby's sites.yaml by dk-web --import-legacy.", options);
    b.out.push_str(
        "wire = \"legacy\"\n\n# grubby trusted the web server's REMOTE_USER: dk-web behind the same front server, which sets the header.\n\
         [auth]\nmode = \"proxy\"\nheader = \"X-Remote-User\"\nproxies = [\"127.0.0.1\", \"::1\"]\n",
    );
    b.note("[auth] mode = \"proxy\": have the front server that authenticated grubby's users set X-Remote-User and proxy to dk-web (or switch to mode = \"basic\")");
    let mut seen = std::collections::BTreeSet::new();
    let mut sites = 0;
    for (heading, entry) in &top {
        let heading = scalar(heading).unwrap_or_default().replace(['\n', '\r'], " ");
        let Yaml::Hash(e) = entry else {
            return Err(err(format!("{heading:?}: expected {{filter, payload, repo, tags, repo_type}}")));
        };
        let repo = get(e, "repo").ok_or_else(|| err(format!("{heading:?}: missing repo")))?;
        if get(e, "repo_type").is_some_and(|t| t != "git") {
            b.note(format!("{heading:?} (repo {repo}): an svn site, which dk-web does not deploy; left out"));
            continue;
        }
        if !crate::names::RepoName::is_valid(&repo) {
            return Err(err(format!("{heading:?}: repo {repo:?} cannot be a site name: names are {}", crate::names::RULE)));
        }
        if !seen.insert(repo.clone()) {
            return Err(err(format!("{heading:?}: repo {repo:?} is listed twice; dk-web shows one site per repo (merge the entries by hand)")));
        }
        b.out.push_str(&format!("\n# grubby: {heading}\n[sites.{}]\nrepo = {}\n", key(&repo), q(&repo)));
        let payload = get(e, "payload");
        match (get(e, "filter").as_deref(), payload) {
            (None, _) => b.note(format!("{heading:?}: no filter: every server is selected")),
            (Some(_), None) => return Err(err(format!("{heading:?}: a filter needs a payload"))),
            (Some("identity_filter"), Some(p)) => b.out.push_str(&format!("identity = [{}]\n", q(&p))),
            (Some("class_filter"), Some(p)) => b.out.push_str(&format!("class = [{}]\n", q(&p))),
            (Some("fact_filter"), Some(p)) => {
                let (k, v) = p.split_once('=').ok_or_else(|| err(format!("{heading:?}: fact_filter payload {p:?} is not fact=value")))?;
                b.out.push_str(&format!("fact = {{ {} = {} }}\n", key(k.trim()), q(v.trim())));
            }
            (Some(f), _) => return Err(err(format!("{heading:?}: unknown filter {f:?} (identity_filter, class_filter or fact_filter)"))),
        }
        if let Some(t) = e.get(&Yaml::String("tags".into())) {
            match t {
                Yaml::Integer(n) if *n > 0 => b.out.push_str(&format!("tags = {n}\n")),
                _ => return Err(err(format!("{heading:?}: tags must be a positive number"))),
            }
        }
        b.out.push_str("deployers = []                                   # grubby: every authenticated user; list them, or [\"*\"]\n");
        for (k, v) in e {
            let k = scalar(k).unwrap_or_default();
            if !matches!(k.as_str(), "filter" | "payload" | "repo" | "tags" | "repo_type") {
                b.skipped(&k, v);
            }
        }
        sites += 1;
    }
    if sites == 0 {
        return Err(err("no git sites"));
    }
    b.note("nobody may deploy yet: list deployers per site (grubby let every authenticated user deploy: deployers = [\"*\"] keeps that)");
    let imported = b.finish();
    WebConfig::parse(&imported.toml).map_err(|e| err(format!("the imported configuration is refused: {e}")))?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grubby_sites_become_web_sites() {
        let yaml = "An example site:\n  filter: identity_filter\n  payload: '/tessen|lazon|ledonia|brax/'\n  repo: example_repo\n  tags: 10\n  repo_type: git\n\
                    A different site:\n  filter: fact_filter\n  payload: sitetype_externalfact=live\n  repo: different_repo\n  tags: 10\n  repo_type: git\n\
                    Old:\n  filter: class_filter\n  payload: svnweb\n  repo: oldsvn\n  repo_type: svn\n";
        let i = import_legacy(yaml, &ImportOptions::default()).unwrap();
        let c = WebConfig::parse(&i.toml).unwrap();
        assert_eq!(c.sites.len(), 2);
        let ex = c.site("example_repo").unwrap();
        assert_eq!((ex.tags, ex.filters.identity.clone()), (10, vec!["/tessen|lazon|ledonia|brax/".to_owned()]));
        assert_eq!(c.site("different_repo").unwrap().filters.fact.get("sitetype_externalfact").map(String::as_str), Some("live"));
        assert!(c.site("different_repo").unwrap().deployers.is_empty());
        assert!(i.notes.iter().any(|n| n.contains("oldsvn")), "{:?}", i.notes);
        let e = import_legacy("S:\n  filter: magic_filter\n  payload: x\n  repo: r\n", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("magic_filter"), "{e}");
    }
}
