//! Rollout records: the one audit trail. Every controller (dk-deploy, dk-web)
//! publishes one signed record when a rollout ends (who, what, where, why,
//! each server's outcome and batch); dk-web stores the records of the
//! controllers it trusts, so its History shows every deploy, whichever tool ran it.
//!
//! On the wire: a JSON body with `dk-type: rollout`, `dk-version: 1`, and the
//! controller's `dk-signer` / `dk-signature`. The signature covers
//! `deploykit rollout v1\n` followed by the exact body, so a signed deploy
//! request can never pass for a record, nor a record for a request.

use super::controller::RolloutReport;
use super::keys::{KeyError, PublicKey, SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use crate::message::{DeployAction, SCHEMA_VERSION, TYPE_HEADER, VERSION_HEADER};
use crate::stomp::{Client, Headers, SendOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `dk-type` of a rollout record.
pub const RECORD_TYPE: &str = "rollout";
/// The largest record body accepted (a 1 000-server report with step output is well under).
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// What the signed bytes start with.
const DOMAIN: &[u8] = b"deploykit rollout v1\n";
/// Longest free-text field (reason, detail, selection) accepted.
const MAX_TEXT: usize = 4096;
/// Most servers one record may list.
const MAX_NODES: usize = 100_000;

/// How a rollout ended, as History shows it.
pub const RESULTS: [&str; 4] = ["ok", "failed", "stopped", "error"];

/// One finished rollout, as every controller publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// A unique id (a UUID), so a record seen twice is stored once.
    pub id: String,
    /// The tool that ran it (`dk-deploy`, `dk-web`).
    pub controller: String,
    /// Who ran it.
    pub user: String,
    /// Why (a ticket, a sentence), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Deploy or rollback.
    pub action: DeployAction,
    /// The site.
    pub site: String,
    /// The tag (deploys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The selection as shown (`all`, servers, or filters).
    pub selection: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds.
    pub finished_at: i64,
    /// One of [`RESULTS`].
    pub result: String,
    /// One line: why it failed or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Per server: outcome, steps and batch (absent when the rollout could not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RolloutReport>,
    /// Who approved it, when the site needs an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// A record that was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The body is over [`MAX_RECORD_BYTES`].
    #[error("rollout record of {len} bytes is over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The `dk-type` header is not `rollout`.
    #[error("not a rollout record (dk-type {0:?})")]
    NotARecord(String),
    /// The `dk-version` header is not one this build reads.
    #[error("rollout record version {0:?} is not supported (this build reads {SCHEMA_VERSION})")]
    Version(String),
    /// No `dk-signer` or `dk-signature` header.
    #[error("rollout record is not signed")]
    Unsigned,
    /// The signer header is not a public key.
    #[error("rollout record signer: {0}")]
    BadSigner(KeyError),
    /// Signed by a key that is not trusted.
    #[error("rollout record signed by {0}, which is not a trusted controller key")]
    Untrusted(String),
    /// The signature does not verify.
    #[error("rollout record signature does not verify for {0}")]
    Signature(String),
    /// The body is not a record.
    #[error("rollout record body: {0}")]
    Body(String),
    /// A field breaks the rules (lengths, names, result).
    #[error("rollout record: {0}")]
    Invalid(String),
    /// The broker did not take the record.
    #[error("rollout record not published: {0}")]
    Bus(#[from] crate::stomp::Error),
}

/// A record whose signature and fields checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The trusted key's name.
    pub key_name: String,
    /// The record.
    pub record: RolloutRecord,
}

fn text_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// Who ran a rollout, why, on what and since when: what a record holds beyond the rollout's report.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The record's id ([`RolloutRecord::new_id`]).
    pub id: &'a str,
    /// The tool (`dk-deploy`, `dk-web`).
    pub controller: &'a str,
    /// Who.
    pub user: &'a str,
    /// Why, when given.
    pub reason: Option<&'a str>,
    /// Deploy or rollback.
    pub action: DeployAction,
    /// The site.
    pub site: &'a str,
    /// The tag (deploys).
    pub tag: Option<&'a str>,
    /// The selection as shown.
    pub selection: &'a str,
    /// Unix seconds.
    pub started_at: i64,
}

