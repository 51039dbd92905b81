//! `dk-agent --import-legacy FILE…`: the MCollective gitagent / bloatagent
//! files → `agent.toml`.
//!
//! The original agents read up to three kinds of file, each recognised by its keys:
//! - `/etc/git-agent/git-agent.yaml`: `rserver` + `stomp-options` and
//!   `report-topic` (the event lines' topic) → `[broker]`, `[destinations] events`;
//! - gitagent's `/etc/facts.d/facts.yaml`: per repo `repo_NAME` (the clone),
//!   `sitedir_NAME` (checked out in place) and `controldir_NAME` (the hooks),
//!   beside the server's other facts → `[sites.NAME]` and `facts`;
//! - bloatagent's `/etc/facts.d/SITE.yaml`: `repo-root`, `deploy-root`, `site-root`,
//!   `user-root`, `controldir`, `repo-list: [{name, target, base_tag}]` and
//!   `directorymap: [{source, target}]` → one `[sites.NAME]` per repo, releases in
//!   `deploy-root/NAME/NAME_TAG` (a directory per site: each holds its site's
//!   journal), the link at `site-root/target`, and the user-data links.
//!
//! No key is trusted by the import: `[trusted_keys]` and each site's `deploy`
//! are left for the operator (the original trusted MCollective's own security).

use super::config::AgentConfig;
use crate::config::ConfigError;
use crate::legacy::{broker_keys, err, get, key, load_yaml, looks_secret, q, scalar, topic, Builder, ImportOptions, Imported};
use std::path::Path;
use yaml_rust2::{yaml::Hash, Yaml};

/// One legacy file: its name without directory and extension (a bloatagent site's name) and its text.
#[derive(Debug, Clone)]
pub struct LegacyFile {
    /// The file's stem (`www` for `/etc/facts.d/www.yaml`).
    pub stem: String,
    /// Its content.
    pub text: String,
}

impl LegacyFile {
    /// Reads `path` (errors name it).
    pub fn read(path: &Path) -> Result<LegacyFile, ConfigError> {
        let text = crate::config::read(path)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(LegacyFile { stem, text })
    }
}

/// Converts the original agent's files into one `agent.toml` (checked with [`AgentConfig::parse`]).
pub fn import_legacy(files: &[LegacyFile], options: &ImportOptions) -> Result<Imported, ConfigError> {
    let mut b = Builder::new("Imported from the MCollective gitagent/bloatagent files by dk-agent --import-legacy.", options);
    b.out.push_str("wire = \"legacy\"\n");
    let (mut broker, mut events, mut facts, mut sites) = (String::new(), None, Vec::new(), String::new());
    for f in files {
        let at = |e: ConfigError| match e {
            ConfigError::Legacy(m) => err(format!("{}: {m}", f.stem)),
            o => o,
        };
        let top = load_yaml(&f.text).map_err(at)?;
        let has = |k: &str| top.contains_key(&Yaml::String(k.into()));
        if has("repo-list") {
            sites.push_str(&bloat_site(&mut b, &f.stem, &top).map_err(at)?);
        } else if top.keys().any(|k| scalar(k).is_some_and(|k| k.starts_with("repo_"))) {
            sites.push_str(&gitagent_sites(&mut b, &top, &mut facts).map_err(at)?);
        } else if has("rserver") || has("report-topic") {
            if let Some(url) = get(&top, "rserver") {
                broker = broker_keys(&mut b, "rserver", &url, get(&top, "stomp-options").as_deref(), "passcode", "/etc/deploykit/passcode").map_err(at)?;
            }
            events = get(&top, "report-topic").map(|t| topic(&t));
            for (k, v) in &top {
                let k = scalar(k).unwrap_or_default();
                if !matches!(k.as_str(), "rserver" | "stomp-options" | "report-topic") {
                    b.skipped(&k, v);
                }
            }
        } else {
            return Err(err(format!("{}: not a git-agent.yaml (rserver), a gitagent facts.yaml (repo_NAME) or a bloatagent site file (repo-list)", f.stem)));
        }
    }
    if sites.is_empty() {
        return Err(err("no sites: give gitagent's facts.yaml or a bloatagent site file (/etc/facts.d/SITE.yaml)"));
    }
    if !facts.is_empty() {
        b.out.push_str(&format!("facts = {{ {} }}\n", facts.join(", ")));
    }
    if !broker.is_empty() {
        b.out.push_str(&format!("\n[broker]\n{broker}"));
    }
    if let Some(e) = events {
        b.out.push_str(&format!("\n[destinations]\nevents = {}\n", q(&e)));
    }
    b.out.push_str("\n# Keys allowed to sign deploy requests (dk-deploy keygen), then list them in each site's deploy = [...].\n[trusted_keys]\n");
    b.note("no key may deploy yet: add [trusted_keys] (dk-deploy keygen prints one) and deploy = [\"…\"] to each site");
    b.out.push_str(&sites);
    let imported = b.finish();
    AgentConfig::parse(&imported.toml).map_err(|e| err(format!("the imported configuration is refused: {e}")))?;
    Ok(imported)
}

