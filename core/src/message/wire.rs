//! Messages on the wire: JSON v1 with `dk-*` headers, or the original's text
//! bodies; [`decode`] takes either without being told which.

use super::*;
use crate::stomp::Headers;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::str::FromStr;

/// Which body format a tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// JSON v1 bodies with `dk-type` / `dk-version` headers (the default).
    #[default]
    Json,
    /// The original future-deploykit text bodies, for fleets with old daemons.
    Legacy,
}

impl FromStr for Wire {
    type Err = MessageError;

    fn from_str(s: &str) -> Result<Wire, MessageError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Wire::Json),
            "legacy" => Ok(Wire::Legacy),
            other => Err(MessageError::Invalid { field: "wire", why: format!("{other:?}: expected json or legacy") }),
        }
    }
}

/// A message type that can travel on the bus.
pub trait Schema: Serialize + DeserializeOwned {
    /// Its `dk-type`.
    const KIND: Kind;

    /// The legacy-style `subject` header, if the type has one.
    fn subject(&self) -> Option<String> {
        None
    }

    /// The correlation id it carries.
    fn correlation_id(&self) -> Option<String> {
        None
    }

    /// The original's text body, if the type existed in the original.
    fn legacy_body(&self) -> Option<String> {
        None
    }
}

impl Schema for Commit {
    const KIND: Kind = Kind::Commit;
    fn subject(&self) -> Option<String> {
        Some(Commit::subject(self))
    }
    fn correlation_id(&self) -> Option<String> {
        Some(self.effective_correlation_id())
    }
    fn legacy_body(&self) -> Option<String> {
        Some(Commit::legacy_body(self))
    }
}

impl Schema for Build {
    const KIND: Kind = Kind::Build;
    fn subject(&self) -> Option<String> {
        Some(Build::subject(self))
    }
    fn correlation_id(&self) -> Option<String> {
        self.correlation_id.clone()
    }
    fn legacy_body(&self) -> Option<String> {
        Some(Build::legacy_body(self))
    }
}

impl Schema for Package {
    const KIND: Kind = Kind::Package;
    fn subject(&self) -> Option<String> {
        Some(Package::subject(self))
    }
    fn legacy_body(&self) -> Option<String> {
        Some(Package::legacy_body(self))
    }
}

impl Schema for Event {
    const KIND: Kind = Kind::Event;
    fn subject(&self) -> Option<String> {
        Some(event::LEGACY_SUBJECT.to_owned())
    }
    fn correlation_id(&self) -> Option<String> {
        self.correlation_id.clone()
    }
    fn legacy_body(&self) -> Option<String> {
        Some(Event::legacy_body(self))
    }
}

impl Schema for DeployRequest {
    const KIND: Kind = Kind::DeployRequest;
    fn correlation_id(&self) -> Option<String> {
        self.correlation_id.clone()
    }
}

impl Schema for DeployReply {
    const KIND: Kind = Kind::DeployReply;
    fn correlation_id(&self) -> Option<String> {
        self.correlation_id.clone()
    }
}

impl Schema for AgentAnnounce {
    const KIND: Kind = Kind::AgentAnnounce;
}

impl Schema for FetchResult {
    const KIND: Kind = Kind::Fetch;
    fn correlation_id(&self) -> Option<String> {
        self.correlation_id.clone()
    }
}

/// Headers and body ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// `dk-*`, `content-type`, `subject`, `dk-correlation-id` as applicable.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

impl Outgoing {
    /// Adds a `dk-id` header (see [`ID_HEADER`]) when `id` is given.
    pub fn with_id(mut self, id: Option<&str>) -> Outgoing {
        if let Some(id) = id {
            self.headers.set(ID_HEADER, id);
        }
        self
    }
}

/// Encodes a message in the chosen wire form (types the original never had are always JSON).
pub fn encode<M: Schema>(msg: &M, wire: Wire) -> Result<Outgoing, MessageError> {
    let mut headers = Headers::with_capacity(5);
    if let Some(subject) = msg.subject() {
        headers.push("subject", subject);
    }
    if let Some(id) = msg.correlation_id() {
        headers.push(CORRELATION_HEADER, id);
    }
    if let (Wire::Legacy, Some(body)) = (wire, msg.legacy_body()) {
        headers.push("content-type", "text/plain; charset=utf-8");
        return Ok(Outgoing { headers, body: Bytes::from(body) });
    }
    headers.push(TYPE_HEADER, M::KIND.as_str());
    headers.push(VERSION_HEADER, SCHEMA_VERSION.to_string());
    headers.push("content-type", "application/json");
    let body = serde_json::to_vec(msg).map_err(|e| MessageError::Invalid { field: "body", why: e.to_string() })?;
    Ok(Outgoing { headers, body: Bytes::from(body) })
}

