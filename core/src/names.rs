//! The one rule for the names a config gives and a message repeats back:
//! repositories (dk-fetch, dk-jenkins), sites and key names (dk-agent, dk-web).
//! Such a name becomes a map key, a directory name, a lock file name and a
//! metric label, so it is short, plain ASCII and cannot be read as an option.

use std::fmt;

/// The longest name accepted, in bytes.
pub const MAX_LEN: usize = 100;

/// What the rule says, for error messages.
pub const RULE: &str = "1-100 of A-Z a-z 0-9 . _ - and do not start with - or .";

/// A name that passed [`RepoName::parse`]: 1–100 of `A-Za-z0-9._-`, not starting with `-` or `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

/// A name broke the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid name: names are {RULE}")]
pub struct NameError {
    /// The name as given (at most [`MAX_LEN`] + 1 characters of it).
    pub name: String,
}

impl RepoName {
    /// Checks `name` against the rule.
    pub fn parse(name: &str) -> Result<RepoName, NameError> {
        if RepoName::is_valid(name) {
            Ok(RepoName(name.to_owned()))
        } else {
            Err(NameError { name: name.chars().take(MAX_LEN + 1).collect() })
        }
    }

    /// Whether `name` follows the rule.
    pub fn is_valid(name: &str) -> bool {
        !name.is_empty() && name.len() <= MAX_LEN && !name.starts_with(['-', '.']) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RepoName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule() {
        for good in ["site", "my-repo.git", "a_b", "A1", &"x".repeat(100)] {
            assert_eq!(RepoName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "-rf", ".hidden", "a/b", "a b", "ä", "a\n", "..", &"x".repeat(101)] {
            let e = RepoName::parse(bad).unwrap_err();
            assert!(e.to_string().contains("not a valid name"), "{e}");
        }
    }
}
