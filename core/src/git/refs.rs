//! Ref names and revisions that arrive in messages (commit messages on the
//! bus are trusted by nobody): the checks every daemon applies before such a
//! name reaches git, a directory name or a build parameter. dk-fetch and
//! dk-jenkins share them.

/// A ref name or revision from a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The ref name breaks a rule.
    #[error("refused ref name {refname:?}: {why}")]
    RefName {
        /// The name as received (escaped by `{:?}` when shown).
        refname: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The revision is not an object id (or an SVN revision number).
    #[error("refused revision {rev:?}: {why}")]
    Revision {
        /// The revision as received.
        rev: String,
        /// What was expected.
        why: &'static str,
    },
}

/// Checks a ref name before any git operation: full (`refs/heads/main`) or
/// short (`main`, taken as a branch); git's ref rules
/// (`git2::Reference::is_valid_name`) plus: no leading `-`, no `..`, no NUL,
/// newline or other control character, at most 1024 bytes.
pub fn validate_refname(refname: &str) -> Result<(), RefError> {
    let bad = |why| Err(RefError::RefName { refname: refname.to_owned(), why });
    if refname.is_empty() {
        return bad("empty");
    }
    if refname.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if refname.starts_with('-') {
        return bad("begins with '-'");
    }
    if refname.contains("..") {
        return bad("contains '..'");
    }
    if refname.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return bad("contains NUL, a newline or another control character");
    }
    if refname.contains(['\\', ' ', '~', '^', ':', '?', '*', '[']) {
        return bad("contains a character git forbids in ref names");
    }
    if !git2::Reference::is_valid_name(&full_refname(refname)) {
        return bad("not a valid git ref name");
    }
    Ok(())
}

/// Checks a tag or branch name as a deploy request gives it (it becomes part of a
/// release directory name): valid as `refs/tags/NAME` by git's rules, at most 200
/// bytes, no leading `-`, no whitespace or control characters.
pub fn validate_tag_name(name: &str) -> Result<(), RefError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('-')
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
        && git2::Reference::is_valid_name(&format!("refs/tags/{name}"));
    match ok {
        true => Ok(()),
        false => Err(RefError::RefName {
            refname: name.chars().take(200).collect(),
            why: "not a valid tag or branch name (git's ref rules, at most 200 bytes, no leading '-', no whitespace)",
        }),
    }
}

/// `refs/…` as is; a short name as `refs/heads/NAME`.
pub fn full_refname(refname: &str) -> String {
    if refname.starts_with("refs/") {
        refname.to_owned()
    } else {
        format!("refs/heads/{refname}")
    }
}

/// Checks a git revision: a full SHA-1 or SHA-256 object id in lowercase or uppercase hexadecimal.
pub fn validate_revision(rev: &str) -> Result<(), RefError> {
    if (rev.len() == 40 || rev.len() == 64) && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(RefError::Revision { rev: rev.to_owned(), why: "expected a full hexadecimal object id (40 or 64 digits)" })
    }
}

/// Checks a Subversion revision: decimal digits only (at most 20).
pub fn validate_svn_revision(rev: &str) -> Result<(), RefError> {
    if !rev.is_empty() && rev.len() <= 20 && rev.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(RefError::Revision { rev: rev.to_owned(), why: "expected a Subversion revision number" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refnames_and_revisions() {
        for ok in ["main", "refs/heads/feature/x", "refs/tags/v1.2", "feature__x"] {
            assert!(validate_refname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a\nb", "a b", "refs/heads/a:b", "a\\b", "x[1]", "refs/heads/.hidden"] {
            assert!(validate_refname(bad).is_err(), "{bad:?}");
        }
        assert!(validate_revision(&"a".repeat(40)).is_ok() && validate_revision(&"0".repeat(64)).is_ok());
        for bad in ["", "HEAD", "abc", "-1", &"g".repeat(40), &format!("{}\n", "a".repeat(39))] {
            assert!(validate_revision(bad).is_err(), "{bad:?}");
        }
        assert!(validate_svn_revision("42").is_ok() && validate_svn_revision("4 2").is_err() && validate_svn_revision("").is_err());
    }
}
