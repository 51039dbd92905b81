//! `webhook.toml`: where dk-webhook listens, which forges it serves, and where it publishes.
//!
//! ```toml
//! listen = "127.0.0.1:8088"
//! body_limit = "5MiB"                 # bytes, or with KiB/MiB suffix; larger bodies get 413
//! spool = "/var/spool/deploykit/webhook"
//! wire = "json"                       # or "legacy" (also switches the destination defaults)
//! event_source = "webhook"            # event lines go to the events topic of this source
//! publish_wait = "3s"                 # answer 200 if published within this, else 202 (spooled)
//! dedup_capacity = 10000              # delivery ids remembered against redeliveries
//!
//! [broker]
//! url = "stomp://broker:61613"
//! login = "dk-webhook"
//! passcode_file = "/etc/deploykit/passcode"
//!
//! [destinations]                      # optional, see message::Destinations
//! commits = "/topic/deploykit.git.commits"
//!
//! [github]
//! path = "/github"
//! secret_file = "/etc/deploykit/github.secret"   # or secret_env = "GITHUB_WEBHOOK_SECRET"
//! repo_name = "name"                  # or "full_name"
//! [github.repos]                      # explicit names by full name
//! "acme/website" = "site"
//!
//! [gitlab]
//! path = "/gitlab"
//! token_file = "/etc/deploykit/gitlab.token"     # or token_env
//!
//! [gitea]
//! path = "/gitea"
//! secret_file = "/etc/deploykit/gitea.secret"
//! ```
//!
//! A forge is served when its section is present (all three when none is).
//! Secrets are read from files or the environment, never from the config itself.

use crate::config::parse_duration;
pub use crate::config::{BrokerSection, ConfigError};
use crate::forge::signature::HookSecret;
use crate::forge::{Naming, RepoNameRule};
use crate::message::{Destinations, Wire};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, why)
}

/// The forges dk-webhook understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forge {
    /// GitHub (and GitHub Enterprise).
    Github,
    /// GitLab.
    Gitlab,
    /// Gitea and Forgejo.
    Gitea,
}

impl Forge {
    /// The lower-case name, also the default path without its `/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitlab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }
}

/// One forge's endpoint.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    /// Which forge.
    pub forge: Forge,
    /// The URL path it posts to.
    pub path: String,
    /// The HMAC secret (GitHub, Gitea) or token (GitLab); `None` accepts unsigned requests.
    pub secret: Option<HookSecret>,
    /// How repositories are named.
    pub naming: Naming,
}

/// The whole configuration, secrets loaded.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted body in bytes.
    pub body_limit: usize,
    /// Spool directory for messages not yet delivered.
    pub spool: PathBuf,
    /// Body format of what is published.
    pub wire: Wire,
    /// The `source` of event lines.
    pub event_source: String,
    /// How long a request waits for delivery before answering 202 instead of 200.
    pub publish_wait: Duration,
    /// How many delivery ids are remembered.
    pub dedup_capacity: usize,
    /// Where to publish.
    pub destinations: Destinations,
    /// The broker.
    pub broker: BrokerSection,
    /// The served forges.
    pub forges: Vec<ForgeConfig>,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            body_limit: 5 * 1024 * 1024,
            spool: PathBuf::from("/var/spool/deploykit/webhook"),
            wire: Wire::Json,
            event_source: "webhook".into(),
            publish_wait: Duration::from_secs(3),
            dedup_capacity: 10_000,
            destinations: Destinations::default(),
            broker: BrokerSection::default(),
            forges: [Forge::Github, Forge::Gitlab, Forge::Gitea]
                .into_iter()
                .map(|forge| ForgeConfig { forge, path: format!("/{}", forge.as_str()), secret: None, naming: Naming::default() })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    body_limit: Option<RawSize>,
    spool: Option<PathBuf>,
    wire: Option<String>,
    event_source: Option<String>,
    publish_wait: Option<String>,
    dedup_capacity: Option<usize>,
    destinations: Option<Destinations>,
    broker: Option<BrokerSection>,
    github: Option<RawForge>,
    gitlab: Option<RawForge>,
    gitea: Option<RawForge>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawForge {
    path: Option<String>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    repo_name: Option<RepoNameRule>,
    #[serde(default)]
    repos: BTreeMap<String, String>,
}

