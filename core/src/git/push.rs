//! The commits one pushed ref brought, as the post-receive hook sees them.

use super::{open, GitError};
use crate::message::commit::is_zero;
use crate::message::CommitInfo;
use git2::{Oid, Sort};
use std::path::Path;

/// Reads the commits a push of `refname` from `oldrev` to `newrev` brought, newest first,
/// at most `max_commits` of them.
///
/// - A branch update: the commits reachable from `newrev` and not from `oldrev`.
/// - A new branch (`oldrev` all zeros): the commits reachable from `newrev` and from
///   no other branch head (`refs/heads/*` except `refname` itself).
/// - A deletion (`newrev` all zeros): none.
/// - A tag (`refs/tags/*`), annotated or lightweight: the tagged commit.
///
/// `refname` must be a valid git ref name and both revisions full hexadecimal
/// object ids; anything else is refused before the repository is touched.
pub fn read_push(repo: &Path, oldrev: &str, newrev: &str, refname: &str, max_commits: usize) -> Result<Vec<CommitInfo>, GitError> {
    if !git2::Reference::is_valid_name(refname) {
        return Err(GitError::InvalidRefName(refname.to_owned()));
    }
    check_rev(oldrev)?;
    check_rev(newrev)?;
    if is_zero(newrev) || max_commits == 0 {
        return Ok(Vec::new());
    }
    let repo = open(repo)?;
    let new_oid = Oid::from_str(newrev).map_err(object_err("new revision", newrev))?;
    let new_obj = repo.find_object(new_oid, None).map_err(object_err("new revision", newrev))?;
    let Ok(new_commit) = new_obj.peel_to_commit() else {
        // A tag of a tree or a blob: nothing to describe.
        return Ok(Vec::new());
    };
    if refname.starts_with("refs/tags/") {
        return Ok(vec![info(&new_commit)]);
    }
    let walk_err = |source| GitError::Walk { refname: refname.to_owned(), source };
    let mut walk = repo.revwalk().map_err(walk_err)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME).map_err(walk_err)?;
    walk.push(new_commit.id()).map_err(walk_err)?;
    if is_zero(oldrev) {
        for reference in repo.references_glob("refs/heads/*").map_err(walk_err)? {
            let reference = reference.map_err(walk_err)?;
            if reference.name().ok() == Some(refname) {
                continue;
            }
            if let Ok(head) = reference.peel_to_commit() {
                walk.hide(head.id()).map_err(walk_err)?;
            }
        }
    } else {
        // After a forced push the old commit normally still exists; if it was
        // pruned, the walk is bounded by `max_commits` anyway.
        let old = Oid::from_str(oldrev).and_then(|oid| repo.find_object(oid, None)).and_then(|o| o.peel_to_commit());
        if let Ok(old) = old {
            walk.hide(old.id()).map_err(walk_err)?;
        }
    }
    let mut out = Vec::new();
    for oid in walk.take(max_commits) {
        let oid = oid.map_err(walk_err)?;
        let commit = repo.find_commit(oid).map_err(object_err("commit", &oid.to_string()))?;
        out.push(info(&commit));
    }
    Ok(out)
}

/// Builds the error for an unreadable object.
fn object_err(what: &'static str, rev: &str) -> impl FnOnce(git2::Error) -> GitError {
    let rev = rev.to_owned();
    move |source| GitError::Object { what, rev, source }
}

/// A full SHA-1 or SHA-256 object id in hexadecimal.
fn check_rev(rev: &str) -> Result<(), GitError> {
    if (rev.len() == 40 || rev.len() == 64) && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(GitError::InvalidRev(rev.to_owned()))
    }
}

/// One commit as a message describes it.
fn info(commit: &git2::Commit<'_>) -> CommitInfo {
    let author = commit.author();
    let when = author.when();
    CommitInfo {
        id: commit.id().to_string(),
        author: format!("{} <{}>", String::from_utf8_lossy(author.name_bytes()), String::from_utf8_lossy(author.email_bytes())),
        timestamp: rfc3339(when.seconds(), when.offset_minutes()),
        message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
    }
}

