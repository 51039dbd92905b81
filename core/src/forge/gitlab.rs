//! GitLab: `Push Hook` and `Tag Push Hook` become commit messages (repo: the
//! last path component of the repository URL without `.git`, as gitlab-stomp
//! did, unless mapped), `Merge Request Hook` an event line.

use super::payload::Obj;
use super::{ForgeError, Hook, Naming, Push};
use crate::message::{one_line, Source};
use serde_json::Value;

/// The header naming the event.
pub const EVENT_HEADER: &str = "X-Gitlab-Event";
/// The header carrying the configured secret token.
pub const TOKEN_HEADER: &str = "X-Gitlab-Token";
/// The headers with the delivery's unique id (newer GitLab sends both).
pub const DELIVERY_HEADERS: [&str; 2] = ["X-Gitlab-Event-UUID", "Idempotency-Key"];

/// Reads one GitLab delivery.
pub fn parse(event: &str, payload: &Value, naming: &Naming) -> Result<Hook, ForgeError> {
    match event {
        "Push Hook" | "Tag Push Hook" => push(payload, naming).map(Hook::Commit),
        "Merge Request Hook" => merge_request(payload).map(Hook::Event),
        other => Ok(Hook::Ignored(other.to_owned())),
    }
}

/// The legacy rule: `git@host:group/site.git` → `site`.
pub fn repo_from_url(url: &str) -> &str {
    let last = url.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or(url);
    last.strip_suffix(".git").unwrap_or(last)
}

fn push(payload: &Value, naming: &Naming) -> Result<crate::message::Commit, ForgeError> {
    let root = Obj::root(payload)?;
    let push = Push::read(&root)?;
    let project = root.opt_obj("project")?;
    let full_name = match &project {
        Some(p) => p.opt_str("path_with_namespace")?,
        None => None,
    };
    // `repository.url` is what gitlab-stomp used; newer payloads also carry `project.git_ssh_url`.
    let (url, field) = match root.opt_obj("repository")?.map(|r| r.opt_str("url")).transpose()?.flatten() {
        Some(u) => (u, "repository.url"),
        None => match &project {
            Some(p) => (p.str("git_ssh_url").map_err(|_| ForgeError::Missing("repository.url".into()))?, "project.git_ssh_url"),
            None => return Err(ForgeError::Missing("repository.url".into())),
        },
    };
    let name = naming.resolve(full_name, repo_from_url(url), field)?;
    Ok(push.into_commit(name, Source::Gitlab))
}

/// `merge request !7 opened in group/site: Title (feature → main) by alice URL`.
fn merge_request(payload: &Value) -> Result<String, ForgeError> {
    let root = Obj::root(payload)?;
    let attrs = root.obj("object_attributes")?;
    let iid = attrs.opt_scalar("iid")?.ok_or_else(|| ForgeError::Missing("object_attributes.iid".into()))?;
    let title = attrs.str("title")?;
    let action = match attrs.opt_str("action")? {
        Some(a) => a,
        None => attrs.opt_str("state")?.unwrap_or("updated"),
    };
    let project = match root.opt_obj("project")? {
        Some(p) => p.opt_str("path_with_namespace")?.unwrap_or_default().to_owned(),
        None => String::new(),
    };
    let mut line = format!("merge request !{iid} {} in {}: {}", one_line(action), one_line(&project), one_line(title));
    if let (Some(src), Some(dst)) = (attrs.opt_str("source_branch")?, attrs.opt_str("target_branch")?) {
        line.push_str(&format!(" ({} → {})", one_line(src), one_line(dst)));
    }
    if let Some(user) = root.opt_obj("user")? {
        if let Some(u) = user.opt_str("username")?.or(user.opt_str("name")?) {
            line.push_str(&format!(" by {}", one_line(u)));
        }
    }
    if let Some(url) = attrs.opt_str("url")? {
        line.push_str(&format!(" {}", one_line(url)));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_repo_rule() {
        assert_eq!(repo_from_url("git@example.com:mike/diaspora.git"), "diaspora");
        assert_eq!(repo_from_url("https://gitlab.example.com/group/sub/site.git"), "site");
        assert_eq!(repo_from_url("https://gitlab.example.com/group/site"), "site");
    }
}
