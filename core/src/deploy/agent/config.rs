//! `agent.toml`: who this agent is, which keys it trusts, and its sites.
//!
//! ```toml
//! identity = "web01"            # default: the host name
//! classes = ["web"]
//! facts = { sitetype = "live" }
//!
//! enrollment = "/etc/deploykit/agent.cert"   # from `dk-deploy enroll` (optional)
//! wire = "json"                 # event lines' form; "legacy": the original's text on future.events.deploys
//!
//! [trusted_keys]
//! ops = "ed25519:…"             # names used by the sites' policies
//!
//! [sites.www]
//! repo = "/srv/git/www"         # local clone, kept fresh by dk-fetch
//! releases = "/srv/releases/www"
//! current = "/srv/www/current"  # or links = [{ target = "…", path = "htdocs" }]
//! hooks = "/etc/deploykit/hooks/www"
//! deploy = ["ops"]              # keys that may deploy (default: none)
//! ```

pub use crate::config::ConfigError;
use crate::config::{BrokerSection, RawDuration};
use crate::deploy::keys::PublicKey;
use crate::message::publisher::Destinations;
use crate::message::Wire;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A link re-pointed at each deploy: `target` becomes a symlink to `RELEASE/path`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The repo this link belongs to (must be the site's own; kept for bloatagent configs).
    #[serde(default)]
    pub repo: Option<String>,
    /// The symlink to (re)point, absolute.
    pub target: PathBuf,
    /// The directory inside the release it points at (default: the release itself).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// A link to non-versioned data: `target` (relative: inside each release; absolute: once) → `source`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLink {
    /// The data directory, absolute.
    pub source: PathBuf,
    /// Where the link goes.
    pub target: PathBuf,
}

/// One `[sites.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The local clone.
    pub repo: PathBuf,
    /// The repo's name (`REPO` in `REPO_TAG` release directories).
    pub repo_name: String,
    /// One directory per deployed tag.
    pub releases: PathBuf,
    /// The links re-pointed at each deploy, in order (`current` is one link to the release root).
    pub links: Vec<Link>,
    /// Links to non-versioned data.
    pub user_links: Vec<UserLink>,
    /// Where `pre-deploy`, `pre-link` and `post-deploy` live.
    pub hooks: Option<PathBuf>,
    /// Longest a hook or the checkout may run.
    pub step_timeout: Duration,
    /// Good releases kept (the live one and the previous good one are never removed).
    pub keep_releases: usize,
    /// Run hooks as this user.
    pub user: Option<String>,
    /// Put the previous release back when post-deploy fails.
    pub rollback_on_post_failure: bool,
    /// Key names that may deploy.
    pub deploy: Vec<String>,
    /// Key names that may roll back (default: `deploy`).
    pub rollback: Vec<String>,
    /// The health gate after post-deploy ([`super::health`]).
    pub health: Option<super::health::HealthCheck>,
}

/// Requests an agent handles at once unless `max_concurrent_requests` says otherwise.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The name this agent answers to.
    pub identity: String,
    /// Classes for selection.
    pub classes: Vec<String>,
    /// Facts for selection.
    pub facts: BTreeMap<String, String>,
    /// Trusted public keys by name.
    pub trusted_keys: BTreeMap<String, PublicKey>,
    /// Accept unsigned requests (only by explicit configuration).
    pub allow_unsigned: bool,
    /// Requests valid for longer than this are refused (bounds the replay cache).
    pub max_request_validity: Duration,
    /// Requests handled at once (default 64); beyond it the agent stops reading until one finishes.
    pub max_concurrent_requests: usize,
    /// Replay cache, identity key and other agent state.
    pub state_dir: PathBuf,
    /// The enrollment certificate sent with every reply and announcement.
    pub enrollment: Option<PathBuf>,
    /// The broker.
    pub broker: BrokerSection,
    /// The form of the event lines (`legacy`: the original's `git-agent on HOST …` text).
    /// Requests, replies and announcements are signed JSON whatever this says.
    pub wire: Wire,
    /// Where requests, announcements and events go (default: [`Destinations::legacy`] with `wire = "legacy"`).
    pub destinations: Destinations,
    /// The sites, by name.
    pub sites: BTreeMap<String, SiteConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    identity: Option<String>,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    facts: BTreeMap<String, String>,
    #[serde(default)]
    trusted_keys: BTreeMap<String, String>,
    #[serde(default)]
    allow_unsigned: bool,
    max_request_validity: Option<RawDuration>,
    max_concurrent_requests: Option<usize>,
    state_dir: Option<PathBuf>,
    enrollment: Option<PathBuf>,
    #[serde(default)]
    broker: BrokerSection,
    wire: Option<String>,
    destinations: Option<Destinations>,
    #[serde(default)]
    sites: BTreeMap<String, RawSite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    repo: PathBuf,
    releases: PathBuf,
    current: Option<PathBuf>,
    #[serde(default)]
    links: Vec<Link>,
    #[serde(default)]
    user_links: Vec<UserLink>,
    hooks: Option<PathBuf>,
    step_timeout: Option<RawDuration>,
    keep_releases: Option<usize>,
    user: Option<String>,
    #[serde(default)]
    rollback_on_post_failure: bool,
    #[serde(default)]
    deploy: Vec<String>,
    rollback: Option<Vec<String>>,
    health: Option<super::health::RawHealth>,
}

