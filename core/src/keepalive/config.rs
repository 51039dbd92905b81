//! `keepalive.toml`: what to keep alive and how often.
//!
//! ```toml
//! interval = "60s"                          # daemon mode (--interval overrides)
//!
//! [broker]                                  # defaults for every target
//! url = "stomp://broker01:61613"
//! login = "keepalive"
//! passcode_file = "/etc/deploykit/keepalive.pass"
//!
//! [[target]]
//! name = "dmz-subscribers"                  # for logs; default: the destination
//! destination = "/topic/deploykit.git.commits"
//! mode = "send"                             # single-newline SEND (default) or "hold"
//!
//! [[target]]
//! name = "office-link"
//! url = "stomp://broker02:61613"            # its own broker and credentials
//! login = "other"
//! passcode_file = "/etc/deploykit/other.pass"
//! mode = "hold"                             # one connection kept open with heart-beats
//! ```

pub use crate::config::ConfigError;
use crate::config::{parse_duration, BrokerSection};
use crate::stomp::url::Secret;
use crate::stomp::{ClientConfig, HeartbeatConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a target is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// SEND a single newline to the destination (every subscriber's path sees traffic).
    #[default]
    Send,
    /// Hold one connection open with heart-beats (negotiated, or emulated when the broker offers none).
    Hold,
}

/// One path to keep alive.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name for logs and output.
    pub name: String,
    /// How to connect: broker(s), vhost, its own credentials, TLS (heart-beats are set per use).
    pub client: ClientConfig,
    /// Where the newline goes (send mode).
    pub destination: String,
    /// How it is kept alive.
    pub mode: Mode,
}

impl Target {
    /// A send-mode target named after its destination.
    pub fn new(client: ClientConfig, destination: impl Into<String>) -> Target {
        let destination = destination.into();
        Target { name: destination.clone(), client, destination, mode: Mode::Send }
    }

    /// The client configuration for this target with the given heart-beats.
    pub fn client_config(&self, heartbeat: HeartbeatConfig) -> ClientConfig {
        self.client.clone().heartbeat(heartbeat)
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct KeepaliveConfig {
    /// How often the daemon keeps each target alive.
    pub interval: Duration,
    /// The targets.
    pub targets: Vec<Target>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    url: Option<String>,
    vhost: Option<String>,
    login: Option<String>,
    passcode_file: Option<PathBuf>,
    destination: Option<String>,
    #[serde(default)]
    mode: Mode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interval: Option<String>,
    #[serde(default)]
    broker: BrokerSection,
    #[serde(default)]
    target: Vec<RawTarget>,
}

fn invalid(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, why)
}

fn read_passcode(key: &str, file: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| invalid(key, format!("cannot read {}: {e}", file.display())))?;
    Ok(Secret::new(text.lines().next().unwrap_or_default().to_owned()))
}

impl KeepaliveConfig {
    /// Checks this machine against the configuration. Passcode files are read when the
    /// config loads and targets need nothing else locally, so this lists nothing today;
    /// it exists so every daemon's `--check` asks the same question.
    pub fn check(&self) -> Vec<crate::config::Problem> {
        Vec::new()
    }

    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<KeepaliveConfig, ConfigError> {
        KeepaliveConfig::parse(&crate::config::read(path)?).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text, reading the passcode files it names.
    pub fn parse(text: &str) -> Result<KeepaliveConfig, ConfigError> {
        let raw: RawConfig = crate::config::parse_toml(text)?;
        let interval = match raw.interval {
            None => Duration::from_secs(60),
            Some(s) => parse_duration(&s).filter(|d| !d.is_zero()).ok_or_else(|| invalid("interval", format!("{s:?} is not a duration such as 60s or 500ms")))?,
        };
        let mut targets = Vec::with_capacity(raw.target.len());
        for (i, t) in raw.target.into_iter().enumerate() {
            let key = |k: &str| format!("target[{i}].{k}");
            let own_broker = t.url.is_some();
            let url = t.url.unwrap_or_else(|| raw.broker.url.clone());
            let mut client = ClientConfig::new(&url).map_err(|e| invalid(key("url"), e.to_string()))?;
            let destination = t.destination.unwrap_or_else(|| super::DEFAULT_DESTINATION.into());
            if !destination.starts_with('/') || destination.contains(['\n', '\r', '\0']) {
                return Err(invalid(key("destination"), format!("{destination:?} is not a destination such as /topic/NAME")));
            }
            let passcode = match (t.passcode_file, &raw.broker.passcode_file, own_broker) {
                (Some(f), _, _) => Some(read_passcode(&key("passcode_file"), &f)?),
                // A target with its own broker does not inherit the default broker's passcode.
                (None, Some(f), false) => Some(read_passcode("broker.passcode_file", f)?),
                _ => None,
            };
            client.handshake.vhost = t.vhost.unwrap_or_else(|| raw.broker.vhost.clone());
            if let Some(login) = t.login.or_else(|| if !own_broker { raw.broker.login.clone() } else { None }) {
                client.handshake.login = Some(login);
            }
            if passcode.is_some() {
                client.handshake.passcode = passcode;
            }
            targets.push(Target { name: t.name.unwrap_or_else(|| destination.clone()), client, destination, mode: t.mode });
        }
        Ok(KeepaliveConfig { interval, targets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_inherit_the_broker_section() {
        let c = KeepaliveConfig::parse(
            "interval = \"30s\"\n[broker]\nurl = \"stomp://mq1:61613\"\nlogin = \"ka\"\n[[target]]\ndestination = \"/topic/a\"\n[[target]]\nname = \"b\"\nurl = \"stomp://mq2:61613\"\nmode = \"hold\"\n",
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        let t = &c.targets[0];
        assert_eq!((t.client.url.endpoints[0].host.as_str(), t.client.handshake.login.as_deref(), t.name.as_str()), ("mq1", Some("ka"), "/topic/a"));
        let t = &c.targets[1];
        assert_eq!((t.client.url.endpoints[0].host.as_str(), t.mode, t.destination.as_str()), ("mq2", Mode::Hold, super::super::DEFAULT_DESTINATION));
        assert_eq!(t.client.handshake.login, None, "a target with its own broker does not inherit the login");
    }

    #[test]
    fn errors_name_the_key() {
        let e = KeepaliveConfig::parse("[[target]]\nurl = \"http://x\"").unwrap_err();
        assert!(e.to_string().starts_with("<config>: target[0].url"), "{e}");
        let e = KeepaliveConfig::parse("interval = \"soon\"").unwrap_err();
        assert!(e.to_string().starts_with("<config>: interval"), "{e}");
        let e = KeepaliveConfig::parse("[[target]]\nmode = \"shout\"").unwrap_err();
        assert!(e.to_string().contains("shout") || e.to_string().contains("mode"), "{e}");
        let e = KeepaliveConfig::parse("[[target]]\npasscode_file = \"/nonexistent/dk\"").unwrap_err();
        assert!(e.to_string().starts_with("<config>: target[0].passcode_file"), "{e}");
    }
}
