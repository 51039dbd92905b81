//! Broker URLs: `stomp://`, `stomp+ssl://` and the failover form of the Ruby
//! stomp gem and ActiveMQ, `failover:(url1,url2)?options`.
//!
//! Passwords never appear in `Debug` or `Display` output.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The default STOMP port.
pub const DEFAULT_PORT: u16 = 61613;

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL could not be parsed at all.
    #[error("invalid broker URL {url:?}: {why}")]
    Invalid {
        /// The offending URL, password redacted.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The scheme is not one deploykit speaks.
    #[error("unsupported scheme {0:?} (use stomp://, stomp+ssl:// or failover:(…))")]
    Scheme(String),
    /// A failover option is unknown or its value is malformed.
    #[error("failover option {name}={value:?}: {why}")]
    Option {
        /// The option as written.
        name: String,
        /// Its value as written.
        value: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A secret string (a passcode) whose `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One broker address with optional credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether to speak TLS (`stomp+ssl://`).
    pub tls: bool,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// STOMP `login`, if the URL carries one.
    pub login: Option<String>,
    /// STOMP `passcode`, if the URL carries one.
    pub passcode: Option<Secret>,
}

impl Endpoint {
    /// `host:port` for connecting, with IPv6 brackets where needed.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", if self.tls { "stomp+ssl" } else { "stomp" })?;
        if let Some(login) = &self.login {
            f.write_str(login)?;
            if self.passcode.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.addr())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// Reconnect behaviour, from the failover URL's options (names case-insensitive).
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverOptions {
    /// First delay before reconnecting (`initialReconnectDelay`).
    pub initial_reconnect_delay: Duration,
    /// Upper bound on the delay (`maxReconnectDelay`).
    pub max_reconnect_delay: Duration,
    /// Whether delays grow (`useExponentialBackOff`).
    pub use_exponential_backoff: bool,
    /// Growth factor per attempt (`backOffMultiplier`).
    pub backoff_multiplier: f64,
    /// Attempts before giving up once connected; `None` is forever (`maxReconnectAttempts` 0 or -1).
    pub max_reconnect_attempts: Option<u32>,
    /// Attempts before giving up at start-up; `None` means as `max_reconnect_attempts`.
    pub startup_max_reconnect_attempts: Option<u32>,
    /// Shuffle the broker list before each pass (`randomize`).
    pub randomize: bool,
    /// Fraction of each delay that is random, so many clients do not reconnect in lock-step (`jitter`, 0–1).
    pub jitter: f64,
}

impl Default for FailoverOptions {
    fn default() -> FailoverOptions {
        FailoverOptions {
            initial_reconnect_delay: Duration::from_millis(10),
            max_reconnect_delay: Duration::from_secs(30),
            use_exponential_backoff: true,
            backoff_multiplier: 2.0,
            max_reconnect_attempts: None,
            startup_max_reconnect_attempts: None,
            randomize: false,
            jitter: 0.25,
        }
    }
}

impl FailoverOptions {
    /// The delay before reconnect attempt `attempt` (0-based), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial_reconnect_delay.as_secs_f64();
        let grown = if self.use_exponential_backoff { base * self.backoff_multiplier.max(1.0).powi(attempt.min(64) as i32) } else { base };
        let capped = grown.min(self.max_reconnect_delay.as_secs_f64());
        let j = self.jitter.clamp(0.0, 1.0);
        // Equal jitter: keep (1 - j) of the delay, randomise the rest.
        let d = capped * (1.0 - j) + capped * j * fastrand::f64();
        Duration::from_secs_f64(d)
    }
}

/// A parsed broker URL: one or more endpoints and the reconnect options.
#[derive(Clone, PartialEq)]
pub struct BrokerUrl {
    /// Brokers in the order to try them.
    pub endpoints: Vec<Endpoint>,
    /// How to reconnect and fail over.
    pub options: FailoverOptions,
}

impl BrokerUrl {
    /// Parses any supported broker URL form.
    pub fn parse(s: &str) -> Result<BrokerUrl, UrlError> {
        s.parse()
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.endpoints.len() == 1 {
            return write!(f, "{}", self.endpoints[0]);
        }
        f.write_str("failover:(")?;
        for (i, e) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerUrl").field("endpoints", &self.endpoints).field("options", &self.options).finish()
    }
}

/// Whether `s` starts with a URL scheme and `://` (`stomp://`, `stomp+ssl://`, …).
fn starts_with_scheme(s: &str) -> bool {
    let s = s.trim_start();
    let Some(end) = s.find("://") else {
        return false;
    };
    let scheme = &s[..end];
    scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Splits a failover list at the commas that start another `scheme://` URL, so a
/// passcode holding a `,` stays inside its URL.
fn split_list(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        if i >= start && starts_with_scheme(&list[i + 1..]) {
            parts.push(&list[start..i]);
            start = i + 1;
        }
    }
    parts.push(&list[start..]);
    parts
}

/// Replaces the password part of a URL-ish string with `***` (for error messages).
///
/// The user information runs up to the last `@` of each URL (a passcode may hold
/// `/`, `?`, `,`, `:` or `@`), and a port that is not a number is shown as `***`,
/// since it may be a piece of a passcode that was not percent-encoded.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    // Only inside a `failover:` list does a `,scheme://` start another URL (as `BrokerUrl::parse` reads it);
    // elsewhere it belongs to the password of the one URL.
    let mut in_list = false;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        in_list |= head.to_ascii_lowercase().contains("failover:");
        // `failover://(stomp://…` or `failover://stomp://…`: the endpoints are nested; read on from there.
        // Only a `failover` scheme nests: in `stomp://user://pass@h` the `://` belongs to the password.
        let scheme = head[..scheme_end].rsplit(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))).next().unwrap_or("");
        let inner = tail.strip_prefix('(').unwrap_or(tail);
        if scheme.eq_ignore_ascii_case("failover") && starts_with_scheme(inner) {
            out.push_str(&tail[..tail.len() - inner.len()]);
            rest = inner;
            continue;
        }
        // This URL ends where the next `,scheme://` of a failover list begins.
        let elem_end = match in_list {
            true => tail.match_indices(',').map(|(i, _)| i).find(|&i| starts_with_scheme(&tail[i + 1..])).unwrap_or(tail.len()),
            false => tail.len(),
        };
        let elem = &tail[..elem_end];
        let after_auth = match elem.rfind('@') {
            Some(at) => {
                let userinfo = &elem[..at];
                match userinfo.split_once(':') {
                    Some((login, _)) => {
                        out.push_str(login);
                        out.push_str(":***@");
                    }
                    None => {
                        out.push_str(userinfo);
                        out.push('@');
                    }
                }
                &elem[at + 1..]
            }
            None => elem,
        };
        let host_end = after_auth.find(['/', ',', ')', '?']).unwrap_or(after_auth.len());
        let (hostport, trailer) = after_auth.split_at(host_end);
        let port_at = if hostport.starts_with('[') { hostport.find("]:").map(|i| i + 1) } else { hostport.rfind(':') };
        match port_at {
            Some(colon) if !hostport[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str(&hostport[..colon]);
                out.push_str(":***");
            }
            _ => out.push_str(hostport),
        }
        out.push_str(trailer);
        rest = &tail[elem_end..];
    }
    out.push_str(rest);
    out
}

