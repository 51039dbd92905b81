//! What every daemon's TOML configuration shares: one error type that names
//! the file, line and column or the dotted key; reading and parsing; the
//! `[broker]` section; durations.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file name errors carry when a configuration was parsed from a string.
pub const STRING_FILE: &str = "<config>";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong type / unknown key.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file (`<config>` when parsed from a string).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// toml's message (first line).
        message: String,
    },
    /// A value that parses but makes no sense; `key` is the dotted key.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The file (`<config>` when parsed from a string).
        file: String,
        /// The dotted key, e.g. `repos.site.mode`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A legacy (stomp-git YAML) file that cannot be imported.
    #[error("legacy YAML: {0}")]
    Legacy(String),
}

impl ConfigError {
    /// A value error for dotted `key` (the file is filled in by [`ConfigError::with_file`]).
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: STRING_FILE.into(), key: key.into(), message: message.into() }
    }

    /// The same error, naming `path` as the file.
    pub fn with_file(self, path: &Path) -> ConfigError {
        let name = path.display().to_string();
        match self {
            ConfigError::Syntax { line, column, message, .. } => ConfigError::Syntax { file: name, line, column, message },
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid { file: name, key, message },
            other => other,
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads a configuration file.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

/// One problem a config's `check()` found on this machine (a file that cannot be
/// read, a directory that cannot be written, a program that is missing).
/// Every daemon's config has `check() -> Vec<Problem>` listing all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key concerned (`repos.site.path`).
    pub key: String,
    /// What is wrong, precisely.
    pub message: String,
}

impl Problem {
    /// A problem with dotted `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { key: key.into(), message: message.into() }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Whether a daemon can create `dir` (and its missing ancestors, as `create_dir_all`
/// does): `dir` or its nearest existing ancestor is a directory this process may write.
pub fn creatable_dir(dir: &std::path::Path) -> Result<(), String> {
    let (existing, md) = nearest_existing(dir).map_err(|(p, e)| format!("{}: {e}", p.display()))?;
    if !md.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    if !crate::sys::writable(existing) {
        return Err(format!("{} is not writable by this user", existing.display()));
    }
    Ok(())
}

/// `dir` or its nearest existing ancestor, with its metadata: what `create_dir_all`
/// would start from. An error names the path it concerns.
pub fn nearest_existing(dir: &std::path::Path) -> Result<(&std::path::Path, std::fs::Metadata), (&std::path::Path, std::io::Error)> {
    let mut existing = dir;
    loop {
        match std::fs::metadata(existing) {
            Ok(md) => return Ok((existing, md)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => match existing.parent() {
                Some(up) => existing = up,
                None => return Err((dir, e)),
            },
            Err(e) => return Err((existing, e)),
        }
    }
}

/// Parses TOML text into `T`; syntax and shape errors carry line and column.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        let message = e.message().lines().next().unwrap_or("invalid TOML").to_owned();
        ConfigError::Syntax { file: STRING_FILE.into(), line, column, message }
    })
}

/// The `[broker]` section every daemon's config shares (url and vhost default to
/// `stomp://127.0.0.1:61613` and `/`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// Broker URL (`stomp://`, `stomp+ssl://`, failover form).
    #[serde(default = "default_broker_url")]
    pub url: String,
    /// STOMP `host` header (virtual host).
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// Login, if the broker wants one.
    pub login: Option<String>,
    /// File holding the passcode (first line), never the passcode itself.
    pub passcode_file: Option<PathBuf>,
}

fn default_broker_url() -> String {
    "stomp://127.0.0.1:61613".into()
}

fn default_vhost() -> String {
    "/".into()
}

impl Default for BrokerSection {
    fn default() -> BrokerSection {
        BrokerSection { url: default_broker_url(), vhost: default_vhost(), login: None, passcode_file: None }
    }
}

/// Parses `"90"` (seconds), `"30s"`, `"10m"`, `"2h"`, `"1d"`, `"500ms"` and compound
/// forms such as `"1h30m"` or `"1m 30s"` (humantime's grammar).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok().map(Duration::from_secs);
    }
    humantime::parse_duration(s).ok()
}

/// A duration as written in a config: a number of seconds or text such as `30s`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Seconds.
    Seconds(u64),
    /// `500ms`, `30s`, `10m`, `2h`, `1d`.
    Text(String),
}

impl RawDuration {
    /// The duration, or an error for dotted `key`.
    pub fn resolve(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            RawDuration::Seconds(n) => Ok(Duration::from_secs(*n)),
            RawDuration::Text(t) => parse_duration(t).ok_or_else(|| ConfigError::invalid(key, format!("{t:?}: expected a duration such as 500ms, 30s, 5m or 1h"))),
        }
    }
}

/// A duration setting: `default` when absent.
pub fn duration_or(key: &str, v: Option<RawDuration>, default: Duration) -> Result<Duration, ConfigError> {
    v.map_or(Ok(default), |d| d.resolve(key))
}

/// The `wire` setting: `json` (default) or `legacy`.
pub fn wire(v: Option<String>) -> Result<crate::message::Wire, ConfigError> {
    match v {
        None => Ok(crate::message::Wire::Json),
        Some(w) => w.parse().map_err(|_| ConfigError::invalid("wire", format!("unknown wire {w:?} (expected json or legacy)"))),
    }
}

/// A destination setting: `default` when absent; no empty names or line breaks.
pub fn topic(key: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    let v = v.unwrap_or_else(|| default.to_owned());
    if v.trim().is_empty() || v.contains(['\n', '\r', '\0']) {
        return Err(ConfigError::invalid(key, format!("invalid destination {v:?}")));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creatable_dirs_are_judged_by_their_nearest_existing_ancestor() {
        let tmp = std::env::temp_dir().join(format!("dk-creatable-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        assert_eq!(creatable_dir(&tmp.join("a/b/c")), Ok(()));
        let file = tmp.join("file");
        std::fs::write(&file, "x").unwrap();
        let e = creatable_dir(&file.join("sub")).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        assert_eq!(Problem::new("spool", "gone").to_string(), "spool: gone");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn syntax_errors_carry_line_and_column_and_the_file() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct C {
            #[allow(dead_code)]
            a: u32,
        }
        let e = parse_toml::<C>("a = 1\nb = 2\n").unwrap_err().with_file(Path::new("/etc/x.toml")).to_string();
        assert!(e.starts_with("/etc/x.toml:2:1: unknown field `b`"), "{e}");
        assert_eq!(RawDuration::Text("5m".into()).resolve("k").unwrap(), Duration::from_secs(300));
        assert!(RawDuration::Text("5 parsecs".into()).resolve("x.y").unwrap_err().to_string().contains("x.y"));
    }

    #[test]
    fn durations_take_compound_forms() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("99999999999999999999"), None);
        assert_eq!(parse_duration("-5s"), None);
    }
}
