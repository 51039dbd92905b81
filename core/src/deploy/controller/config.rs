//! `deploy.toml`: dk-deploy's settings (broker, wire, destinations), so that a
//! fleet on its own topics need not pass flags on every call.
//!
//! Read from `/etc/deploykit/deploy.toml`, then the user's
//! `$XDG_CONFIG_HOME/deploykit/deploy.toml` (`~/.config/…` when unset): each key
//! the user's file sets overrides the system file's; command-line flags and
//! `DK_BROKER_URL` override both; `dk-deploy --config FILE` reads only FILE.
//! A `[broker]` with its own `url` is taken whole: it never inherits the other
//! file's `login` or `passcode_file` (credentials stay with their broker).
//!
//! ```toml
//! wire = "legacy"                     # the defaults of agents with the same wire (requests stay signed JSON)
//!
//! [broker]
//! url = "failover:(stomp://mq1:61613,stomp://mq2:61613)?randomize=false"
//! vhost = "/"
//! login = "deploy"
//! passcode_file = "/etc/deploykit/passcode"
//!
//! [destinations]
//! deploy = "/topic/deploykit.deploy"  # where requests go (the agents' [destinations] deploy)
//! replies = "/topic/deploykit.reply.ops"   # default: a private /temp-queue/
//! rollouts = "/topic/deploykit.rollouts"   # where each rollout's signed record goes (dk-web's History)
//! ```

use crate::config::{BrokerSection, ConfigError, Problem};
use crate::message::publisher::Destinations;
use crate::message::Wire;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The system-wide file.
pub const SYSTEM_FILE: &str = "/etc/deploykit/deploy.toml";

/// `$XDG_CONFIG_HOME/deploykit` (when absolute), else `$HOME/.config/deploykit`: the user's
/// deploy.toml, deploy.key and trust.toml live here.
pub fn user_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".config"));
    base.join("deploykit")
}

/// dk-deploy's settings after every file was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployConfig {
    /// The broker, if a file named one (flags and `DK_BROKER_URL` still win).
    pub broker: Option<BrokerSection>,
    /// The wire of the fleet (selects the destination defaults).
    pub wire: Wire,
    /// Where deploy requests go.
    pub deploy_destination: String,
    /// Where replies come (`None`: a private temporary queue).
    pub reply_destination: Option<String>,
    /// Where rollout records go.
    pub rollouts_destination: String,
    /// The files read, in order (empty: defaults only).
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    wire: Option<String>,
    broker: Option<RawBroker>,
    destinations: Option<RawDest>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: Option<String>,
    vhost: Option<String>,
    login: Option<String>,
    passcode_file: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDest {
    deploy: Option<String>,
    replies: Option<String>,
    rollouts: Option<String>,
}

impl Raw {
    /// `self` overridden by `over`, key by key (a `[broker]` with a `url` whole).
    fn overridden_by(self, over: Raw) -> Raw {
        let broker = match (self.broker, over.broker) {
            (b, None) => b,
            (_, Some(o)) if o.url.is_some() => Some(o),
            (None, Some(o)) => Some(o),
            (Some(b), Some(o)) => Some(RawBroker { url: b.url, vhost: o.vhost.or(b.vhost), login: o.login.or(b.login), passcode_file: o.passcode_file.or(b.passcode_file) }),
        };
        let destinations = match (self.destinations, over.destinations) {
            (d, None) => d,
            (None, o) => o,
            (Some(d), Some(o)) => Some(RawDest { deploy: o.deploy.or(d.deploy), replies: o.replies.or(d.replies), rollouts: o.rollouts.or(d.rollouts) }),
        };
        Raw { wire: over.wire.or(self.wire), broker, destinations }
    }
}

fn destination(key: &str, d: String) -> Result<String, ConfigError> {
    if !d.starts_with('/') || d.contains(['\n', '\r', '\0']) {
        return Err(ConfigError::invalid(key, format!("{d:?} is not a destination such as /topic/NAME")));
    }
    Ok(d)
}

impl DeployConfig {
    /// The default files in the order they are read: the system's, then the user's.
    pub fn default_paths() -> Vec<PathBuf> {
        vec![PathBuf::from(SYSTEM_FILE), user_dir().join("deploy.toml")]
    }

    /// Reads `path` alone (it must exist); errors name the file.
    pub fn load(path: &Path) -> Result<DeployConfig, ConfigError> {
        let raw = Self::read(path)?;
        Self::resolve(raw, vec![path.to_owned()]).map_err(|e| e.with_file(path))
    }

    /// Reads each of `paths` that exists, later ones overriding earlier ones; none: the defaults.
    pub fn load_layered(paths: &[PathBuf]) -> Result<DeployConfig, ConfigError> {
        let mut raw = Raw::default();
        let mut sources = Vec::new();
        for p in paths {
            match std::fs::metadata(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                _ => {}
            }
            let r = Self::read(p)?;
            // Errors of one file name that file.
            Self::resolve(Raw { wire: r.wire.clone(), broker: r.broker.clone(), destinations: r.destinations.clone() }, vec![]).map_err(|e| e.with_file(p))?;
            raw = raw.overridden_by(r);
            sources.push(p.clone());
        }
        let last = sources.last().cloned();
        Self::resolve(raw, sources).map_err(|e| match &last {
            Some(p) => e.with_file(p),
            None => e,
        })
    }

