//! `fetch.toml`: what dk-fetch connects to and which repositories it keeps fresh.
//!
//! ```toml
//! node = "web01"                      # default: the host name
//! wire = "json"                       # or "legacy" (also switches the topic defaults)
//! commits_topic = "/topic/deploykit.git.commits"
//! events_topic = "/topic/deploykit.events"
//! results_topic = "/topic/deploykit.fetch"
//! max_parallel = 4                    # repositories fetched at once
//! reconcile_interval = "10m"          # "off" disables; integers are seconds
//! lock_stale_after = "10m"            # index.lock / shallow.lock older than this are removed
//! git_timeout = "30s"                 # a git server silent this long fails the fetch ("off": wait forever)
//! builds_topic = "/topic/deploykit.builds"   # legacy: /topic/future.jenkins.success; subscribed
//!                                     # only when a repo has trigger = "build"
//! state_dir = "/var/lib/deploykit/fetch"     # per repo, the newest verified built commit (REPO.built)
//!
//! [broker]
//! url = "stomp://broker:61613"
//! vhost = "/"
//! login = "dk-fetch"
//! passcode_file = "/etc/deploykit/passcode"
//!
//! [repos.site]
//! path = "/srv/git/site"              # the local clone
//! remote = "origin"                   # default
//! mode = "trusting"                   # normal trusting dangerous branch atomic puppetmaster tags
//! target = "/srv/www/site"
//! branch = "master"                   # default master for trusting/dangerous; needed by branch/atomic
//! user = "www-data"                   # run git as this user (privileges dropped, never su)
//! fetch_tags = true                   # default
//! reclone = false                     # re-clone a corrupt clone beside it and swap it in
//! url = "git@git:site.git"            # for reclone; default: the remote's url
//! trigger = "commit"                  # default; "build": fetch on a listed job's success instead
//! # jobs = ["site-tests"]             # with trigger = "build" (required, non-empty): the CI jobs
//! #                                   # whose success checks out exactly the built commit
//! [repos.site.credentials]
//! ssh_key = "/etc/deploykit/id_ed25519"   # else the ssh agent (ssh_agent = true, default)
//! https_token_env = "GIT_TOKEN"           # or https_token_file; https_username default "git"
//! ```
//!
//! Syntax and type errors name the file, line and column; semantic errors name
//! the key (`repos.site.mode: unknown mode "fancy" (…)`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::Wire;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchConfig {
    /// Where the bus is.
    pub broker: BrokerSection,
    /// Commit messages arrive here.
    pub commits_topic: String,
    /// Event lines (`HOST fetched change: …`) go here.
    pub events_topic: String,
    /// JSON `fetch` results go here.
    pub results_topic: String,
    /// Body format of what dk-fetch publishes.
    pub wire: Wire,
    /// This server's name in results and event lines.
    pub node: String,
    /// How many repositories are fetched at once (≥ 1).
    pub max_parallel: usize,
    /// Fetch every repository this often as a safety net; `None` = off.
    pub reconcile_interval: Option<Duration>,
    /// Lock files older than this (and not held open) are removed.
    pub lock_stale_after: Duration,
    /// A fetch fails when the git server is silent this long (connects: at
    /// most 10 s); `None` = no timeout. A failed fetch is retried with backoff.
    pub git_timeout: Option<Duration>,
    /// Build messages arrive here (subscribed only when a repo has `trigger = "build"`).
    pub builds_topic: String,
    /// Where dk-fetch keeps state: per build-triggered repo, the newest verified built commit.
    pub state_dir: PathBuf,
    /// The repositories, by the name commit messages use.
    pub repos: BTreeMap<String, RepoConfig>,
}

impl FetchConfig {
    /// Whether some repo is fetched on build messages (so the builds topic is subscribed).
    pub fn wants_builds(&self) -> bool {
        self.repos.values().any(|r| r.trigger == Trigger::Build)
    }
}

/// The default [`FetchConfig::state_dir`].
pub const DEFAULT_STATE_DIR: &str = "/var/lib/deploykit/fetch";

/// What makes a repository fetch (besides reconciles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A commit message naming the repo (the default; stomp-git's behaviour).
    #[default]
    Commit,
    /// A success build message of one of the repo's `jobs`: the built commit is checked out.
    Build,
}

