//! Package messages: a `.deb` added to (or refused by) a repository (successor of auto-reprepro's).

use super::{legacy_fields, legacy_get, MessageError, Wire};
use serde::{Deserialize, Serialize};

/// What happened to a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageAction {
    /// Included in the repository.
    Added,
    /// Removed from it.
    Removed,
    /// Refused (the file went to `failed/`).
    Failed,
}

/// A package event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Architecture (`amd64`, `all`, …).
    #[serde(default)]
    pub arch: String,
    /// Distribution (`bookworm`, …).
    #[serde(default)]
    pub distro: String,
    /// What happened.
    pub action: PackageAction,
    /// The `.deb` file name.
    #[serde(default)]
    pub file: String,
    /// The tool's output or error, when useful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Package {
    /// The legacy subject: `Package update: [FILE.deb]`.
    pub fn subject(&self) -> String {
        format!("Package update: [{}]", self.file)
    }

    /// Whether a package message is published for this package in `wire`. JSON
    /// carries every action; the legacy body has no status (a reader takes it as
    /// an addition) and the original auto-reprepro published only what it
    /// included, so legacy carries `Added` only (the event line still tells).
    pub fn published_in(&self, wire: Wire) -> bool {
        wire == Wire::Json || self.action == PackageAction::Added
    }

    /// The legacy body: `package: FILE.deb` and the command's result.
    pub fn legacy_body(&self) -> String {
        let mut s = format!("package: {}\n", self.file);
        if let Some(d) = &self.detail {
            s.push_str(d.trim_end());
            s.push('\n');
        }
        s
    }

    /// The original's event line: `Package FILE / DISTRO added to repository.`.
    pub fn event_line(&self) -> String {
        match self.action {
            PackageAction::Added => format!("Package {} / {} added to repository.", self.file, self.distro),
            PackageAction::Removed => format!("Package {} / {} removed from repository.", self.file, self.distro),
            PackageAction::Failed => format!("Package {} / {} REFUSED by repository.", self.file, self.distro),
        }
    }

    /// Reads the original's body; name, version and arch come from the `NAME_VERSION_ARCH.deb` file name.
    pub fn from_legacy(body: &str) -> Result<Package, MessageError> {
        let fields = legacy_fields(body);
        let file =
            legacy_get(&fields, "package").filter(|f| !f.is_empty()).ok_or(MessageError::Invalid { field: "package", why: "legacy package body has no `package:` line".into() })?;
        let stem = file.strip_suffix(".deb").unwrap_or(file);
        let mut parts = stem.splitn(3, '_');
        let name = parts.next().unwrap_or_default().to_owned();
        let version = parts.next().unwrap_or_default().to_owned();
        let arch = parts.next().unwrap_or_default().to_owned();
        let detail: String = body.lines().skip(1).collect::<Vec<_>>().join("\n");
        Ok(Package {
            name,
            version,
            arch,
            distro: String::new(),
            action: PackageAction::Added,
            file: file.to_owned(),
            detail: (!detail.trim().is_empty()).then(|| detail.trim().to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_round_trip() {
        let p = Package {
            name: "site-assets".into(),
            version: "1.4.2-1".into(),
            arch: "all".into(),
            distro: "bookworm".into(),
            action: PackageAction::Added,
            file: "site-assets_1.4.2-1_all.deb".into(),
            detail: Some("Exporting indices...".into()),
        };
        assert_eq!(p.subject(), "Package update: [site-assets_1.4.2-1_all.deb]");
        assert_eq!(p.event_line(), "Package site-assets_1.4.2-1_all.deb / bookworm added to repository.");
        let back = Package::from_legacy(&p.legacy_body()).unwrap();
        assert_eq!((back.name.as_str(), back.version.as_str(), back.arch.as_str()), ("site-assets", "1.4.2-1", "all"));
        assert_eq!(back.detail.as_deref(), Some("Exporting indices..."));
        assert!(Package::from_legacy("nothing: here\n").is_err());
        assert!(p.published_in(Wire::Legacy) && p.published_in(Wire::Json));
        let refused = Package { action: PackageAction::Failed, ..p };
        assert!(!refused.published_in(Wire::Legacy) && refused.published_in(Wire::Json));
    }
}
