//! GitHub: `push` becomes a commit message, `ping` is answered, the rest ignored.

use super::payload::Obj;
use super::{ForgeError, Hook, Naming, Push, RepoNameRule};
use crate::message::Source;
use serde_json::Value;

/// The header naming the event.
pub const EVENT_HEADER: &str = "X-GitHub-Event";
/// The header carrying `sha256=` + the hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// The header with the delivery's unique id (the same on a redelivery).
pub const DELIVERY_HEADER: &str = "X-GitHub-Delivery";

/// Reads one GitHub delivery.
pub fn parse(event: &str, payload: &Value, naming: &Naming) -> Result<Hook, ForgeError> {
    match event {
        "ping" => Ok(Hook::Ping),
        "push" => push(payload, naming, Source::Github).map(Hook::Commit),
        other => Ok(Hook::Ignored(other.to_owned())),
    }
}

/// A GitHub-style push (GitHub and Gitea send the same shape): repo by `name`,
/// `full_name` or the mapping.
pub(super) fn push(payload: &Value, naming: &Naming, source: Source) -> Result<crate::message::Commit, ForgeError> {
    let root = Obj::root(payload)?;
    let push = Push::read(&root)?;
    let repo = root.obj("repository")?;
    let full_name = repo.opt_str("full_name")?;
    let (default, field) = match naming.rule {
        RepoNameRule::Name => (repo.str("name")?, "repository.name"),
        RepoNameRule::FullName => (repo.str("full_name")?, "repository.full_name"),
    };
    let name = naming.resolve(full_name, default, field)?;
    Ok(push.into_commit(name, source))
}
