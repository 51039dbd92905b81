//! MCollective-style server selection: identity (name or `/regex/`), classes
//! and facts. Several identities are alternatives; classes and facts must all
//! hold; the kinds combine with AND.
//!
//! Filters arrive in requests from the bus, so they are bounded before any
//! regex is built: at most [`MAX_FILTERS`] entries of at most
//! [`MAX_FILTER_LEN`] bytes each, and every identity regex is compiled under
//! [`REGEX_SIZE_LIMIT`]. An agent compiles them ([`Selector::compile`]) only
//! after the request's signature has been verified.

use crate::message::Filters;
use std::collections::BTreeMap;

/// Most identity, class and fact entries a request may carry, all kinds together.
pub const MAX_FILTERS: usize = 32;
/// Longest identity, class, fact key or fact value, in bytes.
pub const MAX_FILTER_LEN: usize = 256;
/// Compiled size limit of one identity regex (NFA and lazy DFA cache), in bytes.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

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
    /// More entries than [`MAX_FILTERS`].
    #[error("{0} filters: at most {MAX_FILTERS} identity, class and fact filters together")]
    TooMany(usize),
    /// An entry longer than [`MAX_FILTER_LEN`].
    #[error("{kind} filter of {len} bytes: at most {MAX_FILTER_LEN} bytes each")]
    TooLong {
        /// `identity`, `class` or `fact`.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
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

enum Identity {
    Name(String),
    Regex(regex::Regex),
}

/// Filters checked against the caps, with their identity regexes compiled.
pub struct Selector<'f> {
    identity: Vec<Identity>,
    filters: &'f Filters,
}

/// Checks `filters` against [`MAX_FILTERS`] and [`MAX_FILTER_LEN`] (cheap; no regex is built).
pub fn check_caps(filters: &Filters) -> Result<(), FilterError> {
    let count = filters.identity.len().saturating_add(filters.class.len()).saturating_add(filters.fact.len());
    if count > MAX_FILTERS {
        return Err(FilterError::TooMany(count));
    }
    let long = |kind: &'static str, s: &str| if s.len() > MAX_FILTER_LEN { Err(FilterError::TooLong { kind, len: s.len() }) } else { Ok(()) };
    filters.identity.iter().try_for_each(|f| long("identity", f))?;
    filters.class.iter().try_for_each(|f| long("class", f))?;
    filters.fact.iter().try_for_each(|(k, v)| long("fact", k).and_then(|()| long("fact", v)))
}

impl<'f> Selector<'f> {
    /// Checks the caps, then compiles every identity regex (bounded in size).
    pub fn compile(filters: &'f Filters) -> Result<Selector<'f>, FilterError> {
        check_caps(filters)?;
        let identity = filters.identity.iter().map(|f| compile_identity(f)).collect::<Result<_, _>>()?;
        Ok(Selector { identity, filters })
    }

    /// Whether `who` is selected.
    pub fn matches(&self, who: Candidate<'_>) -> bool {
        if !self.identity.is_empty()
            && !self.identity.iter().any(|i| match i {
                Identity::Name(n) => n == who.identity,
                Identity::Regex(re) => re.is_match(who.identity),
            })
        {
            return false;
        }
        if !self.filters.class.iter().all(|c| who.classes.iter().any(|have| have == c)) {
            return false;
        }
        self.filters.fact.iter().all(|(k, v)| who.facts.get(k) == Some(v))
    }
}

/// Whether `filters` name servers only by literal identity and `identity` is
/// not among them: not for this server, whatever else the request says. Only
/// string compares (no regex is compiled), so an agent can drop a request
/// meant for others before spending a signature check on it.
pub fn names_only_others(filters: &Filters, identity: &str) -> bool {
    !filters.identity.is_empty() && filters.identity.iter().all(|f| !is_regex(f) && f != identity)
}

/// Whether an identity filter is a `/regex/` (else a literal name).
fn is_regex(filter: &str) -> bool {
    filter.len() >= 2 && filter.starts_with('/') && filter.ends_with('/')
}

/// Whether `who` is selected by `filters` (caps checked, regexes compiled on each call).
pub fn matches(filters: &Filters, who: Candidate<'_>) -> Result<bool, FilterError> {
    Ok(Selector::compile(filters)?.matches(who))
}

fn compile_identity(filter: &str) -> Result<Identity, FilterError> {
    match filter.strip_prefix('/').and_then(|f| f.strip_suffix('/')) {
        Some(re) if filter.len() >= 2 => regex::RegexBuilder::new(re)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(32)
            .build()
            .map(Identity::Regex)
            .map_err(|e| FilterError::Regex { pattern: filter.to_owned(), why: e.to_string().lines().last().unwrap_or("invalid").trim().to_owned() }),
        _ => Ok(Identity::Name(filter.to_owned())),
    }
}

/// The selection as History shows it: `all`, or the names, classes and facts (one line, at most 4 000 characters).
pub fn shown(f: &Filters) -> String {
    let mut parts: Vec<String> = f.identity.clone();
    parts.extend(f.class.iter().map(|c| format!("class {c}")));
    parts.extend(f.fact.iter().map(|(k, v)| format!("{k}={v}")));
    if parts.is_empty() {
        "all".into()
    } else {
        crate::message::one_line(&parts.join(", ")).chars().take(4000).collect()
    }
}

/// Checks the caps and that every identity regex compiles (so a CLI can refuse early).
pub fn validate(filters: &Filters) -> Result<(), FilterError> {
    Selector::compile(filters).map(|_| ())
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
    fn literal_names_of_others_are_recognised_without_regexes() {
        let f = |i: &[&str]| Filters { identity: i.iter().map(|s| s.to_string()).collect(), ..Filters::default() };
        assert!(names_only_others(&f(&["web02", "web03"]), "web01"));
        assert!(!names_only_others(&f(&["web02", "web01"]), "web01"));
        assert!(!names_only_others(&f(&[]), "web01"), "no identity filter selects everyone");
        assert!(!names_only_others(&f(&["web02", "/^web/"]), "web01"), "a regex may select web01");
        assert!(names_only_others(&f(&["/"]), "web01"), "a lone slash is a name");
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

    #[test]
    fn caps_refuse_before_any_regex_is_built() {
        let many: Vec<String> = (0..=MAX_FILTERS).map(|i| format!("n{i}")).collect();
        assert!(matches!(from_args(&many, &[], &[]), Err(FilterError::TooMany(33))));
        let long = format!("/{}/", "a".repeat(MAX_FILTER_LEN));
        assert!(from_args(&[long], &[], &[]).unwrap_err().to_string().contains("at most 256 bytes"));
        assert!(matches!(from_args(&[], &[], &[format!("k={}", "v".repeat(300))]), Err(FilterError::TooLong { kind: "fact", .. })));
        // Within the length cap, a pattern that would compile huge is refused quickly.
        let t = std::time::Instant::now();
        assert!(from_args(&["/(((a{100}){100}){100}){100}/".into()], &[], &[]).unwrap_err().to_string().contains("bad regex"));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
