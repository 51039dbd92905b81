//! Deploy messages: requests to agents, their step-by-step replies, and agent announcements.
//! Signing and the agent's behaviour come with the deploy tools; these are the shapes on the wire.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a request asks agents to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployAction {
    /// Describe yourself (identity, classes, facts, sites).
    Discover,
    /// List tags and branches of a site's repo.
    Tags,
    /// Deploy a tag to a site.
    Deploy,
    /// Go back to the previous good release.
    Rollback,
    /// Report current release and lock.
    Status,
}

/// MCollective-style selection: every non-empty list must match (AND).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Filters {
    /// Identities, or `/regex/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity: Vec<String>,
    /// Classes the agent must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class: Vec<String>,
    /// Facts `key=value` the agent must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fact: BTreeMap<String, String>,
}

/// A request to deploy agents (signed by the sender; the signature travels in a header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// A UUID; agents refuse ids they have seen.
    pub request_id: String,
    /// What to do.
    pub action: DeployAction,
    /// The configured site it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The tag or branch to deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Who asked (for audit).
    pub user: String,
    /// Which agents.
    #[serde(default)]
    pub filters: Filters,
    /// Unix seconds when issued.
    pub issued_at: u64,
    /// Unix seconds after which agents refuse it.
    pub expires_at: u64,
    /// Where replies go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The id of the change this deploy belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Deploy only: validate and describe (commit log), change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Tags only: at most this many tags and this many branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Deploy only: deploy even when the tag's commit is not a descendant of the
    /// live release's (commits now live would be removed). Part of the signed body.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
}

/// The state of one deploy step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// The step began.
    Started,
    /// It succeeded.
    Ok,
    /// It failed.
    Failed,
    /// It was not run (e.g. a missing hook).
    Skipped,
    /// The request was refused (bad signature, unauthorized, locked, bad tag).
    Refused,
}

/// An agent's reply: one step's progress, or (with `final`) the whole result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReply {
    /// The request answered.
    pub request_id: String,
    /// The agent's identity.
    pub node: String,
    /// The site, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The step (`pre-deploy`, `checkout`, `pre-link`, `link`, `post-deploy`), if this is a step reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The step's state.
    pub state: StepState,
    /// The hook's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last 64 KiB of stdout.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    /// The last 64 KiB of stderr.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// How long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Whether this is the last reply for the request.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// Why it failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The id of the change this deploy belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Action-specific data (tags list, status, …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    /// Unix seconds after which controllers refuse this reply (0: unsigned legacy reply, refused).
    #[serde(default)]
    pub expires_at: u64,
}

/// A site as an agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// Site name.
    pub name: String,
    /// The live release, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The repo the site deploys from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// The live release's commit (from the agent's release journal; absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// An agent's self-description, for discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAnnounce {
    /// Identity (host name by default).
    pub identity: String,
    /// Classes for selection.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Facts for selection.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// Configured sites.
    #[serde(default)]
    pub sites: Vec<SiteStatus>,
    /// Agent version.
    pub version: String,
    /// Unix seconds after which controllers ignore this announcement (0: none, refused).
    #[serde(default)]
    pub expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode, encode, Message, Wire, CORRELATION_HEADER};

    #[test]
    fn a_site_status_without_a_commit_still_parses_and_none_is_not_sent() {
        let old: SiteStatus = serde_json::from_str(r#"{"name":"www","current":"www_v1","repo":"www"}"#).unwrap();
        assert_eq!(old.commit, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("commit"), "older readers see what they saw");
        let new = SiteStatus { commit: Some("3f1c2a9d8e7b6a5c4d3e2f1a0b9c8d7e6f5a4b3c".into()), ..old };
        assert_eq!(serde_json::from_str::<SiteStatus>(&serde_json::to_string(&new).unwrap()).unwrap(), new);
    }

    #[test]
    fn a_request_correlation_id_comes_from_the_signed_body_only_and_old_bodies_decode() {
        let old = br#"{"request_id":"r","action":"status","site":"www","user":"ann","issued_at":1,"expires_at":2}"#;
        let mut req: DeployRequest = serde_json::from_slice(old).unwrap();
        assert_eq!(req.correlation_id, None);
        req.correlation_id = Some("change-42".into());
        let out = encode(&req, Wire::Json).unwrap();
        assert_eq!(out.headers.get(CORRELATION_HEADER), Some("change-42"), "still emitted for legacy readers");
        for (body, want) in [(out.body.to_vec(), Some("change-42")), (serde_json::to_vec(&DeployRequest { correlation_id: None, ..req.clone() }).unwrap(), None)] {
            let mut headers = out.headers.clone();
            headers.set(CORRELATION_HEADER, "forged");
            let Ok(Message::DeployRequest(r)) = decode("/topic/deploykit.deploy", &headers, &body) else { panic!("a request") };
            assert_eq!(r.correlation_id.as_deref(), want);
        }
    }
}

// Payloads of agent replies, shared by the agent that writes them and the
// controllers (dk-deploy, dk-web) that read them.

/// How long a reply stays valid for controllers, in seconds.
pub const REPLY_VALIDITY: u64 = 600;
/// Prefix of a controller's private reply queue, as it names it in `reply_to`.
pub const TEMP_QUEUE: &str = "/temp-queue/";

/// One step's result, as the final reply lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// `pre-deploy`, `checkout`, `pre-link`, `link`, `post-deploy`.
    pub step: String,
    /// How it ended.
    pub state: StepState,
    /// A hook's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Wall time.
    pub duration_ms: u64,
    /// Last 64 KiB of stdout.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    /// Last 64 KiB of stderr.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One tag or branch as `tags` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefInfo {
    /// Short name.
    pub name: String,
    /// Commit id.
    pub commit: String,
    /// Unix seconds: tagger date for annotated tags, else the commit date.
    pub date: i64,
}

/// The answer to `tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagList {
    /// Tags, newest first.
    pub tags: Vec<RefInfo>,
    /// Branches, most recently committed first.
    pub branches: Vec<RefInfo>,
    /// How many tags exist in all.
    pub tag_count: usize,
    /// How many branches exist in all.
    pub branch_count: usize,
}

/// How far a deploy got (recorded in the lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Hooks before the swap, or the checkout, are running.
    Preparing,
    /// The links are being swapped.
    Linking,
    /// Every link points at the new release.
    Linked,
}

/// Who holds the lock, and the deploy's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The request.
    pub request_id: String,
    /// Who asked.
    pub user: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// The agent process.
    pub pid: u32,
    /// Unix seconds when taken.
    pub acquired_at: u64,
    /// Unix seconds when the lease ends.
    pub expires_at: u64,
    /// The release being made or switched to.
    #[serde(default)]
    pub release: Option<String>,
    /// The release live before.
    #[serde(default)]
    pub previous: Option<String>,
    /// How far it got.
    pub phase: Phase,
    /// Whether this deploy created `release` (and so may remove it on failure).
    #[serde(default)]
    pub created: bool,
    /// The lock file existed but could not be parsed (torn by a crash, edited):
    /// its owner and progress are unknown, so recovery works from the release journal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}
