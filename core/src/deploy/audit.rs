//! The local audit log: one JSON line per deploy or rollback (who, what,
//! where, result), appended under flock(2) so concurrent runs do not interleave.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339 time (UTC).
    pub time: String,
    /// Who (the operator's login or the web user).
    pub user: String,
    /// The signing key's public half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `deploy` or `rollback`.
    pub action: String,
    /// The site.
    pub site: String,
    /// The tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The filters, as given.
    pub filters: crate::message::Filters,
    /// Servers that succeeded.
    pub ok: Vec<String>,
    /// Servers that failed, were refused, or did not answer their batch.
    pub failed: Vec<String>,
    /// Servers never started because the rollout stopped first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_started: Vec<String>,
    /// Expected servers that did not answer discovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// `ok`, `failed` or `stopped: REASON`.
    pub result: String,
    /// The request ids sent.
    pub request_ids: Vec<String>,
    /// Why, when given (`--reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEntry {
    /// The entry of a finished rollout, now: who (and the key they signed with),
    /// the selection's `filters`, each server's outcome, why.
    pub fn of_report(user: &str, key: Option<String>, filters: &crate::message::Filters, report: &super::controller::RolloutReport, reason: Option<&str>) -> AuditEntry {
        AuditEntry {
            time: crate::git::push::rfc3339(crate::message::unix_now() as i64, 0),
            user: user.to_owned(),
            key,
            action: if report.action == crate::message::DeployAction::Rollback { "rollback".into() } else { "deploy".into() },
            site: report.site.clone(),
            tag: report.tag.clone(),
            filters: filters.clone(),
            ok: report.nodes.iter().filter(|n| !n.state.failed()).map(|n| n.node.clone()).collect(),
            failed: report.failed(),
            not_started: report.not_started(),
            missing: report.missing.clone(),
            result: match &report.stopped {
                Some(s) if !report.ok() => format!("stopped: {s}"),
                _ if report.ok() => "ok".into(),
                _ => "failed".into(),
            },
            request_ids: report.request_ids.clone(),
            reason: reason.map(str::to_owned),
        }
    }
}

/// The default audit log: `$XDG_STATE_HOME/deploykit/audit.log` (or `~/.local/state/…`).
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".local/state"));
    base.join("deploykit/audit.log")
}

/// Appends `entry` to `path` (creating it, mode 0600).
pub fn append(path: &Path, entry: &AuditEntry) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    // SAFETY: flock on our own descriptor; released when it closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}