/// Parses `5242880`, `"512KiB"`, `"5MiB"`, `"5M"`.
fn parse_size(s: &RawSize) -> Option<usize> {
    match s {
        RawSize::Bytes(n) => usize::try_from(*n).ok(),
        RawSize::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let n: usize = t[..split].parse().ok()?;
            let mult = match t[split..].trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" | "kib" => 1024,
                "m" | "mb" | "mib" => 1024 * 1024,
                _ => return None,
            };
            n.checked_mul(mult)
        }
    }
}

/// Reads a secret from a file (first line) or an environment variable.
fn read_secret(key: &str, file: Option<&Path>, env: Option<&str>) -> Result<Option<HookSecret>, ConfigError> {
    let text = match (file, env) {
        (Some(_), Some(_)) => return Err(invalid(key, "give a file or an environment variable, not both")),
        (Some(f), None) => std::fs::read_to_string(f).map_err(|e| invalid(key, format!("cannot read {}: {e}", f.display())))?,
        (None, Some(var)) => std::env::var(var).map_err(|_| invalid(key, format!("environment variable {var} is not set")))?,
        (None, None) => return Ok(None),
    };
    let secret = text.lines().next().unwrap_or_default().trim_end_matches('\r');
    if secret.is_empty() {
        return Err(invalid(key, "the secret is empty"));
    }
    Ok(Some(HookSecret::new(secret.as_bytes().to_vec())))
}

