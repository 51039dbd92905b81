//! Who is asking: HTTP Basic against an htpasswd file, a trusted proxy's
//! user header, or (loopback demos) nobody in particular.
//!
//! Password hashes are checked on tokio's blocking pool, never on the async
//! workers. An unknown user's password is checked against a real hash of the
//! file (the first user's), so both cost the same and timing does not tell
//! which names exist.

use super::config::{AuthConfig, Network};
use axum::http::HeaderMap;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No or wrong credentials (Basic): the browser should ask.
    #[error("log in, please")]
    Challenge,
    /// Credentials were given but are wrong (or the user is unknown): a failed login.
    #[error("wrong user or password")]
    Wrong,
    /// The proxy header is missing, or came from an address that is not a trusted proxy.
    #[error("{0}")]
    Refused(String),
}

/// Why the htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a supported hash.
    #[error("{path}:{line}: {why}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// The users of an htpasswd file (bcrypt `$2a$/$2b$/$2y$` or argon2 `$argon2…$` hashes).
#[derive(Debug, Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// The hash an unknown user's password is checked against (the file's first), so it costs the same.
    dummy: Option<String>,
}

impl Htpasswd {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read { path: path.display().to_string(), source })?;
        Htpasswd::parse(&text, &path.display().to_string())
    }

    /// Parses htpasswd text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut users = HashMap::new();
        let mut dummy = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: &str| HtpasswdError::Line { path: name.to_owned(), line: i + 1, why: why.to_owned() };
            let (user, hash) = line.split_once(':').ok_or_else(|| err("expected user:hash"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            if !(is_bcrypt(hash) || hash.starts_with("$argon2")) {
                return Err(err("unsupported hash: use bcrypt (htpasswd -B) or argon2"));
            }
            if hash.starts_with("$argon2") {
                argon2::PasswordHash::new(hash).map_err(|e| err(&format!("bad argon2 hash: {e}")))?;
            }
            dummy.get_or_insert_with(|| hash.to_owned());
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd { users, dummy })
    }

    /// Whether `password` is `user`'s. Slow by design (one bcrypt or argon2 run, also for an
    /// unknown user): call it off the async workers ([`tokio::task::spawn_blocking`]).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => check_hash(hash, password),
            None => {
                if let Some(d) = &self.dummy {
                    let _ = std::hint::black_box(check_hash(d, password));
                }
                false
            }
        }
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn check_hash(hash: &str, password: &str) -> bool {
    if is_bcrypt(hash) {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else {
        use argon2::PasswordVerifier;
        argon2::PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// The configured authentication, ready to check requests.
#[derive(Debug)]
pub enum Auth {
    /// HTTP Basic.
    Basic {
        /// The users (shared with the blocking pool's password checks).
        users: Arc<Htpasswd>,
        /// The realm.
        realm: String,
        /// Verified credentials (SHA-256 of a per-process salt, user and password), so a
        /// page load does not cost a bcrypt run per request.
        verified: Mutex<HashMap<String, [u8; 32]>>,
        /// The salt.
        salt: [u8; 16],
    },
    /// A trusted proxy's header.
    Proxy {
        /// The header name.
        header: String,
        /// Trusted addresses.
        proxies: Vec<Network>,
    },
    /// Everyone is this user.
    None(String),
}

impl Auth {
    /// Builds from the configuration (reads the htpasswd file).
    pub fn from_config(c: &AuthConfig) -> Result<Auth, HtpasswdError> {
        Ok(match c {
            AuthConfig::Basic { htpasswd, realm } => {
                let mut salt = [0u8; 16];
                getrandom::fill(&mut salt).map_err(|e| HtpasswdError::Read { path: "getrandom".into(), source: std::io::Error::other(e.to_string()) })?;
                Auth::Basic { users: Arc::new(Htpasswd::load(htpasswd)?), realm: realm.clone(), verified: Mutex::default(), salt }
            }
            AuthConfig::Proxy { header, proxies } => Auth::Proxy { header: header.clone(), proxies: proxies.clone() },
            AuthConfig::None { user } => Auth::None(user.clone()),
        })
    }

    /// The realm for `WWW-Authenticate` (Basic only).
    pub fn realm(&self) -> Option<&str> {
        match self {
            Auth::Basic { realm, .. } => Some(realm),
            _ => None,
        }
    }

    /// The user making a request from `peer` with `headers` (a password check runs on the blocking pool).
    pub async fn user(&self, peer: IpAddr, headers: &HeaderMap) -> Result<String, AuthFailure> {
        match self {
            Auth::None(u) => Ok(u.clone()),
            Auth::Proxy { header, proxies } => {
                if !proxies.iter().any(|n| n.contains(peer)) {
                    return Err(AuthFailure::Refused(format!("{peer} is not a trusted proxy")));
                }
                let user = headers.get(header.as_str()).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
                if user.is_empty() || user.len() > 200 || user.chars().any(char::is_control) {
                    return Err(AuthFailure::Refused(format!("the proxy sent no usable {header} header")));
                }
                Ok(user.to_owned())
            }
            Auth::Basic { users, verified, salt, .. } => {
                let (user, password) = basic_credentials(headers).ok_or(AuthFailure::Challenge)?;
                let digest: [u8; 32] = Sha256::new().chain_update(salt).chain_update(user.as_bytes()).chain_update([0]).chain_update(password.as_bytes()).finalize().into();
                let cached = verified.lock().unwrap_or_else(|p| p.into_inner()).get(&user).is_some_and(|d| bool::from(d.ct_eq(&digest)));
                if cached {
                    return Ok(user);
                }
                let (check, u) = (users.clone(), user.clone());
                let ok = tokio::task::spawn_blocking(move || check.verify(&u, &password)).await.unwrap_or(false);
                if ok {
                    let mut v = verified.lock().unwrap_or_else(|p| p.into_inner());
                    if v.len() > 10_000 {
                        v.clear();
                    }
                    v.insert(user.clone(), digest);
                    Ok(user)
                } else {
                    tracing::warn!(user = %user.escape_debug(), %peer, "wrong password or unknown user");
                    Err(AuthFailure::Wrong)
                }
            }
        }
    }
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    (!u.is_empty()).then(|| (u.to_owned(), p.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_bcrypt_and_argon2() {
        let b = bcrypt::hash("s3cret", 4).unwrap();
        let a = {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            argon2::Argon2::default().hash_password(b"hunter2", &salt).unwrap().to_string()
        };
        let h = Htpasswd::parse(&format!("# users\nann:{b}\nbob:{a}\n"), "t").unwrap();
        assert!(h.verify("ann", "s3cret") && !h.verify("ann", "S3cret"));
        assert!(h.verify("bob", "hunter2") && !h.verify("bob", "x"));
        assert!(!h.verify("eve", "s3cret"));
        let e = Htpasswd::parse("ann:$apr1$xyz$abc\n", "f").unwrap_err().to_string();
        assert!(e.contains("f:1") && e.contains("bcrypt"), "{e}");
        assert!(Htpasswd::parse("nocolon\n", "f").is_err());
    }

    #[test]
    fn unknown_users_cost_a_hash_run_too() {
        let h = Htpasswd::parse(&format!("ann:{}\n", bcrypt::hash("s3cret", 4).unwrap()), "t").unwrap();
        assert_eq!(h.dummy.as_deref(), h.users.get("ann").map(String::as_str));
        assert!(!h.verify("eve", "s3cret"), "the dummy never logs anyone in");
        assert!(!Htpasswd::default().verify("eve", "x"));
    }

    #[tokio::test]
    async fn proxy_trusts_only_its_addresses() {
        let auth = Auth::Proxy { header: "X-Remote-User".into(), proxies: vec![Network::parse("127.0.0.1").unwrap()] };
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", "ann".parse().unwrap());
        assert_eq!(auth.user("127.0.0.1".parse().unwrap(), &h).await.unwrap(), "ann");
        assert!(matches!(auth.user("10.0.0.1".parse().unwrap(), &h).await, Err(AuthFailure::Refused(_))));
        assert!(matches!(auth.user("127.0.0.1".parse().unwrap(), &HeaderMap::new()).await, Err(AuthFailure::Refused(_))));
    }
}
