//! Forge webhooks (GitHub, GitLab, Gitea/Forgejo) read into commit messages.
//!
//! Pure functions, no I/O: the HTTP server in [`crate::webhook`] hands each
//! request's event name and body here and publishes what comes back.
//!
//! - [`payload`]: the body (JSON or the form-encoded `payload=` delivery) and
//!   field access whose errors name the field (`repository.name`, `commits[3].id`).
//! - [`signature`]: HMAC-SHA256 signatures and shared tokens, compared in constant time.
//! - [`github`], [`gitlab`], [`gitea`]: one file per forge's events.
//!
//! The same push gives the same [`Commit`] whichever forge sent it (apart from
//! `source`): commits newest first, messages without trailing newlines, authors
//! as `Name <email>`, timestamps as RFC 3339 with a numeric offset (as the git hook writes them).

pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod payload;
pub mod signature;

use crate::message::{Commit, CommitInfo, Source};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a webhook request was refused; the text names the field or header concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    /// A required header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// The body is not valid JSON (or not a JSON object).
    #[error("malformed JSON body: {0}")]
    Json(String),
    /// A form-encoded delivery without a `payload` field.
    #[error("form-encoded body has no `payload` field")]
    NoFormPayload,
    /// A required field is absent or null.
    #[error("missing field `{0}`")]
    Missing(String),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field's path.
        field: String,
        /// The JSON type expected.
        expected: &'static str,
    },
    /// A field's value is not acceptable.
    #[error("field `{field}`: {why}")]
    Invalid {
        /// The field's path.
        field: String,
        /// What is wrong.
        why: String,
    },
}

/// What a webhook request amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    /// A push of one ref: publish a commit message (and its event line).
    Commit(Commit),
    /// Only an event line (e.g. a GitLab merge request).
    Event(String),
    /// A forge checking the hook works (GitHub `ping`).
    Ping,
    /// An event deploykit does not act on; the name is logged.
    Ignored(String),
}

/// Which repository field names the repo in commit messages (GitHub, Gitea).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoNameRule {
    /// `repository.name` (`site`), as github-stomp did.
    #[default]
    Name,
    /// `repository.full_name` (`org/site`).
    FullName,
}

/// How a forge's repository becomes the `repo` of a commit message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Naming {
    /// The rule when no mapping applies.
    pub rule: RepoNameRule,
    /// Explicit names by full name (`org/site` → `site`; GitLab: `path_with_namespace`).
    pub map: BTreeMap<String, String>,
}

impl Naming {
    /// Applies the mapping to `full_name`, else the `default` the forge's rule gave.
    fn resolve(&self, full_name: Option<&str>, default: &str, field: &str) -> Result<String, ForgeError> {
        let name = full_name.and_then(|f| self.map.get(f)).map(String::as_str).unwrap_or(default);
        check_repo(name, field)?;
        Ok(name.to_owned())
    }
}

/// A repo name must be usable as a configured entry's name: `A-Za-z0-9._-` and `/`, no `..`.
fn check_repo(name: &str, field: &str) -> Result<(), ForgeError> {
    let bad = |why: &str| Err(ForgeError::Invalid { field: field.to_owned(), why: format!("{name:?} {why}") });
    if name.is_empty() || name.len() > 200 {
        return bad("is not a repository name (1 to 200 characters)");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')) {
        return bad("has characters outside A-Za-z0-9._-/");
    }
    if name.starts_with(['-', '.', '/']) || name.split('/').any(|c| c.is_empty() || c == "..") {
        return bad("is not a plain repository name");
    }
    Ok(())
}

/// A full ref name as forges send it: `refs/…`, no spaces, control characters or `..`.
fn check_ref(refname: &str, field: &str) -> Result<(), ForgeError> {
    let ok = refname.starts_with("refs/")
        && refname.len() <= 255
        && !refname.contains("..")
        && !refname.ends_with('/')
        && !refname.bytes().any(|b| b <= b' ' || b == 0x7f || matches!(b, b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(ForgeError::Invalid { field: field.to_owned(), why: format!("{refname:?} is not a full git ref name (refs/…)") })
    }
}

/// A git object id: 40 or 64 hex digits.
fn check_rev(rev: &str, field: &str) -> Result<(), ForgeError> {
    if (rev.len() == 40 || rev.len() == 64) && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ForgeError::Invalid { field: field.to_owned(), why: format!("{rev:?} is not a git object id") })
    }
}

/// Normalises an RFC 3339 timestamp the way the git hook writes them:
/// whole seconds, `Z` as `+00:00`; anything else is kept as given.
pub fn normalize_timestamp(ts: &str) -> String {
    let ts = ts.trim();
    normalized(ts).unwrap_or_else(|| ts.to_owned())
}

