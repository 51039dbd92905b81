//! Jenkins's remote-trigger API: POST to `build` / `buildWithParameters` with
//! the job's build token or a user's API token (basic auth), the CSRF crumb
//! from `/crumbIssuer/api/json` when Jenkins asks for one, and retries with
//! backoff on 5xx answers and connection errors.
//!
//! Blocking (ureq); the daemon calls it on tokio's blocking pool. Tokens travel
//! in the form body or the `Authorization` header, never in the URL, so they
//! appear neither in Jenkins's access log nor in our errors.

use super::config::{JenkinsSection, SecretSource};
use super::url;
use base64::Engine as _;
use std::sync::Mutex;
use std::time::Duration;

/// The longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a trigger failed for good.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// Jenkins answered with an error status (after retries for 5xx).
    #[error("Jenkins answered {status} to {url} after {attempts} attempt(s): {body}")]
    Status {
        /// The endpoint (no secrets).
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Jenkins could not be reached (after retries).
    #[error("cannot reach Jenkins at {url} after {attempts} attempt(s): {why}")]
    Transport {
        /// The endpoint (no secrets).
        url: String,
        /// The transport error.
        why: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A token could not be read.
    #[error("{0}")]
    Secret(String),
    /// Jenkins asked for a crumb but the crumb issuer gave none.
    #[error("CSRF crumb from {url}: {why}")]
    Crumb {
        /// The crumb issuer's URL.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// A trigger that Jenkins accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggered {
    /// The status (201 Created from current Jenkins; 200/302 from older ones).
    pub status: u16,
    /// The `Location` header: the queue item (`…/queue/item/N/`), when given.
    pub location: Option<String>,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
}

/// What to trigger.
#[derive(Debug, Clone, Default)]
pub struct TriggerRequest {
    /// The job's full name (`a/b/c`).
    pub job: String,
    /// The job's build token.
    pub token: Option<SecretSource>,
    /// Build parameters; when non-empty, `buildWithParameters` is used.
    pub parameters: Vec<(String, String)>,
    /// Use `buildWithParameters` even without parameters.
    pub with_parameters: bool,
}

/// A CSRF crumb and the session cookie it is bound to.
#[derive(Debug, Clone)]
struct Crumb {
    field: String,
    value: String,
    cookie: Option<String>,
}

/// A Jenkins server's remote API.
#[derive(Debug)]
pub struct JenkinsRemote {
    agent: ureq::Agent,
    base: String,
    user: Option<String>,
    api_token: Option<SecretSource>,
    retries: u32,
    retry_delay: Duration,
    crumb: Mutex<Option<Crumb>>,
}

/// One HTTP answer, reduced to what we use.
struct Answer {
    status: u16,
    location: Option<String>,
    cookie: Option<String>,
    body: String,
}

impl JenkinsRemote {
    /// A client for the `[jenkins]` section.
    pub fn new(section: &JenkinsSection) -> JenkinsRemote {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(section.timeout))
            .user_agent(concat!("deploykit-dk-jenkins/", env!("CARGO_PKG_VERSION")))
            .build();
        JenkinsRemote {
            agent: config.into(),
            base: section.url.clone(),
            user: section.user.clone(),
            api_token: section.api_token.clone(),
            retries: section.retries,
            retry_delay: section.retry_delay,
            crumb: Mutex::new(None),
        }
    }

    /// The `Authorization` header for the API token, if configured.
    fn authorization(&self) -> Result<Option<String>, TriggerError> {
        match (&self.user, &self.api_token) {
            (Some(user), Some(token)) => {
                let token = token.read().map_err(TriggerError::Secret)?;
                Ok(Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}")))))
            }
            _ => Ok(None),
        }
    }

    /// One request; `Err` is a transport error's text.
    fn request(&self, post_body: Option<&str>, url: &str, auth: Option<&str>, crumb: Option<&Crumb>) -> Result<Answer, String> {
        let result = match post_body {
            Some(body) => {
                let mut req = self.agent.post(url).header("Content-Type", "application/x-www-form-urlencoded");
                if let Some(a) = auth {
                    req = req.header("Authorization", a);
                }
                if let Some(c) = crumb {
                    req = req.header(c.field.as_str(), c.value.as_str());
                    if let Some(cookie) = &c.cookie {
                        req = req.header("Cookie", cookie.as_str());
                    }
                }
                req.send(body)
            }
            None => {
                let mut req = self.agent.get(url);
                if let Some(a) = auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        let mut resp = result.map_err(|e| e.to_string())?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let location = header("location");
        let cookie = header("set-cookie").and_then(|c| c.split(';').next().map(|p| p.trim().to_owned())).filter(|c| !c.is_empty());
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        Ok(Answer { status, location, cookie, body })
    }

    /// Fetches a crumb (`{"crumbRequestField": …, "crumb": …}`).
    fn fetch_crumb(&self, auth: Option<&str>) -> Result<Crumb, TriggerError> {
        let url = url::crumb_url(&self.base);
        let bad = |why: String| TriggerError::Crumb { url: url.clone(), why };
        let a = self.request(None, &url, auth, None).map_err(bad)?;
        if a.status != 200 {
            return Err(bad(format!("status {}", a.status)));
        }
        let v: serde_json::Value = serde_json::from_str(&a.body).map_err(|e| bad(format!("not JSON: {e}")))?;
        let field = v.get("crumbRequestField").and_then(|f| f.as_str()).unwrap_or("Jenkins-Crumb");
        let value = v.get("crumb").and_then(|f| f.as_str()).ok_or_else(|| bad("no `crumb` in the answer".into()))?;
        Ok(Crumb { field: field.to_owned(), value: value.to_owned(), cookie: a.cookie })
    }

    /// Triggers a build; retries 5xx and connection errors with backoff, fetches a crumb on a crumb 403.
    pub fn trigger(&self, req: &TriggerRequest) -> Result<Triggered, TriggerError> {
        let with_parameters = req.with_parameters || !req.parameters.is_empty();
        let url = url::trigger_url(&self.base, &req.job, with_parameters);
        let token = req.token.as_ref().map(|t| t.read().map_err(TriggerError::Secret)).transpose()?;
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = &token {
            pairs.push(("token", t));
        }
        pairs.extend(req.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let body = url::form(&pairs);
        let auth = self.authorization()?;
        let mut attempts = 0;
        let mut delay = self.retry_delay;
        let mut crumb_fetched = false;
        loop {
            attempts += 1;
            let crumb = self.crumb.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let answer = self.request(Some(&body), &url, auth.as_deref(), crumb.as_ref());
            let retry = match answer {
                Ok(a) if (200..400).contains(&a.status) => return Ok(Triggered { status: a.status, location: a.location, attempts }),
                Ok(a) if a.status == 403 && !crumb_fetched && a.body.to_ascii_lowercase().contains("crumb") => {
                    tracing::debug!(%url, "Jenkins asks for a CSRF crumb");
                    let fresh = self.fetch_crumb(auth.as_deref())?;
                    *self.crumb.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
                    crumb_fetched = true;
                    attempts -= 1;
                    continue;
                }
                Ok(a) if a.status >= 500 => TriggerError::Status { url: url.clone(), status: a.status, body: snippet(&a.body), attempts },
                Ok(a) => return Err(TriggerError::Status { url, status: a.status, body: snippet(&a.body), attempts }),
                Err(why) => TriggerError::Transport { url: url.clone(), why, attempts },
            };
            if attempts > self.retries {
                return Err(retry);
            }
            tracing::warn!(error = %retry, retry_in = ?delay, "Jenkins trigger failed; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

/// The first line of a body, bounded, for error messages.
fn snippet(body: &str) -> String {
    let line = body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    line.chars().take(200).collect()
}