/// Parses one `stomp://` or `stomp+ssl://` URL.
fn parse_endpoint(s: &str) -> Result<Endpoint, UrlError> {
    let invalid = |why: &str| UrlError::Invalid { url: redact(s), why: why.to_owned() };
    let s = s.trim();
    let (scheme, rest) = s.split_once("://").ok_or_else(|| invalid("missing scheme://"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "stomp" | "tcp" => false,
        "stomp+ssl" | "stomp+tls" | "stomps" | "ssl" | "tls" => true,
        other => return Err(UrlError::Scheme(other.to_owned())),
    };
    // The user information runs up to the last `@`, so a passcode holding `/`, `?`
    // or `@` that was not percent-encoded is still read as a passcode, never as a host.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let hostport = after.split(['/', '?']).next().unwrap_or_default();
    if hostport.is_empty() {
        return Err(invalid("missing host"));
    }
    let decode = |p: &str| -> Result<String, UrlError> {
        percent_encoding::percent_decode_str(p).decode_utf8().map(|c| c.into_owned()).map_err(|_| invalid("credentials are not UTF-8 after percent-decoding"))
    };
    let (login, passcode) = match userinfo {
        None => (None, None),
        Some(ui) => match ui.split_once(':') {
            Some((u, p)) => (Some(decode(u)?), Some(Secret::new(decode(p)?))),
            None => (Some(decode(ui)?), None),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed '[' in IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(invalid("garbage after IPv6 address")),
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        // The port text is not echoed: it may be a piece of a passcode.
        Some(p) => p.parse::<u16>().map_err(|_| invalid("the port is not a number from 0 to 65535"))?,
    };
    Ok(Endpoint { tls, host, port, login, passcode })
}

/// Parses a failover delay: bare numbers are seconds (the Ruby gem's unit); `ms` and `s` suffixes allowed.
fn parse_delay(name: &str, value: &str) -> Result<Duration, UrlError> {
    let err = |why: &str| UrlError::Option { name: name.to_owned(), value: value.to_owned(), why: why.to_owned() };
    let v = value.trim().to_ascii_lowercase();
    let (num, scale, suffixed) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001, true)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0, true)
    } else {
        (v.as_str(), 1.0, false)
    };
    let n: f64 = num.trim().parse().map_err(|_| err("not a number (seconds, or with an ms/s suffix)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(err("must be a non-negative number"));
    }
    if !suffixed && n > 600.0 {
        return Err(err("bare numbers are seconds (the Ruby stomp gem's unit); for ActiveMQ-style milliseconds write e.g. 30000ms"));
    }
    Ok(Duration::from_secs_f64(n * scale))
}

