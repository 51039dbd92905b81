//! CSRF protection for every state-changing request: a per-user token
//! (HMAC-SHA256 of the user under a per-process secret) in each form, checked in
//! constant time. The `Origin`/`Referer` check against dk-web's own origins is
//! [`super::hosts`], run on every POST before any handler.

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

    /// Checks a submitted token; the error says what is wrong.
    pub fn check(&self, user: &str, submitted: Option<&str>) -> Result<(), &'static str> {
        let Some(submitted) = submitted else {
            return Err("the form has no CSRF token: reload the page and try again");
        };
        if !bool::from(self.token(user).as_bytes().ct_eq(submitted.as_bytes())) {
            return Err("the form's CSRF token is wrong (an old page, or another user's): reload the page and try again");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let c = Csrf::new().unwrap();
        let t = c.token("ann");
        assert!(c.check("ann", Some(&t)).is_ok());
        assert!(c.check("bob", Some(&t)).is_err());
        assert!(c.check("ann", None).is_err());
        assert!(c.check("ann", Some("")).is_err());
        assert_ne!(Csrf::new().unwrap().token("ann"), t);
    }
}
