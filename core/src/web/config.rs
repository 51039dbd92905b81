//! `web.toml`: where dk-web listens, who may do what, and which sites it shows.
//!
//! ```toml
//! listen = "127.0.0.1:8090"
//! public_url = "https://deploy.example.com"    # how browsers reach dk-web (behind a proxy); its Host and Origin are allowed
//! allowed_hosts = ["deploy.internal:8090"]     # further Host names (any port unless given) browsers may use
//! server_expiry = "1h"                         # servers not heard from for this long are forgotten
//! database = "/var/lib/deploykit/web.sqlite"   # deploy history (created if missing)
//! key_file = "/etc/deploykit/web.key"          # Ed25519 key the requests are signed with (dk-deploy keygen)
//! audit_log = "/var/log/deploykit/audit.log"   # optional: dk-deploy's JSON-lines audit log too
//! discovery_window = "2s"                      # how long to wait for servers to answer
//! server_timeout = "10m"                       # how long one server may take to deploy
//! wire = "json"                                # event lines' form; "legacy" also switches the two defaults below
//! events = ["/topic/deploykit.events"]         # the activity feed's destinations (legacy: each of LEGACY_EVENT_TOPICS)
//! activity_lines = 200
//! event_destination = "/topic/deploykit.events" # where dk-web's own event lines go (legacy: /topic/future.events.web)
//!
//! [broker]
//! url = "stomp://broker:61613"
//!
//! [destinations]                               # optional: where requests go and agents announce
//! deploy = "/topic/deploykit.deploy"
//! agents = "/topic/deploykit.agents"
//! # replies = "/topic/deploykit.reply.web"    # default: a private /temp-queue/ (set a topic only for brokers without them)
//! rollouts = "/topic/deploykit.rollouts"       # every controller's signed rollout records (History); dk-web publishes its own here
//!
//! [changes]                                  # the Changes page: every push and its journey
//! keep = 1000                                  # most pushes kept
//! max_age = "30d"                              # older ones are dropped
//! reconcile_after = "10m"                      # a push not fetched on every server after this long is flagged
//! destinations = ["/topic/deploykit.git.commits", "/topic/deploykit.builds", "/topic/deploykit.fetch"]
//!                                              # (legacy: future.git.commits, future.jenkins.success, future.jenkins.cake)
//!
//! [controllers]                                # whose rollout records History shows (dk-deploy users' keys, other dk-webs)
//! # ops = "ed25519:…"                          # this dk-web's own key is always trusted
//!
//! [trust]                                      # which agents are believed (reloaded on SIGHUP)
//! fleet_keys = ["ed25519:…"]                   # agents enrolled with `dk-deploy enroll` by this key
//! revoked_keys = []                            # never trusted, even with a certificate
//! [trust.agents]                               # or keys pinned per identity
//! # web01 = "ed25519:…"
//!
//! [api]                                        # the JSON API (/api/v1/…, docs/api.md)
//! tokens = "/etc/deploykit/web-tokens"         # bearer tokens, hashed (dk-web token add|list|revoke; reloaded on SIGHUP)
//!
//! [auth]
//! mode = "basic"                               # "basic" (htpasswd, bcrypt or argon2), "proxy" or "none" (loopback only)
//! htpasswd = "/etc/deploykit/web.htpasswd"
//! # mode = "proxy": header = "X-Remote-User", proxies = ["127.0.0.1", "10.0.0.0/8"] (required: no default)
//!
//! [sites.www]
//! repo = "www"                                 # shown on the page
//! class = ["web"]                              # selection filters: identity, class, fact
//! fact = { sitetype = "live" }
//! tags = 20                                    # tags and branches to show
//! deployers = ["alice", "bob"]                 # who may deploy ("*": everyone logged in); default nobody
//! canary = 1                                   # the deploy form's defaults
//! batch = "25%"
//! max_failures = 0
//! require_reason = false                       # true: a deploy or rollback must say why (kept in History)
//! require_build = "success"                    # deploy only tags whose commit's builds (heard on the bus) all passed
//! approvers = ["carol", "dan"]                 # a deploy waits until one of them (not its requester) approves it
//! approval_expiry = "1h"                       # an unapproved deploy lapses after this long
//! ```