    /// Parses one file's text (errors name `<config>`).
    pub fn parse(text: &str) -> Result<DeployConfig, ConfigError> {
        Self::resolve(crate::config::parse_toml(text)?, Vec::new())
    }

    fn read(path: &Path) -> Result<Raw, ConfigError> {
        crate::config::parse_toml(&crate::config::read(path)?).map_err(|e| e.with_file(path))
    }

    fn resolve(raw: Raw, sources: Vec<PathBuf>) -> Result<DeployConfig, ConfigError> {
        let wire = crate::config::wire(raw.wire)?;
        let defaults = if wire == Wire::Legacy { Destinations::legacy() } else { Destinations::default() };
        let broker = match raw.broker {
            None => None,
            Some(b) => {
                let mut s = BrokerSection::default();
                if let Some(u) = b.url {
                    crate::stomp::url::BrokerUrl::parse(&u).map_err(|e| ConfigError::invalid("broker.url", e.to_string()))?;
                    s.url = u;
                }
                if let Some(v) = b.vhost {
                    s.vhost = v;
                }
                s.login = b.login;
                s.passcode_file = b.passcode_file;
                Some(s)
            }
        };
        let d = raw.destinations.unwrap_or_default();
        let deploy_destination = destination("destinations.deploy", d.deploy.unwrap_or(defaults.deploy))?;
        let reply_destination = d.replies.map(|r| destination("destinations.replies", r)).transpose()?;
        let rollouts_destination = destination("destinations.rollouts", d.rollouts.unwrap_or(defaults.rollouts))?;
        Ok(DeployConfig { broker, wire, deploy_destination, reply_destination, rollouts_destination, sources })
    }

    /// Checks this machine against the configuration: the passcode file can be read.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(f) = self.broker.as_ref().and_then(|b| b.passcode_file.as_ref()) {
            if let Err(e) = std::fs::File::open(f) {
                out.push(Problem::new("broker.passcode_file", format!("cannot read {}: {e}", f.display())));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_file_overrides_the_system_file_key_by_key() {
        let dir = std::env::temp_dir().join(format!("dk-deploy-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (system, user) = (dir.join("system.toml"), dir.join("user.toml"));
        std::fs::write(
            &system,
            "wire = \"legacy\"\n[broker]\nurl = \"stomp://mq:61613\"\nlogin = \"ops\"\npasscode_file = \"/etc/p\"\n[destinations]\ndeploy = \"/topic/future.deploy\"\n",
        )
        .unwrap();
        std::fs::write(&user, "[broker]\nlogin = \"ann\"\n[destinations]\nreplies = \"/topic/future.reply.ann\"\n").unwrap();
        let c = DeployConfig::load_layered(&[system.clone(), user.clone(), dir.join("missing.toml")]).unwrap();
        let b = c.broker.clone().unwrap();
        assert_eq!((b.url.as_str(), b.login.as_deref(), b.passcode_file.as_deref()), ("stomp://mq:61613", Some("ann"), Some(Path::new("/etc/p"))));
        assert_eq!((c.wire, c.deploy_destination.as_str(), c.reply_destination.as_deref()), (Wire::Legacy, "/topic/future.deploy", Some("/topic/future.reply.ann")));
        assert_eq!(c.sources, vec![system.clone(), user.clone()]);
        // A user broker with its own url does not inherit the system's credentials.
        std::fs::write(&user, "[broker]\nurl = \"stomp://other:61613\"\n").unwrap();
        let b = DeployConfig::load_layered(&[system.clone(), user.clone()]).unwrap().broker.unwrap();
        assert_eq!((b.url.as_str(), b.login, b.passcode_file), ("stomp://other:61613", None, None));
        // Errors name the file and the key; none of the files: defaults.
        std::fs::write(&user, "[destinations]\ndeploy = \"future.deploy\"\n").unwrap();
        let e = DeployConfig::load_layered(&[system.clone(), user.clone()]).unwrap_err().to_string();
        assert!(e.contains(&*user.display().to_string()) && e.contains("destinations.deploy"), "{e}");
        std::fs::write(&user, "[broker]\nurl = \"http://u:hunter2@x\"\n").unwrap();
        let e = DeployConfig::load(&user).unwrap_err().to_string();
        assert!(e.contains("broker.url") && !e.contains("hunter2"), "{e}");
        let c = DeployConfig::load_layered(&[dir.join("none.toml")]).unwrap();
        assert_eq!((c.broker, c.deploy_destination.as_str(), c.sources.len()), (None, "/topic/deploykit.deploy", 0));
        assert!(DeployConfig::parse("colour = 1").unwrap_err().to_string().contains("colour"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_example_parses() {
        let c = DeployConfig::parse(include_str!("../../../../examples/deploy.toml")).unwrap();
        assert_eq!((c.wire, c.deploy_destination.as_str()), (Wire::Legacy, "/topic/deploykit.deploy"));
        assert!(c.broker.unwrap().url.starts_with("failover:(stomp://broker01:61613"));
    }
}