/// Any message read from the bus; serialises as the schema's fields plus `"kind"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Message {
    /// A commit.
    Commit(Commit),
    /// A build.
    Build(Build),
    /// A package.
    Package(Package),
    /// An event line.
    Event(Event),
    /// A deploy request.
    DeployRequest(DeployRequest),
    /// A deploy reply.
    DeployReply(DeployReply),
    /// An agent announcement.
    AgentAnnounce(AgentAnnounce),
    /// A fetch result.
    Fetch(FetchResult),
    /// The original's single-newline keepalive: ignore it.
    Keepalive,
}

impl Message {
    /// The message's kind (`None` for a keepalive).
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Message::Commit(_) => Kind::Commit,
            Message::Build(_) => Kind::Build,
            Message::Package(_) => Kind::Package,
            Message::Event(_) => Kind::Event,
            Message::DeployRequest(_) => Kind::DeployRequest,
            Message::DeployReply(_) => Kind::DeployReply,
            Message::AgentAnnounce(_) => Kind::AgentAnnounce,
            Message::Fetch(_) => Kind::Fetch,
            Message::Keepalive => return None,
        })
    }
}

/// Parses a JSON body of one schema.
fn json<M: Schema>(body: &[u8], destination: &str, message_id: &str) -> Result<M, MessageError> {
    serde_json::from_slice(body).map_err(|e| MessageError::BadJson {
        kind: M::KIND.as_str(),
        destination: destination.to_owned(),
        message_id: message_id.to_owned(),
        error: e.to_string(),
    })
}

/// Decodes a message from its destination, headers and body, JSON or legacy.
pub fn decode(destination: &str, headers: &Headers, body: &[u8]) -> Result<Message, MessageError> {
    if body == b"\n" || body == b"\r\n" {
        return Ok(Message::Keepalive);
    }
    let message_id = headers.get("message-id").unwrap_or("-");
    let correlation = headers.get(CORRELATION_HEADER).map(str::to_owned);
    if let Some(kind) = headers.get(TYPE_HEADER) {
        let version = headers.get(VERSION_HEADER).unwrap_or("");
        if version.trim() != SCHEMA_VERSION.to_string() {
            return Err(MessageError::UnknownVersion { version: version.to_owned(), destination: destination.to_owned(), message_id: message_id.to_owned() });
        }
        let kind = Kind::parse(kind).ok_or_else(|| MessageError::UnknownType { kind: kind.to_owned(), destination: destination.to_owned(), message_id: message_id.to_owned() })?;
        let (d, m) = (destination, message_id);
        let mut msg = match kind {
            Kind::Commit => Message::Commit(json(body, d, m)?),
            Kind::Build => Message::Build(json(body, d, m)?),
            Kind::Package => Message::Package(json(body, d, m)?),
            Kind::Event => Message::Event(json(body, d, m)?),
            Kind::DeployRequest => Message::DeployRequest(json(body, d, m)?),
            Kind::DeployReply => Message::DeployReply(json(body, d, m)?),
            Kind::AgentAnnounce => Message::AgentAnnounce(json(body, d, m)?),
            Kind::Fetch => Message::Fetch(json(body, d, m)?),
        };
        fill_correlation(&mut msg, correlation);
        return Ok(msg);
    }
    let unrecognised = |why: String| MessageError::Unrecognised { destination: destination.to_owned(), message_id: message_id.to_owned(), why };
    let text = std::str::from_utf8(body).map_err(|_| unrecognised("no dk-type header and the body is not UTF-8 text".into()))?;
    let subject = headers.get("subject");
    let fields = legacy_fields(text);
    let has = |k: &str| legacy_get(&fields, k).is_some();
    let with_context = |e: MessageError| unrecognised(format!("looks like a legacy message but {e}"));
    let mut msg = if has("repo") && (has("refname") || has("revname") || has("newrev")) {
        Message::Commit(Commit::from_legacy(subject, text).map_err(with_context)?)
    } else if has("Status") && (has("URL") || has("Repo")) {
        Message::Build(Build::from_legacy(subject, text).map_err(with_context)?)
    } else if has("package") {
        Message::Package(Package::from_legacy(text).map_err(with_context)?)
    } else if subject == Some(event::LEGACY_SUBJECT) || destination.contains(".events") {
        Message::Event(Event::from_legacy(destination, text))
    } else {
        return Err(unrecognised("no dk-type header and the body matches no legacy format (commit, build, package, event)".into()));
    };
    fill_correlation(&mut msg, correlation);
    Ok(msg)
}