impl WebhookConfig {
    /// Checks this machine against the configuration: the spool directory can be
    /// created or written (secrets are read, and so checked, when the config loads).
    pub fn check(&self) -> Vec<crate::config::Problem> {
        let mut out = Vec::new();
        if let Err(e) = crate::config::creatable_dir(&self.spool) {
            out.push(crate::config::Problem::new("spool", e));
        }
        out
    }

    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<WebhookConfig, ConfigError> {
        WebhookConfig::parse(&crate::config::read(path)?).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text, reading the secret files it names.
    pub fn parse(text: &str) -> Result<WebhookConfig, ConfigError> {
        let raw: RawConfig = crate::config::parse_toml(text)?;
        let mut c = WebhookConfig::default();
        if let Some(l) = raw.listen {
            c.listen = l.parse().map_err(|_| invalid("listen", format!("{l:?} is not an address such as 127.0.0.1:8088")))?;
        }
        if let Some(s) = &raw.body_limit {
            c.body_limit = parse_size(s).filter(|n| *n > 0).ok_or_else(|| invalid("body_limit", "expected a size such as 5MiB, 512KiB or a number of bytes"))?;
        }
        if let Some(s) = raw.spool {
            c.spool = s;
        }
        if let Some(w) = raw.wire {
            c.wire = w.parse().map_err(|_| invalid("wire", format!("unknown wire {w:?} (expected json or legacy)")))?;
        }
        c.destinations = match raw.destinations {
            Some(d) => d,
            None if c.wire == Wire::Legacy => Destinations::legacy(),
            None => Destinations::default(),
        };
        if let Some(s) = raw.event_source {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(invalid("event_source", format!("{s:?}: use letters, digits, - _ .")));
            }
            c.event_source = s;
        }
        if let Some(w) = raw.publish_wait {
            c.publish_wait = parse_duration(&w).ok_or_else(|| invalid("publish_wait", format!("{w:?} is not a duration such as 3s or 500ms")))?;
        }
        if let Some(n) = raw.dedup_capacity {
            c.dedup_capacity = n;
        }
        if let Some(b) = raw.broker {
            c.broker = b;
        }
        let sections = [(Forge::Github, raw.github), (Forge::Gitlab, raw.gitlab), (Forge::Gitea, raw.gitea)];
        let any = sections.iter().any(|(_, s)| s.is_some());
        c.forges.clear();
        for (forge, section) in sections {
            let section = match section {
                Some(s) => s,
                None if !any => RawForge::default(),
                None => continue,
            };
            let name = forge.as_str();
            let path = section.path.unwrap_or_else(|| format!("/{name}"));
            if !path.starts_with('/') || path == "/healthz" || path.contains(char::is_whitespace) {
                return Err(invalid(&format!("{name}.path"), format!("{path:?} must start with / and not be /healthz")));
            }
            if c.forges.iter().any(|f| f.path == path) {
                return Err(invalid(&format!("{name}.path"), format!("{path:?} is already used by another forge")));
            }
            let secret = match forge {
                Forge::Gitlab => {
                    if section.secret_file.is_some() || section.secret_env.is_some() {
                        return Err(invalid("gitlab", "GitLab uses a token: token_file or token_env"));
                    }
                    read_secret("gitlab.token_file", section.token_file.as_deref(), section.token_env.as_deref())?
                }
                _ => {
                    if section.token_file.is_some() || section.token_env.is_some() {
                        return Err(invalid(name, "this forge signs with a secret: secret_file or secret_env"));
                    }
                    read_secret(&format!("{name}.secret_file"), section.secret_file.as_deref(), section.secret_env.as_deref())?
                }
            };
            if forge == Forge::Gitlab && section.repo_name.is_some() {
                return Err(invalid("gitlab.repo_name", "GitLab repos are named by the repository URL (legacy rule) or by [gitlab.repos]"));
            }
            let naming = Naming { rule: section.repo_name.unwrap_or_default(), map: section.repos };
            c.forges.push(ForgeConfig { forge, path, secret, naming });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_all_three_forges() {
        let c = WebhookConfig::parse("").unwrap();
        assert_eq!(c.forges.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["/github", "/gitlab", "/gitea"]);
        assert_eq!(c.body_limit, 5 * 1024 * 1024);
        assert_eq!(c.destinations.commits, "/topic/deploykit.git.commits");
    }

    #[test]
    fn sections_select_forges_and_read_secrets() {
        let dir = std::env::temp_dir().join(format!("dk-webhook-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("gh.secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        let text = format!(
            "wire = \"legacy\"\nbody_limit = \"64KiB\"\n[github]\npath = \"/hooks/gh\"\nsecret_file = {:?}\nrepo_name = \"full_name\"\n[github.repos]\n\"acme/www\" = \"site\"\n",
            f.display().to_string()
        );
        let c = WebhookConfig::parse(&text).unwrap();
        assert_eq!(c.forges.len(), 1);
        assert_eq!(c.forges[0].path, "/hooks/gh");
        assert_eq!(c.forges[0].secret, Some(HookSecret::new("s3cret")));
        assert_eq!(c.forges[0].naming.rule, RepoNameRule::FullName);
        assert_eq!(c.body_limit, 65536);
        assert_eq!(c.destinations.commits, "/topic/future.git.commits");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_key() {
        let e = WebhookConfig::parse("listen = \"nowhere\"").unwrap_err();
        assert!(e.to_string().starts_with("<config>: listen:"), "{e}");
        let e = WebhookConfig::parse("[github]\nsecret_file = \"/nonexistent/dk\"").unwrap_err();
        assert!(e.to_string().starts_with("<config>: github.secret_file:"), "{e}");
        let e = WebhookConfig::parse("[gitlab]\nsecret_file = \"/x\"").unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        let e = WebhookConfig::parse("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = WebhookConfig::parse("[github]\npath = \"/x\"\n[gitea]\npath = \"/x\"").unwrap_err();
        assert!(e.to_string().starts_with("<config>: gitea.path"), "{e}");
    }
}
