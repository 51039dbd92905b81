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

/// `text` made safe for a one-line event: line breaks and other control
/// characters at either end dropped (spaces are kept: the original's lines such
/// as `commit [repo] 5 ` end in one), each line break inside (`\r\n`, `\n`,
/// `\r`, U+0085, U+2028, U+2029) written ` / `, any other control character
/// (tab, escape, …) a space. The one sanitiser for event lines.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.trim_matches(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')).chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str(" / ");
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => out.push_str(" / "),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl Event {
    /// An event from `source` saying `text`, made one line by [`one_line`].
    pub fn new(source: impl Into<String>, text: impl Into<String>) -> Event {
        Event { source: source.into(), host: None, text: one_line(&text.into()), correlation_id: None }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_makes_one_line() {
        assert_eq!(Event::new("x", "a\r\nb\nc\rd\u{2028}e\tf\u{1b}[31mg\n").text, "a / b / c / d / e f [31mg");
        // Spaces are the text's own (the original's `commit [repo] REV PROJECT` with no project ends in one).
        assert_eq!(Event::new("x", "commit [svnrepo] 5 ").text, "commit [svnrepo] 5 ");
        assert_eq!(one_line("plain text / kept"), "plain text / kept");
        assert_eq!(one_line(&one_line("a\nb")), "a / b", "idempotent");
        assert_eq!(Event::new("x", "\n").legacy_body(), "", "never a keepalive-like body");
    }
}