impl RolloutRecord {
    /// The record of `run`, finished now with `result` (one of [`RESULTS`]), `detail` (made one line) and its report.
    pub fn finished(run: &Run<'_>, result: &str, detail: Option<&str>, report: Option<&RolloutReport>) -> RolloutRecord {
        RolloutRecord {
            id: run.id.to_owned(),
            controller: run.controller.to_owned(),
            user: run.user.to_owned(),
            reason: run.reason.map(str::to_owned),
            action: run.action,
            site: run.site.to_owned(),
            tag: run.tag.map(str::to_owned),
            selection: run.selection.to_owned(),
            started_at: run.started_at,
            finished_at: (crate::message::unix_now() as i64).max(run.started_at),
            result: result.to_owned(),
            detail: detail.map(crate::message::one_line),
            report: report.cloned(),
            approved_by: None,
        }
    }

    /// A fresh record id.
    pub fn new_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Checks every field against the limits (what [`verify`] applies to input).
    pub fn check(&self) -> Result<(), RecordError> {
        let bad = |why: String| Err(RecordError::Invalid(why));
        if self.id.is_empty() || self.id.len() > 64 || !self.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return bad("id must be 1-64 of A-Z a-z 0-9 -".into());
        }
        if self.controller.is_empty() || !text_ok(&self.controller, 64) {
            return bad("controller must be one line of 1-64 characters".into());
        }
        if self.user.is_empty() || !text_ok(&self.user, 200) {
            return bad("user must be one line of 1-200 characters".into());
        }
        if !matches!(self.action, DeployAction::Deploy | DeployAction::Rollback) {
            return bad("action must be deploy or rollback".into());
        }
        if !crate::names::RepoName::is_valid(&self.site) {
            return bad(format!("site: names are {}", crate::names::RULE));
        }
        if self.tag.as_deref().is_some_and(|t| t.is_empty() || !text_ok(t, 255)) {
            return bad("tag must be one line of 1-255 characters".into());
        }
        if self.approved_by.as_deref().is_some_and(|a| a.is_empty() || !text_ok(a, 200) || a == self.user) {
            return bad("approved_by must be one line of 1-200 characters and not the user".into());
        }
        for (name, v) in [("selection", Some(&self.selection)), ("reason", self.reason.as_ref()), ("detail", self.detail.as_ref())] {
            if v.is_some_and(|v| !text_ok(v, MAX_TEXT)) {
                return bad(format!("{name} must be one line of at most {MAX_TEXT} bytes"));
            }
        }
        if !RESULTS.contains(&self.result.as_str()) {
            return bad(format!("result must be one of {}", RESULTS.join(", ")));
        }
        if self.started_at <= 0 || self.finished_at < self.started_at {
            return bad("started_at must be positive and finished_at not before it".into());
        }
        if let Some(r) = &self.report {
            if r.site != self.site || r.action != self.action || r.tag != self.tag {
                return bad("the report's site, action and tag differ from the record's".into());
            }
            if r.nodes.len() > MAX_NODES {
                return bad(format!("more than {MAX_NODES} servers"));
            }
            if r.nodes.iter().any(|n| n.node.is_empty() || !text_ok(&n.node, 255)) {
                return bad("a server name is empty, over 255 bytes or not one line".into());
            }
        }
        Ok(())
    }

    /// The body and headers (type, version, signer, signature) signed with `key`.
    pub fn encode(&self, key: &SecretKey) -> Result<(Headers, Vec<u8>), RecordError> {
        let body = serde_json::to_vec(self).map_err(|e| RecordError::Body(e.to_string()))?;
        let mut headers = Headers::default();
        headers.push(TYPE_HEADER, RECORD_TYPE);
        headers.push(VERSION_HEADER, SCHEMA_VERSION.to_string());
        headers.push(SIGNER_HEADER, key.public().to_string());
        headers.push(SIGNATURE_HEADER, key.sign(&signed_bytes(&body)));
        Ok((headers, body))
    }

    /// Publishes the record to `destination`, signed with `key`, and waits for the broker's receipt.
    pub async fn publish(&self, client: &Client, destination: &str, key: &SecretKey) -> Result<(), RecordError> {
        let (headers, body) = self.encode(key)?;
        let opts = SendOptions { headers, receipt: true, persistent: true, content_type: Some("application/json".into()) };
        Ok(client.send_with(destination, body, opts).await?)
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DOMAIN.len() + body.len());
    v.extend_from_slice(DOMAIN);
    v.extend_from_slice(body);
    v
}

