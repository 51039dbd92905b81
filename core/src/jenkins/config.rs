//! `jenkins.toml`: which Jenkins, which credentials, and which jobs each repo triggers.
//!
//! ```toml
//! wire = "json"                       # or "legacy": also switches the topic defaults to future.*
//! commits_topic = "/topic/deploykit.git.commits"
//! events_topic = "/topic/deploykit.events"   # `{source}` becomes `jenkins`
//! quiet_period = "5s"                 # a burst of commits for one job triggers it once
//!
//! [broker]
//! url = "stomp://broker:61613"
//! login = "dk-jenkins"
//! passcode_file = "/etc/deploykit/passcode"
//!
//! [jenkins]
//! url = "https://ci.example.com/"
//! user = "deploykit"                  # with an API token: basic auth (+ CSRF crumb when asked)
//! api_token_file = "/etc/deploykit/jenkins-api-token"   # or api_token_env = "JENKINS_API_TOKEN"
//! timeout = "10s"
//! retries = 4                         # on 5xx and connection errors, backoff doubling from retry_delay
//! retry_delay = "1s"
//!
//! [[repos.site.jobs]]
//! job = "web/site build"              # folders as a/b/c; legacy `%20` accepted
//! token_file = "/etc/deploykit/site.token"   # the job's build token (or token_env)
//! ignore_refs = "refs/tags/jenkins-.*"       # regex on the refname
//! branches = ["master", "release"]    # optional allow-list (refs/heads/NAME)
//! parameters = true                   # buildWithParameters with REPO, REFNAME, NEWREV
//!
//! [[repos.svnrepo.projects.webapp.jobs]]    # SVN: per project (the path before /trunk)
//! job = "webapp"
//! ```

pub use crate::config::ConfigError;
use crate::config::{duration_or as duration, BrokerSection, RawDuration};
use crate::message::Wire;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a secret comes from: a file (first line) or an environment variable; never the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The first line of this file.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl SecretSource {
    /// Reads the secret now (so a rotated token is picked up at each use).
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::File(p) => {
                std::fs::read_to_string(p).map(|t| t.lines().next().unwrap_or_default().trim().to_owned()).map_err(|e| format!("reading secret file {}: {e}", p.display()))
            }
            SecretSource::Env(v) => std::env::var(v).map_err(|_| format!("environment variable {v} is not set")),
        }
    }
}

/// The `[jenkins]` section.
#[derive(Debug, Clone)]
pub struct JenkinsSection {
    /// Base URL, e.g. `https://ci.example.com/` (a path prefix such as `/jenkins/` is kept).
    pub url: String,
    /// User for basic auth with an API token.
    pub user: Option<String>,
    /// The user's API token.
    pub api_token: Option<SecretSource>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt on 5xx and connection errors.
    pub retries: u32,
    /// First backoff delay (doubled after each retry, capped at 30 s).
    pub retry_delay: Duration,
}

/// One job a repo (or SVN project) triggers.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The job's full name, folders as `a/b/c` (percent-escapes decoded).
    pub job: String,
    /// The job's build token (`?token=`), if it uses one.
    pub token: Option<SecretSource>,
    /// Refnames matching this do not trigger.
    pub ignore_refs: Option<Regex>,
    /// If set, only these branches trigger (`master` or `refs/heads/master`).
    pub branches: Option<Vec<String>>,
    /// Use `buildWithParameters` with `REPO`, `REFNAME`, `NEWREV`.
    pub parameters: bool,
}

