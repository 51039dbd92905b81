//! `apt-watch.toml`: which package messages matter to this server and what to run.
//!
//! ```toml
//! node = "web01"                      # event lines start with it; default: the host name
//! wire = "json"                       # event lines' form; "legacy" also switches the topic defaults
//! packages_topic = "/topic/deploykit.packages"
//! events_topic = "/topic/deploykit.events"
//! packages = ["site-*", "nginx"]      # names or globs (* ? [abc] {a,b}); default ["*"]
//! distros = ["bookworm"]              # only these distributions; default: any
//! on = ["added"]                      # package actions that count: added, removed, failed
//! action = ["apt-get", "update"]      # argument vector, never a shell; default apt-get update
//! quiet = "2s"                        # a burst ends after this much silence
//! min_interval = "1m"                 # at most one run per this
//! max_wait = "30s"                    # a never-ending burst still runs after this
//! timeout = "10m"                     # the action is killed after this
//!
//! [broker]
//! url = "stomp://broker:61613"
//! ```

pub use crate::config::ConfigError;
use crate::config::{duration_or as duration, parse_toml, topic, wire, BrokerSection, RawDuration};
use crate::message::{PackageAction, Wire};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct AptWatchConfig {
    /// Where the bus is.
    pub broker: BrokerSection,
    /// This server's name in event lines.
    pub node: String,
    /// Body format of the event lines.
    pub wire: Wire,
    /// Package messages arrive here.
    pub packages_topic: String,
    /// Event lines go here.
    pub events_topic: String,
    /// Which package names matter.
    pub packages: PackageMatcher,
    /// Which distributions matter (empty: all).
    pub distros: Vec<String>,
    /// Which package actions matter.
    pub on: Vec<PackageAction>,
    /// The program and its arguments.
    pub action: Vec<String>,
    /// Silence that ends a burst.
    pub quiet: Duration,
    /// Least time between two runs' starts.
    pub min_interval: Duration,
    /// Longest a burst holds a run back.
    pub max_wait: Duration,
    /// How long the action may run.
    pub timeout: Duration,
}

/// Package names or globs.
#[derive(Debug, Clone)]
pub struct PackageMatcher {
    patterns: Vec<String>,
    set: GlobSet,
}

impl PackageMatcher {
    /// Compiles the patterns (`*`, `?`, `[abc]`, `{a,b}`; a name without them matches itself).
    pub fn new(patterns: &[String]) -> Result<PackageMatcher, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(Glob::new(p)?);
        }
        Ok(PackageMatcher { patterns: patterns.to_vec(), set: b.build()? })
    }

    /// Whether `name` matches any pattern.
    pub fn is_match(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    broker: BrokerSection,
    node: Option<String>,
    wire: Option<String>,
    packages_topic: Option<String>,
    events_topic: Option<String>,
    packages: Option<Vec<String>>,
    distros: Option<Vec<String>>,
    on: Option<Vec<String>>,
    action: Option<Vec<String>>,
    quiet: Option<RawDuration>,
    min_interval: Option<RawDuration>,
    max_wait: Option<RawDuration>,
    timeout: Option<RawDuration>,
}

impl AptWatchConfig {
    /// Checks this machine against the configuration: the action's program can be run.
    pub fn check(&self) -> Vec<crate::config::Problem> {
        let program = std::path::Path::new(&self.action[0]);
        match crate::sys::find_program(program) {
            Some(_) => Vec::new(),
            None => vec![crate::config::Problem::new("action", format!("{} not found or not executable", program.display()))],
        }
    }

    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<AptWatchConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        AptWatchConfig::parse(&text).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text (errors name `<config>` as the file).
    pub fn parse(text: &str) -> Result<AptWatchConfig, ConfigError> {
        let raw: Raw = parse_toml(text)?;
        let wire = wire(raw.wire)?;
        let legacy = wire == Wire::Legacy;
        let packages_topic = topic("packages_topic", raw.packages_topic, if legacy { "/topic/future.package.updates" } else { "/topic/deploykit.packages" })?;
        let events_topic = topic("events_topic", raw.events_topic, if legacy { "/topic/future.events.apt-watch" } else { "/topic/deploykit.events" })?;
        let patterns = raw.packages.unwrap_or_else(|| vec!["*".into()]);
        if patterns.is_empty() {
            return Err(ConfigError::invalid("packages", "empty list: nothing would ever match (leave it out to watch every package)"));
        }
        let packages = PackageMatcher::new(&patterns).map_err(|e| ConfigError::invalid("packages", e.to_string()))?;
        let on = match raw.on {
            None => vec![PackageAction::Added, PackageAction::Removed],
            Some(list) => list
                .iter()
                .map(|a| match a.as_str() {
                    "added" => Ok(PackageAction::Added),
                    "removed" => Ok(PackageAction::Removed),
                    "failed" => Ok(PackageAction::Failed),
                    o => Err(ConfigError::invalid("on", format!("unknown package action {o:?} (expected added, removed or failed)"))),
                })
                .collect::<Result<_, _>>()?,
        };
        let action = raw.action.unwrap_or_else(|| vec!["apt-get".into(), "update".into()]);
        if action.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(ConfigError::invalid("action", "needs a program: action = [\"apt-get\", \"update\"]"));
        }
        if action.iter().any(|a| a.contains('\0')) {
            return Err(ConfigError::invalid("action", "arguments cannot contain NUL"));
        }
        let quiet = duration("quiet", raw.quiet, Duration::from_secs(2))?;
        let min_interval = duration("min_interval", raw.min_interval, Duration::from_secs(60))?;
        let max_wait = duration("max_wait", raw.max_wait, Duration::from_secs(30))?;
        let timeout = duration("timeout", raw.timeout, Duration::from_secs(600))?;
        if timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be more than 0"));
        }
        Ok(AptWatchConfig {
            broker: raw.broker,
            node: raw.node.unwrap_or_else(crate::sys::hostname),
            wire,
            packages_topic,
            events_topic,
            packages,
            distros: raw.distros.unwrap_or_default(),
            on,
            action,
            quiet,
            min_interval,
            max_wait,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_defaults_and_errors() {
        let c = AptWatchConfig::parse("node = \"web01\"\npackages = [\"site-*\", \"nginx\", \"lib{foo,bar}1\"]\n").unwrap();
        for yes in ["site-assets", "nginx", "libfoo1"] {
            assert!(c.packages.is_match(yes), "{yes}");
        }
        for no in ["nginx-common", "website", "libbaz1"] {
            assert!(!c.packages.is_match(no), "{no}");
        }
        assert_eq!(c.action, ["apt-get", "update"]);
        assert_eq!((c.quiet, c.min_interval), (Duration::from_secs(2), Duration::from_secs(60)));
        assert!(AptWatchConfig::parse("").unwrap().packages.is_match("anything"));
        let e = AptWatchConfig::parse("packages = [\"[oops\"]\n").unwrap_err().to_string();
        assert!(e.contains("packages"), "{e}");
        let e = AptWatchConfig::parse("action = []\n").unwrap_err().to_string();
        assert!(e.contains("action"), "{e}");
        let e = AptWatchConfig::parse("on = [\"exploded\"]\n").unwrap_err().to_string();
        assert!(e.contains("exploded"), "{e}");
        let e = AptWatchConfig::parse("quiet = 1\nbogus = 2\n").unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }
}