/// [`normalize_timestamp`]'s work; `None` when `ts` is not `YYYY-MM-DD[T ]hh:mm:ss[.frac](Z|±hh:mm|±hhmm)`.
///
/// Only ASCII text is sliced, and only through `get`, so no input can panic it.
fn normalized(ts: &str) -> Option<String> {
    if !ts.is_ascii() {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| ts.get(r).is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()));
    let at = |i: usize| ts.as_bytes().get(i).copied();
    let shape = digits(0..4) && at(4) == Some(b'-') && digits(5..7) && at(7) == Some(b'-') && digits(8..10);
    let shape = shape && matches!(at(10), Some(b'T' | b't' | b' ')) && digits(11..13) && at(13) == Some(b':') && digits(14..16) && at(16) == Some(b':') && digits(17..19);
    if !shape {
        return None;
    }
    let (date, time, mut rest) = (ts.get(..10)?, ts.get(11..19)?, ts.get(19..)?);
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest.as_bytes() {
        b"Z" | b"z" => "+00:00".to_owned(),
        [b'+' | b'-', h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) => rest.to_owned(),
        [s @ (b'+' | b'-'), h1, h2, m1, m2] if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) => {
            format!("{}{}{}:{}{}", char::from(*s), char::from(*h1), char::from(*h2), char::from(*m1), char::from(*m2))
        }
        _ => return None,
    };
    Some(format!("{date}T{time}{offset}"))
}

/// The parts of a push every forge sends, before naming.
struct Push {
    refname: String,
    before: String,
    after: String,
    commits: Vec<CommitInfo>,
}

impl Push {
    /// Reads `ref`, `before`, `after` and `commits` (oldest first, as all three forges send them).
    fn read(v: &payload::Obj<'_>) -> Result<Push, ForgeError> {
        let refname = v.str("ref")?.to_owned();
        check_ref(&refname, "ref")?;
        let before = v.str("before")?.to_owned();
        check_rev(&before, "before")?;
        let after = v.str("after")?.to_owned();
        check_rev(&after, "after")?;
        let mut commits = Vec::new();
        if let Some(list) = v.opt_array("commits")? {
            for (i, c) in list.iter().enumerate() {
                let field = format!("commits[{i}]");
                let c = payload::Obj::at(c, &field)?;
                let id = c.str("id")?.to_owned();
                check_rev(&id, &format!("{field}.id"))?;
                let author = c.obj("author")?;
                let name = author.opt_str("name")?.unwrap_or_default();
                let email = author.opt_str("email")?.unwrap_or_default();
                let author = match (name.is_empty(), email.is_empty()) {
                    (false, false) => format!("{name} <{email}>"),
                    (false, true) => name.to_owned(),
                    (true, _) => format!("<{email}>"),
                };
                commits.push(CommitInfo {
                    id,
                    author,
                    timestamp: normalize_timestamp(c.opt_str("timestamp")?.unwrap_or_default()),
                    message: c.opt_str("message")?.unwrap_or_default().trim_end().to_owned(),
                });
            }
        }
        commits.reverse();
        Ok(Push { refname, before, after, commits })
    }

    /// The commit message for this push of `repo`.
    fn into_commit(self, repo: String, source: Source) -> Commit {
        Commit { repo, oldrev: self.before, newrev: self.after, refname: self.refname, source, svn: None, commits: self.commits, correlation_id: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_normalise_like_the_git_hook() {
        assert_eq!(normalize_timestamp("2026-11-25T10:00:00Z"), "2026-11-25T10:00:00+00:00");
        assert_eq!(normalize_timestamp("2026-11-25T10:00:00.123Z"), "2026-11-25T10:00:00+00:00");
        assert_eq!(normalize_timestamp("2015-05-05T19:40:15-04:00"), "2015-05-05T19:40:15-04:00");
        assert_eq!(normalize_timestamp("2015-05-05T19:40:15-0400"), "2015-05-05T19:40:15-04:00");
        assert_eq!(normalize_timestamp("yesterday"), "yesterday");
        assert_eq!(normalize_timestamp("2015-05-05 19:40:15 -0400"), "2015-05-05 19:40:15 -0400");
    }

    #[test]
    fn timestamps_with_multibyte_characters_are_kept_not_sliced() {
        // Every byte offset the old code sliced at, hit by a multibyte character.
        for ts in [
            "2026-11-25T10:00:0é+00:00",
            "2026-11-2éT10:00:00Z",
            "2026-11-25T10:00:00+1é1",
            "2026-11-25T10:00:00.1€",
            "€€€€€€€€€€€€",
            "2026-11-25T10:0€:00Z",
            "2026-11-25T10:00:00-04:0€",
        ] {
            assert_eq!(normalize_timestamp(ts), ts);
        }

        // Found by fuzz/forge_payload: a multi-byte character at a slicing offset panicked (byte index 19 inside U+FFFD).
        assert_eq!(normalize_timestamp("2024-01-02T03:04\u{fffd}05Z"), "2024-01-02T03:04\u{fffd}05Z");
        assert_eq!(normalize_timestamp("2024-01-02T03:04:05+\u{fffd}x"), "2024-01-02T03:04:05+\u{fffd}x");
    }

    #[test]
    fn names_refs_and_revs_are_checked() {
        assert!(check_repo("site", "f").is_ok() && check_repo("org/site.web", "f").is_ok());
        for bad in ["", "../x", "a//b", "-x", "a b", "a\nb", "/abs", "a/../b"] {
            assert!(check_repo(bad, "repository.name").is_err(), "{bad:?}");
        }
        assert!(check_ref("refs/heads/main", "ref").is_ok());
        for bad in ["main", "refs/heads/a..b", "refs/heads/a b", "refs/heads/x\n", "refs/heads/"] {
            assert!(check_ref(bad, "ref").is_err(), "{bad:?}");
        }
        assert!(check_rev(&"a".repeat(40), "after").is_ok());
        assert!(check_rev("abc", "after").unwrap_err().to_string().contains("after"));
    }
}
