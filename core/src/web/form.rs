//! The deploy form: fields parsed and checked, each mistake a message for a 400.

use super::config::SiteConfig;
use crate::deploy::controller::plan::BatchSize;

/// Which servers the user chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every server of the site.
    All,
    /// Those matching names or `/regex/`es.
    Filter(Vec<String>),
    /// Exactly these.
    Pick(Vec<String>),
}

/// A submitted deploy, preview or rollback form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployForm {
    /// The tag or branch (deploys).
    pub tag: Option<String>,
    /// Which servers.
    pub scope: Scope,
    /// Servers first and alone.
    pub canary: usize,
    /// Batch size.
    pub batch: BatchSize,
    /// Failures tolerated.
    pub max_failures: usize,
    /// Deploy even when known servers of the site do not answer discovery.
    pub allow_missing: bool,
    /// Deploy a tag older than the live release (the preview's explicit tick; agents enforce it).
    pub allow_downgrade: bool,
    /// Why (a ticket or a sentence): one line, at most [`MAX_REASON`] characters.
    pub reason: Option<String>,
    /// The CSRF token.
    pub csrf: Option<String>,
    /// Every field but the token and `allow_downgrade` (ticked anew on the preview), for its confirm form.
    pub echo: Vec<(String, String)>,
}

/// The fields of an `application/x-www-form-urlencoded` body.
pub fn fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The longest reason accepted, in characters.
pub const MAX_REASON: usize = 1000;

fn number(name: &str, v: Option<&str>, default: usize, max: usize) -> Result<usize, String> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s.parse::<usize>().ok().filter(|n| *n <= max).ok_or_else(|| format!("{name}: {s:?} is not a whole number from 0 to {max}")),
    }
}

/// A deploy's fields before their checks, as the form or the API's JSON gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// The tag or branch.
    pub tag: Option<String>,
    /// `all` (also when `None`), `filter` or `pick`.
    pub scope: Option<String>,
    /// Server names or `/regex/`es, separated by spaces or commas (`filter`).
    pub filter: Option<String>,
    /// The servers (`pick`).
    pub nodes: Vec<String>,
    /// Canary count, as written.
    pub canary: Option<String>,
    /// Batch size, as written (`2`, `25%`).
    pub batch: Option<String>,
    /// Failures tolerated, as written.
    pub max_failures: Option<String>,
    /// Deploy even when known servers do not answer.
    pub allow_missing: bool,
    /// Deploy a tag older than the live release.
    pub allow_downgrade: bool,
    /// Why.
    pub reason: Option<String>,
}

impl DeployForm {
    /// Parses `body`; defaults come from `site`. `need_tag` for deploys and previews.
    pub fn parse(body: &[u8], site: &SiteConfig, need_tag: bool) -> Result<DeployForm, String> {
        let f = fields(body);
        let one = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let input = Input {
            tag: one("tag"),
            scope: one("scope"),
            filter: one("filter"),
            nodes: f.iter().filter(|(n, _)| n == "node").map(|(_, v)| v.clone()).collect(),
            canary: one("canary"),
            batch: one("batch"),
            max_failures: one("max_failures"),
            allow_missing: matches!(one("allow_missing").as_deref(), Some("1" | "on" | "true")),
            allow_downgrade: matches!(one("allow_downgrade").as_deref(), Some("1" | "on" | "true")),
            reason: one("reason"),
        };
        let mut form = DeployForm::check(&input, site, need_tag)?;
        form.csrf = one(super::csrf::FIELD);
        form.echo = f.iter().filter(|(k, _)| k != super::csrf::FIELD && k != "preview" && k != "allow_downgrade").cloned().collect();
        Ok(form)
    }