/// Parses a boolean option value.
fn parse_bool(name: &str, value: &str) -> Result<bool, UrlError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(UrlError::Option { name: name.to_owned(), value: value.to_owned(), why: "expected true or false".into() }),
    }
}

/// Parses an attempts count where 0 and -1 both mean "forever" (Ruby gem and ActiveMQ conventions).
fn parse_attempts(name: &str, value: &str) -> Result<Option<u32>, UrlError> {
    let n: i64 =
        value.trim().parse().map_err(|_| UrlError::Option { name: name.to_owned(), value: value.to_owned(), why: "expected an integer (0 or -1 retry forever)".into() })?;
    Ok(if n <= 0 { None } else { Some(n.min(u32::MAX as i64) as u32) })
}

/// Options the Ruby gem or ActiveMQ accept that have no effect here.
const IGNORED_OPTIONS: &[&str] = &[
    "backup",
    "timeout",
    "prioritybackup",
    "priorityuris",
    "updateurissupported",
    "updateurisurl",
    "rebalanceupdateuris",
    "trackmessages",
    "maxcachesize",
    "reconnectsupported",
    "warnafterreconnectattempts",
    "reconnectdelayjitterpercent",
];

/// Applies `name=value&…` failover options.
fn parse_options(query: &str, options: &mut FailoverOptions) -> Result<(), UrlError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = name.trim().to_ascii_lowercase();
        match key.as_str() {
            "initialreconnectdelay" => options.initial_reconnect_delay = parse_delay(name, value)?,
            "maxreconnectdelay" => options.max_reconnect_delay = parse_delay(name, value)?,
            "useexponentialbackoff" => options.use_exponential_backoff = parse_bool(name, value)?,
            "backoffmultiplier" => {
                let m: f64 = value.trim().parse().map_err(|_| UrlError::Option { name: name.to_owned(), value: value.to_owned(), why: "expected a number".into() })?;
                if !(1.0..=100.0).contains(&m) {
                    return Err(UrlError::Option { name: name.into(), value: value.into(), why: "must be between 1 and 100".into() });
                }
                options.backoff_multiplier = m;
            }
            "maxreconnectattempts" => options.max_reconnect_attempts = parse_attempts(name, value)?,
            "startupmaxreconnectattempts" => options.startup_max_reconnect_attempts = parse_attempts(name, value)?,
            "randomize" => options.randomize = parse_bool(name, value)?,
            "jitter" => {
                let j: f64 =
                    value.trim().parse().map_err(|_| UrlError::Option { name: name.to_owned(), value: value.to_owned(), why: "expected a fraction from 0 to 1".into() })?;
                if !(0.0..=1.0).contains(&j) {
                    return Err(UrlError::Option { name: name.into(), value: value.into(), why: "must be from 0 to 1".into() });
                }
                options.jitter = j;
            }
            k if IGNORED_OPTIONS.contains(&k) => {}
            _ => {
                return Err(UrlError::Option {
                    name: name.to_owned(),
                    value: value.to_owned(),
                    why: "unknown option (known: initialReconnectDelay, maxReconnectDelay, useExponentialBackOff, \
                          backOffMultiplier, maxReconnectAttempts, startupMaxReconnectAttempts, randomize, jitter)"
                        .into(),
                })
            }
        }
    }
    Ok(())
}

