//! API tokens: random 32 bytes shown once as `dkt_<base64url>`, kept only as
//! their SHA-256 (high-entropy secrets need no slow hash) in a tokens file, one
//! line per token:
//!
//! ```text
//! # name  user  sites       sha256                                                            created
//! ci      ann   www,shop    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 1733300000
//! ```
//!
//! `sites` is `*` (every site) or a comma-separated list. Checks compare every
//! hash in constant time. The file is rewritten durably (temp file, fsync,
//! rename, fsync of the directory) with mode 0600.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// The prefix of every token.
pub const PREFIX: &str = "dkt_";
/// The longest `Authorization` token looked at (a real one is 47 characters).
const MAX_TOKEN: usize = 100;

/// A tokens file problem.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("tokens file {path}:{line}: {why}")]
    Parse {
        /// The file.
        path: String,
        /// The line number (1-based).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A field given to `add` is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A token of that name exists already.
    #[error("a token named {0:?} exists already (revoke it first)")]
    Exists(String),
    /// No token has that name.
    #[error("no token named {0:?}")]
    Unknown(String),
    /// No randomness.
    #[error("random: {0}")]
    Random(String),
}

/// Which sites a token may read and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sites {
    /// Every site.
    All,
    /// These sites only.
    Only(Vec<String>),
}

impl Sites {
    /// Parses `*` or `www,shop`.
    pub fn parse(s: &str) -> Result<Sites, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Sites::All);
        }
        let list: Vec<String> = s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect();
        if list.is_empty() {
            return Err("sites: give `*` or site names separated by commas".into());
        }
        if let Some(bad) = list.iter().find(|n| !valid_word(n) || *n == "*") {
            return Err(format!("sites: {bad:?} is not a site name"));
        }
        Ok(Sites::Only(list))
    }

    /// Whether `site` is in scope.
    pub fn allows(&self, site: &str) -> bool {
        match self {
            Sites::All => true,
            Sites::Only(v) => v.iter().any(|s| s == site),
        }
    }
}

impl std::fmt::Display for Sites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sites::All => f.write_str("*"),
            Sites::Only(v) => f.write_str(&v.join(",")),
        }
    }
}

/// One token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// Its name (unique in the file).
    pub name: String,
    /// The user it acts as.
    pub user: String,
    /// Its sites.
    pub sites: Sites,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// Unix seconds when made.
    pub created: i64,
}

/// Whether `s` is a usable name, user or site: 1 to 200 printable characters, no whitespace, no comma.
fn valid_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && !s.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '#')
}

/// SHA-256 of a token.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The tokens of a file, ready to check requests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    /// Reads `path`; a missing file is no tokens.
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Tokens::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tokens::default()),
            Err(source) => Err(TokenError::Io { path: path.display().to_string(), source }),
        }
    }

    /// Parses a file's text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, TokenError> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: &str| TokenError::Parse { path: origin.to_owned(), line: i + 1, why: why.to_owned() };
            let f: Vec<&str> = line.split_whitespace().collect();
            let [name, user, sites, hash, created] = f[..] else {
                return Err(err("expected: name user sites sha256:HEX created"));
            };
            if !valid_word(name) || !valid_word(user) {
                return Err(err("bad name or user"));
            }
            let sites = Sites::parse(sites).map_err(|e| err(&e))?;
            let hex = hash.strip_prefix("sha256:").ok_or_else(|| err("the hash must read sha256:HEX"))?;
            let mut h = [0u8; 32];
            hex::decode_to_slice(hex, &mut h).map_err(|_| err("the hash must be 64 hex digits"))?;
            let created = created.parse::<i64>().map_err(|_| err("created must be unix seconds"))?;
            if entries.iter().any(|e| e.name == name) {
                return Err(err(&format!("a second token named {name:?}")));
            }
            entries.push(TokenEntry { name: name.to_owned(), user: user.to_owned(), sites, hash: h, created });
        }
        Ok(Tokens { entries })
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry `token` is the secret of; every hash is compared, in constant time.
    pub fn verify(&self, token: &str) -> Option<&TokenEntry> {
        if token.len() > MAX_TOKEN || !token.starts_with(PREFIX) {
            return None;
        }
        let d = digest(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&d)) {
                found = Some(e);
            }
        }
        found
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from("# dk-web API tokens (dk-web token add|list|revoke): name user sites sha256 created\n");
        for e in &self.entries {
            out.push_str(&format!("{} {} {} sha256:{} {}\n", e.name, e.user, e.sites, hex::encode(e.hash), e.created));
        }
        out
    }
}

