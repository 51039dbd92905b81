//! Fetch results: what a server's fetch daemon did for one repository.

use serde::{Deserialize, Serialize};

/// The outcome of one fetch (and the mode's checkout, if any) on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResult {
    /// Configured repository name.
    pub repo: String,
    /// The server (identity / host name).
    pub node: String,
    /// The repository's mode (`normal`, `trusting`, `dangerous`, `branch`, `atomic`, `puppetmaster`, `tags`).
    pub mode: String,
    /// The ref that triggered it, if a commit message did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refname: Option<String>,
    /// The tracked head before (the remote-tracking ref of the pushed branch, or the default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_head: Option<String>,
    /// The tracked head after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_head: Option<String>,
    /// How long the fetch and checkout took.
    pub duration_ms: u64,
    /// Whether it worked.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it ran: `commit`, `startup`, `reconnect`, `interval`, `once`.
    #[serde(default)]
    pub trigger: String,
    /// The id of the change that led here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}