fn site_name(name: &str, from: &str) -> Result<(), ConfigError> {
    if super::config::valid_name(name) {
        Ok(())
    } else {
        Err(err(format!("{from}: {name:?} cannot be a site name: names are {}", crate::names::RULE)))
    }
}

fn path_of(p: &str, what: &str) -> Result<String, ConfigError> {
    if p.starts_with('/') {
        Ok(p.trim_end_matches('/').to_owned())
    } else {
        Err(err(format!("{what}: {p:?} is not an absolute path")))
    }
}

/// gitagent's `facts.yaml`: a site per `repo_NAME`, the other facts as facts.
fn gitagent_sites(b: &mut Builder, top: &Hash, facts: &mut Vec<String>) -> Result<String, ConfigError> {
    let mut out = String::new();
    for (k, v) in top {
        let k = scalar(k).unwrap_or_default();
        if let Some(name) = k.strip_prefix("repo_") {
            site_name(name, &k)?;
            let repo = path_of(&scalar(v).ok_or_else(|| err(format!("{k}: expected a path")))?, &k)?;
            let sitedir = get(top, &format!("sitedir_{name}")).ok_or_else(|| err(format!("sitedir_{name}: missing (where {k} was checked out)")))?;
            let sitedir = path_of(&sitedir, &format!("sitedir_{name}"))?;
            out.push_str(&format!("\n[sites.{}]\nrepo = {}\n", key(name), q(&repo)));
            out.push_str(&format!("# gitagent checked out in place into {sitedir}; dk-agent makes it a symlink to the release.\n"));
            out.push_str(&format!("releases = {}\ncurrent = {}\n", q(&format!("/var/lib/deploykit/releases/{name}")), q(&sitedir)));
            if let Some(c) = get(top, &format!("controldir_{name}")) {
                out.push_str(&format!(
                    "hooks = {}                # pre-deploy.sh, pre-link.sh, post-deploy.sh are run as before\n",
                    q(&path_of(&c, &format!("controldir_{name}"))?)
                ));
            }
            out.push_str("deploy = []\n");
            b.note(format!(
                "site {name}: {sitedir} is a checked-out directory; before dk-agent's first deploy move it away (mv {sitedir} {sitedir}.gitagent) — dk-agent refuses to replace a real directory; releases go to /var/lib/deploykit/releases/{name}"
            ));
        } else if k.starts_with("sitedir_") || k.starts_with("controldir_") {
        } else {
            match scalar(v) {
                Some(val) if !looks_secret(&k) && super::config::valid_name(&k) && !val.contains('\n') => facts.push(format!("{} = {}", key(&k), q(&val))),
                _ => b.skipped(&k, v),
            }
        }
    }
    Ok(out)
}

