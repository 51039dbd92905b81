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

impl DeployForm {
    /// Parses `body`; defaults come from `site`. `need_tag` for deploys and previews.
    pub fn parse(body: &[u8], site: &SiteConfig, need_tag: bool) -> Result<DeployForm, String> {
        let f = fields(body);
        let one = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let tag = match one("tag").map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => {
                crate::git::refs::validate_tag_name(t).map_err(|e| format!("tag: {e}"))?;
                Some(t.to_owned())
            }
            None if need_tag => return Err("tag: pick a tag or branch to deploy".into()),
            None => None,
        };
        let nodes: Vec<String> = f.iter().filter(|(n, _)| n == "node").map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        let scope = match one("scope").unwrap_or("all") {
            "all" => Scope::All,
            "filter" => {
                let text = one("filter").unwrap_or("");
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
        let canary = number("canary", one("canary"), site.canary, 1000)?;
        let batch_text = one("batch").map(str::trim).filter(|s| !s.is_empty()).unwrap_or(&site.batch);
        let batch = batch_text.parse::<BatchSize>().map_err(|e| format!("batch: {e}"))?;
        let max_failures = number("max failures", one("max_failures"), site.max_failures, 100_000)?;
        let allow_missing = matches!(one("allow_missing"), Some("1" | "on" | "true"));
        let allow_downgrade = matches!(one("allow_downgrade"), Some("1" | "on" | "true"));
        let reason = match one("reason").map(|r| crate::message::one_line(r).trim().to_owned()).filter(|r| !r.is_empty()) {
            Some(r) if r.chars().count() > MAX_REASON => return Err(format!("reason: at most {MAX_REASON} characters")),
            r => r,
        };
        let echo = f.iter().filter(|(k, _)| k != super::csrf::FIELD && k != "preview" && k != "allow_downgrade").cloned().collect();
        Ok(DeployForm { tag, scope, canary, batch, max_failures, allow_missing, allow_downgrade, reason, csrf: one(super::csrf::FIELD).map(str::to_owned), echo })
    }
}

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