    /// Checks `input` (the form's and the API's checks alike); defaults come from `site`.
    /// The result has no CSRF token and no echo.
    pub fn check(input: &Input, site: &SiteConfig, need_tag: bool) -> Result<DeployForm, String> {
        let tag = match input.tag.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => {
                crate::git::refs::validate_tag_name(t).map_err(|e| format!("tag: {e}"))?;
                Some(t.to_owned())
            }
            None if need_tag => return Err("tag: pick a tag or branch to deploy".into()),
            None => None,
        };
        let nodes: Vec<String> = input.nodes.iter().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        let scope = match input.scope.as_deref().unwrap_or("all") {
            "all" => Scope::All,
            "filter" => {
                let text = input.filter.as_deref().unwrap_or("");
                let parts: Vec<String> = text.split([' ', ',']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
                if parts.is_empty() {
                    return Err("filter: give server names or a /regex/ (or choose \"all\")".into());
                }
                let fl = crate::message::Filters { identity: parts.clone(), ..Default::default() };
                crate::deploy::filters::validate(&fl).map_err(|e| format!("filter: {e}"))?;
                Scope::Filter(parts)
            }
            "pick" => {
                if nodes.is_empty() {
                    return Err("servers: tick at least one server (or choose \"all\")".into());
                }
                Scope::Pick(nodes)
            }
            other => return Err(format!("scope: {other:?} is not all, filter or pick")),
        };
        let canary = number("canary", input.canary.as_deref(), site.canary, MAX_CANARY)?;
        let batch_text = input.batch.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or(&site.batch);
        let batch = batch_text.parse::<BatchSize>().map_err(|e| format!("batch: {e}"))?;
        let max_failures = number("max failures", input.max_failures.as_deref(), site.max_failures, MAX_FAILURES)?;
        let reason = match input.reason.as_deref().map(|r| crate::message::one_line(r).trim().to_owned()).filter(|r| !r.is_empty()) {
            Some(r) if r.chars().count() > MAX_REASON => return Err(format!("reason: at most {MAX_REASON} characters")),
            r => r,
        };
        Ok(DeployForm { tag, scope, canary, batch, max_failures, allow_missing: input.allow_missing, allow_downgrade: input.allow_downgrade, reason, csrf: None, echo: Vec::new() })
    }
}

/// The largest canary count accepted.
pub const MAX_CANARY: usize = 1000;
/// The largest failure limit accepted.
pub const MAX_FAILURES: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteConfig {
        SiteConfig {
            name: "www".into(),
            repo: "www".into(),
            filters: Default::default(),
            tags: 20,
            deployers: vec![],
            canary: 1,
            batch: "2".into(),
            max_failures: 0,
            require_reason: false,
            require_build: false,
            approvers: vec![],
            approval_expiry: std::time::Duration::from_secs(3600),
        }
    }

    #[test]
    fn parses_and_refuses() {
        let f = DeployForm::parse(b"tag=v1&scope=pick&node=a&node=b&canary=0&batch=50%25&max_failures=1&csrf=t", &site(), true).unwrap();
        assert_eq!(f.scope, Scope::Pick(vec!["a".into(), "b".into()]));
        assert_eq!((f.canary, f.batch, f.max_failures), (0, BatchSize::Percent(50), 1));
        assert_eq!(f.csrf.as_deref(), Some("t"));
        assert!(!f.echo.iter().any(|(k, _)| k == "csrf"));
        assert!(!f.allow_downgrade);
        let d = DeployForm::parse(b"tag=v1&allow_downgrade=1", &site(), true).unwrap();
        assert!(d.allow_downgrade);
        assert!(!d.echo.iter().any(|(k, _)| k == "allow_downgrade"), "the preview asks for the tick again");
        let d = DeployForm::parse(b"tag=v1", &site(), true).unwrap();
        assert_eq!((d.scope, d.canary, d.batch), (Scope::All, 1, BatchSize::Count(2)));
        for (body, want) in [
            (&b""[..], "tag:"),
            (b"tag=..%2Fetc", "tag:"),
            (b"tag=v1&scope=pick", "tick at least one"),
            (b"tag=v1&scope=filter&filter=", "filter:"),
            (b"tag=v1&scope=filter&filter=%2F(%2F", "filter:"),
            (b"tag=v1&canary=-1", "canary"),
            (b"tag=v1&batch=0", "batch"),
            (b"tag=v1&scope=some", "scope"),
        ] {
            let e = DeployForm::parse(body, &site(), true).unwrap_err();
            assert!(e.contains(want), "{body:?}: {e}");
        }
        assert!(DeployForm::parse(b"scope=pick&node=a", &site(), false).unwrap().tag.is_none());
    }
}
