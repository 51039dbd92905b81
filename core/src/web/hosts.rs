//! Which `Host` names and which origins are dk-web's own: the guard against DNS
//! rebinding (a hostile name that resolves to dk-web's address) and cross-site posts.
//!
//! Allowed names: the listen address (for a loopback or every-address listen also
//! `localhost`, `127.0.0.1` and `[::1]`), `public_url`'s host and `allowed_hosts`.
//! The `Host` check compares names only: the port cannot carry an attack (the
//! connection already reached dk-web's port), while the name is what a rebinding
//! page cannot fake. A state-changing request must carry an `Origin` (or, without
//! one, a `Referer`) that is exactly one of the allowed origins (scheme, name, port):
//! `http://NAME:PORT` for the listen names, `public_url`'s origin, and for each
//! `allowed_hosts` entry http and https on its port (no port given: the listen
//! port, 80 and 443). It is never compared with the request's own `Host`.

use std::net::SocketAddr;
use url::{Origin, Url};

/// The names and origins a request may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    names: Vec<String>,
    origins: Vec<Origin>,
}

/// Why a request is refused by the guard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No `Host` header (nor an authority in the request line).
    #[error("the request names no host")]
    NoHost,
    /// A `Host` that is not one of dk-web's names.
    #[error("dk-web does not answer to this host name; browse to its configured address (public_url, or add the name to allowed_hosts)")]
    UnknownHost,
    /// A state-changing request without `Origin` or `Referer`.
    #[error("the request carries no Origin or Referer header: dk-web accepts forms only from its own pages")]
    NoOrigin,
    /// A state-changing request from a page of another origin.
    #[error("the request comes from another site")]
    OtherOrigin,
}

/// Checks `public_url`: an absolute http or https URL with a host.
pub fn parse_public_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL such as https://deploy.example.com ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{s:?}: expected http:// or https:// and a host name, such as https://deploy.example.com"));
    }
    Ok(u)
}

/// Checks an `allowed_hosts` entry, `name` or `name:port`; gives the normalised name and the port.
pub fn parse_allowed_host(s: &str) -> Result<(String, Option<u16>), String> {
    let u = host_url(s).ok_or_else(|| format!("{s:?} is not a host name such as deploy.example.com or deploy.example.com:8090"))?;
    let name = u.host_str().map(str::to_owned).ok_or_else(|| format!("{s:?} has no host name"))?;
    let explicit = s.rsplit_once(']').map_or(s, |(_, rest)| rest).contains(':');
    Ok((name, if explicit { u.port_or_known_default() } else { None }))
}

/// `http://HOST/` for a `Host`-like value made only of host-name characters.
fn host_url(host: &str) -> Option<Url> {
    let ok = !host.is_empty() && host.len() <= 300 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
    if !ok {
        return None;
    }
    let u = Url::parse(&format!("http://{host}/")).ok()?;
    u.host_str().is_some().then_some(u)
}

fn origin(scheme: &str, name: &str, port: u16) -> Option<Origin> {
    Url::parse(&format!("{scheme}://{name}:{port}/")).ok().map(|u| u.origin())
}

impl Hosts {
    /// The allowlist for a server bound to `bound` with the configured `public_url` and `allowed_hosts`
    /// (entries that do not parse are skipped: the configuration check refuses them first).
    pub fn new(bound: SocketAddr, public_url: Option<&Url>, allowed_hosts: &[String]) -> Hosts {
        let ip = bound.ip();
        let port = bound.port();
        let mut listen: Vec<String> = Vec::new();
        if !ip.is_unspecified() {
            listen.extend(host_url(&SocketAddr::new(ip, port).to_string()).and_then(|u| u.host_str().map(str::to_owned)));
        }
        if ip.is_loopback() || ip.is_unspecified() {
            listen.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
        }
        let mut h = Hosts { names: Vec::new(), origins: Vec::new() };
        for n in &listen {
            h.add(n, origin("http", n, port));
        }
        if let Some(u) = public_url {
            if let Some(n) = u.host_str() {
                h.add(n, Some(u.origin()));
            }
        }
        for entry in allowed_hosts {
            let Ok((n, p)) = parse_allowed_host(entry) else { continue };
            let ports: Vec<u16> = match p {
                Some(p) => vec![p],
                None => vec![port, 80, 443],
            };
            for p in ports {
                for scheme in ["http", "https"] {
                    h.add(&n, origin(scheme, &n, p));
                }
            }
        }
        h
    }