/// Whether `name` is a usable site or key name: the one rule of [`crate::names`].
pub fn valid_name(name: &str) -> bool {
    crate::names::RepoName::is_valid(name)
}

impl AgentConfig {
    /// Checks this machine against the configuration: the state directory can be
    /// created or written, and the enrollment certificate (if any) is readable and
    /// matches the agent's key once it has one.
    pub fn check(&self) -> Vec<crate::config::Problem> {
        use crate::config::Problem;
        let mut out = Vec::new();
        if let Err(e) = crate::config::creatable_dir(&self.state_dir) {
            out.push(Problem::new("state_dir", e));
        }
        if let Some(p) = &self.enrollment {
            if crate::deploy::identity::key_path(&self.state_dir).exists() {
                if let Err(e) = crate::deploy::identity::AgentIdentity::load(&self.identity, &self.state_dir, Some(p)) {
                    out.push(Problem::new("enrollment", e.to_string()));
                }
            }
        }
        // What `parse` compares as written, compared here as resolved (symlinks followed).
        let resolved = self.sites.iter().filter_map(|(n, s)| s.releases.canonicalize().ok().map(|p| (n, p)));
        for ((a, pa), (b, pb)) in nested_pairs(resolved.collect()) {
            let message =
                format!("resolves to {}, which shares a directory with sites.{a}.releases ({}): pruning one site's releases would delete the other's", pb.display(), pa.display());
            out.push(Problem::new(format!("sites.{b}.releases"), message));
        }
        out
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(&crate::config::read(path)?).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text (errors name `<config>`; [`AgentConfig::load`] names the file).
    pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let raw: Raw = crate::config::parse_toml(text)?;
        let invalid = |key: String, message: String| ConfigError::invalid(key, message);
        let mut trusted_keys = BTreeMap::new();
        for (name, text) in raw.trusted_keys {
            if !valid_name(&name) {
                return Err(invalid(format!("trusted_keys.{name}"), format!("key names are {}", crate::names::RULE)));
            }
            let key = PublicKey::parse(&text).map_err(|e| invalid(format!("trusted_keys.{name}"), e.to_string()))?;
            trusted_keys.insert(name, key);
        }
        let duration = |key: String, d: Option<RawDuration>, default: Duration| -> Result<Duration, ConfigError> { d.map_or(Ok(default), |d| d.resolve(&key)) };
        let mut sites = BTreeMap::new();
        for (name, s) in raw.sites {
            let key = |k: &str| format!("sites.{name}.{k}");
            if !valid_name(&name) {
                return Err(invalid(format!("sites.{name}"), format!("site names are {}", crate::names::RULE)));
            }
            for (k, p) in [("repo", Some(&s.repo)), ("releases", Some(&s.releases)), ("current", s.current.as_ref()), ("hooks", s.hooks.as_ref())] {
                if let Some(p) = p {
                    if !p.is_absolute() {
                        return Err(invalid(key(k), format!("{}: must be an absolute path", p.display())));
                    }
                }
            }
            let repo_name = crate::git::repo_name(&s.repo);
            let mut links = Vec::new();
            if let Some(current) = s.current {
                links.push(Link { repo: None, target: current, path: None });
            }
            for (i, l) in s.links.into_iter().enumerate() {
                let k = format!("sites.{name}.links[{i}]");
                if let Some(r) = &l.repo {
                    if *r != repo_name && *r != name {
                        return Err(invalid(k, format!("repo = {r:?}: a site deploys one repo ({repo_name}); configure another site for {r}")));
                    }
                }
                if !l.target.is_absolute() {
                    return Err(invalid(k, format!("target {}: must be an absolute path", l.target.display())));
                }
                if let Some(p) = &l.path {
                    if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                        return Err(invalid(k, format!("path {}: must be relative to the release, without ..", p.display())));
                    }
                }
                links.push(l);
            }
            if links.is_empty() {
                return Err(invalid(format!("sites.{name}"), "no `current` and no `links`: nothing would make a release live".into()));
            }
            for (i, u) in s.user_links.iter().enumerate() {
                let k = format!("sites.{name}.user_links[{i}]");
                if !u.source.is_absolute() {
                    return Err(invalid(k, format!("source {}: must be an absolute path", u.source.display())));
                }
                if u.target.is_relative() && u.target.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                    return Err(invalid(k, format!("target {}: a relative target must stay inside the release", u.target.display())));
                }
            }
            for policy in [&s.deploy, s.rollback.as_ref().unwrap_or(&s.deploy)] {
                for k in policy {
                    if !(trusted_keys.contains_key(k) || raw.allow_unsigned && k == "unsigned") {
                        return Err(invalid(key("deploy"), format!("key {k:?} is not in [trusted_keys]")));
                    }
                }
            }
            let keep = s.keep_releases.unwrap_or(5);
            if keep < 2 {
                return Err(invalid(key("keep_releases"), "must be at least 2 (the live release and the previous good one)".into()));
            }
            sites.insert(
                name.clone(),
                SiteConfig {
                    repo: s.repo,
                    repo_name,
                    releases: s.releases,
                    links,
                    user_links: s.user_links,
                    hooks: s.hooks,
                    step_timeout: duration(key("step_timeout"), s.step_timeout, Duration::from_secs(300))?,
                    keep_releases: keep,
                    user: s.user,
                    rollback_on_post_failure: s.rollback_on_post_failure,
                    rollback: s.rollback.unwrap_or_else(|| s.deploy.clone()),
                    health: s.health.map(|h| h.resolve(&key("health"))).transpose()?,
                    deploy: s.deploy,
                },
            );
        }
        overlapping_releases(&sites)?;
        let wire = crate::config::wire(raw.wire)?;
        let destinations = raw.destinations.unwrap_or_else(|| if wire == Wire::Legacy { Destinations::legacy() } else { Destinations::default() });
        let identity = raw.identity.unwrap_or_else(crate::sys::hostname);
        if identity.is_empty() || identity.len() > 255 || identity.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
            return Err(invalid("identity".into(), format!("{identity:?}: must be a non-empty name without spaces or '/' (a -I /regex/ must not match it literally)")));
        }
        Ok(AgentConfig {
            identity,
            classes: raw.classes,
            facts: raw.facts,
            trusted_keys,
            allow_unsigned: raw.allow_unsigned,
            max_request_validity: duration("max_request_validity".into(), raw.max_request_validity, Duration::from_secs(3600))?,
            max_concurrent_requests: match raw.max_concurrent_requests {
                None => DEFAULT_MAX_CONCURRENT_REQUESTS,
                Some(n) if (1..=10_000).contains(&n) => n,
                Some(n) => return Err(invalid("max_concurrent_requests".into(), format!("{n}: must be 1 to 10000"))),
            },
            state_dir: raw.state_dir.unwrap_or_else(|| PathBuf::from("/var/lib/deploykit/agent")),
            enrollment: raw.enrollment,
            broker: raw.broker,
            wire,
            destinations,
            sites,
        })
    }

    /// The name of the trusted key `key`, if trusted.
    pub fn key_name(&self, key: &PublicKey) -> Option<&str> {
        self.trusted_keys.iter().find(|(_, k)| *k == key).map(|(n, _)| n.as_str())
    }
}

