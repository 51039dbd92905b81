//! Which agents a controller believes: enrollment certificates, the trust
//! configuration (listed keys, fleet keys, revoked keys) and the check every
//! reply and announcement passes before it counts.
//!
//! A certificate is one line `dkcert1.BASE64(JSON).BASE64(SIGNATURE)`: the JSON
//! is `{"identity", "key", "not_after", "fleet"}` and the signature is the fleet
//! key's over `deploykit enrollment v1\n` followed by the exact JSON bytes (the
//! prefix keeps a fleet key's certificate signatures apart from its requests).
//!
//! ```toml
//! fleet_keys = ["ed25519:…"]          # certificates signed by these are trusted
//! revoked_keys = ["ed25519:…"]        # never trusted, certificate or not
//! [agents]                            # keys pinned by hand (no certificate needed)
//! web01 = "ed25519:…"
//! ```

use super::keys::{PublicKey, SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use crate::config::ConfigError;
use crate::stomp::Headers;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Header carrying the sender's enrollment certificate.
pub const CERT_HEADER: &str = "dk-cert";
/// What a certificate's text starts with.
pub const CERT_PREFIX: &str = "dkcert1";
const CERT_DOMAIN: &[u8] = b"deploykit enrollment v1\n";
/// Longest certificate text accepted (a real one is about 400 bytes).
pub const MAX_CERT_LEN: usize = 4096;

/// A certificate that does not parse or verify.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Not `dkcert1.JSON.SIG` of the right shape.
    #[error("not an enrollment certificate ({0})")]
    Malformed(String),
    /// The fleet key's signature does not verify (the key as `ed25519:…`).
    #[error("the certificate's signature does not verify for fleet key {0}")]
    Signature(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertBody {
    identity: String,
    key: String,
    not_after: u64,
    fleet: String,
}

/// A parsed, signature-checked enrollment certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The agent identity it binds.
    pub identity: String,
    /// The agent key it binds.
    pub key: PublicKey,
    /// Unix seconds after which it is void.
    pub not_after: u64,
    /// The fleet key that signed it.
    pub fleet: PublicKey,
}

impl Certificate {
    /// Signs a certificate binding `identity` to `key` until `not_after`, with `fleet`.
    pub fn issue(fleet: &SecretKey, identity: &str, key: &PublicKey, not_after: u64) -> String {
        let body = CertBody { identity: identity.to_owned(), key: key.to_string(), not_after, fleet: fleet.public().to_string() };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut signed = CERT_DOMAIN.to_vec();
        signed.extend_from_slice(&json);
        format!("{CERT_PREFIX}.{}.{}", B64.encode(&json), fleet.sign(&signed))
    }

    /// Parses `text` and checks the signature by the fleet key named inside (not whether that key is trusted).
    pub fn parse(text: &str) -> Result<Certificate, CertError> {
        let bad = |why: &str| CertError::Malformed(why.to_owned());
        if text.len() > MAX_CERT_LEN {
            return Err(bad("too long"));
        }
        let mut parts = text.trim().split('.');
        let (Some(CERT_PREFIX), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected dkcert1.BODY.SIGNATURE"));
        };
        let json = B64.decode(body).map_err(|_| bad("body is not base64"))?;
        let b: CertBody = serde_json::from_slice(&json).map_err(|e| CertError::Malformed(format!("body: {e}")))?;
        let fleet = PublicKey::parse(&b.fleet).map_err(|e| CertError::Malformed(format!("fleet: {e}")))?;
        let key = PublicKey::parse(&b.key).map_err(|e| CertError::Malformed(format!("key: {e}")))?;
        let mut signed = CERT_DOMAIN.to_vec();
        signed.extend_from_slice(&json);
        fleet.verify(&signed, sig).map_err(|_| CertError::Signature(fleet.to_string()))?;
        Ok(Certificate { identity: b.identity, key, not_after: b.not_after, fleet })
    }
}

/// The trust configuration: `[agents]`, `fleet_keys`, `revoked_keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustConfig {
    /// Keys pinned per identity.
    pub agents: BTreeMap<String, Vec<PublicKey>>,
    /// Keys whose enrollment certificates are accepted.
    pub fleet_keys: Vec<PublicKey>,
    /// Keys never trusted (agent keys or fleet keys).
    pub revoked: HashSet<PublicKey>,
}