    fn add(&mut self, name: &str, o: Option<Origin>) {
        if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_owned());
        }
        if let Some(o) = o.filter(|o| !self.origins.contains(o)) {
            self.origins.push(o);
        }
    }

    /// The allowed host names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Checks a request's `Host` (or the request line's authority).
    pub fn check_host(&self, host: Option<&str>) -> Result<(), HostError> {
        let host = host.ok_or(HostError::NoHost)?;
        let name = host_url(host.trim()).and_then(|u| u.host_str().map(str::to_owned)).ok_or(HostError::UnknownHost)?;
        if self.names.contains(&name) {
            Ok(())
        } else {
            Err(HostError::UnknownHost)
        }
    }

    /// Checks a state-changing request's `Origin`, or its `Referer` when it has no `Origin`.
    pub fn check_origin(&self, origin: Option<&str>, referer: Option<&str>) -> Result<(), HostError> {
        let value = origin.or(referer).ok_or(HostError::NoOrigin)?;
        let o = Url::parse(value.trim()).map_err(|_| HostError::OtherOrigin)?.origin();
        if o.is_tuple() && self.origins.contains(&o) {
            Ok(())
        } else {
            Err(HostError::OtherOrigin)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listen_names_and_origins() {
        let h = Hosts::new("127.0.0.1:8090".parse().unwrap(), None, &[]);
        for ok in ["127.0.0.1:8090", "localhost:8090", "LOCALHOST", "[::1]:8090", "127.0.0.1"] {
            assert_eq!(h.check_host(Some(ok)), Ok(()), "{ok}");
        }
        for bad in ["evil.example:8090", "evil.example", "127.0.0.1.evil.example", "127.0.0.1@evil.example", "", "localhost/x", "a b"] {
            assert_eq!(h.check_host(Some(bad)), Err(HostError::UnknownHost), "{bad}");
        }
        assert_eq!(h.check_host(None), Err(HostError::NoHost));
        assert_eq!(h.check_origin(Some("http://127.0.0.1:8090"), None), Ok(()));
        assert_eq!(h.check_origin(None, Some("http://localhost:8090/sites/www?x=1")), Ok(()));
        for bad in ["http://evil.example:8090", "null", "https://127.0.0.1:8090", "http://127.0.0.1:8091", "http://127.0.0.1", "file:///x"] {
            assert_eq!(h.check_origin(Some(bad), None), Err(HostError::OtherOrigin), "{bad}");
        }
        // Origin decides even when a Referer would pass.
        assert_eq!(h.check_origin(Some("http://evil.example"), Some("http://127.0.0.1:8090/")), Err(HostError::OtherOrigin));
        assert_eq!(h.check_origin(None, None), Err(HostError::NoOrigin));
    }

    #[test]
    fn public_url_and_allowed_hosts() {
        let u = parse_public_url("https://Deploy.Example.com").unwrap();
        let h = Hosts::new("0.0.0.0:8090".parse().unwrap(), Some(&u), &["web01.internal".into(), "web02.internal:9000".into()]);
        assert_eq!(h.check_host(Some("deploy.example.com")), Ok(()));
        assert_eq!(h.check_host(Some("web01.internal:8090")), Ok(()));
        assert_eq!(h.check_host(Some("localhost:8090")), Ok(()));
        assert_eq!(h.check_host(Some("0.0.0.0:8090")), Err(HostError::UnknownHost));
        assert_eq!(h.check_origin(Some("https://deploy.example.com"), None), Ok(()));
        assert_eq!(h.check_origin(Some("https://deploy.example.com:443"), None), Ok(()));
        assert_eq!(h.check_origin(Some("http://deploy.example.com"), None), Err(HostError::OtherOrigin));
        assert_eq!(h.check_origin(Some("http://web01.internal:8090"), None), Ok(()));
        assert_eq!(h.check_origin(Some("https://web01.internal"), None), Ok(()));
        assert_eq!(h.check_origin(Some("http://web01.internal:1234"), None), Err(HostError::OtherOrigin));
        assert_eq!(h.check_origin(Some("https://web02.internal:9000"), None), Ok(()));
        assert_eq!(h.check_origin(Some("https://web02.internal"), None), Err(HostError::OtherOrigin));
        assert!(parse_public_url("ftp://x").is_err() && parse_public_url("https://u:p@x").is_err() && parse_public_url("x").is_err());
        assert!(parse_allowed_host("a/b").is_err() && parse_allowed_host("").is_err());
        assert_eq!(parse_allowed_host("[::1]:80").unwrap(), ("[::1]".into(), Some(80)));
        assert_eq!(parse_allowed_host("Web01.internal").unwrap(), ("web01.internal".into(), None));
    }
}
