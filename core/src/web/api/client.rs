//! A client of `GET /api/v1/history` (`dk-deploy history`): the rows, and the
//! table dk-web's History page shows. Blocking (ureq).

use super::model::{ErrorBody, HistoryEntry, HistoryList};
use std::time::Duration;

/// Why the history could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is unusable.
    #[error("--web {0:?}: give dk-web's URL, such as https://deploy.example.com")]
    Url(String),
    /// dk-web could not be reached.
    #[error("{url}: {why}")]
    Transport {
        /// The URL asked.
        url: String,
        /// Why.
        why: String,
    },
    /// dk-web refused (its `error`).
    #[error("{url}: {status}: {message}")]
    Refused {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
        /// dk-web's message.
        message: String,
    },
    /// The answer is not the API's JSON.
    #[error("{url}: not the API's answer: {why}")]
    Body {
        /// The URL asked.
        url: String,
        /// Why.
        why: String,
    },
}

/// Fetches at most `limit` rows (of `site`, if given) from dk-web at `web` with `token`.
pub fn history(web: &str, token: &str, site: Option<&str>, limit: usize, timeout: Duration) -> Result<Vec<HistoryEntry>, ClientError> {
    let mut url = url::Url::parse(web.trim_end_matches('/')).map_err(|_| ClientError::Url(web.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ClientError::Url(web.to_owned()));
    }
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}{}/history", super::PREFIX));
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        q.append_pair("limit", &limit.to_string());
        if let Some(s) = site {
            q.append_pair("site", s);
        }
    }
    let shown = url.to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("deploykit-dk-deploy/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut resp = agent
        .get(shown.as_str())
        .header("Authorization", &format!("Bearer {token}"))
        .header("Accept", "application/json")
        .call()
        .map_err(|e| ClientError::Transport { url: shown.clone(), why: e.to_string() })?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(32 * 1024 * 1024).read_to_string().map_err(|e| ClientError::Transport { url: shown.clone(), why: e.to_string() })?;
    if status != 200 {
        let message = serde_json::from_str::<ErrorBody>(&body).map(|e| e.error).unwrap_or_else(|_| body.chars().take(200).collect());
        return Err(ClientError::Refused { url: shown, status, message });
    }
    let list: HistoryList = serde_json::from_str(&body).map_err(|e| ClientError::Body { url: shown, why: e.to_string() })?;
    Ok(list.deploys)
}

/// The History page's table as text: id, when, who, via, site, action, tag, servers, result, reason.
pub fn table(rows: &[HistoryEntry]) -> String {
    let head = ["#", "when", "who", "via", "site", "action", "tag", "servers", "result", "reason"];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            let result = match &r.detail {
                Some(d) => format!("{} ({d})", r.result),
                None => r.result.clone(),
            };
            [
                r.id.to_string(),
                crate::web::pages::when(r.started_at),
                r.user.clone(),
                r.controller.clone(),
                r.site.clone(),
                r.action.clone(),
                r.tag.clone().unwrap_or_else(|| "-".into()),
                r.selection.clone(),
                result,
                r.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .map(|row: [String; 10]| row.map(|c| crate::message::one_line(&c)))
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            if i + 1 == row.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&head.map(str::to_owned));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}