impl Trigger {
    /// Every trigger, in documentation order.
    pub const ALL: [Trigger; 2] = [Trigger::Commit, Trigger::Build];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Commit => "commit",
            Trigger::Build => "build",
        }
    }

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One `[repos.NAME]` entry. Serializable so that a privilege-dropped child
/// process can be handed it (JSON on stdin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// The local clone (bare or not; `dangerous` needs a work tree).
    pub path: PathBuf,
    /// The remote fetched (default `origin`).
    pub remote: String,
    /// What happens after the fetch.
    pub mode: Mode,
    /// Where checkouts go (modes trusting, branch, atomic, puppetmaster, tags).
    pub target: Option<PathBuf>,
    /// The branch checked out (trusting/dangerous: default `master`; branch/atomic: required).
    pub branch: Option<String>,
    /// Run git as this user.
    pub user: Option<String>,
    /// Fetch `refs/tags/*` too (default true).
    pub fetch_tags: bool,
    /// Re-clone a corrupt clone.
    pub reclone: bool,
    /// URL to re-clone from (default: the remote's url in the clone's config).
    pub url: Option<String>,
    /// How to authenticate to the remote.
    pub credentials: Credentials,
    /// What makes it fetch: commit messages (default) or its jobs' successful builds.
    #[serde(default)]
    pub trigger: Trigger,
    /// With `trigger = "build"`: the CI job names whose success triggers a fetch.
    #[serde(default)]
    pub jobs: Vec<String>,
}

impl RepoConfig {
    /// The branch the mode checks out: the configured one, else `master` for
    /// trusting and dangerous (legacy: `origin/master`); `None` for the others.
    pub fn checkout_branch(&self) -> Option<&str> {
        match (self.mode, self.branch.as_deref()) {
            (_, Some(b)) => Some(b),
            (Mode::Trusting | Mode::Dangerous, None) => Some("master"),
            _ => None,
        }
    }
}

/// Credentials for fetching; secrets are referenced (file, env var, agent), not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Private key file for ssh remotes.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// File holding the key's passphrase.
    #[serde(default)]
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// Ask the ssh agent (`SSH_AUTH_SOCK`) when no key file is set (default true).
    #[serde(default = "yes")]
    pub ssh_agent: bool,
    /// User name for https (default `git`).
    #[serde(default)]
    pub https_username: Option<String>,
    /// Environment variable holding the https token.
    #[serde(default)]
    pub https_token_env: Option<String>,
    /// File holding the https token (first line).
    #[serde(default)]
    pub https_token_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// What a repository's fetch is followed by (legacy-wire.md, "Fetch daemon").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fetch (and tags) only.
    Normal,
    /// Check out `REMOTE/master` (or `branch`) into `target`.
    Trusting,
    /// Check out `REMOTE/master` (or `branch`) in the clone itself, discarding local changes.
    Dangerous,
    /// Check out `REMOTE/branch` into `target`.
    Branch,
    /// Check out `REMOTE/branch` into `target_BRANCH`.
    Atomic,
    /// One directory per branch: `target/BRANCH`; deleted branches' directories removed.
    Puppetmaster,
    /// One directory per tag: `target/TAG`, created once, never rewritten.
    Tags,
}

impl Mode {
    /// Every mode, in documentation order.
    pub const ALL: [Mode; 7] = [Mode::Normal, Mode::Trusting, Mode::Dangerous, Mode::Branch, Mode::Atomic, Mode::Puppetmaster, Mode::Tags];

    /// The config / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Trusting => "trusting",
            Mode::Dangerous => "dangerous",
            Mode::Branch => "branch",
            Mode::Atomic => "atomic",
            Mode::Puppetmaster => "puppetmaster",
            Mode::Tags => "tags",
        }
    }

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the mode writes into `target`.
    pub fn needs_target(self) -> bool {
        !matches!(self, Mode::Normal | Mode::Dangerous)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use crate::config::line_col;
use crate::config::{parse_duration, BrokerSection, STRING_FILE};
pub use crate::config::{ConfigError, Problem};
use crate::names::RepoName;

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { file: STRING_FILE.into(), key: key.into(), message: message.into() }
}

