//! Commit messages: a push (git, GitHub, GitLab, Gitea) or an SVN commit.

use super::{legacy_fields, legacy_get, MessageError};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The all-zero object id git uses for "no commit" (branch creation or deletion).
pub const ZERO_REV: &str = "0000000000000000000000000000000000000000";

/// Where a commit message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A git post-receive hook.
    #[default]
    Git,
    /// A Subversion post-commit hook.
    Svn,
    /// A GitHub webhook.
    Github,
    /// A GitLab webhook.
    Gitlab,
    /// A Gitea or Forgejo webhook.
    Gitea,
}

/// One commit inside a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommitInfo {
    /// The commit id (SHA).
    pub id: String,
    /// Author as `Name <email>` (or what the forge gives).
    pub author: String,
    /// Author date, RFC 3339.
    pub timestamp: String,
    /// The full commit message.
    pub message: String,
}

/// Subversion specifics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SvnInfo {
    /// The revision number.
    pub revision: u64,
    /// The project: the path component before `/trunk` (legacy rule), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Directories changed by the commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
}

/// A push of one ref, or one SVN commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Commit {
    /// Repository name (selects configured entries; never a path).
    pub repo: String,
    /// Old object id (all zeros on branch creation); empty for SVN.
    #[serde(default)]
    pub oldrev: String,
    /// New object id (all zeros on deletion); for SVN the revision as text.
    #[serde(default)]
    pub newrev: String,
    /// Full ref name, e.g. `refs/heads/master`; empty for SVN.
    #[serde(default)]
    pub refname: String,
    /// Who sent it.
    #[serde(default)]
    pub source: Source,
    /// Subversion details, for `source = svn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svn: Option<SvnInfo>,
    /// The commits of the push, newest first (bounded by the publisher).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<CommitInfo>,
    /// The id that follows this change end to end (forge delivery id or newrev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl Commit {
    /// The legacy `subject` header: `[repo] refname newrev` (git), `[repo] REV ` (SVN).
    pub fn subject(&self) -> String {
        match &self.svn {
            Some(svn) => format!("[{}] {} ", self.repo, svn.revision),
            None => format!("[{}] {} {}", self.repo, self.refname, self.newrev),
        }
    }

    /// The one-line event published with the commit (`commit [repo] refname newrev`).
    pub fn event_line(&self) -> String {
        format!("commit {}", self.subject())
    }

    /// Whether this push deletes the ref (new id all zeros).
    pub fn is_deletion(&self) -> bool {
        self.svn.is_none() && is_zero(&self.newrev)
    }

    /// The correlation id to use: the explicit one, else the new revision.
    pub fn effective_correlation_id(&self) -> String {
        match (&self.correlation_id, &self.svn) {
            (Some(id), _) => id.clone(),
            (None, Some(svn)) => format!("svn:{}:{}", self.repo, svn.revision),
            (None, None) => self.newrev.clone(),
        }
    }

    /// Checks the fields every receiver relies on.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.repo.trim().is_empty() {
            return Err(MessageError::Invalid { field: "repo", why: "empty".into() });
        }
        if self.repo.contains(['\n', '\r', '\0']) {
            return Err(MessageError::Invalid { field: "repo", why: "contains a control character".into() });
        }
        if self.svn.is_none() && self.refname.is_empty() {
            return Err(MessageError::Invalid { field: "refname", why: "empty (a git push names a ref)".into() });
        }
        Ok(())
    }

    /// The original's plain-text body (git, GitHub, GitLab or SVN layout).
    pub fn legacy_body(&self) -> String {
        let mut out = String::new();
        match &self.svn {
            Some(svn) => {
                let _ = writeln!(out, "repo: {}", self.repo);
                let _ = writeln!(out, "revname: {}", svn.revision);
                if let Some(c) = self.commits.first() {
                    let _ = writeln!(out, "Author: {}", c.author);
                    let _ = writeln!(out, "Date: {}", c.timestamp);
                }
                if let Some(p) = &svn.project {
                    let _ = writeln!(out, "Project: {p}");
                }
                out.push_str("Dirs:\n");
                for d in &svn.dirs {
                    let _ = writeln!(out, "  {d}");
                }
                if let Some(c) = self.commits.first() {
                    out.push('\n');
                    out.push_str(c.message.trim_end());
                    out.push('\n');
                }
            }
            None => {
                let _ = writeln!(out, "repo: {}", self.repo);
                let _ = writeln!(out, "oldrev: {}", self.oldrev);
                let _ = writeln!(out, "newrev: {}", self.newrev);
                let _ = writeln!(out, "refname: {}", self.refname);
                for c in &self.commits {
                    let _ = writeln!(out, " commit {}", c.id);
                    let _ = writeln!(out, "Author: {}", c.author);
                    let _ = writeln!(out, "Date: {}", c.timestamp);
                    for line in c.message.trim_end().lines() {
                        let _ = writeln!(out, "\t{line}");
                    }
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Reads any of the original's commit bodies (git hook, GitHub, GitLab, SVN).
    pub fn from_legacy(subject: Option<&str>, body: &str) -> Result<Commit, MessageError> {
        let fields = legacy_fields(body);
        let repo = legacy_get(&fields, "repo").filter(|r| !r.is_empty()).ok_or(MessageError::Invalid { field: "repo", why: "legacy commit body has no `repo:` line".into() })?;
        if let Some(rev) = legacy_get(&fields, "revname") {
            let revision = rev.parse().map_err(|_| MessageError::Invalid { field: "revname", why: format!("{rev:?} is not a revision number") })?;
            let project = legacy_get(&fields, "Project").filter(|p| !p.is_empty()).map(str::to_owned);
            let (dirs, message) = svn_dirs_and_message(body);
            let author = legacy_get(&fields, "Author").unwrap_or_default().to_owned();
            let timestamp = legacy_get(&fields, "Date").unwrap_or_default().to_owned();
            return Ok(Commit {
                repo: repo.to_owned(),
                newrev: rev.to_owned(),
                source: Source::Svn,
                svn: Some(SvnInfo { revision, project, dirs }),
                commits: vec![CommitInfo { id: rev.to_owned(), author, timestamp, message }],
                ..Commit::default()
            });
        }
        let mut refname = legacy_get(&fields, "refname").unwrap_or_default().to_owned();
        let mut newrev = legacy_get(&fields, "newrev").unwrap_or_default().to_owned();
        if refname.is_empty() {
            // Fall back to the subject `[repo] refname newrev`.
            if let Some((r, n)) = subject.and_then(|s| s.split_once("] ")).and_then(|(_, rest)| rest.split_once(' ')) {
                refname = r.to_owned();
                newrev = if newrev.is_empty() { n.trim().to_owned() } else { newrev };
            }
        }
        if refname.is_empty() {
            return Err(MessageError::Invalid { field: "refname", why: "legacy commit body has no `refname:` line".into() });
        }
        Ok(Commit {
            repo: repo.to_owned(),
            oldrev: legacy_get(&fields, "oldrev").unwrap_or_default().to_owned(),
            newrev,
            refname,
            source: Source::Git,
            commits: git_commit_blocks(body),
            ..Commit::default()
        })
    }
}

/// Whether an object id is all zeros.
pub fn is_zero(rev: &str) -> bool {
    !rev.is_empty() && rev.bytes().all(|b| b == b'0')
}

/// The `Dirs:` list and the log message of an SVN legacy body.
fn svn_dirs_and_message(body: &str) -> (Vec<String>, String) {
    let mut dirs = Vec::new();
    let mut lines = body.lines();
    for line in lines.by_ref() {
        if let Some(rest) = line.strip_prefix("Dirs:") {
            dirs.extend(rest.split_whitespace().map(str::to_owned));
            break;
        }
    }
    let mut message = Vec::new();
    let mut in_dirs = true;
    for line in lines {
        if in_dirs {
            if line.trim().is_empty() {
                in_dirs = false;
            } else if line.starts_with(char::is_whitespace) || !line.contains(": ") {
                dirs.push(line.trim().to_owned());
            } else {
                in_dirs = false;
                message.push(line);
            }
            continue;
        }
        message.push(line);
    }
    (dirs, message.join("\n").trim().to_owned())
}

/// The commit blocks of a git/GitHub/GitLab legacy body (best effort; receivers need only the header fields).
fn git_commit_blocks(body: &str) -> Vec<CommitInfo> {
    let mut out: Vec<CommitInfo> = Vec::new();
    for line in body.lines() {
        let t = line.trim();
        let id = t.strip_prefix("commit ").map(str::trim).filter(|id| is_hex_id(id)).or_else(|| is_hex_id(t).then_some(t));
        if let Some(id) = id {
            out.push(CommitInfo { id: id.to_owned(), ..CommitInfo::default() });
            continue;
        }
        let Some(c) = out.last_mut() else { continue };
        if let Some(a) = line.strip_prefix("Author:") {
            c.author = a.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("Date:") {
            c.timestamp = d.trim().to_owned();
        } else if !t.is_empty() {
            if !c.message.is_empty() {
                c.message.push('\n');
            }
            c.message.push_str(t);
        }
    }
    out
}

/// Whether `s` looks like a full git object id.
fn is_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Commit {
        Commit {
            repo: "site".into(),
            oldrev: "1".repeat(40),
            newrev: "3f2a".to_owned() + &"0".repeat(35) + "1",
            refname: "refs/heads/master".into(),
            source: Source::Github,
            commits: vec![CommitInfo {
                id: "a".repeat(40),
                author: "Dev <dev@example.com>".into(),
                timestamp: "2026-11-25T10:00:00+00:00".into(),
                message: "Fix the thing\n\nLonger text ✓".into(),
            }],
            ..Commit::default()
        }
    }

    #[test]
    fn git_legacy_round_trip() {
        let c = sample();
        let body = c.legacy_body();
        assert!(body.starts_with("repo: site\noldrev: "));
        let back = Commit::from_legacy(Some(&c.subject()), &body).unwrap();
        assert_eq!((back.repo.as_str(), back.refname.as_str(), back.newrev.as_str()), ("site", "refs/heads/master", c.newrev.as_str()));
        assert_eq!(back.commits.len(), 1);
        assert_eq!(back.commits[0].author, "Dev <dev@example.com>");
        assert_eq!(back.commits[0].message, "Fix the thing\nLonger text ✓");
    }

    #[test]
    fn original_git_hook_body() {
        let body = "repo: site\noldrev: 1111111111111111111111111111111111111111\nnewrev: 2222222222222222222222222222222222222222\nrefname: refs/heads/master\n2222222222222222222222222222222222222222\nAuthor: Dev <d@x>\nDate: Tue Apr 17 10:00:00 2012 +0100\n\n    Message here\n";
        let c = Commit::from_legacy(None, body).unwrap();
        assert_eq!(c.commits[0].id, "2".repeat(40));
        assert_eq!(c.commits[0].message, "Message here");
        assert_eq!(c.subject(), format!("[site] refs/heads/master {}", "2".repeat(40)));
    }

    #[test]
    fn svn_legacy_round_trip_and_subject() {
        let c = Commit {
            repo: "svnrepo".into(),
            newrev: "42".into(),
            source: Source::Svn,
            svn: Some(SvnInfo { revision: 42, project: Some("webapp".into()), dirs: vec!["webapp/trunk/src/".into(), "webapp/trunk/".into()] }),
            commits: vec![CommitInfo { id: "42".into(), author: "alice".into(), timestamp: "2026-11-25 10:00:00 +0000".into(), message: "Fix: it\nworks".into() }],
            ..Commit::default()
        };
        assert_eq!(c.subject(), "[svnrepo] 42 ");
        let back = Commit::from_legacy(None, &c.legacy_body()).unwrap();
        assert_eq!(back.svn, c.svn);
        assert_eq!(back.commits[0].message, "Fix: it\nworks");
        assert_eq!(back.commits[0].author, "alice");
        assert_eq!(back.effective_correlation_id(), "svn:svnrepo:42");
    }

    #[test]
    fn legacy_errors_name_the_field() {
        let e = Commit::from_legacy(None, "oldrev: x\n").unwrap_err();
        assert!(e.to_string().contains("repo"), "{e}");
        let e = Commit::from_legacy(None, "repo: x\n").unwrap_err();
        assert!(e.to_string().contains("refname"), "{e}");
        let c = Commit::from_legacy(Some("[x] refs/tags/v1 abc"), "repo: x\n").unwrap();
        assert_eq!((c.refname.as_str(), c.newrev.as_str()), ("refs/tags/v1", "abc"));
    }

    #[test]
    fn deletion_and_validation() {
        let mut c = sample();
        c.newrev = ZERO_REV.into();
        assert!(c.is_deletion());
        assert!(c.validate().is_ok());
        c.repo = "a\nb".into();
        assert!(c.validate().is_err());
    }
}