/// One `[repos.NAME]` entry.
#[derive(Debug, Clone, Default)]
pub struct RepoJobs {
    /// Jobs for any commit of the repo.
    pub jobs: Vec<JobConfig>,
    /// SVN: jobs per project (the `Project` of the commit).
    pub projects: BTreeMap<String, Vec<JobConfig>>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct JenkinsConfig {
    /// Where the bus is.
    pub broker: BrokerSection,
    /// Commit messages arrive here.
    pub commits_topic: String,
    /// Event lines go here (`{source}` → `jenkins`).
    pub events_topic: String,
    /// Body format of event lines.
    pub wire: Wire,
    /// A burst of commits for one job within this window triggers it once.
    pub quiet_period: Duration,
    /// The Jenkins server.
    pub jenkins: JenkinsSection,
    /// Repos by the name commit messages use.
    pub repos: BTreeMap<String, RepoJobs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    broker: BrokerSection,
    commits_topic: Option<String>,
    events_topic: Option<String>,
    wire: Option<String>,
    quiet_period: Option<RawDuration>,
    jenkins: RawJenkins,
    #[serde(default)]
    repos: BTreeMap<String, RawRepo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJenkins {
    url: String,
    user: Option<String>,
    api_token_file: Option<PathBuf>,
    api_token_env: Option<String>,
    timeout: Option<RawDuration>,
    retries: Option<u32>,
    retry_delay: Option<RawDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    #[serde(default)]
    jobs: Vec<RawJob>,
    #[serde(default)]
    projects: BTreeMap<String, RawProject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    jobs: Vec<RawJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    job: String,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    ignore_refs: Option<String>,
    branches: Option<Vec<String>>,
    #[serde(default)]
    parameters: bool,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, message)
}

fn secret(key: &str, file: Option<PathBuf>, env: Option<String>) -> Result<Option<SecretSource>, ConfigError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(invalid(key, "give a file or an environment variable, not both")),
        (Some(f), None) => Ok(Some(SecretSource::File(f))),
        (None, Some(e)) if e.trim().is_empty() => Err(invalid(key, "empty environment variable name")),
        (None, Some(e)) => Ok(Some(SecretSource::Env(e))),
        (None, None) => Ok(None),
    }
}

fn job(key: &str, raw: RawJob) -> Result<JobConfig, ConfigError> {
    let name = super::url::decode_job_name(&raw.job);
    if name.split('/').any(|s| s.trim().is_empty()) {
        return Err(invalid(format!("{key}.job"), format!("{:?} has an empty folder or job name", raw.job)));
    }
    let ignore_refs = match raw.ignore_refs {
        None => None,
        // Anchored like Ruby's `=~`? No: the original matched anywhere; keep that.
        Some(r) => Some(Regex::new(&r).map_err(|e| invalid(format!("{key}.ignore_refs"), format!("bad regular expression: {e}")))?),
    };
    Ok(JobConfig { job: name, token: secret(&format!("{key}.token_file"), raw.token_file, raw.token_env)?, ignore_refs, branches: raw.branches, parameters: raw.parameters })
}

impl JenkinsConfig {
    /// Checks this machine against the configuration: every secret it names can be read now.
    pub fn check(&self) -> Vec<crate::config::Problem> {
        use crate::config::Problem;
        let mut problems = Vec::new();
        if let Some(t) = &self.jenkins.api_token {
            if let Err(e) = t.read() {
                problems.push(Problem::new("jenkins.api_token", e.to_string()));
            }
        }
        for (name, repo) in &self.repos {
            let jobs = repo.jobs.iter().map(|j| (format!("repos.{name}.jobs"), j));
            let projects = repo.projects.iter().flat_map(|(p, js)| js.iter().map(move |j| (format!("repos.{name}.projects.{p}.jobs"), j)));
            for (key, job) in jobs.chain(projects) {
                if let Some(Err(e)) = job.token.as_ref().map(|t| t.read()) {
                    problems.push(Problem::new(format!("{key} ({})", job.job), format!("token: {e}")));
                }
            }
        }
        problems
    }

    /// Reads and parses a file (errors name it).
    pub fn load(path: &Path) -> Result<JenkinsConfig, ConfigError> {
        JenkinsConfig::parse(&crate::config::read(path)?).map_err(|e| e.with_file(path))
    }

