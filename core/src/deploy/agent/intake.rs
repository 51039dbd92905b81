//! What the agent checks before a request may cost anything: the signature by a
//! trusted key and the validity window ([`authenticate`], no regex, no reply),
//! and the rate-limited log line for requests it drops unanswered ([`Throttle`]).

use super::config::AgentConfig;
use super::CLOCK_SKEW;
use crate::deploy::keys::{PublicKey, SIGNATURE_HEADER, SIGNER_HEADER};
use crate::message::DeployRequest;
use crate::stomp::Headers;
use std::time::{Duration, Instant};

/// At most one log line per this interval for dropped (unverified) requests.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Checks the signature (trusted key, exact body), the validity window and the
/// request id's form; returns the signing key's name. Cheap: nothing the
/// request's filters ask for is built yet.
pub fn authenticate(config: &AgentConfig, headers: &Headers, body: &[u8], req: &DeployRequest, now: u64) -> Result<String, String> {
    let key_name = match (headers.get(SIGNER_HEADER), headers.get(SIGNATURE_HEADER)) {
        (None, None) if config.allow_unsigned => "unsigned".to_owned(),
        (None, _) | (_, None) => return Err("unsigned request (no dk-signer/dk-signature headers)".into()),
        (Some(signer), Some(sig)) => {
            let key = PublicKey::parse(signer).map_err(|e| e.to_string())?;
            let name = config.key_name(&key).ok_or_else(|| format!("signed by an untrusted key {key}"))?.to_owned();
            key.verify(body, sig).map_err(|e| format!("bad signature by key {name}: {e}"))?;
            name
        }
    };
    if req.expires_at < now {
        return Err(format!("expired {} s ago (check the clocks)", now - req.expires_at));
    }
    if req.issued_at > now.saturating_add(CLOCK_SKEW) {
        return Err(format!("issued {} s in the future (clock skew?)", req.issued_at - now));
    }
    if req.expires_at.saturating_sub(now) > config.max_request_validity.as_secs() {
        return Err(format!("valid for longer than max_request_validity ({} s)", config.max_request_validity.as_secs()));
    }
    if uuid::Uuid::parse_str(&req.request_id).is_err() {
        return Err("request_id is not a UUID".into());
    }
    Ok(key_name)
}

/// Rate-limits a log line: the first one, then at most one per [`LOG_INTERVAL`]
/// saying how many were suppressed in between.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since the last line)` when a line may be written now.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < LOG_INTERVAL => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_admits_one_line_per_interval_with_the_count() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        assert_eq!(t.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.admit(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.admit(t0 + LOG_INTERVAL), Some(2));
        assert_eq!(t.admit(t0 + LOG_INTERVAL), None);
    }
}