impl FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<BrokerUrl, UrlError> {
        let s = s.trim();
        let mut options = FailoverOptions::default();
        let lower = s.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("failover:") {
            let offset = s.len() - rest.len();
            let rest = &s[offset..];
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (list, query) = if let Some(inner) = rest.strip_prefix('(') {
                let close = inner.rfind(')').ok_or_else(|| UrlError::Invalid { url: redact(s), why: "failover list has no closing ')'".into() })?;
                let after = &inner[close + 1..];
                let query = match after.strip_prefix('?') {
                    Some(q) => q,
                    None if after.trim().is_empty() => "",
                    None => return Err(UrlError::Invalid { url: redact(s), why: "expected '?' after the failover list".into() }),
                };
                (&inner[..close], query)
            } else {
                rest.split_once('?').unwrap_or((rest, ""))
            };
            let endpoints = split_list(list).into_iter().filter(|u| !u.trim().is_empty()).map(parse_endpoint).collect::<Result<Vec<_>, _>>()?;
            if endpoints.is_empty() {
                return Err(UrlError::Invalid { url: redact(s), why: "failover list is empty".into() });
            }
            parse_options(query, &mut options)?;
            return Ok(BrokerUrl { endpoints, options });
        }
        let endpoint = parse_endpoint(s)?;
        // The query starts after the user information (a passcode may hold a `?`).
        let after_auth = s.rfind('@').map_or(s, |at| &s[at + 1..]);
        if let Some((_, query)) = after_auth.split_once('?') {
            parse_options(query, &mut options)?;
        }
        Ok(BrokerUrl { endpoints: vec![endpoint], options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_url_with_credentials() {
        let u = BrokerUrl::parse("stomp://deploy:s%40cret@broker01:61614").unwrap();
        assert_eq!(u.endpoints.len(), 1);
        let e = &u.endpoints[0];
        assert_eq!((e.host.as_str(), e.port, e.tls), ("broker01", 61614, false));
        assert_eq!(e.login.as_deref(), Some("deploy"));
        assert_eq!(e.passcode.as_ref().unwrap().expose(), "s@cret");
        assert_eq!(u.to_string(), "stomp://deploy:***@broker01:61614");
        assert!(!format!("{u:?}").contains("cret"));
    }

    #[test]
    fn default_port_and_tls() {
        let u = BrokerUrl::parse("stomp+ssl://mq.example.com").unwrap();
        assert_eq!(u.endpoints[0].port, DEFAULT_PORT);
        assert!(u.endpoints[0].tls);
        let v6 = BrokerUrl::parse("stomp://[::1]:61613").unwrap();
        assert_eq!(v6.endpoints[0].addr(), "[::1]:61613");
    }

    #[test]
    fn legacy_ruby_failover_form() {
        let s = "failover://(stomp://user:pass@broker01:61613,stomp://user:pass@broker02:61613)?initialReconnectDelay=0.01&randomize=false&useExponentialBackOff=true&MaxReconnectDelay=30&BackOffMultiplier=2&MaxReconnectAttempts=0&Backup=false&Timeout=-1";
        let u = BrokerUrl::parse(s).unwrap();
        assert_eq!(u.endpoints.len(), 2);
        assert_eq!(u.endpoints[1].host, "broker02");
        assert_eq!(u.options.initial_reconnect_delay, Duration::from_millis(10));
        assert_eq!(u.options.max_reconnect_delay, Duration::from_secs(30));
        assert_eq!(u.options.max_reconnect_attempts, None);
        assert!(!u.options.randomize);
        assert!(!u.to_string().contains("pass"));
    }

    #[test]
    fn activemq_failover_form_with_ms() {
        let u = BrokerUrl::parse("failover:(stomp://a:61613,stomp+ssl://b:61614)?maxReconnectDelay=5000ms&MAXRECONNECTATTEMPTS=3&randomize=TRUE").unwrap();
        assert_eq!(u.options.max_reconnect_delay, Duration::from_secs(5));
        assert_eq!(u.options.max_reconnect_attempts, Some(3));
        assert!(u.options.randomize);
        assert!(u.endpoints[1].tls);
    }

    #[test]
    fn errors_are_clear_and_redacted() {
        let e = BrokerUrl::parse("http://u:topsecret@x").unwrap_err();
        assert!(matches!(e, UrlError::Scheme(_)), "{e}");
        let e = BrokerUrl::parse("stomp://u:topsecret@host:99999").unwrap_err();
        assert!(e.to_string().contains("port is not a number") && !e.to_string().contains("topsecret"), "{e}");
        let e = BrokerUrl::parse("failover:(stomp://a)?bogus=1").unwrap_err();
        assert!(e.to_string().contains("unknown option"), "{e}");
        let e = BrokerUrl::parse("failover:(stomp://a)?maxReconnectDelay=30000").unwrap_err();
        assert!(e.to_string().contains("30000ms"), "{e}");
        assert!(BrokerUrl::parse("failover:()").is_err());
        assert!(BrokerUrl::parse("failover:(stomp://a").is_err());
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let o = FailoverOptions { jitter: 0.0, ..FailoverOptions::default() };
        assert_eq!(o.delay(0), Duration::from_millis(10));
        assert_eq!(o.delay(1), Duration::from_millis(20));
        assert_eq!(o.delay(30), Duration::from_secs(30));
        let j = FailoverOptions { jitter: 0.5, initial_reconnect_delay: Duration::from_secs(1), ..FailoverOptions::default() };
        let samples: Vec<_> = (0..50).map(|_| j.delay(0)).collect();
        assert!(samples.iter().all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1)));
        assert!(samples.iter().any(|d| *d != samples[0]), "jitter must vary delays");
    }