/// Refuses two sites whose releases directories are the same or one inside the
/// other: pruning one site's old releases would delete the other's, live ones too.
/// Compared as written (absolute, `.` and repeated `/` ignored); [`AgentConfig::check`] compares them resolved.
fn overlapping_releases(sites: &BTreeMap<String, SiteConfig>) -> Result<(), ConfigError> {
    let written = sites.iter().map(|(n, s)| (n, s.releases.components().collect::<PathBuf>())).collect();
    if let Some(((a, da), (b, db))) = nested_pairs(written).into_iter().next() {
        let how = if da == db { "the same directory" } else { "one inside the other" };
        return Err(ConfigError::invalid(
            format!("sites.{b}.releases"),
            format!("{} and sites.{a}.releases ({}) are {how}: pruning one site's releases would delete the other's; give each site its own", db.display(), da.display()),
        ));
    }
    Ok(())
}

/// A site's name and its releases directory.
type SiteDir<'a> = (&'a String, PathBuf);

/// The pairs of (site, directory) whose directories are the same or one inside the other.
fn nested_pairs(dirs: Vec<SiteDir<'_>>) -> Vec<(SiteDir<'_>, SiteDir<'_>)> {
    let mut out = Vec::new();
    for (i, (a, da)) in dirs.iter().enumerate() {
        for (b, db) in &dirs[i + 1..] {
            if da.starts_with(db) || db.starts_with(da) {
                out.push(((*a, da.clone()), (*b, db.clone())));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_site_and_defaults() {
        let key = crate::deploy::keys::SecretKey::generate().unwrap().public();
        let c = AgentConfig::parse(&format!(
            "identity = \"web01\"\n[trusted_keys]\nops = \"{key}\"\n[sites.www]\nrepo = \"/srv/git/www.git\"\nreleases = \"/srv/rel\"\ncurrent = \"/srv/www\"\ndeploy = [\"ops\"]\n"
        ))
        .unwrap();
        let s = &c.sites["www"];
        assert_eq!(s.repo_name, "www");
        assert_eq!(s.keep_releases, 5);
        assert_eq!(s.rollback, vec!["ops".to_owned()]);
        assert_eq!(s.links.len(), 1);
        assert!(!c.allow_unsigned);
    }

    #[test]
    fn legacy_wire_switches_the_event_topic_default_only() {
        let site = "[sites.www]\nrepo = \"/r\"\nreleases = \"/x\"\ncurrent = \"/c\"\n";
        let c = AgentConfig::parse(site).unwrap();
        assert_eq!((c.wire, c.destinations.events_for("deploys")), (Wire::Json, "/topic/deploykit.events".to_owned()));
        let c = AgentConfig::parse(&format!("wire = \"legacy\"\n{site}")).unwrap();
        assert_eq!((c.wire, c.destinations.events_for("deploys")), (Wire::Legacy, "/topic/future.events.deploys".to_owned()));
        assert_eq!((c.destinations.deploy.as_str(), c.destinations.agents.as_str()), ("/topic/deploykit.deploy", "/topic/deploykit.agents"), "signed JSON stays put");
        let e = AgentConfig::parse(&format!("wire = \"xml\"\n{site}")).unwrap_err().to_string();
        assert!(e.contains("wire") && e.contains("xml"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = AgentConfig::parse("[sites.www]\nrepo = \"/r\"\nreleases = \"/x\"\ncurrent = \"/c\"\ndeploy = [\"nobody\"]\n").unwrap_err().to_string();
        assert!(e.contains("sites.www.deploy") && e.contains("nobody"), "{e}");
        for (a, b, how) in [("/srv/rel", "/srv/rel/", "the same"), ("/srv/rel", "/srv/./rel", "the same"), ("/srv/rel", "/srv/rel/shop", "one inside")] {
            let two = format!("[sites.www]\nrepo = \"/r\"\nreleases = \"{a}\"\ncurrent = \"/c\"\n[sites.shop]\nrepo = \"/r2\"\nreleases = \"{b}\"\ncurrent = \"/c2\"\n");
            let e = AgentConfig::parse(&two).unwrap_err().to_string();
            assert!(e.contains("releases") && e.contains(how), "{a} {b}: {e}");
        }
        // Through a symlink, only --check can tell.
        let dir = std::env::temp_dir().join(format!("dk-agent-releases-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("alias")).unwrap();
        let linked = format!(
            "state_dir = {:?}\n[sites.www]\nrepo = \"/r\"\nreleases = {:?}\ncurrent = \"/c\"\n[sites.shop]\nrepo = \"/r2\"\nreleases = {:?}\ncurrent = \"/c2\"\n",
            dir.join("state"),
            dir.join("real"),
            dir.join("alias")
        );
        let problems = AgentConfig::parse(&linked).unwrap().check();
        assert!(problems.iter().any(|p| p.key == "sites.www.releases" || p.key == "sites.shop.releases"), "{problems:?}");
        let _ = std::fs::remove_dir_all(&dir);
        let apart = "[sites.www]\nrepo = \"/r\"\nreleases = \"/srv/rel\"\ncurrent = \"/c\"\n[sites.shop]\nrepo = \"/r2\"\nreleases = \"/srv/release\"\ncurrent = \"/c2\"\n";
        assert_eq!(AgentConfig::parse(apart).unwrap().sites.len(), 2, "a common name prefix is not nesting");
        let e = AgentConfig::parse("[sites.www]\nrepo = \"r\"\nreleases = \"/x\"\ncurrent = \"/c\"\n").unwrap_err().to_string();
        assert!(e.contains("sites.www.repo") && e.contains("absolute"), "{e}");
        let e = AgentConfig::parse("[sites.www]\nrepo = \"/r\"\nreleases = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("nothing would make a release live"), "{e}");
        let e = AgentConfig::parse("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = AgentConfig::parse("[trusted_keys]\nops = \"ed25519:xx\"\n").unwrap_err().to_string();
        assert!(e.contains("trusted_keys.ops"), "{e}");
        let e = AgentConfig::parse("[sites.www]\nrepo = \"/r\"\nreleases = \"/x\"\ncurrent = \"/c\"\nuser_links = [{ source = \"/d\", target = \"../up\" }]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the release"), "{e}");
    }
}
