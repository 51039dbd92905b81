//! Sends typed messages to their configured destinations, each followed by its
//! one-line event (design.md: "every tool publishes one-line event messages").

use super::wire::{encode, Schema, Wire};
use super::{Build, BuildStatus, Commit, Event, MessageError, Package};
use crate::stomp::{self, Client, SendOptions};
use serde::{Deserialize, Serialize};

/// Where each kind of message goes; `{source}` in `events` is replaced by the speaking daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Destinations {
    /// Commit messages.
    pub commits: String,
    /// Build messages (all statuses, or successes when `builds_failed` is set).
    pub builds: String,
    /// Failed builds, when they go elsewhere (the original's `future.jenkins.cake`).
    pub builds_failed: Option<String>,
    /// Package messages.
    pub packages: String,
    /// Event lines.
    pub events: String,
    /// Agent announcements.
    pub agents: String,
    /// Deploy requests.
    pub deploy: String,
    /// Signed rollout records (the audit trail every controller publishes).
    pub rollouts: String,
}

impl Default for Destinations {
    fn default() -> Destinations {
        Destinations {
            commits: "/topic/deploykit.git.commits".into(),
            builds: "/topic/deploykit.builds".into(),
            builds_failed: None,
            packages: "/topic/deploykit.packages".into(),
            events: "/topic/deploykit.events".into(),
            agents: "/topic/deploykit.agents".into(),
            deploy: "/topic/deploykit.deploy".into(),
            rollouts: "/topic/deploykit.rollouts".into(),
        }
    }
}

impl Destinations {
    /// The original future-deploykit topic names, for fleets that keep them.
    pub fn legacy() -> Destinations {
        Destinations {
            commits: "/topic/future.git.commits".into(),
            builds: "/topic/future.jenkins.success".into(),
            builds_failed: Some("/topic/future.jenkins.cake".into()),
            packages: "/topic/future.package.updates".into(),
            events: "/topic/future.events.{source}".into(),
            ..Destinations::default()
        }
    }

    /// The event destination for `source`.
    pub fn events_for(&self, source: &str) -> String {
        self.events.replace("{source}", source)
    }

    /// The destination for a build of this status.
    pub fn build_for(&self, status: BuildStatus) -> &str {
        match (&self.builds_failed, status) {
            (Some(failed), BuildStatus::Failure | BuildStatus::Unstable | BuildStatus::Aborted) => failed,
            _ => &self.builds,
        }
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message itself is invalid.
    #[error(transparent)]
    Invalid(#[from] MessageError),
    /// The bus refused or lost it.
    #[error(transparent)]
    Bus(#[from] stomp::Error),
}

/// Publishes messages of one daemon (`source`) with a chosen wire form.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    destinations: Destinations,
    wire: Wire,
    source: String,
    host: Option<String>,
    receipts: bool,
}

impl Publisher {
    /// A publisher for daemon `source` (e.g. `git-hook`, `jenkins`), JSON wire, default destinations, receipts on.
    pub fn new(client: Client, source: impl Into<String>) -> Publisher {
        Publisher { client, destinations: Destinations::default(), wire: Wire::Json, source: source.into(), host: None, receipts: true }
    }

    /// Sets the wire form (`legacy` for old daemons).
    pub fn wire(mut self, wire: Wire) -> Publisher {
        self.wire = wire;
        self
    }

    /// Sets the destinations.
    pub fn destinations(mut self, destinations: Destinations) -> Publisher {
        self.destinations = destinations;
        self
    }

    /// Prefixes event lines with this host name (as the fetch daemon did).
    pub fn host(mut self, host: impl Into<String>) -> Publisher {
        self.host = Some(host.into());
        self
    }

    /// Whether each send waits for the broker's receipt (default: yes).
    pub fn receipts(mut self, on: bool) -> Publisher {
        self.receipts = on;
        self
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends one message to `destination` in this publisher's wire form.
    pub async fn send<M: Schema>(&self, destination: &str, msg: &M) -> Result<(), PublishError> {
        self.send_with_id(destination, msg, None).await
    }

    /// Sends one message with a `dk-id` header when `id` is given (see [`super::ID_HEADER`]).
    pub async fn send_with_id<M: Schema>(&self, destination: &str, msg: &M, id: Option<&str>) -> Result<(), PublishError> {
        let out = encode(msg, self.wire)?.with_id(id);
        let opts = SendOptions { headers: out.headers, receipt: self.receipts, ..SendOptions::default() };
        self.client.send_with(destination, out.body, opts).await?;
        Ok(())
    }

    /// Publishes an event line from this daemon.
    pub async fn event(&self, text: impl Into<String>, correlation_id: Option<String>) -> Result<(), PublishError> {
        let ev = Event { host: self.host.clone(), correlation_id, ..Event::new(self.source.clone(), text) };
        self.send(&self.destinations.events_for(&self.source), &ev).await
    }

    /// Publishes a commit (its correlation id defaulting to the new revision) and its event line.
    pub async fn commit(&self, commit: &Commit) -> Result<(), PublishError> {
        commit.validate()?;
        let mut commit = commit.clone();
        let id = commit.effective_correlation_id();
        commit.correlation_id = Some(id.clone());
        self.send(&self.destinations.commits, &commit).await?;
        self.event(commit.event_line(), Some(id)).await
    }

    /// Publishes a build and its event line.
    pub async fn build(&self, build: &Build) -> Result<(), PublishError> {
        self.build_with_id(build, None).await
    }

    /// Publishes a build and its event line; with `id`, they carry `dk-id: ID` and `dk-id: ID.event`,
    /// so a caller that resends after a lost receipt (same id) lets consumers drop the repeat.
    pub async fn build_with_id(&self, build: &Build, id: Option<&str>) -> Result<(), PublishError> {
        self.send_with_id(self.destinations.build_for(build.status), build, id).await?;
        let ev = Event { host: self.host.clone(), correlation_id: build.correlation_id.clone(), ..Event::new(self.source.clone(), build.subject()) };
        self.send_with_id(&self.destinations.events_for(&self.source), &ev, id.map(super::dedup::event_id).as_deref()).await
    }

    /// Publishes a package and the original's event line. In legacy wire only an
    /// included package gets a package message ([`Package::published_in`]); any gets its event line.
    pub async fn package(&self, package: &Package) -> Result<(), PublishError> {
        if package.published_in(self.wire) {
            self.send(&self.destinations.packages, package).await?;
        }
        self.event(package.event_line(), None).await
    }
}