// ---- raw TOML shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    broker: BrokerSection,
    commits_topic: Option<String>,
    events_topic: Option<String>,
    results_topic: Option<String>,
    wire: Option<toml::Spanned<String>>,
    node: Option<String>,
    max_parallel: Option<toml::Spanned<i64>>,
    reconcile_interval: Option<toml::Spanned<RawDuration>>,
    lock_stale_after: Option<toml::Spanned<RawDuration>>,
    git_timeout: Option<toml::Spanned<RawDuration>>,
    builds_topic: Option<String>,
    state_dir: Option<toml::Spanned<PathBuf>>,
    #[serde(default)]
    repos: BTreeMap<String, RawRepo>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    path: Option<PathBuf>,
    remote: Option<String>,
    mode: Option<toml::Spanned<String>>,
    target: Option<PathBuf>,
    branch: Option<String>,
    user: Option<String>,
    fetch_tags: Option<bool>,
    reclone: Option<bool>,
    url: Option<String>,
    #[serde(default)]
    credentials: Credentials,
    trigger: Option<toml::Spanned<String>>,
    jobs: Option<toml::Spanned<Vec<String>>>,
}

fn at(text: &str, span: std::ops::Range<usize>) -> String {
    let (l, c) = line_col(text, span.start);
    format!(" (line {l}, column {c})")
}

fn duration(key: &str, text: &str, v: &toml::Spanned<RawDuration>, allow_off: bool) -> Result<Option<Duration>, ConfigError> {
    let bad = || invalid(key, format!("expected a duration such as 30s, 10m, 2h or seconds{}{}", if allow_off { ", or \"off\"" } else { "" }, at(text, v.span())));
    match v.get_ref() {
        RawDuration::Seconds(n) if *n >= 0 => Ok(Some(Duration::from_secs(*n as u64))),
        RawDuration::Seconds(_) => Err(bad()),
        RawDuration::Text(t) if allow_off && matches!(t.trim(), "off" | "never" | "none") => Ok(None),
        RawDuration::Text(t) => parse_duration(t).map(Some).ok_or_else(bad),
    }
}

/// A repo's `trigger` and `jobs`: `jobs` is required (non-empty) with
/// `trigger = "build"` and refused without it; build triggers exist for the
/// modes that fetch or check out one branch (not puppetmaster or tags).
fn triggers(key: &str, text: &str, mode: Mode, trigger: Option<&toml::Spanned<String>>, jobs: Option<&toml::Spanned<Vec<String>>>) -> Result<(Trigger, Vec<String>), ConfigError> {
    let t = match trigger {
        None => Trigger::Commit,
        Some(t) => Trigger::parse(t.get_ref()).ok_or_else(|| {
            let all: Vec<&str> = Trigger::ALL.iter().map(|t| t.as_str()).collect();
            invalid(format!("{key}.trigger"), format!("unknown trigger {:?} (expected {}){}", t.get_ref(), all.join(", "), at(text, t.span())))
        })?,
    };
    match (t, jobs) {
        (Trigger::Commit, None) => Ok((t, Vec::new())),
        (Trigger::Commit, Some(j)) => Err(invalid(format!("{key}.jobs"), format!("jobs are only used with trigger = \"build\"{}", at(text, j.span())))),
        (Trigger::Build, None) => {
            let span = trigger.map(|t| t.span()).unwrap_or(0..0);
            Err(invalid(key, format!("trigger = \"build\" needs jobs = [\"JOB\", …] (the CI jobs whose success triggers a fetch){}", at(text, span))))
        }
        (Trigger::Build, Some(j)) if j.get_ref().is_empty() => {
            Err(invalid(format!("{key}.jobs"), format!("must name at least one job with trigger = \"build\"{}", at(text, j.span()))))
        }
        (Trigger::Build, Some(j)) => {
            if let Some(bad) = j.get_ref().iter().find(|n| n.trim().is_empty() || n.len() > 1024 || n.chars().any(char::is_control)) {
                return Err(invalid(format!("{key}.jobs"), format!("invalid job name {bad:?}{}", at(text, j.span()))));
            }
            if matches!(mode, Mode::Puppetmaster | Mode::Tags) {
                let span = trigger.map(|t| t.span()).unwrap_or(0..0);
                return Err(invalid(
                    format!("{key}.trigger"),
                    format!("trigger = \"build\" is not supported with mode \"{mode}\" (normal, trusting, dangerous, branch, atomic){}", at(text, span)),
                ));
            }
            Ok((t, j.get_ref().clone()))
        }
    }
}

