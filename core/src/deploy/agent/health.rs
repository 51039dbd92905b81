//! A site's health gate: after post-deploy, a command or an HTTP URL must pass
//! (tried again after `interval` up to `retries` times, each try under
//! `timeout`) before the release counts as good. A failing check fails the
//! server, so a controller's `max_failures` stops a rollout on unhealthy
//! servers, not only on failed hooks; the last try's output is the step's.
//!
//! ```toml
//! [sites.www.health]
//! url = "http://127.0.0.1:8080/healthz"   # 2xx passes; or command = ["/usr/local/bin/check-www", "--quick"]
//! retries = 3                             # tries after the first (default 3)
//! interval = "2s"                         # between tries (default 2s)
//! timeout = "10s"                         # per try (default 10s)
//! ```

use super::hooks::{self, HookSpec};
use crate::config::{ConfigError, RawDuration};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Most retries accepted.
const MAX_RETRIES: u32 = 100;
/// Most bytes of an HTTP answer's body kept as the step's output.
const BODY_LIMIT: u64 = 4096;

/// What is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A program and its arguments (no shell), run as the site's `user` in the new release.
    Command(Vec<String>),
    /// An `http://` or `https://` URL; a 2xx answer passes (redirects are not followed).
    Url(String),
}

/// A site's health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The command or URL.
    pub probe: Probe,
    /// Tries after the first.
    pub retries: u32,
    /// Wait between tries.
    pub interval: Duration,
    /// Longest one try may take.
    pub timeout: Duration,
}

/// `[sites.NAME.health]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    command: Option<Vec<String>>,
    url: Option<String>,
    retries: Option<u32>,
    interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
}

