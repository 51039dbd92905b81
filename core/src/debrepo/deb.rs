//! Reading a `.deb`'s name, version and architecture from its control data.
//!
//! Through `dpkg-deb --field FILE Package Version Architecture` (an argument
//! vector): dpkg is on every Debian system that runs reprepro, it reads every
//! compression a `.deb` may use (gzip, xz, zstd, none) exactly as apt does,
//! and it costs no decompression crates. The values are then checked against
//! Debian policy's syntax, so whatever reaches a message is well-formed.

use crate::command::{self, CommandError};
use std::path::Path;
use std::time::Duration;

/// What identifies a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`.
    pub arch: String,
}

/// Why the control data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// dpkg-deb could not be run.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// dpkg-deb refused the file (not a Debian archive, truncated, …).
    #[error("not a readable .deb: {0}")]
    Unreadable(String),
    /// A field is missing or malformed.
    #[error("control field {field}: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// Reads name, version and architecture of the `.deb` at `path`.
pub async fn read_control(path: &Path, timeout: Duration) -> Result<DebInfo, DebError> {
    let argv = [Path::new("dpkg-deb").as_os_str(), "--field".as_ref(), path.as_os_str(), "Package".as_ref(), "Version".as_ref(), "Architecture".as_ref()];
    let out = command::run(&argv, None, timeout).await?;
    if !out.success() {
        let text = out.output();
        return Err(DebError::Unreadable(if text.is_empty() { format!("dpkg-deb --field: {}", out.status_text()) } else { text }));
    }
    parse_fields(&out.stdout)
}

/// Parses `dpkg-deb --field`'s `Field: value` lines and checks each value.
pub fn parse_fields(text: &str) -> Result<DebInfo, DebError> {
    let get = |field: &'static str| -> Result<String, DebError> {
        text.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(field)).map(|(_, v)| v.trim().to_owned()))
            .filter(|v| !v.is_empty())
            .ok_or(DebError::Field { field, why: "missing".into() })
    };
    let (name, version, arch) = (get("Package")?, get("Version")?, get("Architecture")?);
    if !valid_name(&name) {
        return Err(DebError::Field { field: "Package", why: format!("{name:?} is not a Debian package name") });
    }
    if !valid_version(&version) {
        return Err(DebError::Field { field: "Version", why: format!("{version:?} is not a Debian version") });
    }
    if !valid_arch(&arch) {
        return Err(DebError::Field { field: "Architecture", why: format!("{arch:?} is not an architecture") });
    }
    Ok(DebInfo { name, version, arch })
}

/// Debian policy 5.6.1: `[a-z0-9][a-z0-9+.-]+`.
pub fn valid_name(s: &str) -> bool {
    s.len() >= 2 && s.len() <= 200 && s.as_bytes()[0].is_ascii_alphanumeric() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'-'))
}

/// Debian policy 5.6.12: `[epoch:]upstream[-revision]`, starting with a digit.
pub fn valid_version(s: &str) -> bool {
    s.len() <= 200 && s.as_bytes().first().is_some_and(u8::is_ascii_digit) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b'-' | b':'))
}

/// An architecture name (`amd64`, `all`, `linux-any`).
pub fn valid_arch(s: &str) -> bool {
    !s.is_empty() && s.len() <= 50 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_parsed_and_checked() {
        let d = parse_fields("Package: site-assets\nVersion: 1:1.4.2-1~bpo12+1\nArchitecture: all\n").unwrap();
        assert_eq!((d.name.as_str(), d.version.as_str(), d.arch.as_str()), ("site-assets", "1:1.4.2-1~bpo12+1", "all"));
        assert!(parse_fields("Package: x y\nVersion: 1\nArchitecture: all\n").is_err());
        assert!(parse_fields("Package: ok\nVersion: v1\nArchitecture: all\n").is_err());
        assert!(parse_fields("Package: ok\nVersion: 1\n").is_err());
        assert!(parse_fields("Package: ok\nVersion: 1\nArchitecture: amd64;rm\n").is_err());
    }
}