/// Formats a git time (seconds since the epoch and the author's UTC offset in
/// minutes) as RFC 3339 in that offset, always with a numeric offset
/// (`2026-11-25T11:00:00+01:00`, `…+00:00`). The calendar arithmetic is the
/// `time` crate's; a date outside years 0–9999 (which RFC 3339 cannot express)
/// falls back to the UTC offset, then to the plain number of seconds.
pub fn rfc3339(seconds: i64, offset_minutes: i32) -> String {
    let offset = time::UtcOffset::from_whole_seconds(offset_minutes.saturating_mul(60)).unwrap_or(time::UtcOffset::UTC);
    let Ok(utc) = time::OffsetDateTime::from_unix_timestamp(seconds) else {
        return seconds.to_string();
    };
    let dt = utc.checked_to_offset(offset).unwrap_or(utc);
    if !(0..=9999).contains(&dt.year()) {
        return seconds.to_string();
    }
    let off = dt.offset();
    let sign = if off.is_negative() { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        off.whole_hours().unsigned_abs(),
        off.minutes_past_hour().unsigned_abs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::commit::ZERO_REV;
    use git2::{Repository, Signature, Time};
    use std::path::PathBuf;

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("dk-git-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Commits an empty tree change with `message` on `refname`, parent = `parent`.
    fn commit(repo: &Repository, refname: &str, parent: Option<Oid>, message: &str, secs: i64, offset: i32) -> Oid {
        let sig = Signature::new("Dev Eloper", "dev@example.com", &Time::new(secs, offset)).unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        let blob = repo.blob(message.as_bytes()).unwrap();
        tb.insert("file", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let parents: Vec<git2::Commit> = parent.into_iter().map(|p| repo.find_commit(p).unwrap()).collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some(refname), &sig, &sig, message, &tree, &refs).unwrap()
    }

    #[test]
    fn rfc3339_keeps_the_authors_offset() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00+00:00");
        assert_eq!(rfc3339(1_795_600_800, 60), "2026-11-25T11:00:00+01:00");
        assert_eq!(rfc3339(1_795_600_800, -330), "2026-11-25T04:30:00-05:30");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00+00:00");
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59+00:00");
        assert_eq!(rfc3339(i64::MAX, 0), i64::MAX.to_string());
    }

    #[test]
    fn branch_update_new_branch_tag_and_deletion() {
        let dir = TempDir::new("push");
        let repo = Repository::init_bare(&dir.0).unwrap();
        let c1 = commit(&repo, "refs/heads/master", None, "first\n", 1_700_000_000, 0);
        let c2 = commit(&repo, "refs/heads/master", Some(c1), "second\n\nbody ✓\n", 1_700_000_100, 120);
        let c3 = commit(&repo, "refs/heads/master", Some(c2), "third\n", 1_700_000_200, -60);
        let (s1, s2, s3) = (c1.to_string(), c2.to_string(), c3.to_string());

        let got = read_push(&dir.0, &s1, &s3, "refs/heads/master", 50).unwrap();
        assert_eq!(got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [s3.as_str(), s2.as_str()]);
        assert_eq!(got[0].author, "Dev Eloper <dev@example.com>");
        assert_eq!(got[0].timestamp, "2023-11-14T21:16:40-01:00");
        assert_eq!(got[1].message, "second\n\nbody ✓\n");
        assert_eq!(read_push(&dir.0, &s1, &s3, "refs/heads/master", 1).unwrap().len(), 1);

        // A new branch from c2 plus one commit: only the new commit.
        let f1 = commit(&repo, "refs/heads/feature", Some(c2), "feature work\n", 1_700_000_300, 0);
        let got = read_push(&dir.0, ZERO_REV, &f1.to_string(), "refs/heads/feature", 50).unwrap();
        assert_eq!(got.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [f1.to_string()]);

        // The first push of a repository: everything.
        let only = TempDir::new("first");
        let repo2 = Repository::init_bare(&only.0).unwrap();
        let a = commit(&repo2, "refs/heads/main", None, "a\n", 1_700_000_000, 0);
        let b = commit(&repo2, "refs/heads/main", Some(a), "b\n", 1_700_000_001, 0);
        assert_eq!(read_push(&only.0, ZERO_REV, &b.to_string(), "refs/heads/main", 50).unwrap().len(), 2);

        // Tags: lightweight and annotated both give the tagged commit.
        repo.reference("refs/tags/v1", c2, false, "").unwrap();
        let got = read_push(&dir.0, ZERO_REV, &s2, "refs/tags/v1", 50).unwrap();
        assert_eq!(got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [s2.as_str()]);
        let sig = Signature::new("T", "t@x", &Time::new(1_700_000_400, 0)).unwrap();
        let tag = repo.tag("v2", &repo.find_object(c3, None).unwrap(), &sig, "release 2", false).unwrap();
        let got = read_push(&dir.0, ZERO_REV, &tag.to_string(), "refs/tags/v2", 50).unwrap();
        assert_eq!(got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [s3.as_str()]);

        // Deletion: nothing, and the repository is not even opened.
        assert!(read_push(Path::new("/nonexistent"), &s3, ZERO_REV, "refs/heads/master", 50).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_input() {
        let z = ZERO_REV;
        for bad in ["refs/heads/a..b", "refs/heads/x y", "refs/heads/-", "refs/heads/a;rm -rf", "", "refs/heads/x.lock", "refs//x"] {
            if git2::Reference::is_valid_name(bad) {
                continue; // git allows some of these; the check is git's own
            }
            assert!(matches!(read_push(Path::new("/x"), z, z, bad, 1), Err(GitError::InvalidRefName(_))), "{bad}");
        }
        assert!(matches!(read_push(Path::new("/x"), z, z, "refs/heads/a..b", 1), Err(GitError::InvalidRefName(_))));
        for bad in ["HEAD", "abc", "--upload-pack=x", &"g".repeat(40), &"0".repeat(39)] {
            assert!(matches!(read_push(Path::new("/x"), bad, z, "refs/heads/m", 1), Err(GitError::InvalidRev(_))), "{bad}");
            assert!(matches!(read_push(Path::new("/x"), z, bad, "refs/heads/m", 1), Err(GitError::InvalidRev(_))), "{bad}");
        }
        let dir = TempDir::new("missing");
        Repository::init_bare(&dir.0).unwrap();
        let e = read_push(&dir.0, z, &"a".repeat(40), "refs/heads/m", 5).unwrap_err();
        assert!(matches!(e, GitError::Object { .. }) && e.to_string().contains(&"a".repeat(40)), "{e}");
        assert!(matches!(read_push(Path::new("/nonexistent/repo"), z, &"a".repeat(40), "refs/heads/m", 5), Err(GitError::Open { .. })));
    }

    #[test]
    fn git_config_reads_deploykit_keys() {
        let dir = TempDir::new("config");
        let repo = Repository::init_bare(&dir.0).unwrap();
        repo.config().unwrap().set_str("deploykit.brokerUrl", "stomp://b:61613").unwrap();
        assert_eq!(super::super::git_config(&dir.0, "deploykit.brokerurl").unwrap().as_deref(), Some("stomp://b:61613"));
        assert_eq!(super::super::git_config(&dir.0, "deploykit.wire").unwrap(), None);
    }
}
