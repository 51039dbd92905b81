//! An agent's own identity: its Ed25519 key in `state_dir/identity.key`
//! (PKCS#8 PEM, 0600, made on first start), its enrollment certificate, and
//! the signing of everything it sends (replies, announcements).

use super::keys::{KeyError, PublicKey, SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use super::trust::{Certificate, CERT_HEADER};
use crate::stomp::Headers;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The key file's name inside the agent's state directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// The identity key path for `state_dir`.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(IDENTITY_FILE)
}

/// Loads `state_dir/identity.key`, creating it first if missing (temp file,
/// fsync, rename, fsync of the directory: a crash never leaves a half key).
pub fn load_or_create(state_dir: &Path) -> Result<SecretKey, KeyError> {
    let path = key_path(state_dir);
    if path.exists() {
        return SecretKey::load(&path);
    }
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| KeyError::Io { path: p, source }
    };
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let key = SecretKey::generate()?;
    let tmp = state_dir.join(format!(".{IDENTITY_FILE}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let pem = key.to_pem().map_err(|why| KeyError::BadPrivateKey { path: path.clone(), why })?;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(pem.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(state_dir).and_then(|d| d.sync_all()).map_err(io(state_dir))?;
    Ok(key)
}

/// Why an agent's enrollment certificate is unusable.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    /// The file could not be read.
    #[error("enrollment certificate {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate does not parse or does not fit this agent.
    #[error("enrollment certificate {path}: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// What an agent signs with: its name, key and (optionally) enrollment certificate.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    name: String,
    key: SecretKey,
    cert: Option<String>,
}

impl AgentIdentity {
    /// An identity named `name` signing with `key`, presenting `cert` (the certificate's text).
    pub fn new(name: impl Into<String>, key: SecretKey, cert: Option<String>) -> AgentIdentity {
        AgentIdentity { name: name.into(), key, cert }
    }

    /// Loads the key from `state_dir` (created if missing) and the certificate at `cert`,
    /// which must name `name` and this key.
    pub fn load(name: &str, state_dir: &Path, cert: Option<&Path>) -> Result<AgentIdentity, EnrollmentError> {
        let key = load_or_create(state_dir).map_err(|e| EnrollmentError::Bad { path: key_path(state_dir), why: e.to_string() })?;
        let cert = match cert {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| EnrollmentError::Io { path: path.to_owned(), source })?;
                let bad = |why: String| EnrollmentError::Bad { path: path.to_owned(), why };
                let c = Certificate::parse(text.trim()).map_err(|e| bad(e.to_string()))?;
                if c.identity != name {
                    return Err(bad(format!("issued to {:?}, but this agent is {name:?}", c.identity)));
                }
                if c.key != key.public() {
                    return Err(bad(format!("issued for key {}, but this agent's key is {} (re-enroll: dk-agent --print-key)", c.key, key.public())));
                }
                Some(text.trim().to_owned())
            }
        };
        Ok(AgentIdentity { name: name.to_owned(), key, cert })
    }

    /// The identity's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// Adds `dk-signer`, `dk-signature` (over `body`) and `dk-cert` (if enrolled) to `headers`.
    pub fn sign(&self, body: &[u8], headers: &mut Headers) {
        headers.push(SIGNER_HEADER, self.key.public().to_string());
        headers.push(SIGNATURE_HEADER, self.key.sign(body));
        if let Some(c) = &self.cert {
            headers.push(CERT_HEADER, c.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_0600_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("dk-identity-{}-{}", std::process::id(), fastrand::u64(..)));
        let k1 = load_or_create(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(key_path(&dir)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&dir).unwrap().public(), k1.public());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "{left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_certificate_for_another_identity_or_key_is_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("dk-identity-cert-{}-{}", std::process::id(), fastrand::u64(..)));
        let key = load_or_create(&dir).unwrap();
        let fleet = SecretKey::generate().unwrap();
        let cert = dir.join("agent.cert");
        std::fs::write(&cert, Certificate::issue(&fleet, "web01", &key.public(), u64::MAX)).unwrap();
        let id = AgentIdentity::load("web01", &dir, Some(&cert)).unwrap();
        let mut h = Headers::default();
        id.sign(b"body", &mut h);
        assert!(h.get(CERT_HEADER).is_some() && h.get(SIGNATURE_HEADER).is_some());
        assert!(AgentIdentity::load("web02", &dir, Some(&cert)).unwrap_err().to_string().contains("issued to \"web01\""));
        std::fs::write(&cert, Certificate::issue(&fleet, "web01", &SecretKey::generate().unwrap().public(), u64::MAX)).unwrap();
        assert!(AgentIdentity::load("web01", &dir, Some(&cert)).unwrap_err().to_string().contains("re-enroll"));
        std::fs::write(&cert, "garbage").unwrap();
        assert!(AgentIdentity::load("web01", &dir, Some(&cert)).unwrap_err().to_string().contains("not an enrollment certificate"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