pub use crate::config::ConfigError;
use crate::config::{parse_duration, BrokerSection};
use crate::deploy::controller::plan::BatchSize;
use crate::deploy::keys::PublicKey;
use crate::deploy::trust::{RawTrust, TrustConfig};
use crate::message::{Filters, Wire};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where dk-fetch publishes its results by default.
pub const FETCH_RESULTS: &str = "/topic/deploykit.fetch";

/// The activity feed's default with `wire = "legacy"`: the original daemons'
/// per-daemon event topics (legacy-wire.md) and deploykit's own legacy ones.
pub const LEGACY_EVENT_TOPICS: &[&str] = &[
    "/topic/future.events.gitolite",
    "/topic/future.events.svnserver",
    "/topic/future.events.jenkins",
    "/topic/future.events.stomp-git",
    "/topic/future.events.deploys",
    "/topic/future.events.repository",
    "/topic/future.events.git-hook",
    "/topic/future.events.svn-hook",
    "/topic/future.events.webhook",
    "/topic/future.events.apt-watch",
    "/topic/future.events.web",
];

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, why)
}

/// How users are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// HTTP Basic against an htpasswd file (bcrypt `$2y$`/`$2b$` or `$argon2id$` hashes).
    Basic {
        /// The htpasswd file.
        htpasswd: PathBuf,
        /// The realm the browser shows.
        realm: String,
    },
    /// A reverse proxy authenticates and names the user in `header`; trusted only from `proxies`.
    Proxy {
        /// The header (e.g. `X-Remote-User`).
        header: String,
        /// Addresses or CIDR networks of the proxies (never empty: there is no default).
        proxies: Vec<Network>,
    },
    /// Everyone is `user` (allowed only on a loopback listen address: demos).
    None {
        /// The user everyone is.
        user: String,
    },
}

/// An address or a CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Network {
    /// Parses `10.0.0.1`, `10.0.0.0/8` or `::1`.
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = s.trim().split_once('/').map(|(a, p)| (a, Some(p))).unwrap_or((s.trim(), None));
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| format!("{s:?}: prefix must be 0..={max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask(u32::from(n) as u128, 32, self.prefix) == mask(u32::from(a) as u128, 32, self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask(u128::from(n), 128, self.prefix) == mask(u128::from(a), 128, self.prefix),
            _ => false,
        }
    }
}

fn mask(v: u128, bits: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v >> (bits - prefix)
    }
}

/// One site as the web UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The site's name (as the agents know it).
    pub name: String,
    /// The repo, for display.
    pub repo: String,
    /// Which servers.
    pub filters: Filters,
    /// How many tags and branches to show.
    pub tags: usize,
    /// Users who may deploy and roll back (`*`: everyone authenticated).
    pub deployers: Vec<String>,
    /// The form's default canary count.
    pub canary: usize,
    /// The form's default batch size, as written.
    pub batch: String,
    /// The form's default failure limit.
    pub max_failures: usize,
    /// Deploys and rollbacks must say why (a reason or ticket, kept in History).
    pub require_reason: bool,
    /// Only tags whose commit's builds (heard on the bus) all passed may be deployed.
    pub require_build: bool,
    /// Users one of whom (never the requester) must approve a deploy before it is signed and sent; empty: none needed.
    pub approvers: Vec<String>,
    /// How long a deploy may wait for its approval.
    pub approval_expiry: Duration,
}

impl SiteConfig {
    /// Whether `user` may deploy this site.
    pub fn may_deploy(&self, user: &str) -> bool {
        self.deployers.iter().any(|d| d == "*" || d == user)
    }

