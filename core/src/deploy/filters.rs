//! MCollective-style server selection: identity (name or `/regex/`), classes
//! and facts. Several identities are alternatives; classes and facts must all
//! hold; the kinds combine with AND.

use crate::message::Filters;
use std::collections::BTreeMap;

/// A bad filter given on the command line or in a request.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// An identity regex does not compile.
    #[error("identity filter {pattern:?}: bad regex: {why}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// The regex error, first line.
        why: String,
    },
    /// A fact filter is not `key=value`.
    #[error("fact filter {0:?}: expected key=value")]
    Fact(String),
}

/// What an agent is, for matching.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its identity.
    pub identity: &'a str,
    /// Its classes.
    pub classes: &'a [String],
    /// Its facts.
    pub facts: &'a BTreeMap<String, String>,
}

/// Whether `who` is selected by `filters`.
pub fn matches(filters: &Filters, who: Candidate<'_>) -> Result<bool, FilterError> {
    if !filters.identity.is_empty() {
        let mut any = false;
        for f in &filters.identity {
            if identity_matches(f, who.identity)? {
                any = true;
                break;
            }
        }
        if !any {
            return Ok(false);
        }
    }
    if !filters.class.iter().all(|c| who.classes.iter().any(|have| have == c)) {
        return Ok(false);
    }
    Ok(filters.fact.iter().all(|(k, v)| who.facts.get(k) == Some(v)))
}

fn identity_matches(filter: &str, identity: &str) -> Result<bool, FilterError> {
    match filter.strip_prefix('/').and_then(|f| f.strip_suffix('/')) {
        Some(re) if filter.len() >= 2 => {
            let re = regex::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| FilterError::Regex { pattern: filter.to_owned(), why: e.to_string().lines().last().unwrap_or("invalid").trim().to_owned() })?;
            Ok(re.is_match(identity))
        }
        _ => Ok(filter == identity),
    }
}

/// Checks every identity regex compiles (so a CLI can refuse early).
pub fn validate(filters: &Filters) -> Result<(), FilterError> {
    for f in &filters.identity {
        identity_matches(f, "")?;
    }
    Ok(())
}

/// Builds filters from `-I`, `-C` and `-F key=value` arguments.
pub fn from_args(identity: &[String], class: &[String], fact: &[String]) -> Result<Filters, FilterError> {
    let mut facts = BTreeMap::new();
    for f in fact {
        let (k, v) = f.split_once('=').ok_or_else(|| FilterError::Fact(f.clone()))?;
        if k.trim().is_empty() {
            return Err(FilterError::Fact(f.clone()));
        }
        facts.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let filters = Filters { identity: identity.to_vec(), class: class.to_vec(), fact: facts };
    validate(&filters)?;
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who<'a>(id: &'a str, classes: &'a [String], facts: &'a BTreeMap<String, String>) -> Candidate<'a> {
        Candidate { identity: id, classes, facts }
    }

    #[test]
    fn identity_class_fact_combine() {
        let classes = vec!["web".to_owned(), "php".to_owned()];
        let facts: BTreeMap<_, _> = [("sitetype".to_owned(), "live".to_owned())].into();
        let w = who("web01.example", &classes, &facts);
        let f = |i: &[&str], c: &[&str], fa: &[&str]| {
            from_args(
                &i.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &c.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &fa.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap()
        };
        assert!(matches(&Filters::default(), w).unwrap());
        assert!(matches(&f(&["web01.example"], &[], &[]), w).unwrap());
        assert!(!matches(&f(&["web01"], &[], &[]), w).unwrap());
        assert!(matches(&f(&["db01", "/^web\\d+/"], &[], &[]), w).unwrap());
        assert!(matches(&f(&[], &["web", "php"], &["sitetype=live"]), w).unwrap());
        assert!(!matches(&f(&[], &["web", "java"], &[]), w).unwrap());
        assert!(!matches(&f(&[], &[], &["sitetype=staging"]), w).unwrap());
        assert!(!matches(&f(&["/^db/"], &["web"], &[]), w).unwrap());
    }

    #[test]
    fn bad_filters_are_clear_errors() {
        assert!(from_args(&["/(/".into()], &[], &[]).unwrap_err().to_string().contains("bad regex"));
        assert!(from_args(&[], &[], &["novalue".into()]).unwrap_err().to_string().contains("key=value"));
    }
}
