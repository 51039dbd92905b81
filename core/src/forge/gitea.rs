//! Gitea and Forgejo: `push` becomes a commit message (the payload has GitHub's
//! shape, ref creation and deletion with an all-zero `before`/`after`); everything
//! else (`create`, `delete`, issues …) is ignored, so a ref change announced both
//! ways is not published twice.

use super::{github, ForgeError, Hook, Naming};
use crate::message::Source;
use serde_json::Value;

/// The headers naming the event (Gitea, then Forgejo).
pub const EVENT_HEADERS: [&str; 2] = ["X-Gitea-Event", "X-Forgejo-Event"];
/// The headers carrying the hex HMAC-SHA256 of the body (no prefix).
pub const SIGNATURE_HEADERS: [&str; 2] = ["X-Gitea-Signature", "X-Forgejo-Signature"];
/// The headers with the delivery's unique id.
pub const DELIVERY_HEADERS: [&str; 2] = ["X-Gitea-Delivery", "X-Forgejo-Delivery"];

/// Reads one Gitea/Forgejo delivery.
pub fn parse(event: &str, payload: &Value, naming: &Naming) -> Result<Hook, ForgeError> {
    match event {
        "push" => github::push(payload, naming, Source::Gitea).map(Hook::Commit),
        other => Ok(Hook::Ignored(other.to_owned())),
    }
}