impl RawHealth {
    /// Checks the section; `key` is `sites.NAME.health` (for errors).
    pub fn resolve(self, key: &str) -> Result<HealthCheck, ConfigError> {
        let invalid = |k: &str, why: String| ConfigError::invalid(format!("{key}.{k}"), why);
        let probe = match (self.command, self.url) {
            (Some(argv), None) => {
                match argv.first() {
                    None => return Err(invalid("command", "is empty: give the program and its arguments".into())),
                    Some(p) if !std::path::Path::new(p).is_absolute() => return Err(invalid("command", format!("{p:?}: the program must be an absolute path"))),
                    _ => {}
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(invalid("command", "an argument holds a NUL byte".into()));
                }
                Probe::Command(argv)
            }
            (None, Some(url)) => {
                let parsed = url::Url::parse(&url).map_err(|e| invalid("url", format!("{url:?}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return Err(invalid("url", format!("{url:?}: must be an http:// or https:// URL with a host")));
                }
                Probe::Url(url)
            }
            (Some(_), Some(_)) => return Err(ConfigError::invalid(key.to_owned(), "give command or url, not both")),
            (None, None) => return Err(ConfigError::invalid(key.to_owned(), "give command = [\"/path/to/check\", …] or url = \"http://…\"")),
        };
        let retries = self.retries.unwrap_or(3);
        if retries > MAX_RETRIES {
            return Err(invalid("retries", format!("{retries}: at most {MAX_RETRIES}")));
        }
        let interval = self.interval.map_or(Ok(Duration::from_secs(2)), |d| d.resolve(&format!("{key}.interval")))?;
        let timeout = self.timeout.map_or(Ok(Duration::from_secs(10)), |d| d.resolve(&format!("{key}.timeout")))?;
        if timeout.is_zero() {
            return Err(invalid("timeout", "must be more than 0".into()));
        }
        Ok(HealthCheck { probe, retries, interval, timeout })
    }
}

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRun {
    /// A try passed.
    pub ok: bool,
    /// Tries made.
    pub tries: u32,
    /// The last try's exit code (commands).
    pub exit_code: Option<i32>,
    /// The last try's output (a command's stdout, or `HTTP 503` and the body).
    pub stdout: String,
    /// The last try's error output (a command's stderr).
    pub stderr: String,
    /// Why the last try failed.
    pub why: Option<String>,
    /// All tries, waits included.
    pub duration: Duration,
}

/// One try: (passed, exit code, stdout, stderr, why not).
type Try = (bool, Option<i32>, String, String, Option<String>);

async fn try_url(url: &str, timeout: Duration) -> Try {
    let url = url.to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(timeout))
            .user_agent(concat!("deploykit-dk-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut resp = agent.get(&url).call().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(BODY_LIMIT).read_to_string().unwrap_or_default();
        Ok::<_, String>((status, body))
    })
    .await;
    match answer {
        Ok(Ok((status, body))) => {
            let ok = (200..300).contains(&status);
            let out = format!("HTTP {status}\n{}", body.trim());
            (ok, None, out, String::new(), (!ok).then(|| format!("answered HTTP {status}")))
        }
        Ok(Err(e)) => (false, None, String::new(), String::new(), Some(e)),
        Err(e) => (false, None, String::new(), String::new(), Some(e.to_string())),
    }
}

async fn try_command(argv: &[String], spec: &HookSpec) -> Try {
    let run = hooks::run_argv(argv, spec).await;
    let why = (!run.ok()).then(|| run.why());
    (run.ok(), run.exit_code, run.stdout, run.stderr, why)
}

/// Runs the check: `spec` gives a command its user, environment and working directory
/// (its `timeout` is replaced by the check's).
pub async fn check(h: &HealthCheck, spec: &HookSpec) -> HealthRun {
    let t0 = Instant::now();
    let spec = HookSpec { timeout: h.timeout, ..spec.clone() };
    let mut tries = 0;
    loop {
        tries += 1;
        let (ok, exit_code, stdout, stderr, why) = match &h.probe {
            Probe::Url(u) => try_url(u, h.timeout).await,
            Probe::Command(argv) => try_command(argv, &spec).await,
        };
        if ok || tries > h.retries {
            return HealthRun { ok, tries, exit_code, stdout, stderr, why, duration: t0.elapsed() };
        }
        tokio::time::sleep(h.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HealthCheck, ConfigError> {
        toml::from_str::<RawHealth>(text).unwrap().resolve("sites.www.health")
    }

    #[test]
    fn one_probe_absolute_and_sane() {
        let h = parse("url = \"http://127.0.0.1:8080/healthz\"\nretries = 5\ninterval = \"500ms\"").unwrap();
        assert_eq!((h.retries, h.interval, h.timeout), (5, Duration::from_millis(500), Duration::from_secs(10)));
        assert_eq!(parse("command = [\"/bin/true\"]").unwrap().probe, Probe::Command(vec!["/bin/true".into()]));
        for (bad, want) in [
            ("", "give command"),
            ("command = [\"/bin/true\"]\nurl = \"http://x/\"", "not both"),
            ("command = []", "is empty"),
            ("command = [\"check\"]", "absolute path"),
            ("url = \"file:///etc/passwd\"", "http://"),
            ("url = \"nope\"", "health.url"),
            ("url = \"http://x/\"\nretries = 1000", "at most"),
            ("url = \"http://x/\"\ntimeout = \"0s\"", "health.timeout"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    /// A real HTTP server answering 503, then 200: the check passes on its second try;
    /// with no retries it fails on the 503, naming it.
    #[tokio::test]
    async fn a_url_is_retried_until_it_answers_2xx() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 2048];
                let _ = c.read(&mut buf);
                let (status, body) = if i < 2 { ("503 Service Unavailable", "database down") } else { ("200 OK", "ok") };
                let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        let spec = HookSpec { dir: std::env::temp_dir(), name: "health", tag: "v1".into(), env: vec![], timeout: Duration::from_secs(5), user: None };
        let url = |retries| HealthCheck { probe: Probe::Url(format!("http://{addr}/healthz")), retries, interval: Duration::from_millis(10), timeout: Duration::from_secs(5) };
        let run = check(&url(0), &spec).await;
        assert!(!run.ok && run.tries == 1, "{run:?}");
        assert_eq!(run.why.as_deref(), Some("answered HTTP 503"));
        assert!(run.stdout.contains("database down"), "{run:?}");
        // The server answers 503 once more, then 200.
        let run = check(&url(3), &spec).await;
        assert!(run.ok && run.tries == 2, "{run:?}");
        assert_eq!(run.stdout, "HTTP 200\nok");
    }
}
