//! `reprepro.toml`: the repository, its incoming directories and where
//! dk-reprepro publishes.
//!
//! ```toml
//! base = "/srv/repo"                  # reprepro -b BASE (required)
//! reprepro = "reprepro"               # the program (PATH lookup), default "reprepro"
//! spool_dir = "/var/spool/deploykit/reprepro"   # messages wait here until the broker has them
//! watch = "auto"                      # "inotify", "poll" or "auto" (inotify, else polling)
//! settle = "2s"                       # a file must be unchanged this long before it is taken
//! poll_interval = "30s"               # directory scan interval (the safety net / fallback)
//! timeout = "10m"                     # reprepro is killed after this
//! wire = "json"                       # or "legacy" (also switches the topic defaults)
//! packages_topic = "/topic/deploykit.packages"
//! events_topic = "/topic/deploykit.events"
//!
//! [broker]
//! url = "stomp://broker:61613"
//! login = "dk-reprepro"
//! passcode_file = "/etc/deploykit/passcode"
//!
//! [dists.bookworm]
//! incoming = "/srv/repo/incoming/bookworm"
//! archive = "/srv/repo/incoming/bookworm/archive"   # default INCOMING/archive
//! failed = "/srv/repo/incoming/bookworm/failed"     # default INCOMING/failed
//! component = "main"                                # optional: reprepro -C COMPONENT
//! ```
//!
//! Syntax errors name the file, line and column; other errors the key.

pub use crate::config::ConfigError;
pub(crate) use crate::config::{duration_or as duration, parse_toml, topic, wire, BrokerSection, Problem, RawDuration};
use crate::message::Wire;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How incoming directories are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify when it can be set up, else polling (logged).
    Auto,
    /// inotify only (start-up fails without it).
    Inotify,
    /// Directory scans every `poll_interval` only.
    Poll,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RepreproConfig {
    /// Where the bus is.
    pub broker: BrokerSection,
    /// reprepro's base directory (`-b`).
    pub base: PathBuf,
    /// The reprepro program.
    pub reprepro: PathBuf,
    /// Messages are written here first, then sent (nothing lost while the broker is down).
    pub spool_dir: PathBuf,
    /// How incoming directories are watched.
    pub watch: WatchMode,
    /// How long a file must stay unchanged before it is taken.
    pub settle: Duration,
    /// How often every incoming directory is scanned.
    pub poll_interval: Duration,
    /// How long one reprepro run may take.
    pub timeout: Duration,
    /// Body format of the messages.
    pub wire: Wire,
    /// Package messages go here.
    pub packages_topic: String,
    /// Event lines go here.
    pub events_topic: String,
    /// The distributions, by name.
    pub dists: BTreeMap<String, DistConfig>,
}

/// One `[dists.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistConfig {
    /// Watched for `.deb` files.
    pub incoming: PathBuf,
    /// Included files go here.
    pub archive: PathBuf,
    /// Refused files go here, each with `FILE.error` beside it.
    pub failed: PathBuf,
    /// `reprepro -C COMPONENT`, if set.
    pub component: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    broker: BrokerSection,
    base: Option<PathBuf>,
    reprepro: Option<PathBuf>,
    spool_dir: Option<PathBuf>,
    watch: Option<String>,
    settle: Option<RawDuration>,
    poll_interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
    wire: Option<String>,
    packages_topic: Option<String>,
    events_topic: Option<String>,
    #[serde(default)]
    dists: BTreeMap<String, RawDist>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDist {
    incoming: Option<PathBuf>,
    archive: Option<PathBuf>,
    failed: Option<PathBuf>,
    component: Option<String>,
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, message)
}

/// Whether `name` is acceptable as a distribution or component name (it goes
/// into reprepro's argument vector): 1–100 of `A-Za-z0-9._+-`, not starting with `-` or `.`.
pub fn valid_dist_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 100 && !name.starts_with(['-', '.']) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