/// One or several keys for an identity in `[agents]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawKeys {
    /// `web01 = "ed25519:…"`.
    One(String),
    /// `web01 = ["ed25519:…", "ed25519:…"]` (during a rotation).
    Many(Vec<String>),
}

/// The TOML form of [`TrustConfig`] (top level of a trust file, or a daemon's `[trust]` table).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// `[agents]`.
    #[serde(default)]
    pub agents: BTreeMap<String, RawKeys>,
    /// `fleet_keys`.
    #[serde(default)]
    pub fleet_keys: Vec<String>,
    /// `revoked_keys`.
    #[serde(default)]
    pub revoked_keys: Vec<String>,
}

impl RawTrust {
    /// Checks every key; errors name `prefix` + the key (e.g. `trust.fleet_keys[0]`).
    pub fn resolve(self, prefix: &str) -> Result<TrustConfig, ConfigError> {
        let parse = |k: String, t: &str| PublicKey::parse(t).map_err(|e| ConfigError::invalid(k, e.to_string()));
        let mut c = TrustConfig::default();
        for (id, keys) in self.agents {
            let list = match keys {
                RawKeys::One(k) => vec![k],
                RawKeys::Many(v) => v,
            };
            let mut v = Vec::new();
            for (i, t) in list.iter().enumerate() {
                v.push(parse(format!("{prefix}agents.{id}[{i}]"), t)?);
            }
            c.agents.insert(id, v);
        }
        for (i, t) in self.fleet_keys.iter().enumerate() {
            c.fleet_keys.push(parse(format!("{prefix}fleet_keys[{i}]"), t)?);
        }
        for (i, t) in self.revoked_keys.iter().enumerate() {
            c.revoked.insert(parse(format!("{prefix}revoked_keys[{i}]"), t)?);
        }
        Ok(c)
    }
}

impl TrustConfig {
    /// Parses a trust file's text.
    pub fn parse(text: &str) -> Result<TrustConfig, ConfigError> {
        crate::config::parse_toml::<RawTrust>(text)?.resolve("")
    }

    /// Reads and parses a trust file.
    pub fn load(path: &Path) -> Result<TrustConfig, ConfigError> {
        TrustConfig::parse(&crate::config::read(path)?).map_err(|e| e.with_file(path))
    }

    /// Whether nothing at all is trusted.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.fleet_keys.is_empty()
    }

    /// Checks a signed message from `identity`: signature over `body` by the
    /// `dk-signer` key, that key bound to `identity` (listed, or by a valid
    /// certificate from a fleet key) and not revoked. Returns the key, or why not.
    pub fn check(&self, headers: &Headers, body: &[u8], identity: &str, now: u64) -> Result<PublicKey, String> {
        let (Some(signer), Some(sig)) = (headers.get(SIGNER_HEADER), headers.get(SIGNATURE_HEADER)) else {
            return Err("unsigned (no dk-signer/dk-signature headers)".into());
        };
        let key = PublicKey::parse(signer).map_err(|e| format!("bad signer: {e}"))?;
        key.verify(body, sig).map_err(|e| format!("bad signature by {key}: {e}"))?;
        if self.revoked.contains(&key) {
            return Err(format!("key {key} is revoked"));
        }
        if self.agents.get(identity).is_some_and(|keys| keys.contains(&key)) {
            return Ok(key);
        }
        let Some(text) = headers.get(CERT_HEADER) else {
            return Err(match self.agents.get(identity) {
                Some(_) => format!("key {key} is not the one listed for {identity:?} and no enrollment certificate came with it"),
                None => format!("unknown agent {identity:?}: key {key} is not listed and no enrollment certificate came with it"),
            });
        };
        let cert = Certificate::parse(text).map_err(|e| e.to_string())?;
        if !self.fleet_keys.contains(&cert.fleet) {
            return Err(format!("enrollment certificate signed by {}, which is not a configured fleet key", cert.fleet));
        }
        if self.revoked.contains(&cert.fleet) {
            return Err(format!("fleet key {} is revoked", cert.fleet));
        }
        if cert.identity != identity {
            return Err(format!("enrollment certificate is for {:?}, but the message speaks for {identity:?}", cert.identity));
        }
        if cert.key != key {
            return Err(format!("enrollment certificate is for key {}, but the message is signed by {key}", cert.key));
        }
        if cert.not_after < now {
            return Err(format!("enrollment certificate expired {} s ago", now - cert.not_after));
        }
        Ok(key)
    }
}

