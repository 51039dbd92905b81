//! Webhook authentication: HMAC-SHA256 body signatures (GitHub, Gitea/Forgejo)
//! and shared tokens (GitLab), always compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A webhook secret or token; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct HookSecret(Vec<u8>);

impl HookSecret {
    /// A secret from its bytes (as read from a file or the environment, trailing newline removed by the caller).
    pub fn new(bytes: impl Into<Vec<u8>>) -> HookSecret {
        HookSecret(bytes.into())
    }
}

impl std::fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSecret(<redacted>)")
    }
}

/// Why a request's authentication failed (all answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A secret is configured but the request carries no signature or token.
    #[error("missing {0} header (a secret is configured)")]
    Missing(&'static str),
    /// The header is not of the expected form (`sha256=` + 64 hex digits, or 64 hex digits).
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The signature or token does not match.
    #[error("{0} does not match")]
    Mismatch(&'static str),
}

/// HMAC-SHA256 of `body` under `secret`.
pub fn hmac_sha256(secret: &HookSecret, body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Checks a hex HMAC-SHA256 signature (with `prefix`, e.g. `sha256=`, or none) of `body` from header `header`.
pub fn verify_hmac(secret: &HookSecret, body: &[u8], header: &'static str, value: Option<&str>, prefix: &str) -> Result<(), AuthError> {
    let value = value.ok_or(AuthError::Missing(header))?.trim();
    let hex_sig = value.strip_prefix(prefix).ok_or(AuthError::Malformed(header))?;
    let mut given = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut given).map_err(|_| AuthError::Malformed(header))?;
    let expected = hmac_sha256(secret, body);
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(AuthError::Mismatch(header))
    }
}

/// Checks a shared token (GitLab's `X-Gitlab-Token`) in constant time.
pub fn verify_token(secret: &HookSecret, header: &'static str, value: Option<&str>) -> Result<(), AuthError> {
    let value = value.ok_or(AuthError::Missing(header))?;
    // Compare digests so the comparison's time does not depend on the lengths either.
    let key = HookSecret::new(b"dk-token".to_vec());
    if bool::from(hmac_sha256(&key, &secret.0).ct_eq(&hmac_sha256(&key, value.as_bytes()))) {
        Ok(())
    } else {
        Err(AuthError::Mismatch(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented test vector (docs: "Validating webhook deliveries").
    #[test]
    fn github_documented_vector() {
        let secret = HookSecret::new("It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(format!("sha256={}", hex::encode(hmac_sha256(&secret, b"Hello, World!"))), sig);
        assert_eq!(verify_hmac(&secret, b"Hello, World!", "X-Hub-Signature-256", Some(sig), "sha256="), Ok(()));
        assert_eq!(verify_hmac(&secret, b"Hello, World?", "X-Hub-Signature-256", Some(sig), "sha256="), Err(AuthError::Mismatch("X-Hub-Signature-256")));
        let other = HookSecret::new("It's a Secret to Nobody");
        assert!(verify_hmac(&other, b"Hello, World!", "X-Hub-Signature-256", Some(sig), "sha256=").is_err());
    }

    #[test]
    fn missing_and_malformed_signatures() {
        let s = HookSecret::new("k");
        assert_eq!(verify_hmac(&s, b"x", "H", None, "sha256="), Err(AuthError::Missing("H")));
        assert_eq!(verify_hmac(&s, b"x", "H", Some("sha1=abcd"), "sha256="), Err(AuthError::Malformed("H")));
        assert_eq!(verify_hmac(&s, b"x", "H", Some("sha256=zz"), "sha256="), Err(AuthError::Malformed("H")));
        assert_eq!(verify_hmac(&s, b"x", "H", Some(&"0".repeat(64)), ""), Err(AuthError::Mismatch("H")));
        let good = hex::encode(hmac_sha256(&s, b"x"));
        assert_eq!(verify_hmac(&s, b"x", "H", Some(&good), ""), Ok(()));
    }

    #[test]
    fn tokens_and_debug() {
        let s = HookSecret::new("tok3n");
        assert_eq!(verify_token(&s, "X-Gitlab-Token", Some("tok3n")), Ok(()));
        assert_eq!(verify_token(&s, "X-Gitlab-Token", Some("tok3")), Err(AuthError::Mismatch("X-Gitlab-Token")));
        assert_eq!(verify_token(&s, "X-Gitlab-Token", None), Err(AuthError::Missing("X-Gitlab-Token")));
        assert!(!format!("{s:?}").contains("tok3n"));
    }
}