/// Copies a `dk-correlation-id` header into a message that lacks the field.
fn fill_correlation(msg: &mut Message, id: Option<String>) {
    let Some(id) = id else { return };
    let slot = match msg {
        Message::Commit(c) => &mut c.correlation_id,
        Message::Build(b) => &mut b.correlation_id,
        Message::Event(e) => &mut e.correlation_id,
        // A deploy request's id is part of the signed body; an (unsigned) header must not supply it.
        Message::DeployRequest(_) => return,
        Message::DeployReply(r) => &mut r.correlation_id,
        Message::Fetch(f) => &mut f.correlation_id,
        _ => return,
    };
    if slot.is_none() {
        *slot = Some(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit() -> Commit {
        Commit { repo: "site".into(), oldrev: "1".repeat(40), newrev: "2".repeat(40), refname: "refs/heads/master".into(), ..Commit::default() }
    }

    #[test]
    fn json_round_trip_with_headers() {
        let out = encode(&commit(), Wire::Json).unwrap();
        assert_eq!(out.headers.get(TYPE_HEADER), Some("commit"));
        assert_eq!(out.headers.get(VERSION_HEADER), Some("1"));
        assert_eq!(out.headers.get("content-type"), Some("application/json"));
        assert_eq!(out.headers.get("subject"), Some(format!("[site] refs/heads/master {}", "2".repeat(40)).as_str()));
        assert_eq!(out.headers.get(CORRELATION_HEADER), Some("2".repeat(40).as_str()));
        let back = decode("/topic/deploykit.git.commits", &out.headers, &out.body).unwrap();
        let Message::Commit(c) = back else { panic!("not a commit") };
        assert_eq!(c.repo, "site");
        assert_eq!(c.correlation_id.as_deref(), Some("2".repeat(40).as_str()));
    }

    #[test]
    fn legacy_read_without_being_told() {
        let out = encode(&commit(), Wire::Legacy).unwrap();
        assert!(out.headers.get(TYPE_HEADER).is_none());
        let Message::Commit(c) = decode("/topic/future.git.commits", &out.headers, &out.body).unwrap() else { panic!() };
        assert_eq!(c.refname, "refs/heads/master");
        let build = Build {
            job: "j".into(),
            number: 1,
            status: BuildStatus::Success,
            url: Some("u".into()),
            repo: None,
            branch: Some("origin/master".into()),
            commit: Some("c".into()),
            duration_ms: None,
            correlation_id: None,
        };
        let out = encode(&build, Wire::Legacy).unwrap();
        assert!(matches!(decode("/topic/future.jenkins.success", &out.headers, &out.body).unwrap(), Message::Build(_)));
        let ev = decode("/topic/future.events.stomp-git", &Headers::new(), b"web01  fetched change: [site] x").unwrap();
        assert_eq!(ev, Message::Event(Event { source: "stomp-git".into(), host: None, text: "web01  fetched change: [site] x".into(), correlation_id: None }));
        assert_eq!(decode("/topic/x", &Headers::new(), b"\n").unwrap(), Message::Keepalive);
    }

    #[test]
    fn errors_name_destination_and_message_id() {
        let mut h = Headers::new();
        h.push("message-id", "m-7");
        h.push(TYPE_HEADER, "commit");
        h.push(VERSION_HEADER, "2");
        let e = decode("/topic/c", &h, b"{}").unwrap_err();
        assert!(matches!(e, MessageError::UnknownVersion { .. }));
        assert!(e.to_string().contains("/topic/c") && e.to_string().contains("m-7"), "{e}");
        h.set(VERSION_HEADER, "1");
        let e = decode("/topic/c", &h, b"{not json").unwrap_err();
        assert!(matches!(e, MessageError::BadJson { .. }) && e.to_string().contains("m-7"), "{e}");
        h.set(TYPE_HEADER, "pizza");
        assert!(matches!(decode("/topic/c", &h, b"{}").unwrap_err(), MessageError::UnknownType { .. }));
        let e = decode("/topic/c", &Headers::new(), b"hello world").unwrap_err();
        assert!(matches!(e, MessageError::Unrecognised { .. }), "{e}");
        let e = decode("/topic/c", &Headers::new(), &[0xff, 0xfe]).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn types_without_legacy_form_stay_json() {
        let a = AgentAnnounce { identity: "web01".into(), classes: vec![], facts: Default::default(), sites: vec![], version: "0.1".into(), expires_at: 0 };
        let out = encode(&a, Wire::Legacy).unwrap();
        assert_eq!(out.headers.get(TYPE_HEADER), Some("agent-announce"));
        assert!(matches!(decode("/topic/deploykit.agents", &out.headers, &out.body).unwrap(), Message::AgentAnnounce(_)));
    }
}
