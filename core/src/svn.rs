//! Reading a Subversion commit for the post-commit hook, through `svnlook`
//! (the SVN API's command-line face), always with an argument vector.

use crate::message::{Commit, CommitInfo, Source, SvnInfo};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a Subversion commit could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SvnError {
    /// `svnlook` could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program tried.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `svnlook` ran but failed.
    #[error("svnlook {subcommand} -r {rev} failed ({status}): {stderr}")]
    Failed {
        /// `author`, `date`, `log` or `dirs-changed`.
        subcommand: &'static str,
        /// The revision asked for.
        rev: u64,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// The repository path cannot be used.
    #[error("invalid repository path {path}: {why}")]
    InvalidRepos {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The repository name is empty or contains a control character.
    #[error("invalid repository name {0:?}")]
    InvalidName(String),
}

/// Reads revision `rev` of the repository at `repos` with `svnlook` and builds
/// its commit message: author, date (RFC 3339 when svnlook's format is
/// recognised), log message, changed directories and the legacy `Project`
/// (the path component before `/trunk`).
pub fn read_commit(repos: &Path, rev: u64, repo_name: &str, svnlook: &Path) -> Result<Commit, SvnError> {
    if repo_name.trim().is_empty() || repo_name.contains(|c: char| c.is_control()) {
        return Err(SvnError::InvalidName(repo_name.to_owned()));
    }
    // An absolute path can never be taken for an option.
    let repos = std::path::absolute(repos).map_err(|e| SvnError::InvalidRepos { path: repos.to_owned(), why: e.to_string() })?;
    let look = |subcommand: &'static str| -> Result<String, SvnError> {
        let out = Command::new(svnlook)
            .arg(subcommand)
            .arg("-r")
            .arg(rev.to_string())
            .arg(&repos)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| SvnError::Spawn { program: svnlook.to_owned(), source })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(SvnError::Failed { subcommand, rev, status: out.status, stderr });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let author = look("author")?.trim().to_owned();
    let date = look("date")?;
    let log = look("log")?;
    let dirs: Vec<String> = look("dirs-changed")?.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let project = project_of(&dirs);
    Ok(Commit {
        repo: repo_name.to_owned(),
        newrev: rev.to_string(),
        source: Source::Svn,
        svn: Some(SvnInfo { revision: rev, project, dirs }),
        commits: vec![CommitInfo { id: rev.to_string(), author, timestamp: svn_date_to_rfc3339(date.trim()), message: log.trim_end_matches(['\n', '\r']).to_owned() }],
        ..Commit::default()
    })
}

/// The legacy `Project` rule: the path component just before `trunk` in the first
/// changed directory that has one (`webapp/trunk/src/` → `webapp`).
pub fn project_of(dirs: &[String]) -> Option<String> {
    dirs.iter().find_map(|d| {
        let comps: Vec<&str> = d.split('/').filter(|c| !c.is_empty()).collect();
        comps.iter().position(|c| *c == "trunk").filter(|&i| i > 0).map(|i| comps[i - 1].to_owned())
    })
}

/// `svnlook date` prints `2026-11-25 10:00:00 +0100 (Wed, 25 Nov 2026)`; this gives
/// `2026-11-25T10:00:00+01:00`, or the input unchanged if it looks different.
pub fn svn_date_to_rfc3339(s: &str) -> String {
    let mut parts = s.split_whitespace();
    let (Some(date), Some(time), Some(off)) = (parts.next(), parts.next(), parts.next()) else {
        return s.to_owned();
    };
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    let date_ok = date.len() == 10 && date.split('-').map(str::len).eq([4, 2, 2]) && date.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    let time_ok = time.len() == 8 && time.split(':').all(|t| digits(t, 2));
    let off_ok = off.len() == 5 && (off.starts_with('+') || off.starts_with('-')) && digits(&off[1..], 4);
    if !(date_ok && time_ok && off_ok) {
        return s.to_owned();
    }
    format!("{date}T{time}{}:{}", &off[..3], &off[3..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn project_rule() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(project_of(&d(&["webapp/trunk/src/", "webapp/trunk/"])).as_deref(), Some("webapp"));
        assert_eq!(project_of(&d(&["docs/", "group/api/trunk/lib/"])).as_deref(), Some("api"));
        assert_eq!(project_of(&d(&["trunk/", "webapp/branches/x/"])), None);
        assert_eq!(project_of(&d(&["trunkated/x/"])), None);
        assert_eq!(project_of(&[]), None);
    }

    #[test]
    fn svn_dates() {
        assert_eq!(svn_date_to_rfc3339("2026-11-25 10:00:00 +0100 (Wed, 25 Nov 2026)"), "2026-11-25T10:00:00+01:00");
        assert_eq!(svn_date_to_rfc3339("2026-11-25 10:00:00 -0530"), "2026-11-25T10:00:00-05:30");
        assert_eq!(svn_date_to_rfc3339("yesterday"), "yesterday");
        assert_eq!(svn_date_to_rfc3339("2026-11-25 10:00 +0100"), "2026-11-25 10:00 +0100");
    }

    /// A stand-in `svnlook` that records its argument vector, so the test shows
    /// that nothing is interpolated into a shell.
    #[test]
    fn runs_svnlook_with_an_argument_vector() {
        let dir = std::env::temp_dir().join(format!("dk-svn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("svnlook");
        let args_log = dir.join("args");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s|' \"$@\" >> '{}'\necho >> '{}'\ncase \"$1\" in\n author) echo alice;;\n date) echo '2026-11-25 10:00:00 +0000 (Wed, 25 Nov 2026)';;\n log) printf 'Fix it\\n\\nmore\\n';;\n dirs-changed) printf 'webapp/trunk/src/\\nwebapp/trunk/\\n';;\nesac\n",
                args_log.display(),
                args_log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let repos = dir.join("repo with space;$(touch x)");
        let c = read_commit(&repos, 7, "svnrepo", &fake).unwrap();
        assert_eq!(c.subject(), "[svnrepo] 7 ");
        let svn = c.svn.as_ref().unwrap();
        assert_eq!((svn.revision, svn.project.as_deref()), (7, Some("webapp")));
        assert_eq!(svn.dirs, ["webapp/trunk/src/", "webapp/trunk/"]);
        assert_eq!(c.commits[0].author, "alice");
        assert_eq!(c.commits[0].timestamp, "2026-11-25T10:00:00+00:00");
        assert_eq!(c.commits[0].message, "Fix it\n\nmore");
        let log = std::fs::read_to_string(&args_log).unwrap();
        let first = log.lines().next().unwrap();
        assert_eq!(first, format!("author|-r|7|{}|", repos.display()));
        assert!(!dir.join("x").exists());
        assert!(matches!(read_commit(&repos, 7, "", &fake), Err(SvnError::InvalidName(_))));
        let e = read_commit(&repos, 7, "r", &dir.join("missing-svnlook")).unwrap_err();
        assert!(matches!(e, SvnError::Spawn { .. }), "{e}");
        std::fs::write(&fake, "#!/bin/sh\necho 'svnlook: E160006: No such revision 9' >&2\nexit 1\n").unwrap();
        let e = read_commit(&repos, 9, "r", &fake).unwrap_err();
        assert!(e.to_string().contains("No such revision 9"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
