//! Event lines: the one-line, human-readable account every tool gives of what it did ("eventbot").

use serde::{Deserialize, Serialize};

/// The legacy `subject` of event lines.
pub const LEGACY_SUBJECT: &str = "Talking to eventbot";

/// One event line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The daemon that speaks (`fetch`, `jenkins`, `deploys`, `gitolite`, …); legacy topics end with it.
    pub source: String,
    /// The host it ran on, if relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The line itself.
    pub text: String,
    /// The id of the change this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl Event {
    /// An event from `source` saying `text`.
    pub fn new(source: impl Into<String>, text: impl Into<String>) -> Event {
        Event { source: source.into(), host: None, text: text.into(), correlation_id: None }
    }

    /// The legacy body: the line, prefixed by the host as the fetch daemon did (`HOST  text`).
    pub fn legacy_body(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}  {}", self.text),
            None => self.text.clone(),
        }
    }

    /// Reads a legacy event line; the source is the last component of the destination.
    pub fn from_legacy(destination: &str, body: &str) -> Event {
        let source = destination.rsplit(['.', '/']).next().unwrap_or_default().to_owned();
        Event { source, host: None, text: body.trim_end_matches(['\n', '\r']).to_owned(), correlation_id: None }
    }
}
