//! Which configured jobs a commit triggers: repo (and SVN project) lookup,
//! then each job's `ignore_refs` and `branches` filters. Deletions never trigger.

use super::config::{JobConfig, RepoJobs};
use crate::message::Commit;
use std::collections::BTreeMap;

/// Why a commit triggers nothing (for the debug log and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The repo is not configured.
    UnknownRepo,
    /// The push deletes the ref.
    Deletion,
    /// Every job of the repo filtered it out (ignore_refs, branches, or no SVN project matched).
    Filtered,
    /// The ref name or revision is not acceptable as a build parameter (see [`validate`]).
    Invalid(String),
}

/// Checks what becomes `REFNAME` and `NEWREV`: a git push needs a valid ref
/// name ([`crate::git::refs::validate_refname`]) and a full hexadecimal object
/// id; an SVN commit a revision number, and a ref name (if any) without control
/// characters or a leading `-`.
pub fn validate(commit: &Commit) -> Result<(), crate::git::refs::RefError> {
    use crate::git::refs::{validate_refname, validate_revision, validate_svn_revision, RefError};
    if commit.svn.is_some() {
        validate_svn_revision(&commit.newrev)?;
        let r = &commit.refname;
        if r.starts_with('-') || r.len() > 1024 || r.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(RefError::RefName { refname: r.clone(), why: "begins with '-', is too long or contains a control character" });
        }
        return Ok(());
    }
    validate_refname(&commit.refname)?;
    validate_revision(&commit.newrev)
}

/// Whether `job` wants a commit to `refname` (empty for SVN: the filters do not apply).
pub fn job_wants(job: &JobConfig, refname: &str) -> bool {
    if refname.is_empty() {
        return true;
    }
    if job.ignore_refs.as_ref().is_some_and(|r| r.is_match(refname)) {
        return false;
    }
    match &job.branches {
        None => true,
        Some(list) => list.iter().any(|b| b == refname || refname.strip_prefix("refs/heads/") == Some(b.as_str())),
    }
}

/// The jobs `commit` triggers, or why none.
pub fn jobs_for<'a>(repos: &'a BTreeMap<String, RepoJobs>, commit: &Commit) -> Result<Vec<&'a JobConfig>, Skip> {
    let repo = repos.get(&commit.repo).ok_or(Skip::UnknownRepo)?;
    if commit.is_deletion() {
        return Err(Skip::Deletion);
    }
    if let Err(e) = validate(commit) {
        tracing::warn!(repo = %commit.repo, error = %e, "commit message refused: nothing triggered");
        return Err(Skip::Invalid(e.to_string()));
    }
    let project = commit.svn.as_ref().and_then(|s| s.project.as_deref());
    let candidates = repo.jobs.iter().chain(project.and_then(|p| repo.projects.get(p)).into_iter().flatten());
    let jobs: Vec<&JobConfig> = candidates.filter(|j| job_wants(j, &commit.refname)).collect();
    if jobs.is_empty() {
        return Err(Skip::Filtered);
    }
    Ok(jobs)
}

/// The build parameters passed with `buildWithParameters`: `REPO`, `REFNAME`, `NEWREV`
/// (only for commits [`jobs_for`] accepted, so both passed [`validate`]).
pub fn parameters(commit: &Commit) -> Vec<(String, String)> {
    vec![("REPO".into(), commit.repo.clone()), ("REFNAME".into(), commit.refname.clone()), ("NEWREV".into(), commit.newrev.clone())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jenkins::config::JenkinsConfig;
    use crate::message::commit::ZERO_REV;
    use crate::message::SvnInfo;

    fn config() -> JenkinsConfig {
        JenkinsConfig::parse(
            r#"
[jenkins]
url = "http://ci/"
[[repos.site.jobs]]
job = "site"
ignore_refs = "refs/tags/jenkins-.*"
[[repos.site.jobs]]
job = "site-release"
branches = ["release", "refs/heads/hotfix"]
[[repos.svn.projects.webapp.jobs]]
job = "webapp"
"#,
        )
        .unwrap()
    }

    fn push(repo: &str, refname: &str) -> Commit {
        Commit { repo: repo.into(), refname: refname.into(), newrev: "a".repeat(40), ..Commit::default() }
    }

    fn names(r: Result<Vec<&JobConfig>, Skip>) -> Result<Vec<&str>, Skip> {
        r.map(|v| v.into_iter().map(|j| j.job.as_str()).collect())
    }

    #[test]
    fn filters() {
        let c = config();
        assert_eq!(names(jobs_for(&c.repos, &push("site", "refs/heads/master"))), Ok(vec!["site"]));
        assert_eq!(names(jobs_for(&c.repos, &push("site", "refs/heads/release"))), Ok(vec!["site", "site-release"]));
        assert_eq!(names(jobs_for(&c.repos, &push("site", "refs/heads/hotfix"))), Ok(vec!["site", "site-release"]));
        assert_eq!(names(jobs_for(&c.repos, &push("site", "refs/tags/jenkins-12"))), Err(Skip::Filtered));
        assert_eq!(names(jobs_for(&c.repos, &push("nope", "refs/heads/master"))), Err(Skip::UnknownRepo));
        let mut del = push("site", "refs/heads/master");
        del.newrev = ZERO_REV.into();
        assert_eq!(names(jobs_for(&c.repos, &del)), Err(Skip::Deletion));
        for (refname, rev) in [("-x", "a".repeat(40)), ("refs/heads/a b", "a".repeat(40)), ("refs/heads/m", "HEAD".into()), ("refs/heads/m", "-x".into())] {
            let mut c2 = push("site", refname);
            c2.newrev = rev;
            assert!(matches!(jobs_for(&c.repos, &c2), Err(Skip::Invalid(_))), "{refname} {}", c2.newrev);
        }
    }

    #[test]
    fn svn_projects() {
        let c = config();
        let mut svn = Commit { repo: "svn".into(), newrev: "42".into(), ..Commit::default() };
        svn.svn = Some(SvnInfo { revision: 42, project: Some("webapp".into()), dirs: vec![] });
        assert_eq!(names(jobs_for(&c.repos, &svn)), Ok(vec!["webapp"]));
        svn.svn = Some(SvnInfo { revision: 43, project: Some("other".into()), dirs: vec![] });
        assert_eq!(names(jobs_for(&c.repos, &svn)), Err(Skip::Filtered));
    }
}
