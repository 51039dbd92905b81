//! Ed25519 keys and request signatures.
//!
//! A signing key lives in a PKCS#8 PEM file (mode 0600; `openssl pkey` reads
//! it). A public key is written `ed25519:BASE64` (32 bytes), the form agents
//! list in `trusted_keys`. A signed message carries two headers: `dk-signer`
//! (the public key) and `dk-signature` (BASE64 of the signature over the exact
//! body bytes).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::fmt;
use std::path::{Path, PathBuf};

/// Header carrying the signer's public key.
pub const SIGNER_HEADER: &str = "dk-signer";
/// Header carrying the signature over the body.
pub const SIGNATURE_HEADER: &str = "dk-signature";

/// What can go wrong with keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is not an Ed25519 PKCS#8 PEM key.
    #[error("{path}: not an Ed25519 private key in PKCS#8 PEM form ({why})")]
    BadPrivateKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A public key is not `ed25519:BASE64` of 32 bytes.
    #[error("bad public key {text:?}: {why} (expected ed25519:BASE64 of 32 bytes, as `dk-deploy keygen` prints)")]
    BadPublicKey {
        /// The text given (public keys are not secret).
        text: String,
        /// Why.
        why: String,
    },
    /// The signature header is missing or malformed.
    #[error("bad signature header: {0}")]
    BadSignature(String),
    /// The signature does not verify.
    #[error("signature does not verify for this body and key")]
    Mismatch,
    /// The system random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// The key file exists already.
    #[error("{0}: exists; refusing to overwrite a key (remove it first)")]
    Exists(PathBuf),
}

/// A public key, as listed in `trusted_keys`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519:BASE64`.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let bad = |why: &str| KeyError::BadPublicKey { text: text.chars().take(80).collect(), why: why.into() };
        let b64 = text.trim().strip_prefix("ed25519:").ok_or_else(|| bad("missing the ed25519: prefix"))?;
        let bytes = B64.decode(b64).map_err(|_| bad("not base64"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
        VerifyingKey::from_bytes(&arr).map(PublicKey).map_err(|_| bad("not a valid curve point"))
    }

    /// Verifies `signature` (BASE64) over `body`.
    pub fn verify(&self, body: &[u8], signature_b64: &str) -> Result<(), KeyError> {
        let raw = B64.decode(signature_b64.trim()).map_err(|_| KeyError::BadSignature("not base64".into()))?;
        let arr: [u8; 64] = raw.try_into().map_err(|_| KeyError::BadSignature("not 64 bytes".into()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&arr);
        self.0.verify_strict(body, &sig).map_err(|_| KeyError::Mismatch)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", B64.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A private signing key (never printed: `Debug` shows the public half only).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl SecretKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Reads a PKCS#8 PEM key file.
    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        SigningKey::from_pkcs8_pem(&text).map(SecretKey).map_err(|e| KeyError::BadPrivateKey { path: path.to_owned(), why: e.to_string() })
    }

    /// Writes the key as PKCS#8 PEM, mode 0600, refusing to overwrite a file.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let pem = self.0.to_pkcs8_pem(Default::default()).map_err(|e| KeyError::BadPrivateKey { path: path.to_owned(), why: e.to_string() })?;
        let mut f = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(KeyError::Exists(path.to_owned())),
            Err(source) => return Err(KeyError::Io { path: path.to_owned(), source }),
        };
        f.write_all(pem.as_bytes()).and_then(|_| f.sync_all()).map_err(|source| KeyError::Io { path: path.to_owned(), source })
    }

    /// The key as PKCS#8 PEM text (for callers that write it durably themselves).
    pub fn to_pem(&self) -> Result<String, String> {
        self.0.to_pkcs8_pem(Default::default()).map(|p| p.to_string()).map_err(|e| e.to_string())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The BASE64 signature over `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        B64.encode(self.0.sign(body).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip_and_tamper() {
        let k = SecretKey::generate().unwrap();
        let sig = k.sign(b"hello");
        let p = PublicKey::parse(&k.public().to_string()).unwrap();
        p.verify(b"hello", &sig).unwrap();
        assert!(matches!(p.verify(b"hellO", &sig), Err(KeyError::Mismatch)));
        assert!(matches!(p.verify(b"hello", "!!"), Err(KeyError::BadSignature(_))));
        let other = SecretKey::generate().unwrap().public();
        assert!(matches!(other.verify(b"hello", &sig), Err(KeyError::Mismatch)));
    }

    #[test]
    fn save_load_and_refuse_overwrite() {
        let dir = std::env::temp_dir().join(format!("dk-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.pem");
        let _ = std::fs::remove_file(&path);
        let k = SecretKey::generate().unwrap();
        k.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(SecretKey::load(&path).unwrap().public(), k.public());
        assert!(matches!(k.save(&path), Err(KeyError::Exists(_))));
        std::fs::write(dir.join("bad.pem"), "nope").unwrap();
        assert!(matches!(SecretKey::load(&dir.join("bad.pem")), Err(KeyError::BadPrivateKey { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn public_key_errors_are_precise() {
        assert!(PublicKey::parse("ssh-ed25519 AAAA").unwrap_err().to_string().contains("prefix"));
        assert!(PublicKey::parse("ed25519:AAAA").unwrap_err().to_string().contains("32 bytes"));
    }
}
