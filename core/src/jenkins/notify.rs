//! dk-notify's logic: a build message from the environment Jenkins gives a job
//! step (`BUILD_NUMBER`, `JOB_NAME`, `BUILD_URL`, `GIT_BRANCH`, `GIT_COMMIT`, `GIT_URL`).

use crate::config::BrokerSection;
use crate::message::{Build, BuildStatus, Destinations, Wire};
use serde::Deserialize;

/// Variables a build message cannot do without.
pub const REQUIRED: [&str; 3] = ["BUILD_NUMBER", "JOB_NAME", "BUILD_URL"];

/// Why no build message could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Jenkins variables are missing (not run from a Jenkins job step?).
    #[error("missing Jenkins environment variable(s): {} (is this running in a Jenkins job step?)", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// `BUILD_NUMBER` is not a number.
    #[error("BUILD_NUMBER={0:?} is not a build number")]
    BadNumber(String),
}

/// The original jenkins-helper's flags: `--begin`, `--profit` (success), `--cake` (failure).
pub fn legacy_flag(flag: &str) -> Option<BuildStatus> {
    match flag.trim_start_matches('-') {
        "begin" => Some(BuildStatus::Started),
        "profit" => Some(BuildStatus::Success),
        "cake" => Some(BuildStatus::Failure),
        _ => None,
    }
}

/// The repository name in a clone URL: its last path component without `.git`
/// (`git@git:web/site.git` → `site`), as the original GitLab receiver did.
pub fn repo_from_url(url: &str) -> Option<String> {
    let last = url.trim().trim_end_matches('/').rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty()).then(|| name.to_owned())
}

/// Builds the message for `status` from variables looked up with `get` (e.g. `std::env::var`).
/// `DK_CORRELATION_ID`, if set, follows the change; else the commit id does.
pub fn build_from_env(status: BuildStatus, get: impl Fn(&str) -> Option<String>) -> Result<Build, NotifyError> {
    let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let missing: Vec<&'static str> = REQUIRED.into_iter().filter(|k| get(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(NotifyError::Missing(missing));
    }
    let number_text = get("BUILD_NUMBER").unwrap_or_default();
    let number = number_text.parse().map_err(|_| NotifyError::BadNumber(number_text.clone()))?;
    let commit = get("GIT_COMMIT");
    Ok(Build {
        job: get("JOB_NAME").unwrap_or_default(),
        number,
        status,
        url: get("BUILD_URL"),
        repo: get("GIT_URL").as_deref().and_then(repo_from_url),
        branch: get("GIT_BRANCH"),
        correlation_id: get("DK_CORRELATION_ID").or_else(|| commit.clone()),
        commit,
        duration_ms: None,
    })
}

/// `notify.toml` (optional: every key has a default).
///
/// ```toml
/// wire = "legacy"               # json (default) or legacy; legacy also switches the topics to future.*
/// [destinations]                # any of: builds, builds_failed, events (`{source}` → `jenkins`)
/// builds = "/topic/future.jenkins.success"
/// [broker]
/// url = "stomp://broker:61613"
/// login = "jenkins"
/// passcode_file = "/var/lib/jenkins/deploykit.passcode"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Body format.
    pub wire: Wire,
    /// Destinations; by default those of the wire (deploykit.* or future.*).
    pub destinations: Option<Destinations>,
    /// The `[broker]` section (the one every daemon's config shares).
    pub broker: BrokerSection,
}

impl NotifyConfig {
    /// Parses the TOML text (errors carry toml's line and column).
    pub fn parse(text: &str) -> Result<NotifyConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
    }

    /// The destinations to use: configured, else the wire's defaults.
    pub fn destinations(&self) -> Destinations {
        match (&self.destinations, self.wire) {
            (Some(d), _) => d.clone(),
            (None, Wire::Legacy) => Destinations::legacy(),
            (None, Wire::Json) => Destinations::default(),
        }
    }

    /// The broker section with defaults filled in.
    pub fn broker_section(&self) -> BrokerSection {
        self.broker.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn from_a_jenkins_environment() {
        let env: HashMap<&str, &str> = [
            ("BUILD_NUMBER", "17"),
            ("JOB_NAME", "web/site"),
            ("BUILD_URL", "http://ci/job/web/job/site/17/"),
            ("GIT_BRANCH", "origin/master"),
            ("GIT_COMMIT", "3f2a"),
            ("GIT_URL", "git@git.example.com:web/site.git"),
        ]
        .into();
        let b = build_from_env(BuildStatus::Success, |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!((b.job.as_str(), b.number, b.repo.as_deref(), b.correlation_id.as_deref()), ("web/site", 17, Some("site"), Some("3f2a")));
        assert_eq!(b.subject(), "Complete job 17 - [web/site] origin/master 3f2a");
    }

    #[test]
    fn missing_variables_are_named() {
        let e = build_from_env(BuildStatus::Started, |k| (k == "JOB_NAME").then(|| "x".into())).unwrap_err();
        assert_eq!(e, NotifyError::Missing(vec!["BUILD_NUMBER", "BUILD_URL"]));
        assert!(e.to_string().contains("BUILD_NUMBER, BUILD_URL"), "{e}");
        let e = build_from_env(BuildStatus::Started, |k| Some(if k == "BUILD_NUMBER" { "x1".into() } else { "v".into() })).unwrap_err();
        assert_eq!(e, NotifyError::BadNumber("x1".into()));
    }

    #[test]
    fn flags_and_urls() {
        assert_eq!(legacy_flag("--cake"), Some(BuildStatus::Failure));
        assert_eq!(legacy_flag("--profit"), Some(BuildStatus::Success));
        assert_eq!(legacy_flag("--meh"), None);
        assert_eq!(repo_from_url("https://gitlab.example.com/group/sub/site.git/").as_deref(), Some("site"));
        assert_eq!(repo_from_url("site").as_deref(), Some("site"));
    }
}