impl FetchConfig {
    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<FetchConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        FetchConfig::parse(&text).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text (errors name `<config>` as the file).
    pub fn parse(text: &str) -> Result<FetchConfig, ConfigError> {
        let raw: RawConfig = crate::config::parse_toml(text)?;
        let wire = match &raw.wire {
            None => Wire::Json,
            Some(w) => w.get_ref().parse().map_err(|_| invalid("wire", format!("unknown wire {:?} (expected json or legacy){}", w.get_ref(), at(text, w.span()))))?,
        };
        let legacy = wire == Wire::Legacy;
        let broker = raw.broker;
        let topic = |key: &str, v: Option<String>, json: &str, leg: &str| -> Result<String, ConfigError> {
            let v = v.unwrap_or_else(|| if legacy { leg.into() } else { json.into() });
            if v.trim().is_empty() || v.contains(['\n', '\r', '\0']) {
                return Err(invalid(key, format!("invalid destination {v:?}")));
            }
            Ok(v)
        };
        let commits_topic = topic("commits_topic", raw.commits_topic, "/topic/deploykit.git.commits", "/topic/future.git.commits")?;
        let events_topic = topic("events_topic", raw.events_topic, "/topic/deploykit.events", "/topic/future.events.stomp-git")?;
        let results_topic = topic("results_topic", raw.results_topic, "/topic/deploykit.fetch", "/topic/deploykit.fetch")?;
        // Legacy: jenkins-helper sends successes to future.jenkins.success (failures to .cake, never needed here).
        let builds_topic = topic("builds_topic", raw.builds_topic, "/topic/deploykit.builds", "/topic/future.jenkins.success")?;
        let state_dir = match &raw.state_dir {
            None => PathBuf::from(DEFAULT_STATE_DIR),
            Some(d) if d.get_ref().is_absolute() => d.get_ref().clone(),
            Some(d) => return Err(invalid("state_dir", format!("must be absolute, not {:?}{}", d.get_ref().display().to_string(), at(text, d.span())))),
        };
        let max_parallel = match raw.max_parallel {
            None => 4,
            Some(v) if (1..=1024).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => return Err(invalid("max_parallel", format!("must be between 1 and 1024, not {}{}", v.get_ref(), at(text, v.span())))),
        };
        let reconcile_interval = match &raw.reconcile_interval {
            None => Some(Duration::from_secs(600)),
            Some(v) => duration("reconcile_interval", text, v, true)?,
        };
        let lock_stale_after = match &raw.lock_stale_after {
            None => Duration::from_secs(600),
            Some(v) => duration("lock_stale_after", text, v, false)?.unwrap_or(Duration::from_secs(600)),
        };
        let git_timeout = match &raw.git_timeout {
            None => Some(Duration::from_secs(30)),
            Some(v) => duration("git_timeout", text, v, true)?,
        };
        let node = raw.node.unwrap_or_else(crate::sys::hostname);
        let mut repos = BTreeMap::new();
        for (name, r) in raw.repos {
            let key = format!("repos.{name}");
            if !RepoName::is_valid(&name) {
                return Err(invalid(&key, format!("repository names are {}", crate::names::RULE)));
            }
            let path = r.path.ok_or_else(|| invalid(&key, "missing path = \"/path/to/clone\""))?;
            if !path.is_absolute() {
                return Err(invalid(format!("{key}.path"), format!("must be absolute, not {:?}", path.display().to_string())));
            }
            let mode = match &r.mode {
                None => Mode::Normal,
                Some(m) => Mode::parse(m.get_ref()).ok_or_else(|| {
                    let all: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
                    invalid(format!("{key}.mode"), format!("unknown mode {:?} (expected {}){}", m.get_ref(), all.join(", "), at(text, m.span())))
                })?,
            };
            let remote = r.remote.unwrap_or_else(|| "origin".into());
            if !git2::Remote::is_valid_name(&remote) || remote.starts_with('-') {
                return Err(invalid(format!("{key}.remote"), format!("invalid remote name {remote:?}")));
            }
            if let Some(b) = &r.branch {
                if crate::fetch::ops::validate_refname(&format!("refs/heads/{b}")).is_err() || b.starts_with('-') {
                    return Err(invalid(format!("{key}.branch"), format!("invalid branch name {b:?}")));
                }
            }
            if matches!(mode, Mode::Branch | Mode::Atomic) && r.branch.is_none() {
                return Err(invalid(&key, format!("mode \"{mode}\" needs branch = \"…\"")));
            }
            if mode.needs_target() {
                match &r.target {
                    None => return Err(invalid(&key, format!("mode \"{mode}\" needs target = \"/path\""))),
                    Some(t) if !t.is_absolute() => return Err(invalid(format!("{key}.target"), "must be absolute")),
                    Some(t) if t.starts_with(&path) || path.starts_with(t) => return Err(invalid(format!("{key}.target"), "must not be inside the clone nor contain it")),
                    Some(t) if t.file_name().is_none() => return Err(invalid(format!("{key}.target"), "must name a directory, not /")),
                    Some(_) => {}
                }
            } else if r.target.is_some() {
                return Err(invalid(format!("{key}.target"), format!("mode \"{mode}\" does not use a target")));
            }
            if let Some(u) = &r.user {
                if u.is_empty() || u.starts_with('-') || !u.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$')) {
                    return Err(invalid(format!("{key}.user"), format!("invalid user name {u:?}")));
                }
            }
            let (trigger, jobs) = triggers(&key, text, mode, r.trigger.as_ref(), r.jobs.as_ref())?;
            if let Some(v) = &r.credentials.https_token_env {
                if v.is_empty() || v.contains(['=', '\0']) {
                    return Err(invalid(format!("{key}.credentials.https_token_env"), "must be an environment variable name"));
                }
            }
            repos.insert(
                name,
                RepoConfig {
                    path,
                    remote,
                    mode,
                    target: r.target,
                    branch: r.branch,
                    user: r.user,
                    fetch_tags: r.fetch_tags.unwrap_or(true),
                    reclone: r.reclone.unwrap_or(false),
                    url: r.url,
                    credentials: r.credentials,
                    trigger,
                    jobs,
                },
            );
        }
        Ok(FetchConfig {
            broker,
            commits_topic,
            events_topic,
            results_topic,
            wire,
            node,
            max_parallel,
            reconcile_interval,
            lock_stale_after,
            git_timeout,
            builds_topic,
            state_dir,
            repos,
        })
    }

    /// Checks this machine against the configuration: each repo path exists and
    /// is a git repository with the remote, each target can be written (its
    /// directory exists or can be created by the daemon, and is writable by the
    /// repo's user), each user exists, each credential file is readable. One
    /// precise message per problem; empty when all is well.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |key: String, message: String| out.push(Problem { key, message });
        if let Some(f) = &self.broker.passcode_file {
            if let Err(e) = std::fs::File::open(f) {
                p("broker.passcode_file".into(), format!("cannot read {}: {e}", f.display()));
            }
        }
        for (name, r) in &self.repos {
            let key = format!("repos.{name}");
            let user = match &r.user {
                None => None,
                Some(u) => match crate::user::lookup_user(u) {
                    Ok(Some(pw)) => Some(pw),
                    Ok(None) => {
                        p(format!("{key}.user"), format!("no such user {u:?}"));
                        None
                    }
                    Err(e) => {
                        p(format!("{key}.user"), format!("cannot look up user {u:?}: {e}"));
                        None
                    }
                },
            };
            if !r.path.exists() {
                p(format!("{key}.path"), format!("{} does not exist", r.path.display()));
            } else {
                match crate::git::open(&r.path) {
                    Err(e) => p(
                        format!("{key}.path"),
                        format!(
                            "{} is not a git repository: {}",
                            r.path.display(),
                            match e {
                                crate::git::GitError::Open { source, .. } => source.message().to_owned(),
                                other => other.to_string(),
                            }
                        ),
                    ),
                    Ok(repo) => {
                        if repo.find_remote(&r.remote).is_err() {
                            p(format!("{key}.remote"), format!("{} has no remote {:?}", r.path.display(), r.remote));
                        }
                        if r.mode == Mode::Dangerous && repo.is_bare() {
                            p(format!("{key}.mode"), format!("mode \"dangerous\" checks out in the clone, but {} is bare", r.path.display()));
                        }
                    }
                }
                if let Some(pw) = &user {
                    if let Ok(md) = std::fs::metadata(&r.path) {
                        use std::os::unix::fs::MetadataExt;
                        if md.uid() != pw.uid {
                            p(format!("{key}.path"), format!("{} is owned by uid {}, not by {} (uid {})", r.path.display(), md.uid(), pw.name, pw.uid));
                        }
                    }
                }
            }
            if let Some(t) = &r.target {
                // Where the daemon writes: beside the target (its `.NAME.dk-versions` and link) for
                // trusting/branch/atomic, inside it for puppetmaster/tags. It creates that directory
                // and any missing ancestors (`create_dir_all`), so a missing one is fine as long as
                // it can be created.
                let dir = if r.mode == Mode::Puppetmaster || r.mode == Mode::Tags { Some(t.as_path()) } else { t.parent() };
                if let Some(dir) = dir {
                    if let Err(why) = creatable_dir(dir, r.user.as_ref().map(|_| user.as_ref())) {
                        p(format!("{key}.target"), why);
                    }
                }
            }
            let c = &r.credentials;
            for (k, f) in [("ssh_key", &c.ssh_key), ("ssh_key_passphrase_file", &c.ssh_key_passphrase_file), ("https_token_file", &c.https_token_file)] {
                if let Some(f) = f {
                    if let Err(e) = std::fs::File::open(f) {
                        p(format!("{key}.credentials.{k}"), format!("cannot read {}: {e}", f.display()));
                    }
                }
            }
            if let Some(v) = &c.https_token_env {
                if std::env::var_os(v).is_none() {
                    p(format!("{key}.credentials.https_token_env"), format!("environment variable {v} is not set"));
                }
            }
        }
        if self.wants_builds() {
            if let Err(why) = creatable_dir(&self.state_dir, None) {
                p("state_dir".into(), why.replace("(where checkouts go)", "(where built commits are recorded)"));
            }
        }
        out
    }
}