    /// Parses a configuration text (errors name `<config>` as the file).
    pub fn parse(text: &str) -> Result<JenkinsConfig, ConfigError> {
        let raw: RawConfig = crate::config::parse_toml(text)?;
        let wire = match &raw.wire {
            None => Wire::Json,
            Some(w) => w.parse().map_err(|_| invalid("wire", format!("unknown wire {w:?} (expected json or legacy)")))?,
        };
        let legacy = wire == Wire::Legacy;
        let broker = raw.broker;
        let topic = |key: &str, v: Option<String>, json: &str, old: &str| -> Result<String, ConfigError> {
            let v = v.unwrap_or_else(|| if legacy { old.into() } else { json.into() });
            if v.trim().is_empty() || v.contains(['\n', '\r', '\0']) {
                return Err(invalid(key, format!("invalid destination {v:?}")));
            }
            Ok(v)
        };
        let commits_topic = topic("commits_topic", raw.commits_topic, "/topic/deploykit.git.commits", "/topic/future.git.commits")?;
        let events_topic = topic("events_topic", raw.events_topic, "/topic/deploykit.events", "/topic/future.events.{source}")?;
        let quiet_period = duration("quiet_period", raw.quiet_period, Duration::from_secs(5))?;
        let j = raw.jenkins;
        let base = url::Url::parse(&j.url).map_err(|e| invalid("jenkins.url", format!("not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("jenkins.url", "must be an http:// or https:// URL"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid("jenkins.url", "must not hold credentials; use user and api_token_file"));
        }
        let api_token = secret("jenkins.api_token_file", j.api_token_file, j.api_token_env)?;
        if api_token.is_some() != j.user.is_some() {
            return Err(invalid("jenkins.user", "user and an API token (api_token_file or api_token_env) go together"));
        }
        let jenkins = JenkinsSection {
            url: j.url,
            user: j.user,
            api_token,
            timeout: duration("jenkins.timeout", j.timeout, Duration::from_secs(10))?,
            retries: j.retries.unwrap_or(4),
            retry_delay: duration("jenkins.retry_delay", j.retry_delay, Duration::from_secs(1))?,
        };
        let mut repos = BTreeMap::new();
        for (name, r) in raw.repos {
            let key = format!("repos.{name}");
            let jobs = r.jobs.into_iter().map(|j| job(&format!("{key}.jobs"), j)).collect::<Result<Vec<_>, _>>()?;
            let mut projects = BTreeMap::new();
            for (p, raw_p) in r.projects {
                let pkey = format!("{key}.projects.{p}.jobs");
                projects.insert(p, raw_p.jobs.into_iter().map(|j| job(&pkey, j)).collect::<Result<Vec<_>, _>>()?);
            }
            if jobs.is_empty() && projects.is_empty() {
                return Err(invalid(key, "no jobs (add [[repos.NAME.jobs]] or [[repos.NAME.projects.P.jobs]])"));
            }
            repos.insert(name, RepoJobs { jobs, projects });
        }
        Ok(JenkinsConfig { broker, commits_topic, events_topic, wire, quiet_period, jenkins, repos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
quiet_period = "2s"
[jenkins]
url = "http://ci:8080/"
user = "dk"
api_token_env = "DK_TEST_JENKINS_TOKEN"
[[repos.site.jobs]]
job = "web/site%20build"
token_file = "/etc/t"
ignore_refs = "refs/tags/jenkins-.*"
branches = ["master"]
parameters = true
[[repos.svn.projects.webapp.jobs]]
job = "webapp"
"#;

    #[test]
    fn parses_the_sample() {
        let c = JenkinsConfig::parse(SAMPLE).unwrap();
        assert_eq!(c.quiet_period, Duration::from_secs(2));
        assert_eq!(c.jenkins.retries, 4);
        let site = &c.repos["site"].jobs[0];
        assert_eq!(site.job, "web/site build");
        assert!(site.parameters);
        assert_eq!(site.token, Some(SecretSource::File("/etc/t".into())));
        assert_eq!(c.repos["svn"].projects["webapp"][0].job, "webapp");
        assert_eq!(c.commits_topic, "/topic/deploykit.git.commits");
    }

    #[test]
    fn errors_name_the_key() {
        let e = JenkinsConfig::parse("[jenkins]\nurl = \"http://ci/\"\n[[repos.a.jobs]]\njob = \"x\"\nignore_refs = \"(\"\n").unwrap_err();
        assert!(e.to_string().contains("repos.a.jobs.ignore_refs"), "{e}");
        let e = JenkinsConfig::parse("[jenkins]\nurl = \"http://u:p@ci/\"\n").unwrap_err();
        assert!(e.to_string().contains("jenkins.url") && !e.to_string().contains(":p@"), "{e}");
        let e = JenkinsConfig::parse("[jenkins]\nurl = \"http://ci/\"\nuser = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("jenkins.user"), "{e}");
        let e = JenkinsConfig::parse("[jenkins]\nurl = \"http://ci/\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = JenkinsConfig::parse("[jenkins]\nurl = \"http://ci/\"\n[[repos.a.jobs]]\njob = \"a//b\"\n").unwrap_err();
        assert!(e.to_string().contains("repos.a.jobs.job"), "{e}");
    }

    #[test]
    fn the_example_config_parses() {
        let c = JenkinsConfig::parse(include_str!("../../../examples/jenkins.toml")).unwrap();
        assert_eq!(c.repos["site"].jobs.len(), 2);
        assert!(super::super::notify::NotifyConfig::parse(include_str!("../../../examples/notify.toml")).is_ok());
    }

    #[test]
    fn legacy_wire_switches_topics() {
        let c = JenkinsConfig::parse("wire = \"legacy\"\n[jenkins]\nurl = \"http://ci/\"\n").unwrap();
        assert_eq!(c.commits_topic, "/topic/future.git.commits");
        assert_eq!(c.events_topic, "/topic/future.events.{source}");
    }
}