/// bloatagent's `SITE.yaml`: one site per `repo-list` entry, the user-data links on the site's root repo.
fn bloat_site(b: &mut Builder, site: &str, top: &Hash) -> Result<String, ConfigError> {
    let need = |k: &str| get(top, k).ok_or_else(|| err(format!("missing {k}"))).and_then(|p| path_of(&p, k));
    let (repo_root, deploy_root, site_root) = (need("repo-root")?, need("deploy-root")?, need("site-root")?);
    let hooks = get(top, "controldir").map(|c| path_of(&c, "controldir")).transpose()?;
    let Some(Yaml::Array(repos)) = top.get(&Yaml::String("repo-list".into())) else {
        return Err(err("repo-list: expected a list of {name, target, base_tag}"));
    };
    let mut maps = Vec::new();
    if let Some(m) = top.get(&Yaml::String("directorymap".into())) {
        let Yaml::Array(list) = m else {
            return Err(err("directorymap: expected a list of {source, target}"));
        };
        let user_root = need("user-root")?;
        for (i, e) in list.iter().enumerate() {
            let Yaml::Hash(e) = e else { return Err(err(format!("directorymap[{i}]: expected {{source, target}}"))) };
            let (Some(s), Some(t)) = (get(e, "source"), get(e, "target")) else {
                return Err(err(format!("directorymap[{i}]: needs source and target")));
            };
            if t.starts_with('/') || t.split('/').any(|c| c == "..") || s.split('/').any(|c| c == "..") {
                return Err(err(format!("directorymap[{i}]: source and target are relative, without ..")));
            }
            maps.push((format!("{user_root}/{s}"), t));
        }
    }
    // The user data lives under site-root/SITE: on the repo whose link that is, relative to its release.
    let root_repo = repos.iter().position(|r| matches!(r, Yaml::Hash(h) if get(h, "target").as_deref() == Some(site)));
    let mut out = String::new();
    for (i, r) in repos.iter().enumerate() {
        let Yaml::Hash(r) = r else { return Err(err(format!("repo-list[{i}]: expected {{name, target, base_tag}}"))) };
        let name = get(r, "name").ok_or_else(|| err(format!("repo-list[{i}]: missing name")))?;
        site_name(&name, &format!("repo-list[{i}].name"))?;
        let target = get(r, "target").ok_or_else(|| err(format!("repo-list[{i}]: missing target")))?;
        if target.starts_with('/') || target.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(err(format!("repo-list[{i}].target: {target:?} must be a path relative to site-root, without ..")));
        }
        // One releases directory per site: each holds that site's journal (bloatagent's own
        // NAME_TAG directories in deploy-root stay as they are, for a rollback).
        out.push_str(&format!(
            "\n# bloatagent site {site}, repo {name} (its releases were {deploy_root}/{name}_TAG)\n[sites.{}]\nrepo = {}\nreleases = {}\n",
            key(&name),
            q(&format!("{repo_root}/{name}")),
            q(&format!("{deploy_root}/{name}"))
        ));
        out.push_str(&format!("links = [{{ target = {} }}]\n", q(&format!("{site_root}/{target}"))));
        let here = root_repo == Some(i) || (root_repo.is_none() && i == 0);
        if here && !maps.is_empty() {
            let links: Vec<String> = maps
                .iter()
                .map(|(s, t)| {
                    let t = if root_repo.is_some() { t.clone() } else { format!("{site_root}/{site}/{t}") };
                    format!("{{ source = {}, target = {} }}", q(s), q(&t))
                })
                .collect();
            out.push_str(&format!("user_links = [{}]\n", links.join(", ")));
            if root_repo.is_none() {
                b.note(format!(
                    "{site}: no repo-list entry has target {site}: the directorymap links ({site_root}/{site}/…) were put on site {name} as absolute links; check them"
                ));
            }
        }
        if let Some(h) = &hooks {
            out.push_str(&format!("hooks = {}\n", q(h)));
        }
        if let Some(t) = get(r, "base_tag") {
            out.push_str(&format!("# base_tag {t}: what build_site linked; deploy it once with dk-deploy to take over the link\n"));
        }
        out.push_str("deploy = []\n");
    }
    if repos.len() > 1 {
        b.note(format!(
            "{site}: bloatagent re-linked all of a site's repos at every deploy; dk-agent deploys each repo as its own site: a link inside another repo's tree (a plugin) lives in that repo's release, so deploy the inner site again after each deploy of the outer one, and try both on one server first"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(stem: &str, text: &str) -> LegacyFile {
        LegacyFile { stem: stem.into(), text: text.into() }
    }

    #[test]
    fn bloatagent_and_git_agent_files_make_sites_and_a_broker() {
        let site = "site-root: /data/site\nrepo-root: /data/repo\ndeploy-root: /data/deploy\nuser-root: /data/user\n\
                    repo-list:\n  - name: wormpress\n    target: www.blah.com\n    base_tag: 3.4.1-future\n  - name: wp-tinymce-advanced\n    target: www.blah.com/wp-content/plugins/wp-tinymce-advanced\n\
                    controldir: /data/deploy/control\ndirectorymap:\n  - source: uploads\n    target: wp-content/uploads\n";
        let agent = "rserver: failover://(stomp://gituser:AgentPw5@broker01:61613)\nstomp-options: randomize=false\nreport-topic: future.events.deploys\n";
        let i = import_legacy(&[file("git-agent", agent), file("www.blah.com", site)], &ImportOptions::default()).unwrap();
        assert!(!i.toml.contains("AgentPw5") && !i.notes.iter().any(|n| n.contains("AgentPw5")), "{}", i.toml);
        let c = AgentConfig::parse(&i.toml).unwrap_or_else(|e| panic!("{e}\n{}", i.toml));
        let wp = &c.sites["wormpress"];
        assert_eq!((wp.repo.to_str(), wp.releases.to_str(), wp.repo_name.as_str()), (Some("/data/repo/wormpress"), Some("/data/deploy/wormpress"), "wormpress"));
        assert_eq!(wp.links[0].target.to_str(), Some("/data/site/www.blah.com"));
        assert_eq!((wp.user_links[0].source.to_str(), wp.user_links[0].target.to_str()), (Some("/data/user/uploads"), Some("wp-content/uploads")));
        assert!(c.sites["wp-tinymce-advanced"].user_links.is_empty());
        assert_eq!(c.destinations.events_for("deploys"), "/topic/future.events.deploys");
        assert_eq!(c.broker.login.as_deref(), Some("gituser"));
    }

    #[test]
    fn gitagent_facts_make_sites_and_facts() {
        let facts = "sitetype: live\ndb_password: FactPw8\nrepo_spog: /data/git/spog\nsitedir_spog: /data/www.spog.com\ncontroldir_spog: /data/control/spog\n";
        let i = import_legacy(&[file("facts", facts)], &ImportOptions::default()).unwrap();
        assert!(!i.toml.contains("FactPw8"), "{}", i.toml);
        let c = AgentConfig::parse(&i.toml).unwrap();
        assert_eq!(c.facts.get("sitetype").map(String::as_str), Some("live"));
        assert_eq!(c.sites["spog"].links[0].target.to_str(), Some("/data/www.spog.com"));
        assert!(i.notes.iter().any(|n| n.contains("mv /data/www.spog.com")), "{:?}", i.notes);
        let e = import_legacy(&[file("facts", "repo_x: /r\n")], &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("sitedir_x"), "{e}");
        let e = import_legacy(&[file("odd", "hello: world\n")], &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("odd: not a git-agent.yaml"), "{e}");
    }
}