/// Whether the daemon can write checkouts into `dir` (creating it and its missing
/// ancestors, as `create_dir_all` does): `dir`, or its nearest existing ancestor,
/// must be a directory writable and searchable by the user the fetch runs as.
/// `as_user`: `None` = this process (checked with `access(2)`); `Some(Some(pw))` =
/// that user (checked by mode bits; a directory with a POSIX ACL is given the
/// benefit of the doubt); `Some(None)` = a configured user that does not exist
/// (already reported, so writability is not judged).
fn creatable_dir(dir: &Path, as_user: Option<Option<&crate::user::Passwd>>) -> Result<(), String> {
    let (existing, md) = crate::config::nearest_existing(dir).map_err(|(p, e)| format!("{} (where checkouts go): {e}", p.display()))?;
    let what =
        if existing == dir { format!("{} (where checkouts go)", dir.display()) } else { format!("cannot create {} (where checkouts go): {}", dir.display(), existing.display()) };
    if !md.is_dir() {
        return Err(format!("{what} is not a directory"));
    }
    let ok = match as_user {
        None => crate::sys::writable(existing),
        Some(None) => true,
        Some(Some(pw)) => writable_by(existing, &md, pw),
    };
    if ok {
        Ok(())
    } else {
        let by = as_user.flatten().map(|pw| format!(" by user {}", pw.name)).unwrap_or_default();
        Err(format!("{what} is not writable{by}"))
    }
}

