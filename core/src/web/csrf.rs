//! CSRF protection for every state-changing request: a per-user token
//! (HMAC-SHA256 of the user under a per-process secret) in each form, checked in
//! constant time, plus an `Origin`/`Referer` check when the browser sends one.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The form field holding the token.
pub const FIELD: &str = "csrf";

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Csrf {
    secret: [u8; 32],
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf(..)")
    }
}

impl Csrf {
    /// A fresh secret (tokens of an earlier process are no longer valid).
    pub fn new() -> Result<Csrf, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Csrf { secret })
    }

    /// `user`'s token.
    pub fn token(&self, user: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        mac.update(b"dk-web csrf\0");
        mac.update(user.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks a submitted token and the request's origin; the error says what is wrong.
    pub fn check(&self, user: &str, submitted: Option<&str>, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(submitted) = submitted else {
            return Err("the form has no CSRF token: reload the page and try again");
        };
        if !bool::from(self.token(user).as_bytes().ct_eq(submitted.as_bytes())) {
            return Err("the form's CSRF token is wrong (an old page, or another user's): reload the page and try again");
        }
        let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
        let origin = headers.get(axum::http::header::ORIGIN).or_else(|| headers.get(axum::http::header::REFERER)).and_then(|v| v.to_str().ok());
        if let (Some(host), Some(origin)) = (host, origin) {
            // `null` origins (privacy modes) carry no information; the token decides then.
            if origin != "null" && authority(origin) != Some(host) {
                return Err("the request comes from another site");
            }
        }
        Ok(())
    }
}

/// `host[:port]` of an absolute URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_origins() {
        let c = Csrf::new().unwrap();
        let t = c.token("ann");
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:8090".parse().unwrap());
        assert!(c.check("ann", Some(&t), &h).is_ok());
        assert!(c.check("bob", Some(&t), &h).is_err());
        assert!(c.check("ann", None, &h).is_err());
        h.insert("origin", "http://127.0.0.1:8090".parse().unwrap());
        assert!(c.check("ann", Some(&t), &h).is_ok());
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert_eq!(c.check("ann", Some(&t), &h), Err("the request comes from another site"));
        assert_ne!(Csrf::new().unwrap().token("ann"), t);
    }
}