/// Checks a received record: size, type, version, a signer among `trusted`
/// (name → key), the signature, and every field ([`RolloutRecord::check`]).
pub fn verify(headers: &Headers, body: &[u8], trusted: &BTreeMap<String, PublicKey>) -> Result<Verified, RecordError> {
    if body.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge { len: body.len() });
    }
    match headers.get(TYPE_HEADER) {
        Some(RECORD_TYPE) => {}
        other => return Err(RecordError::NotARecord(other.unwrap_or("").chars().take(40).collect())),
    }
    let version = headers.get(VERSION_HEADER).unwrap_or("");
    if version.trim() != SCHEMA_VERSION.to_string() {
        return Err(RecordError::Version(version.chars().take(20).collect()));
    }
    let (Some(signer), Some(signature)) = (headers.get(SIGNER_HEADER), headers.get(SIGNATURE_HEADER)) else {
        return Err(RecordError::Unsigned);
    };
    let key = PublicKey::parse(signer).map_err(RecordError::BadSigner)?;
    let Some(key_name) = trusted.iter().find(|(_, k)| **k == key).map(|(n, _)| n.clone()) else {
        return Err(RecordError::Untrusted(key.to_string()));
    };
    key.verify(&signed_bytes(body), signature).map_err(|_| RecordError::Signature(key.to_string()))?;
    let record: RolloutRecord = serde_json::from_slice(body).map_err(|e| RecordError::Body(e.to_string()))?;
    record.check()?;
    Ok(Verified { key_name, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RolloutRecord {
        RolloutRecord {
            id: uuid::Uuid::new_v4().to_string(),
            controller: "dk-deploy".into(),
            user: "ann".into(),
            reason: Some("OPS-12".into()),
            action: DeployAction::Deploy,
            site: "www".into(),
            tag: Some("v1.2".into()),
            selection: "all".into(),
            started_at: 1_700_000_000,
            finished_at: 1_700_000_010,
            result: "ok".into(),
            detail: None,
            report: None,
            approved_by: None,
        }
    }

    fn trusted(key: &SecretKey) -> BTreeMap<String, PublicKey> {
        BTreeMap::from([("ops".to_string(), key.public())])
    }

    #[test]
    fn a_signed_record_verifies_and_a_tampered_one_does_not() {
        let key = SecretKey::generate().unwrap();
        let (headers, body) = record().encode(&key).unwrap();
        let v = verify(&headers, &body, &trusted(&key)).unwrap();
        assert_eq!((v.key_name.as_str(), v.record), ("ops", record_with_id(&body)));
        let mut tampered = body.clone();
        let at = tampered.windows(3).position(|w| w == b"ann").unwrap();
        tampered[at] = b'b';
        assert!(matches!(verify(&headers, &tampered, &trusted(&key)), Err(RecordError::Signature(_))));
        let other = SecretKey::generate().unwrap();
        assert!(matches!(verify(&headers, &body, &trusted(&other)), Err(RecordError::Untrusted(_))));
    }

    fn record_with_id(body: &[u8]) -> RolloutRecord {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn a_deploy_request_signature_does_not_pass_for_a_record() {
        let key = SecretKey::generate().unwrap();
        let (mut headers, body) = record().encode(&key).unwrap();
        // Signed the way requests are: over the body alone.
        headers.set(SIGNATURE_HEADER, key.sign(&body));
        assert!(matches!(verify(&headers, &body, &trusted(&key)), Err(RecordError::Signature(_))));
    }

    #[test]
    fn hostile_fields_are_refused() {
        let key = SecretKey::generate().unwrap();
        let cases: [fn(&mut RolloutRecord); 7] = [
            |r| r.site = "../etc".into(),
            |r| r.user = "ann\nforged line".into(),
            |r| r.result = "great".into(),
            |r| r.id = "x y".into(),
            |r| r.reason = Some("a".repeat(MAX_TEXT + 1)),
            |r| r.finished_at = r.started_at - 1,
            |r| r.action = DeployAction::Discover,
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut r = record();
            f(&mut r);
            let (headers, body) = r.encode(&key).unwrap();
            assert!(matches!(verify(&headers, &body, &trusted(&key)), Err(RecordError::Invalid(_))), "case {i} accepted");
        }
        let (headers, _) = record().encode(&key).unwrap();
        assert!(matches!(verify(&headers, &vec![b' '; MAX_RECORD_BYTES + 1], &trusted(&key)), Err(RecordError::TooLarge { .. })));
        assert!(matches!(verify(&headers, b"{not json", &trusted(&key)), Err(RecordError::Signature(_))), "signature checked before parsing");
        assert!(matches!(verify(&Headers::default(), b"{}", &trusted(&key)), Err(RecordError::NotARecord(_))));
    }
}