/// Whether `pw` may create entries in directory `dir` by its mode bits (owner,
/// then group incl. supplementary groups, then others; root always may).
/// A POSIX access ACL on `dir` counts as allowing it: ACLs are not evaluated here.
fn writable_by(dir: &Path, md: &std::fs::Metadata, pw: &crate::user::Passwd) -> bool {
    use std::os::unix::fs::MetadataExt;
    if pw.uid == 0 || has_acl(dir) {
        return true;
    }
    let mode = md.mode();
    let bits = if md.uid() == pw.uid {
        mode >> 6
    } else if md.gid() == pw.gid || crate::user::groups_of(pw).contains(&md.gid()) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o3 == 0o3
}

fn has_acl(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a NULL buffer of size 0 only asks for the value's size.
    unsafe { libc::getxattr(c.as_ptr(), c"system.posix_acl_access".as_ptr(), std::ptr::null_mut(), 0) > 0 }
}

pub use super::legacy_import::import_legacy;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("a\nbc\nd", 4), (2, 3));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    const BASE: &str = "node = \"web01\"\n[repos.site]\npath = \"/srv/git/site\"\nmode = \"trusting\"\ntarget = \"/srv/www/site\"\n";

    fn err(extra: &str) -> String {
        FetchConfig::parse(&format!("{BASE}{extra}")).expect_err(extra).to_string()
    }

    #[test]
    fn trigger_and_jobs() {
        let c = FetchConfig::parse(BASE).unwrap();
        assert_eq!((c.repos["site"].trigger, c.repos["site"].jobs.len()), (Trigger::Commit, 0));
        assert!(!c.wants_builds());
        assert_eq!((c.builds_topic.as_str(), c.state_dir.as_path()), ("/topic/deploykit.builds", Path::new(DEFAULT_STATE_DIR)));
        let c = FetchConfig::parse(&format!("{BASE}trigger = \"build\"\njobs = [\"site-tests\", \"site deploy\"]\n")).unwrap();
        assert_eq!(c.repos["site"].trigger, Trigger::Build);
        assert_eq!(c.repos["site"].jobs, ["site-tests", "site deploy"]);
        assert!(c.wants_builds());
        let c = FetchConfig::parse(&format!("wire = \"legacy\"\nstate_dir = \"/tmp/s\"\n{BASE}")).unwrap();
        assert_eq!((c.builds_topic.as_str(), c.state_dir.as_path()), ("/topic/future.jenkins.success", Path::new("/tmp/s")));
    }

    #[test]
    fn trigger_errors_name_key_line_and_column() {
        // Line 6 is the first line after BASE.
        assert_eq!(err("trigger = \"fancy\"\n"), "<config>: repos.site.trigger: unknown trigger \"fancy\" (expected commit, build) (line 6, column 11)");
        assert_eq!(
            err("trigger = \"build\"\n"),
            "<config>: repos.site: trigger = \"build\" needs jobs = [\"JOB\", …] (the CI jobs whose success triggers a fetch) (line 6, column 11)"
        );
        assert_eq!(err("trigger = \"build\"\njobs = []\n"), "<config>: repos.site.jobs: must name at least one job with trigger = \"build\" (line 7, column 8)");
        assert_eq!(err("jobs = [\"t\"]\n"), "<config>: repos.site.jobs: jobs are only used with trigger = \"build\" (line 6, column 8)");
        assert_eq!(err("trigger = \"build\"\njobs = [\" \"]\n"), "<config>: repos.site.jobs: invalid job name \" \" (line 7, column 8)");
        let e = err("trigger = 3\n");
        assert!(e.contains(":6:"), "a type error names line 6: {e}");
        let e =
            FetchConfig::parse("node = \"w\"\n[repos.p]\npath = \"/g\"\nmode = \"puppetmaster\"\ntarget = \"/e\"\ntrigger = \"build\"\njobs = [\"j\"]\n").unwrap_err().to_string();
        assert!(e.contains("repos.p.trigger") && e.contains("not supported with mode \"puppetmaster\"") && e.contains("(line 6, column 11)"), "{e}");
        let e = FetchConfig::parse(&format!("state_dir = \"var/lib\"\n{BASE}")).unwrap_err().to_string();
        assert_eq!(e, "<config>: state_dir: must be absolute, not \"var/lib\" (line 1, column 13)");
        let e = FetchConfig::load(Path::new("/nonexistent/dk-fetch.toml")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/dk-fetch.toml"), "{e}");
    }
}
