//! Build messages: a CI job started or finished (successor of jenkins-helper's messages).

use super::{legacy_fields, legacy_get, MessageError};
use serde::{Deserialize, Serialize};

/// A build's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// The build began.
    Started,
    /// It passed.
    Success,
    /// It failed.
    Failure,
    /// It passed with test failures (Jenkins "unstable").
    Unstable,
    /// It was cancelled.
    Aborted,
}

impl BuildStatus {
    /// The lowercase name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Started => "started",
            BuildStatus::Success => "success",
            BuildStatus::Failure => "failure",
            BuildStatus::Unstable => "unstable",
            BuildStatus::Aborted => "aborted",
        }
    }

    /// Parses a status name (`started`, `success`, `failure`, `unstable`, `aborted`).
    pub fn parse(s: &str) -> Option<BuildStatus> {
        [BuildStatus::Started, BuildStatus::Success, BuildStatus::Failure, BuildStatus::Unstable, BuildStatus::Aborted].into_iter().find(|b| b.as_str() == s.to_ascii_lowercase())
    }

    /// Whether the build has finished.
    pub fn is_final(self) -> bool {
        self != BuildStatus::Started
    }

    /// The original's subject verb: `Begin`, `Complete` or `Fail`.
    fn legacy_verb(self) -> &'static str {
        match self {
            BuildStatus::Started => "Begin",
            BuildStatus::Success => "Complete",
            _ => "Fail",
        }
    }

    /// The original's `Status:` value: `Start job`, `Success` or `Cake`.
    fn legacy_status(self) -> &'static str {
        match self {
            BuildStatus::Started => "Start job",
            BuildStatus::Success => "Success",
            _ => "Cake",
        }
    }
}

/// A CI build's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Job name (folders as `a/b/c`).
    pub job: String,
    /// Build number.
    pub number: u64,
    /// State.
    pub status: BuildStatus,
    /// Link to the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Repository name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Branch built (e.g. `origin/master`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Duration in milliseconds, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The id of the change this build belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl Build {
    /// The legacy subject: `Begin|Complete|Fail job N - [JOB] BRANCH COMMIT`.
    pub fn subject(&self) -> String {
        format!("{} job {} - [{}] {} {}", self.status.legacy_verb(), self.number, self.job, self.branch.as_deref().unwrap_or(""), self.commit.as_deref().unwrap_or(""))
    }

    /// The legacy body: `Repo: R\nURL: U\nStatus: Start job|Success|Cake\n`, R being the branch up to its first `/`.
    pub fn legacy_body(&self) -> String {
        let repo = self.branch.as_deref().map(|b| b.split('/').next().unwrap_or(b)).unwrap_or_default();
        format!("Repo: {repo}\nURL: {}\nStatus: {}\n", self.url.as_deref().unwrap_or(""), self.status.legacy_status())
    }

    /// Reads the original's subject and body.
    pub fn from_legacy(subject: Option<&str>, body: &str) -> Result<Build, MessageError> {
        let fields = legacy_fields(body);
        let status = match legacy_get(&fields, "Status") {
            Some("Start job") => BuildStatus::Started,
            Some("Success") => BuildStatus::Success,
            Some("Cake") => BuildStatus::Failure,
            other => return Err(MessageError::Invalid { field: "Status", why: format!("{other:?} is not Start job, Success or Cake") }),
        };
        // Subject: VERB job N - [JOB] BRANCH COMMIT
        let subject = subject.unwrap_or_default();
        let after_job = subject.split_once(" job ").map(|(_, r)| r).unwrap_or_default();
        let (number, rest) = after_job.split_once(" - ").unwrap_or(("0", after_job));
        let (job, tail) = rest.strip_prefix('[').and_then(|r| r.split_once("] ")).unwrap_or(("", rest));
        let mut tail = tail.split_whitespace();
        let none_if_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Ok(Build {
            job: job.to_owned(),
            number: number.trim().parse().unwrap_or(0),
            status,
            url: legacy_get(&fields, "URL").and_then(none_if_empty),
            repo: legacy_get(&fields, "Repo").and_then(none_if_empty),
            branch: tail.next().and_then(none_if_empty),
            commit: tail.next().and_then(none_if_empty),
            duration_ms: None,
            correlation_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_round_trip() {
        let b = Build {
            job: "site build".into(),
            number: 17,
            status: BuildStatus::Failure,
            url: Some("http://ci/job/site%20build/17/".into()),
            repo: None,
            branch: Some("origin/master".into()),
            commit: Some("3f2a".into()),
            duration_ms: Some(1200),
            correlation_id: None,
        };
        assert_eq!(b.subject(), "Fail job 17 - [site build] origin/master 3f2a");
        assert_eq!(b.legacy_body(), "Repo: origin\nURL: http://ci/job/site%20build/17/\nStatus: Cake\n");
        let back = Build::from_legacy(Some(&b.subject()), &b.legacy_body()).unwrap();
        assert_eq!(back.job, "site build");
        assert_eq!(back.number, 17);
        assert_eq!(back.status, BuildStatus::Failure);
        assert_eq!(back.branch.as_deref(), Some("origin/master"));
        assert_eq!(back.commit.as_deref(), Some("3f2a"));
        assert_eq!(back.repo.as_deref(), Some("origin"));
    }

    #[test]
    fn statuses() {
        assert_eq!(BuildStatus::parse("UNSTABLE"), Some(BuildStatus::Unstable));
        assert!(BuildStatus::parse("meh").is_none());
        assert!(Build::from_legacy(None, "Status: Maybe\n").is_err());
        assert_eq!(Build::from_legacy(None, "Status: Start job\n").unwrap().status, BuildStatus::Started);
    }
}
