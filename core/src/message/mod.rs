//! The messages deploykit tools speak: typed schemas (serde), their JSON v1
//! wire form with `dk-*` headers, and the legacy text bodies of the original
//! future-deploykit daemons, read everywhere and written on request.
//!
//! - [`commit`], [`build`], [`package`], [`event`], [`deploy`], [`fetch`]: one schema per file,
//!   each with its legacy text form where the original had one.
//! - [`dedup`]: the bounded window of `dk-id`s consumers drop resent messages with.
//! - [`wire`]: encoding to headers + body and decoding either form without being told which.
//! - [`publisher`]: sends a message to its configured destination plus its one-line event.

pub mod build;
pub mod commit;
pub mod dedup;
pub mod deploy;
pub mod event;
pub mod fetch;
pub mod package;
pub mod publisher;
pub mod wire;

pub use build::{Build, BuildStatus};
pub use commit::{Commit, CommitInfo, Source, SvnInfo};
pub use dedup::Dedup;
pub use deploy::{AgentAnnounce, DeployAction, DeployReply, DeployRequest, Filters, SiteStatus, StepState};
pub use event::{one_line, Event};
pub use fetch::FetchResult;
pub use package::{Package, PackageAction};
pub use publisher::{Destinations, Publisher};
pub use wire::{decode, encode, Message, Outgoing, Schema, Wire};

use serde::{Deserialize, Serialize};

/// Header naming a message's type (`commit`, `build`, …).
pub const TYPE_HEADER: &str = "dk-type";
/// Header carrying the schema version.
pub const VERSION_HEADER: &str = "dk-version";
/// Header carrying the id that follows a change from push to deploy.
pub const CORRELATION_HEADER: &str = "dk-correlation-id";
/// Header carrying the id a publisher gave one message, the same on every resend
/// (the JVM notifier's builds): consumers drop repeats with [`Dedup`]. Old consumers ignore it.
pub const ID_HEADER: &str = "dk-id";
/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The kinds of message on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A push or SVN commit.
    Commit,
    /// A CI build's progress.
    Build,
    /// A package added to (or refused by) a Debian repository.
    Package,
    /// A one-line human-readable event.
    Event,
    /// A signed request to deploy agents.
    DeployRequest,
    /// An agent's step-by-step answer.
    DeployReply,
    /// An agent's self-description.
    AgentAnnounce,
    /// A fetch daemon's result for one repository.
    Fetch,
}

impl Kind {
    /// The `dk-type` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Build => "build",
            Kind::Package => "package",
            Kind::Event => "event",
            Kind::DeployRequest => "deploy-request",
            Kind::DeployReply => "deploy-reply",
            Kind::AgentAnnounce => "agent-announce",
            Kind::Fetch => "fetch",
        }
    }

    /// Parses a `dk-type` header value.
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Commit, Kind::Build, Kind::Package, Kind::Event, Kind::DeployRequest, Kind::DeployReply, Kind::AgentAnnounce, Kind::Fetch].into_iter().find(|k| k.as_str() == s)
    }
}

/// Why a message could not be read or written; always names where it came from.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// `dk-version` is not one this build understands.
    #[error("message {message_id} on {destination}: unsupported dk-version {version:?} (this build reads {SCHEMA_VERSION})")]
    UnknownVersion {
        /// The version header as received.
        version: String,
        /// Where the message arrived.
        destination: String,
        /// The broker's message id (or `-`).
        message_id: String,
    },
    /// `dk-type` names no known kind.
    #[error("message {message_id} on {destination}: unknown dk-type {kind:?}")]
    UnknownType {
        /// The type header as received.
        kind: String,
        /// Where the message arrived.
        destination: String,
        /// The broker's message id (or `-`).
        message_id: String,
    },
    /// The JSON body is broken or does not fit the schema.
    #[error("message {message_id} on {destination}: bad {kind} JSON: {error}")]
    BadJson {
        /// The announced kind.
        kind: &'static str,
        /// Where the message arrived.
        destination: String,
        /// The broker's message id (or `-`).
        message_id: String,
        /// serde's description, with line and column.
        error: String,
    },
    /// A body without `dk-type` that matches none of the legacy formats.
    #[error("message {message_id} on {destination}: not a deploykit message ({why})")]
    Unrecognised {
        /// Where the message arrived.
        destination: String,
        /// The broker's message id (or `-`).
        message_id: String,
        /// What was looked for.
        why: String,
    },
    /// A field's value is invalid (e.g. a missing repo).
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl MessageError {
    /// A stable short name of the kind: `message-version`, `message-type`,
    /// `message-json`, `message-unrecognised` or `message-invalid` (for bindings).
    pub fn kind(&self) -> &'static str {
        match self {
            MessageError::UnknownVersion { .. } => "message-version",
            MessageError::UnknownType { .. } => "message-type",
            MessageError::BadJson { .. } => "message-json",
            MessageError::Unrecognised { .. } => "message-unrecognised",
            MessageError::Invalid { .. } => "message-invalid",
        }
    }
}

/// Seconds since the Unix epoch, for timestamps in messages.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Parses `key: value` lines the way the original receivers did: split at the
/// first `:`, trim the value; the first occurrence of a key wins.
pub(crate) fn legacy_fields(body: &str) -> Vec<(&str, &str)> {
    body.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim(), v.trim())).filter(|(k, _)| !k.is_empty() && !k.contains(' ')).collect()
}

/// The first value of `key` among legacy fields.
pub(crate) fn legacy_get<'a>(fields: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}