/// A fresh token: `dkt_` and 32 random bytes, base64url without padding.
pub fn generate() -> Result<String, TokenError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)))
}

/// Adds a token named `name` for `user` on `sites` to the file at `path` (created if
/// missing); returns the token, which is nowhere else: show it once.
pub fn add(path: &Path, name: &str, user: &str, sites: &Sites) -> Result<String, TokenError> {
    if !valid_word(name) || !valid_word(user) {
        return Err(TokenError::Invalid("name and user: 1 to 200 characters without spaces, commas or #".into()));
    }
    let _lock = lock(path)?;
    let mut tokens = Tokens::load(path)?;
    if tokens.entries.iter().any(|e| e.name == name) {
        return Err(TokenError::Exists(name.to_owned()));
    }
    let token = generate()?;
    let created = crate::message::unix_now() as i64;
    tokens.entries.push(TokenEntry { name: name.to_owned(), user: user.to_owned(), sites: sites.clone(), hash: digest(&token), created });
    write_durably(path, &tokens.render())?;
    Ok(token)
}

/// Removes the token named `name` from the file at `path`.
pub fn revoke(path: &Path, name: &str) -> Result<TokenEntry, TokenError> {
    let _lock = lock(path)?;
    let mut tokens = Tokens::load(path)?;
    let i = tokens.entries.iter().position(|e| e.name == name).ok_or_else(|| TokenError::Unknown(name.to_owned()))?;
    let gone = tokens.entries.remove(i);
    write_durably(path, &tokens.render())?;
    Ok(gone)
}

/// Takes the exclusive lock that serialises changes to the file at `path`
/// (`PATH.lock` beside it: the file itself is replaced on every change, so a lock
/// on it would not hold), so two `dk-web token` runs never lose each other's change.
fn lock(path: &Path) -> Result<std::fs::File, TokenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&lock_path);
    let file = file.map_err(|source| TokenError::Io { path: lock_path.display().to_string(), source })?;
    file.lock().map_err(|source| TokenError::Io { path: lock_path.display().to_string(), source })?;
    Ok(file)
}

/// Replaces `path` with `text`: a 0600 temp file beside it, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, text: &str) -> Result<(), TokenError> {
    let io = |source| TokenError::Io { path: path.display().to_string(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tokens".into());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_revoke_and_only_hashes_on_disk() {
        let dir = std::env::temp_dir().join(format!("dk-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let t = add(&path, "ci", "ann", &Sites::parse("www, shop").unwrap()).unwrap();
        assert!(t.starts_with(PREFIX) && t.len() == 47, "{t}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t[PREFIX.len()..]), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let tokens = Tokens::load(&path).unwrap();
        let e = tokens.verify(&t).unwrap();
        assert_eq!((e.name.as_str(), e.user.as_str()), ("ci", "ann"));
        assert!(e.sites.allows("shop") && !e.sites.allows("db"));
        assert!(tokens.verify("dkt_wrong").is_none() && tokens.verify("").is_none() && tokens.verify(&t[1..]).is_none());
        assert!(matches!(add(&path, "ci", "bob", &Sites::All), Err(TokenError::Exists(_))));
        let t2 = add(&path, "all", "bob", &Sites::All).unwrap();
        assert_eq!(Tokens::load(&path).unwrap().verify(&t2).unwrap().sites, Sites::All);
        revoke(&path, "ci").unwrap();
        assert!(Tokens::load(&path).unwrap().verify(&t).is_none());
        assert!(matches!(revoke(&path, "ci"), Err(TokenError::Unknown(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_adds_and_revokes_lose_nothing() {
        let dir = std::env::temp_dir().join(format!("dk-tokens-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        add(&path, "old", "ann", &Sites::All).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || if i == 0 { revoke(&path, "old").map(|_| ()) } else { add(&path, &format!("t{i}"), "ann", &Sites::All).map(|_| ()) })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let mut names: Vec<String> = Tokens::load(&path).unwrap().entries().iter().map(|e| e.name.clone()).collect();
        names.sort();
        assert_eq!(names, (1..8).map(|i| format!("t{i}")).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn malformed_lines_are_named() {
        for (text, want) in [("a b\n", ":1:"), ("# c\nci ann www md5:00 1\n", ":2:"), ("ci ann www sha256:zz 1\n", "hex"), ("ci ann , sha256:00 1\n", "sites")] {
            let e = Tokens::parse(text, "f").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert!(Tokens::load(Path::new("/nonexistent/tokens")).unwrap().is_empty());
    }
}