/// A [`TrustConfig`] that can be replaced while controllers run (dk-web's SIGHUP).
#[derive(Debug, Default)]
pub struct TrustStore(RwLock<Arc<TrustConfig>>);

impl TrustStore {
    /// A store holding `config`.
    pub fn new(config: TrustConfig) -> TrustStore {
        TrustStore(RwLock::new(Arc::new(config)))
    }

    /// The configuration in force.
    pub fn get(&self) -> Arc<TrustConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the configuration for every later check.
    pub fn replace(&self, config: TrustConfig) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(k: &SecretKey, body: &[u8], cert: Option<&str>) -> Headers {
        let mut h = Headers::default();
        h.push(SIGNER_HEADER, k.public().to_string());
        h.push(SIGNATURE_HEADER, k.sign(body));
        if let Some(c) = cert {
            h.push(CERT_HEADER, c);
        }
        h
    }

    #[test]
    fn certificates_bind_identity_key_fleet_and_time() {
        let fleet = SecretKey::generate().unwrap();
        let agent = SecretKey::generate().unwrap();
        let cert = Certificate::issue(&fleet, "web01", &agent.public(), 2000);
        let c = Certificate::parse(&cert).unwrap();
        assert_eq!((c.identity.as_str(), c.key, c.fleet, c.not_after), ("web01", agent.public(), fleet.public(), 2000));
        let trust = TrustConfig { fleet_keys: vec![fleet.public()], ..TrustConfig::default() };
        let h = signed(&agent, b"x", Some(&cert));
        assert_eq!(trust.check(&h, b"x", "web01", 1000), Ok(agent.public()));
        assert!(trust.check(&h, b"y", "web01", 1000).unwrap_err().contains("bad signature"));
        assert!(trust.check(&h, b"x", "web02", 1000).unwrap_err().contains("is for \"web01\""));
        assert!(trust.check(&h, b"x", "web01", 3000).unwrap_err().contains("expired"));
        let other = SecretKey::generate().unwrap();
        assert!(trust.check(&signed(&other, b"x", Some(&cert)), b"x", "web01", 1000).unwrap_err().contains("is for key"));
        assert!(TrustConfig::default().check(&h, b"x", "web01", 1000).unwrap_err().contains("not a configured fleet key"));
        let mut revoked = trust.clone();
        revoked.revoked.insert(agent.public());
        assert!(revoked.check(&h, b"x", "web01", 1000).unwrap_err().contains("revoked"));
        assert!(trust.check(&Headers::default(), b"x", "web01", 1000).unwrap_err().contains("unsigned"));
        // Tampering with the body breaks the fleet signature.
        let mut parts: Vec<String> = cert.split('.').map(str::to_owned).collect();
        parts[1] = B64.encode(String::from_utf8(B64.decode(&parts[1]).unwrap()).unwrap().replace("web01", "web02"));
        assert!(matches!(Certificate::parse(&parts.join(".")), Err(CertError::Signature(_))));
        for junk in ["", "dkcert1", "dkcert1.!!.x", "dkcert1.e30=.x", "x.y.z.w", &"a".repeat(5000)] {
            assert!(matches!(Certificate::parse(junk), Err(CertError::Malformed(_))), "{junk}");
        }
    }

    #[test]
    fn listed_keys_and_config_errors() {
        let agent = SecretKey::generate().unwrap();
        let t = TrustConfig::parse(&format!("[agents]\nweb01 = \"{}\"\nweb02 = [\"{}\"]\n", agent.public(), agent.public())).unwrap();
        let h = signed(&agent, b"x", None);
        assert!(t.check(&h, b"x", "web01", 0).is_ok() && t.check(&h, b"x", "web02", 0).is_ok());
        assert!(t.check(&h, b"x", "web03", 0).unwrap_err().contains("unknown agent"));
        let e = TrustConfig::parse("fleet_keys = [\"nope\"]").unwrap_err().to_string();
        assert!(e.contains("fleet_keys[0]"), "{e}");
    }
}