impl RepreproConfig {
    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<RepreproConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        RepreproConfig::parse(&text).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text (errors name `<config>` as the file).
    pub fn parse(text: &str) -> Result<RepreproConfig, ConfigError> {
        let raw: Raw = parse_toml(text)?;
        let wire = wire(raw.wire)?;
        let legacy = wire == Wire::Legacy;
        let base = raw.base.ok_or_else(|| invalid("base", "missing base = \"/srv/repo\" (reprepro's -b directory)"))?;
        if !base.is_absolute() {
            return Err(invalid("base", "must be an absolute path"));
        }
        let watch = match raw.watch.as_deref() {
            None | Some("auto") => WatchMode::Auto,
            Some("inotify") => WatchMode::Inotify,
            Some("poll") => WatchMode::Poll,
            Some(o) => return Err(invalid("watch", format!("unknown watch {o:?} (expected auto, inotify or poll)"))),
        };
        let settle = duration("settle", raw.settle, Duration::from_secs(2))?;
        let poll_interval = duration("poll_interval", raw.poll_interval, Duration::from_secs(30))?;
        if poll_interval.is_zero() {
            return Err(invalid("poll_interval", "must be more than 0"));
        }
        let timeout = duration("timeout", raw.timeout, Duration::from_secs(600))?;
        if timeout.is_zero() {
            return Err(invalid("timeout", "must be more than 0"));
        }
        let packages_topic = topic("packages_topic", raw.packages_topic, if legacy { "/topic/future.package.updates" } else { "/topic/deploykit.packages" })?;
        let events_topic = topic("events_topic", raw.events_topic, if legacy { "/topic/future.events.repository" } else { "/topic/deploykit.events" })?;
        let mut dists = BTreeMap::new();
        for (name, d) in raw.dists {
            let key = format!("dists.{name}");
            if !valid_dist_name(&name) {
                return Err(invalid(&key, "distribution names are 1-100 of A-Z a-z 0-9 . _ + - and do not start with - or ."));
            }
            let incoming = d.incoming.ok_or_else(|| invalid(&key, "missing incoming = \"/path/to/incoming\""))?;
            let abs = |k: &str, p: &Path| if p.is_absolute() { Ok(()) } else { Err(invalid(format!("{key}.{k}"), "must be an absolute path")) };
            abs("incoming", &incoming)?;
            let archive = d.archive.unwrap_or_else(|| incoming.join("archive"));
            let failed = d.failed.unwrap_or_else(|| incoming.join("failed"));
            abs("archive", &archive)?;
            abs("failed", &failed)?;
            if archive == incoming || failed == incoming {
                return Err(invalid(&key, "archive and failed must differ from incoming"));
            }
            if let Some(c) = &d.component {
                if !valid_dist_name(c) {
                    return Err(invalid(format!("{key}.component"), format!("invalid component {c:?}")));
                }
            }
            dists.insert(name, DistConfig { incoming, archive, failed, component: d.component });
        }
        if dists.is_empty() {
            return Err(invalid("dists", "no distribution configured (add [dists.NAME] with incoming = \"…\")"));
        }
        Ok(RepreproConfig {
            broker: raw.broker,
            base,
            reprepro: raw.reprepro.unwrap_or_else(|| PathBuf::from("reprepro")),
            spool_dir: raw.spool_dir.unwrap_or_else(|| PathBuf::from("/var/spool/deploykit/reprepro")),
            watch,
            settle,
            poll_interval,
            timeout,
            wire,
            packages_topic,
            events_topic,
            dists,
        })
    }
}

impl RepreproConfig {
    /// Checks this machine against the configuration: reprepro and dpkg-deb
    /// can be run, `BASE/conf/distributions` exists and names each
    /// distribution, each incoming directory is a readable directory (the spool
    /// directory is created when needed). One line per problem (`key: message`); empty when all is well.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if crate::sys::find_program(&self.reprepro).is_none() {
            out.push(Problem::new("reprepro", format!("{} not found or not executable (apt-get install reprepro)", self.reprepro.display())));
        }
        if crate::sys::find_program(Path::new("dpkg-deb")).is_none() {
            out.push(Problem::new("dpkg-deb", "not found (it reads the packages' control data)"));
        }
        let dists_file = self.base.join("conf/distributions");
        let codenames: Vec<String> = match std::fs::read_to_string(&dists_file) {
            Ok(text) => text.lines().filter_map(|l| l.strip_prefix("Codename:")).map(|v| v.trim().to_owned()).collect(),
            Err(e) => {
                out.push(Problem::new("base", format!("{}: {e}", dists_file.display())));
                Vec::new()
            }
        };
        for (name, d) in &self.dists {
            if !codenames.is_empty() && !codenames.contains(name) {
                out.push(Problem::new(format!("dists.{name}"), format!("{} has no `Codename: {name}`", dists_file.display())));
            }
            if let Err(e) = std::fs::read_dir(&d.incoming) {
                out.push(Problem::new(format!("dists.{name}.incoming"), format!("{}: {e}", d.incoming.display())));
            }
        }
        if let Err(e) = crate::config::creatable_dir(&self.spool_dir) {
            out.push(Problem::new("spool_dir", e));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = RepreproConfig::parse("base = \"/srv/repo\"\n[dists.bookworm]\nincoming = \"/in/b\"\n").unwrap();
        let d = &c.dists["bookworm"];
        assert_eq!((d.archive.as_path(), d.failed.as_path()), (Path::new("/in/b/archive"), Path::new("/in/b/failed")));
        assert_eq!((c.watch, c.settle, c.packages_topic.as_str()), (WatchMode::Auto, Duration::from_secs(2), "/topic/deploykit.packages"));
        let legacy = RepreproConfig::parse("wire = \"legacy\"\nbase = \"/r\"\n[dists.x]\nincoming = \"/in\"\n").unwrap();
        assert_eq!(legacy.events_topic, "/topic/future.events.repository");

        let e = RepreproConfig::parse("base = \"/r\"\n[dists.x]\nincoming = in\n").unwrap_err().to_string();
        assert!(e.starts_with("<config>:3:"), "{e}");
        let e = RepreproConfig::parse("base = \"/r\"\n[dists.\"-x\"]\nincoming = \"/in\"\n").unwrap_err().to_string();
        assert!(e.contains("dists.-x"), "{e}");
        let e = RepreproConfig::parse("base = \"/r\"\n").unwrap_err().to_string();
        assert!(e.contains("dists"), "{e}");
        let e = RepreproConfig::parse("base = \"/r\"\nsettle = \"soon\"\n[dists.x]\nincoming = \"/in\"\n").unwrap_err().to_string();
        assert!(e.contains("settle"), "{e}");
    }
}