    #[test]
    fn redact_handles_lists() {
        assert_eq!(redact("failover:(stomp://a:b@h,stomp://c:d@i)"), "failover:(stomp://a:***@h,stomp://c:***@i)");
        // Found by fuzz/broker_url: after `failover://(` the first endpoint's password was shown.
        assert_eq!(redact("failover://(stomp://u:topsecret@a:1,stomp://v:other@b:2)?randomize=false"), "failover://(stomp://u:***@a:1,stomp://v:***@b:2)?randomize=false");
        assert_eq!(redact("failover://stomp://u:topsecret@a:1"), "failover://stomp://u:***@a:1");
        assert_eq!(redact("stomp://host:61613/x"), "stomp://host:61613/x");
        // And a plain URL whose login has a `,` (the list delimiter): the password after it was shown.
        assert_eq!(redact("stomp://us,er:topsecret@h:1/x"), "stomp://us,er:***@h:1/x");
        assert_eq!(redact("stomp://u:top)secret@h:1"), "stomp://u:***@h:1");
        // Found by fuzz/broker_url: a password holding `://` was taken for a nested URL and shown.
        assert_eq!(redact("stomp://guest://hosguest@localhost"), "stomp://guest:***@localhost");
        // Found by fuzz/broker_url: outside a failover list, `,stomp://` inside a password started a second URL.
        let text = "stomp://12:7.su2t:guestUUomp://a:1,stomp://bUUUUUUUUUUUUU@localhost:61";
        let pass = BrokerUrl::parse(text).unwrap().endpoints[0].passcode.clone().unwrap();
        assert_eq!(pass.expose(), "7.su2t:guestUUomp://a:1,stomp://bUUUUUUUUUUUUU");
        assert_eq!(redact(text), "stomp://12:***@localhost:61");
        let u = BrokerUrl::parse("stomp://guest://hosguest@localhost").unwrap();
        assert_eq!(u.endpoints[0].passcode.as_ref().map(Secret::expose), Some("//hosguest"));
        // The error a broken legacy failover URL gives (printed by every tool's config check).
        let e = BrokerUrl::parse("failover://(stomp://u:topsecret@a:61613").unwrap_err();
        assert!(e.to_string().contains("closing ')'") && !e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn passcodes_with_url_delimiters_are_passcodes_and_redacted() {
        for (url, pass) in [
            ("stomp://deploy:Sup3r/Secret@host:61613", "Sup3r/Secret"),
            ("stomp://deploy:Sup3r?Secret@host:61613", "Sup3r?Secret"),
            ("stomp://deploy:Sup3r@Secret@host", "Sup3r@Secret"),
            ("stomp://deploy:Sup3r,Secret@host:61613", "Sup3r,Secret"),
        ] {
            let u = BrokerUrl::parse(url).unwrap();
            assert_eq!(u.endpoints[0].host, "host", "{url}");
            assert_eq!(u.endpoints[0].passcode.as_ref().map(Secret::expose), Some(pass), "{url}");
            assert_eq!(redact(url).matches("Secret").count(), 0, "{}", redact(url));
            assert!(!redact(url).contains("Sup3r"), "{}", redact(url));
        }
        let u = BrokerUrl::parse("failover:(stomp://a:x,y@h1:1,stomp://b:p/q@h2:2)").unwrap();
        assert_eq!(u.endpoints.len(), 2);
        assert_eq!(u.endpoints[0].passcode.as_ref().map(Secret::expose), Some("x,y"));
        assert_eq!(u.endpoints[1].host, "h2");
    }

    #[test]
    fn errors_never_echo_a_passcode_or_port_text() {
        for url in [
            "stomp://deploy:Sup3r/Secret@host:6161x",
            "stomp://deploy:Sup3r/Secret@",
            "stomp://deploy:Sup3rSecret@[::1",
            "stomp://deploy:Sup3rSecret/x:y",
            "stomp://deploy:Sup3rSecret",
            "failover:(stomp://deploy:Sup3r,Secret@h:1,stomp://x:Sup3rSecret@h:z)",
            "failover:(stomp://deploy:Sup3r)Secret@h:1",
        ] {
            let e = BrokerUrl::parse(url).expect_err(url).to_string();
            assert!(!e.contains("Secret") && !e.contains("Sup3r"), "{url} → {e}");
        }
        assert_eq!(redact("stomp://h:abc/x"), "stomp://h:***/x");
        assert_eq!(redact("stomp://[::1]:61613"), "stomp://[::1]:61613");
        assert_eq!(redact("stomp://u@h:1"), "stomp://u@h:1");
        assert_eq!(redact("stomp://u:p@h:1?x=1"), "stomp://u:***@h:1?x=1");
    }
}