    /// Whether `user` may approve a deploy of this site that `requester` asked for (never their own).
    pub fn may_approve(&self, user: &str, requester: &str) -> bool {
        user != requester && self.approvers.iter().any(|a| a == user)
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL browsers use to reach dk-web (e.g. behind a TLS proxy): its host is allowed and its origin may post.
    pub public_url: Option<url::Url>,
    /// Further `Host` names browsers may use, `name` or `name:port` (see [`super::hosts`]).
    pub allowed_hosts: Vec<String>,
    /// Known servers not heard from for this long are forgotten.
    pub server_expiry: Duration,
    /// The SQLite history database.
    pub database: PathBuf,
    /// The signing key (`None`: a fresh key per start, for demos and tests that pass one in).
    pub key_file: Option<PathBuf>,
    /// dk-deploy's audit log, appended to as well when set.
    pub audit_log: Option<PathBuf>,
    /// Discovery window.
    pub discovery_window: Duration,
    /// Per-server deploy timeout.
    pub server_timeout: Duration,
    /// The form of dk-web's own event lines (deploy requests and replies are signed JSON whatever this says).
    pub wire: Wire,
    /// Activity feed destinations.
    pub events: Vec<String>,
    /// Lines the activity feed keeps.
    pub activity_lines: usize,
    /// Where dk-web publishes its own event lines (deploy started, finished).
    pub event_destination: String,
    /// Deploy and agents destinations.
    pub deploy_destination: String,
    /// Where agents announce themselves.
    pub agents_destination: String,
    /// Where replies come (`None`: a private temporary queue per controller).
    pub reply_destination: Option<String>,
    /// Where rollout records go and come from.
    pub rollouts_destination: String,
    /// The Changes page's bounds.
    pub changes: super::changes::Bounds,
    /// Where pushes, builds and fetch results are heard (event lines come from `events`).
    pub change_destinations: Vec<String>,
    /// Controllers whose rollout records History stores, by name (this dk-web's own key is always trusted).
    pub controllers: BTreeMap<String, PublicKey>,
    /// Which agents are believed.
    pub trust: TrustConfig,
    /// The broker.
    pub broker: BrokerSection,
    /// Authentication.
    pub auth: AuthConfig,
    /// The API's tokens file (`[api] tokens`; `None`: every API request gets 401).
    pub api_tokens: Option<PathBuf>,
    /// Sites, in name order.
    pub sites: Vec<SiteConfig>,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        let d = crate::message::Destinations::default();
        WebConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            public_url: None,
            allowed_hosts: Vec::new(),
            server_expiry: Duration::from_secs(3600),
            database: PathBuf::from("/var/lib/deploykit/web.sqlite"),
            key_file: Some(PathBuf::from("/etc/deploykit/web.key")),
            audit_log: None,
            discovery_window: Duration::from_secs(2),
            server_timeout: Duration::from_secs(600),
            wire: Wire::Json,
            events: vec![d.events.clone()],
            activity_lines: 200,
            event_destination: d.events.clone(),
            deploy_destination: d.deploy,
            agents_destination: d.agents,
            reply_destination: None,
            rollouts_destination: d.rollouts,
            controllers: BTreeMap::new(),
            changes: super::changes::Bounds::default(),
            change_destinations: vec![d.commits.clone(), d.builds.clone(), FETCH_RESULTS.into()],
            trust: TrustConfig::default(),
            broker: toml::from_str("").expect("defaults"),
            auth: AuthConfig::Basic { htpasswd: PathBuf::from("/etc/deploykit/web.htpasswd"), realm: "deploykit".into() },
            api_tokens: None,
            sites: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    public_url: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    server_expiry: Option<String>,
    database: Option<PathBuf>,
    key_file: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    discovery_window: Option<String>,
    server_timeout: Option<String>,
    wire: Option<String>,
    events: Option<Vec<String>>,
    activity_lines: Option<usize>,
    event_destination: Option<String>,
    broker: Option<BrokerSection>,
    destinations: Option<RawDest>,
    controllers: Option<BTreeMap<String, String>>,
    changes: Option<RawChanges>,
    trust: Option<RawTrust>,
    auth: Option<RawAuth>,
    api: Option<RawApi>,
    #[serde(default)]
    sites: BTreeMap<String, RawSite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDest {
    deploy: Option<String>,
    agents: Option<String>,
    replies: Option<String>,
    rollouts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChanges {
    keep: Option<usize>,
    max_age: Option<String>,
    reconcile_after: Option<String>,
    destinations: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: String,
    htpasswd: Option<PathBuf>,
    realm: Option<String>,
    header: Option<String>,
    #[serde(alias = "trusted_proxies")]
    proxies: Option<Vec<String>>,
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    tokens: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    repo: Option<String>,
    #[serde(default)]
    identity: Vec<String>,
    #[serde(default)]
    class: Vec<String>,
    #[serde(default)]
    fact: BTreeMap<String, String>,
    tags: Option<usize>,
    #[serde(default)]
    deployers: Vec<String>,
    canary: Option<usize>,
    batch: Option<String>,
    max_failures: Option<usize>,
    #[serde(default)]
    require_reason: bool,
    require_build: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    approval_expiry: Option<String>,
}

fn duration(key: &str, v: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(&s).filter(|d| !d.is_zero()).ok_or_else(|| invalid(key, format!("{s:?} is not a duration such as 2s, 500ms or 10m"))),
    }
}

impl WebConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        WebConfig::parse(&crate::config::read(path)?).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text (errors name `<config>`; [`WebConfig::load`] names the file).
    pub fn parse(text: &str) -> Result<WebConfig, ConfigError> {
        let raw: Raw = crate::config::parse_toml(text)?;
        let mut c = WebConfig::default();
        if let Some(l) = raw.listen {
            c.listen = l.parse().map_err(|_| invalid("listen", format!("{l:?} is not an address such as 127.0.0.1:8090")))?;
        }
        if let Some(u) = raw.public_url {
            c.public_url = Some(super::hosts::parse_public_url(&u).map_err(|e| invalid("public_url", e))?);
        }
        if let Some(h) = raw.allowed_hosts {
            for name in &h {
                super::hosts::parse_allowed_host(name).map_err(|e| invalid("allowed_hosts", e))?;
            }
            c.allowed_hosts = h;
        }
        c.server_expiry = duration("server_expiry", raw.server_expiry, c.server_expiry)?;
        if let Some(d) = raw.database {
            c.database = d;
        }
        if raw.key_file.is_some() {
            c.key_file = raw.key_file;
        }
        c.audit_log = raw.audit_log;
        c.discovery_window = duration("discovery_window", raw.discovery_window, c.discovery_window)?;
        c.server_timeout = duration("server_timeout", raw.server_timeout, c.server_timeout)?;
        c.wire = crate::config::wire(raw.wire)?;
        if c.wire == Wire::Legacy {
            c.events = LEGACY_EVENT_TOPICS.iter().map(|t| (*t).to_owned()).collect();
            c.event_destination = "/topic/future.events.web".into();
        }
        if c.wire == Wire::Legacy {
            let l = crate::message::Destinations::legacy();
            c.change_destinations = [Some(l.commits), Some(l.builds), l.builds_failed].into_iter().flatten().collect();
        }
        if let Some(ch) = raw.changes {
            if let Some(n) = ch.keep {
                if n == 0 || n > 1_000_000 {
                    return Err(invalid("changes.keep", "must be 1 to 1000000"));
                }
                c.changes.keep = n;
            }
            c.changes.max_age = duration("changes.max_age", ch.max_age, c.changes.max_age)?;
            c.changes.reconcile_after = duration("changes.reconcile_after", ch.reconcile_after, c.changes.reconcile_after)?;
            if let Some(d) = ch.destinations {
                if let Some(bad) = d.iter().find(|d| !d.starts_with('/')) {
                    return Err(invalid("changes.destinations", format!("{bad:?} is not a destination (/topic/… or /queue/…)")));
                }
                c.change_destinations = d;
            }
        }
        if let Some(e) = raw.events {
            if let Some(bad) = e.iter().find(|d| !d.starts_with('/')) {
                return Err(invalid("events", format!("{bad:?} is not a destination (/topic/… or /queue/…)")));
            }
            c.events = e;
        }
        if let Some(d) = raw.event_destination {
            if !d.starts_with('/') {
                return Err(invalid("event_destination", format!("{d:?} is not a destination (/topic/… or /queue/…)")));
            }
            c.event_destination = d;
        }
        if let Some(n) = raw.activity_lines {
            c.activity_lines = n.clamp(1, 10_000);
        }
        if let Some(b) = raw.broker {
            c.broker = b;
        }
        if let Some(d) = raw.destinations {
            c.deploy_destination = d.deploy.unwrap_or(c.deploy_destination);
            c.agents_destination = d.agents.unwrap_or(c.agents_destination);
            if let Some(r) = d.replies {
                if !r.starts_with('/') {
                    return Err(invalid("destinations.replies", format!("{r:?} is not a destination (/topic/… or /temp-queue/…)")));
                }
                c.reply_destination = Some(r);
            }
            if let Some(r) = d.rollouts {
                if !r.starts_with('/') {
                    return Err(invalid("destinations.rollouts", format!("{r:?} is not a destination (/topic/…)")));
                }
                c.rollouts_destination = r;
            }
        }
        for (name, text) in raw.controllers.unwrap_or_default() {
            if !crate::names::RepoName::is_valid(&name) {
                return Err(invalid(&format!("controllers.{name}"), format!("key names are {}", crate::names::RULE)));
            }
            let key = PublicKey::parse(&text).map_err(|e| invalid(&format!("controllers.{name}"), e.to_string()))?;
            c.controllers.insert(name, key);
        }
        if let Some(t) = raw.trust {
            c.trust = t.resolve("trust.")?;
        }
        c.api_tokens = raw.api.and_then(|a| a.tokens);
        if let Some(a) = raw.auth {
            c.auth = match a.mode.as_str() {
                "basic" => AuthConfig::Basic {
                    htpasswd: a.htpasswd.ok_or_else(|| invalid("auth.htpasswd", "mode \"basic\" needs an htpasswd file"))?,
                    realm: a.realm.unwrap_or_else(|| "deploykit".into()),
                },
                "proxy" => {
                    let header = a.header.unwrap_or_else(|| "X-Remote-User".into());
                    axum::http::HeaderName::try_from(header.as_str()).map_err(|_| invalid("auth.header", format!("{header:?} is not a header name")))?;
                    let proxies = a.proxies.filter(|p| !p.is_empty()).ok_or_else(|| {
                        invalid(
                            "auth.proxies",
                            "mode \"proxy\" needs the addresses of the proxies allowed to name the user, e.g. proxies = [\"127.0.0.1\"] when the proxy runs on this machine \
                             (there is no default: any local process could otherwise send the header)",
                        )
                    })?;
                    let proxies = proxies.iter().map(|p| Network::parse(p)).collect::<Result<Vec<_>, _>>().map_err(|e| invalid("auth.proxies", e))?;
                    AuthConfig::Proxy { header, proxies }
                }
                "none" => AuthConfig::None { user: a.user.unwrap_or_else(|| "anonymous".into()) },
                other => return Err(invalid("auth.mode", format!("{other:?}: expected \"basic\", \"proxy\" or \"none\""))),
            };
        }
        for (name, s) in raw.sites {
            let key = |k: &str| format!("sites.{name}.{k}");
            crate::names::RepoName::parse(&name).map_err(|e| invalid(&format!("sites.{name}"), e.to_string()))?;
            let filters = Filters { identity: s.identity, class: s.class, fact: s.fact };
            crate::deploy::filters::validate(&filters).map_err(|e| invalid(&key("identity"), e.to_string()))?;
            let batch = s.batch.unwrap_or_else(|| "1".into());
            batch.parse::<BatchSize>().map_err(|e| invalid(&key("batch"), e))?;
            if let Some(bad) = s.approvers.iter().find(|a| a.is_empty() || a.as_str() == "*" || a.chars().any(char::is_control)) {
                return Err(invalid(&key("approvers"), format!("{bad:?}: list the users by name (\"*\" is not allowed: an approver is a second, named person)")));
            }
            if let ([one], [only]) = (s.approvers.as_slice(), s.deployers.as_slice()) {
                if one == only {
                    return Err(invalid(&key("approvers"), format!("{one} is the one approver and the one deployer: nobody could approve (nobody approves their own deploys)")));
                }
            }
            c.sites.push(SiteConfig {
                repo: s.repo.unwrap_or_else(|| name.clone()),
                filters,
                tags: s.tags.unwrap_or(20).clamp(1, 1000),
                deployers: s.deployers,
                canary: s.canary.unwrap_or(1),
                batch,
                max_failures: s.max_failures.unwrap_or(0),
                require_reason: s.require_reason,
                require_build: match s.require_build.as_deref() {
                    None => false,
                    Some("success") => true,
                    Some(other) => return Err(invalid(&key("require_build"), format!("{other:?}: the one value is \"success\" (leave it out to deploy any tag)"))),
                },
                approval_expiry: duration(&key("approval_expiry"), s.approval_expiry, Duration::from_secs(3600))?,
                approvers: s.approvers,
                name,
            });
        }
        c.validate()?;
        Ok(c)
    }

    /// The checks across keys, to run again after a command line changed `listen`:
    /// `auth = "none"` only on loopback, a proxy list for `auth = "proxy"`, and
    /// `public_url` or `allowed_hosts` when listening on every address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.auth {
            AuthConfig::None { .. } if !self.listen.ip().is_loopback() => return Err(invalid("auth.mode", "\"none\" is allowed only on a loopback listen address")),
            AuthConfig::Proxy { proxies, .. } if proxies.is_empty() => {
                return Err(invalid("auth.proxies", "mode \"proxy\" needs the addresses of the proxies (there is no default)"))
            }
            _ => {}
        }
        if self.listen.ip().is_unspecified() && self.public_url.is_none() && self.allowed_hosts.is_empty() {
            return Err(invalid(
                "listen",
                format!(
                    "{} accepts connections on every address, so dk-web cannot tell which Host names are its own: \
                     set public_url = \"https://deploy.example.com\" (the URL browsers use) or allowed_hosts = [\"deploy.example.com\"], or listen on one address",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// The site called `name`.
    pub fn site(&self, name: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_wire_switches_the_event_defaults() {
        let c = WebConfig::parse("").unwrap();
        assert_eq!((c.wire, c.event_destination.as_str(), c.events.clone()), (Wire::Json, "/topic/deploykit.events", vec!["/topic/deploykit.events".to_owned()]));
        let c = WebConfig::parse("wire = \"legacy\"\n").unwrap();
        assert_eq!((c.wire, c.event_destination.as_str()), (Wire::Legacy, "/topic/future.events.web"));
        assert!(c.events.iter().any(|e| e == "/topic/future.events.deploys") && c.events.len() == LEGACY_EVENT_TOPICS.len());
        let c = WebConfig::parse("wire = \"legacy\"\nevents = [\"/topic/x\"]\nevent_destination = \"/topic/y\"\n").unwrap();
        assert_eq!((c.events, c.event_destination), (vec!["/topic/x".to_owned()], "/topic/y".to_owned()), "given settings win");
    }

    #[test]
    fn the_shipped_example_parses() {
        let c = WebConfig::parse(include_str!("../../../examples/web.toml")).unwrap();
        assert_eq!(c.sites[0].name, "www");
        assert_eq!(c.sites[0].deployers, ["ann", "bob"]);
        assert!(matches!(c.auth, AuthConfig::Basic { .. }));
    }

    #[test]
    fn full_example_and_errors() {
        let c = WebConfig::parse(
            "listen = \"127.0.0.1:0\"\ndatabase = \"/tmp/x.sqlite\"\nevents = [\"/topic/future.events.fetch\"]\n\
             [auth]\nmode = \"proxy\"\nproxies = [\"10.0.0.0/8\", \"::1\"]\n\
             [sites.www]\nclass = [\"web\"]\ndeployers = [\"ann\"]\nbatch = \"25%\"\n",
        )
        .unwrap();
        assert_eq!(c.sites[0].name, "www");
        assert_eq!(c.sites[0].repo, "www");
        assert!(c.sites[0].may_deploy("ann") && !c.sites[0].may_deploy("bob"));
        let AuthConfig::Proxy { header, proxies } = &c.auth else { panic!() };
        assert_eq!(header, "X-Remote-User");
        assert!(proxies[0].contains("10.1.2.3".parse().unwrap()) && !proxies[0].contains("11.0.0.1".parse().unwrap()));
        assert!(proxies[0].contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(proxies[1].contains("::1".parse().unwrap()));
        let c = WebConfig::parse(
            "listen = \"0.0.0.0:8090\"\npublic_url = \"https://Deploy.Example.com/\"\nserver_expiry = \"10m\"\n[auth]\nmode = \"proxy\"\ntrusted_proxies = [\"10.0.0.1\"]",
        )
        .unwrap();
        assert_eq!(c.public_url.unwrap().as_str(), "https://deploy.example.com/");
        assert_eq!(c.server_expiry, Duration::from_secs(600));
        let mut c = WebConfig::parse("[auth]\nmode = \"none\"").unwrap();
        c.listen = "0.0.0.0:8090".parse().unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("loopback"));
        for (bad, want) in [
            ("listen = \"nope\"", "listen"),
            ("[auth]\nmode = \"kerberos\"", "auth.mode"),
            ("[auth]\nmode = \"basic\"", "auth.htpasswd"),
            ("listen = \"0.0.0.0:80\"\n[auth]\nmode = \"none\"", "loopback"),
            ("[sites.www]\nbatch = \"0\"", "sites.www.batch"),
            ("[sites.www]\nrequire_build = \"green\"", "sites.www.require_build"),
            ("[sites.www]\napprovers = [\"*\"]", "sites.www.approvers"),
            ("[sites.www]\ndeployers = [\"ann\"]\napprovers = [\"ann\"]", "nobody could approve"),
            ("[sites.www]\napprovers = [\"bob\"]\napproval_expiry = \"soon\"", "sites.www.approval_expiry"),
            ("[changes]\nkeep = 0", "changes.keep"),
            ("[changes]\nreconcile_after = \"soon\"", "changes.reconcile_after"),
            ("[changes]\ndestinations = [\"topic\"]", "changes.destinations"),
            ("[controllers]\nops = \"ed25519:nope\"", "controllers.ops"),
            ("[destinations]\nrollouts = \"x\"", "destinations.rollouts"),
            ("[sites.www]\nidentity = [\"/(/\"]", "sites.www.identity"),
            ("discovery_window = \"soon\"", "discovery_window"),
            ("events = [\"future.events\"]", "events"),
            ("colour = 1", "unknown field"),
            ("[auth]\nmode = \"proxy\"", "auth.proxies"),
            ("[auth]\nmode = \"proxy\"\nproxies = []", "auth.proxies"),
            ("listen = \"0.0.0.0:8090\"", "public_url"),
            ("listen = \"[::]:8090\"", "allowed_hosts"),
            ("public_url = \"ftp://deploy.example.com\"", "public_url"),
            ("public_url = \"deploy.example.com\"", "public_url"),
            ("allowed_hosts = [\"evil.example/x\"]", "allowed_hosts"),
            ("server_expiry = \"never\"", "server_expiry"),
        ] {
            let e = WebConfig::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
