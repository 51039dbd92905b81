//! dk-deploy's library (and dk-web's): signed requests to agents, replies
//! routed by request id, discovery within a window, and canary-first rollouts.
//!
//! Every reply must be signed by a key bound to the identity it speaks for
//! (see [`crate::deploy::trust`]) and not expired; others are never routed into
//! a result, and discovery lists them as untrusted with the reason. Replies come
//! back on a private `/temp-queue/` (the broker rewrites the request's `reply-to`
//! header to the queue's name), so bus readers who see the request cannot read them.
//!
//! - [`config`](mod@config): `deploy.toml`, dk-deploy's settings (system file, user file, `--config`).
//! - [`plan`]: canary and batch sizes.

pub mod config;
pub mod plan;

use super::agent::steps::DeployOutcome;
use super::keys::{SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use super::trust::{TrustConfig, TrustStore};
use crate::message::deploy::{StepResult, TagList, TEMP_QUEUE};
use crate::message::{decode, encode, AgentAnnounce, DeployAction, DeployReply, DeployRequest, Destinations, Filters, Message, StepState, Wire};
use crate::stomp::{Client, Headers, SendOptions, SubscribeOptions};
use plan::BatchSize;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A controller failure.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] crate::stomp::Error),
    /// The request could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(#[from] crate::message::MessageError),
    /// Nothing was selected.
    #[error("no server of site {site} answered within {window:?}: {why}")]
    NoServers {
        /// The site.
        site: String,
        /// The discovery window.
        window: Duration,
        /// The likely reasons ([`unanswered_hint`]), or what the servers that did answer said.
        why: String,
    },
    /// The request is not acceptable (bad tag, bad filter, …).
    #[error("{0}")]
    Invalid(String),
}

/// How the controller signs and where it talks.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where requests go and agents announce.
    pub destinations: Destinations,
    /// Replies come here (one destination per controller); default the private
    /// `/temp-queue/deploykit.reply.UUID`. A `/topic/…` works on every broker but
    /// lets bus readers read the replies (they still cannot forge them).
    pub reply_to: Option<String>,
    /// Who is asking (for the agents' audit and event lines).
    pub user: String,
    /// The signing key (`None` only for agents with `allow_unsigned`).
    pub key: Option<SecretKey>,
    /// How long a request stays valid.
    pub validity: Duration,
    /// Which agents are believed (shared, replaceable while running).
    pub trust: Arc<TrustStore>,
}

impl ControllerConfig {
    /// A configuration for `user` signing with `key`.
    pub fn new(user: impl Into<String>, key: Option<SecretKey>) -> ControllerConfig {
        ControllerConfig { destinations: Destinations::default(), reply_to: None, user: user.into(), key, validity: Duration::from_secs(900), trust: Arc::default() }
    }
}

/// How long to gather answers.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Stop after this long.
    pub timeout: Duration,
    /// Stop early once this many servers answered.
    pub expect: Option<usize>,
}

impl Default for Window {
    fn default() -> Window {
        Window { timeout: Duration::from_secs(2), expect: None }
    }
}

/// Checks a tag or branch name from a caller before it goes into a request.
fn valid_tag(tag: &str) -> Result<(), ControlError> {
    crate::git::refs::validate_tag_name(tag).map_err(|e| ControlError::Invalid(e.to_string()))
}

/// Longest reply validity accepted (an agent signs for [`crate::message::deploy::REPLY_VALIDITY`]), clock skew included.
pub const MAX_REPLY_VALIDITY: u64 = 3600;
/// Untrusted answers kept per request (the rest are only logged).
pub const MAX_UNTRUSTED: usize = 1000;

/// One server as discovery found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    /// Its final reply.
    pub reply: DeployReply,
    /// Its self-description.
    pub announce: Option<AgentAnnounce>,
    /// `Some(why)` when it is not trusted: never planned, never counted.
    pub untrusted: Option<String>,
}

/// Checks a reply's signature, identity binding and expiry against `trust`.
pub fn vet(trust: &TrustConfig, headers: &Headers, body: &[u8], node: &str, expires_at: u64, now: u64) -> Result<(), String> {
    trust.check(headers, body, node, now)?;
    if expires_at < now {
        return Err(if expires_at == 0 { "no expiry (an old or forged sender)".into() } else { format!("expired {} s ago", now - expires_at) });
    }
    if expires_at > now + MAX_REPLY_VALIDITY {
        return Err(format!("valid for {} s, longer than {MAX_REPLY_VALIDITY} s", expires_at - now));
    }
    Ok(())
}

type Answer = Result<DeployReply, (DeployReply, String)>;
type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Answer>>>>;

/// Why servers may not answer: agents drop requests they cannot verify without a word,
/// so the controller names what to check (its key, clocks, filters).
pub fn unanswered_hint(key: Option<&str>) -> String {
    let key = match key {
        Some(k) => format!("that they trust key {k} (in their [trusted_keys]; `dk-deploy keygen` printed it)"),
        None => "that they accept unsigned requests (allow_unsigned; no key was given)".into(),
    };
    format!("agents do not answer requests they cannot verify: check {key}, that their clocks agree with this one, that they are running, and the filters")
}

/// Servers a discovery found for a site, and what else answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Servers of the site selected by the filters, sorted.
    pub nodes: Vec<String>,
    /// Servers that answered discovery with a refusal or an error, with why.
    pub refused: Vec<(String, String)>,
    /// Servers that answered but do not serve the site.
    pub others: Vec<String>,
}

impl Selection {
    /// How many servers answered discovery at all.
    pub fn answered(&self) -> usize {
        self.nodes.len() + self.refused.len() + self.others.len()
    }
}

/// Talks to agents.
pub struct Controller {
    client: Client,
    config: ControllerConfig,
    reply_to: String,
    routes: Routes,
    router: tokio::task::JoinHandle<()>,
}

/// Replies to one request, as they arrive.
pub struct Pending {
    /// The request id.
    pub request_id: String,
    rx: mpsc::UnboundedReceiver<Answer>,
    routes: Routes,
    untrusted: Vec<(DeployReply, String)>,
}

impl Pending {
    /// The next trusted reply, or `None` when `deadline` passes. Untrusted ones are set aside ([`Pending::untrusted`]).
    pub async fn next(&mut self, deadline: Instant) -> Option<DeployReply> {
        loop {
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await.ok().flatten()? {
                Ok(r) => return Some(r),
                Err((r, why)) => {
                    tracing::warn!(request = %self.request_id, node = %r.node, reason = %why, "untrusted reply ignored");
                    if self.untrusted.len() < MAX_UNTRUSTED {
                        self.untrusted.push((r, why));
                    }
                }
            }
        }
    }

    /// The untrusted replies seen so far, with why.
    pub fn untrusted(&self) -> &[(DeployReply, String)] {
        &self.untrusted
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.request_id);
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.router.abort();
    }
}

/// One server's result in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResult {
    /// Identity.
    pub node: String,
    /// How it ended.
    pub state: NodeState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepResult>,
    /// Release live afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// Release live before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Milliseconds from its batch's request to its final reply.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Its batch in the plan (0 is the canary batch when there is a canary).
    #[serde(default)]
    pub batch: usize,
    /// The tag was already live there: nothing ran (state `ok`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    /// The commit live afterwards, as its final reply says (absent from older agents and records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl NodeResult {
    /// A server that sent no final reply (not started, or no answer in time): no steps, no releases.
    pub fn without_reply(node: &str, state: NodeState, error: Option<String>, elapsed_ms: u64, batch: usize) -> NodeResult {
        NodeResult { node: node.to_owned(), state, error, steps: vec![], live: None, previous: None, elapsed_ms, batch, unchanged: false, commit: None }
    }

    /// It ended ok because the tag was already live there (nothing ran).
    pub fn already_live(&self) -> bool {
        self.state == NodeState::Ok && self.unchanged
    }
}

/// The end state of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Deployed (or already on the tag: see [`NodeResult::unchanged`]).
    Ok,
    /// A step failed.
    Failed,
    /// The agent refused (signature, policy, lock, tag).
    Refused,
    /// No final reply within the timeout.
    NoAnswer,
    /// Never started: the rollout stopped first.
    NotStarted,
}

impl NodeState {
    /// Whether this counts as a failure.
    pub fn failed(self) -> bool {
        !matches!(self, NodeState::Ok)
    }
}

/// The `stopped` reason of a rollout the operator stopped.
pub const STOPPED_BY_OPERATOR: &str = "stopped by the operator";

/// What to roll out.
#[derive(Debug, Clone)]
pub struct RolloutSpec {
    /// Deploy or rollback.
    pub action: DeployAction,
    /// The site.
    pub site: String,
    /// The tag (deploy).
    pub tag: Option<String>,
    /// Which servers.
    pub filters: Filters,
    /// Servers deployed first, alone; any canary failure stops the rollout.
    pub canary: usize,
    /// Servers per batch after the canary.
    pub batch: BatchSize,
    /// Failures tolerated before no further batch starts.
    pub max_failures: usize,
    /// How long a server may take (from its batch's start) before it counts as failed.
    pub timeout: Duration,
    /// Discovery.
    pub discovery: Window,
    /// Servers that must answer discovery (e.g. literal `-I` names, servers known from
    /// earlier announcements); with `discovery.expect`, fewer answers than that also count as missing.
    pub expected: Vec<String>,
    /// Deploy to the servers that answered even when expected ones are missing.
    pub allow_missing: bool,
    /// Deploy only: let agents deploy a tag that is not a descendant of their live
    /// release (a downgrade: the commits only the live release has are removed).
    pub allow_downgrade: bool,
}

/// Progress of a rollout, for live views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RolloutEvent {
    /// The plan: batches in order (the first is the canary when `canary > 0`).
    Planned {
        /// Batches of identities.
        batches: Vec<Vec<String>>,
    },
    /// A batch's request went out.
    BatchStarted {
        /// Its index.
        index: usize,
        /// Its servers.
        nodes: Vec<String>,
        /// The request id.
        request_id: String,
    },
    /// A step reply from a server.
    Step {
        /// The reply.
        reply: DeployReply,
    },
    /// Expected servers that did not answer discovery (sent before `Planned`, or before `Stopped` when none start).
    Missing {
        /// Their identities (those known by name).
        nodes: Vec<String>,
        /// How many more were expected (`discovery.expect`) without a known name.
        unnamed: usize,
    },
    /// A server finished.
    NodeDone {
        /// Its result.
        result: NodeResult,
    },
    /// No further batch will start.
    Stopped {
        /// Why.
        reason: String,
    },
}

/// The whole result of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// The action.
    pub action: DeployAction,
    /// The site.
    pub site: String,
    /// The tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Every selected server, in plan order.
    pub nodes: Vec<NodeResult>,
    /// Why the rollout stopped early, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The request ids sent, one per batch.
    pub request_ids: Vec<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Expected servers that did not answer discovery (not in `nodes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// How many more were expected by count (`discovery.expect`) without a known name.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_unnamed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RolloutReport {
    /// Whether every selected server succeeded (missing ones were allowed, or the rollout stopped).
    pub fn ok(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.iter().all(|n| n.state == NodeState::Ok)
    }

    /// How the rollout ended: `ok`; `stopped` when the operator stopped it before
    /// any server failed; else `failed`.
    pub fn outcome(&self) -> &'static str {
        if self.ok() {
            "ok"
        } else if self.stopped.as_deref() == Some(STOPPED_BY_OPERATOR) && !self.nodes.iter().any(|n| n.state.failed() && n.state != NodeState::NotStarted) {
            "stopped"
        } else {
            "failed"
        }
    }

    /// Servers that failed, were refused or did not answer their batch (not those never started).
    pub fn failed(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.state.failed() && n.state != NodeState::NotStarted).map(|n| n.node.clone()).collect()
    }

    /// Servers never started (the rollout stopped first).
    pub fn not_started(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.state == NodeState::NotStarted).map(|n| n.node.clone()).collect()
    }
}

/// Per server, the tags and branches it holds (the `tags` action's answers).
pub type TagAnswers = BTreeMap<String, TagList>;

impl Controller {
    /// Subscribes to the reply queue and starts routing replies.
    pub async fn new(client: Client, config: ControllerConfig) -> Result<Controller, ControlError> {
        // A topic, not a queue: on RabbitMQ a topic subscription is a private
        // auto-deleted queue, while a /queue/ would outlive every dk-deploy run
        // (and agents' SENDs would re-declare it with other properties).
        // The default is a private temporary queue: only this session can consume it.
        let reply_to = config.reply_to.clone().unwrap_or_else(|| format!("/temp-queue/deploykit.reply.{}", uuid::Uuid::new_v4()));
        let mut sub = client.subscribe(&reply_to, SubscribeOptions::default()).await?;
        let routes: Routes = Arc::default();
        let r = routes.clone();
        let trust = config.trust.clone();
        let router = tokio::spawn(async move {
            while let Some(m) = sub.recv().await {
                match decode(m.destination(), &m.headers, &m.body) {
                    Ok(Message::DeployReply(reply)) => {
                        let tx = r.lock().unwrap_or_else(|p| p.into_inner()).get(&reply.request_id).cloned();
                        match tx {
                            Some(tx) => {
                                let now = super::agent::releases::now();
                                let _ = match vet(&trust.get(), &m.headers, &m.body, &reply.node, reply.expires_at, now) {
                                    Ok(()) => tx.send(Ok(reply)),
                                    Err(why) => tx.send(Err((reply, why))),
                                };
                            }
                            None => {
                                tracing::debug!(request = %reply.request_id, "late or foreign reply dropped")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unreadable reply dropped"),
                }
            }
        });
        Ok(Controller { client, config, reply_to, routes, router })
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The user requests are sent as.
    pub fn user(&self) -> &str {
        &self.config.user
    }

    /// The trust store replies are checked against.
    pub fn trust(&self) -> &Arc<TrustStore> {
        &self.config.trust
    }

    /// Publishes `record` (signed with the controller's key) to the rollouts destination;
    /// nothing without a key (agents accepting unsigned requests).
    pub async fn publish_record(&self, record: &super::record::RolloutRecord) -> Result<(), super::record::RecordError> {
        match &self.config.key {
            Some(key) => record.publish(&self.client, &self.config.destinations.rollouts, key).await,
            None => Ok(()),
        }
    }

    /// The public key requests are signed with.
    pub fn public_key(&self) -> Option<String> {
        self.config.key.as_ref().map(|k| k.public().to_string())
    }

    /// A request ready to send (fresh UUID, validity window, reply queue).
    pub fn request(&self, action: DeployAction, site: Option<&str>, tag: Option<&str>, filters: Filters) -> DeployRequest {
        let now = super::agent::releases::now();
        DeployRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            action,
            site: site.map(str::to_owned),
            tag: tag.map(str::to_owned),
            user: self.config.user.clone(),
            filters,
            issued_at: now,
            expires_at: now + self.config.validity.as_secs(),
            reply_to: Some(self.reply_to.clone()),
            correlation_id: None,
            dry_run: false,
            limit: None,
            allow_downgrade: false,
        }
    }

    /// Signs and sends `req`; replies arrive on the returned [`Pending`].
    pub async fn send(&self, req: &DeployRequest) -> Result<Pending, ControlError> {
        let out = encode(req, Wire::Json)?;
        let mut headers = out.headers;
        if let Some(key) = &self.config.key {
            headers.push(SIGNER_HEADER, key.public().to_string());
            headers.push(SIGNATURE_HEADER, key.sign(&out.body));
        }
        if let Some(r) = req.reply_to.as_deref().filter(|r| r.starts_with(TEMP_QUEUE)) {
            headers.push("reply-to", r);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(req.request_id.clone(), tx);
        let pending = Pending { request_id: req.request_id.clone(), rx, routes: self.routes.clone(), untrusted: Vec::new() };
        self.client.send_with(&self.config.destinations.deploy, out.body, SendOptions { headers, receipt: true, ..SendOptions::default() }).await?;
        Ok(pending)
    }

    /// Sends `req` and gathers trusted final replies within `window` (one per server).
    pub async fn gather(&self, req: &DeployRequest, window: Window) -> Result<Vec<DeployReply>, ControlError> {
        Ok(self.gather_all(req, window).await?.0)
    }

    /// Like [`Controller::gather`], plus the untrusted final replies (one per claimed identity) with why.
    pub async fn gather_all(&self, req: &DeployRequest, window: Window) -> Result<(Vec<DeployReply>, Vec<(DeployReply, String)>), ControlError> {
        let mut pending = self.send(req).await?;
        let deadline = Instant::now() + window.timeout;
        let mut out: Vec<DeployReply> = Vec::new();
        while let Some(r) = pending.next(deadline).await {
            if r.is_final && !out.iter().any(|o| o.node == r.node) {
                out.push(r);
                if window.expect.is_some_and(|n| out.len() >= n) {
                    break;
                }
            }
        }
        out.sort_by(|a, b| a.node.cmp(&b.node));
        let mut untrusted: Vec<(DeployReply, String)> = Vec::new();
        for (r, why) in pending.untrusted() {
            if r.is_final && !untrusted.iter().any(|(o, _)| o.node == r.node) {
                untrusted.push((r.clone(), why.clone()));
            }
        }
        untrusted.sort_by(|a, b| a.0.node.cmp(&b.0.node));
        Ok((out, untrusted))
    }

    /// Servers matching `filters`, with their announcements: the trusted ones
    /// first, then the untrusted ones (with why). Only trusted answers count
    /// toward `window.expect`. When `-I` names only literal identities,
    /// discovery stops as soon as all of them answered.
    pub async fn discover(&self, filters: Filters, mut window: Window) -> Result<Vec<Discovered>, ControlError> {
        if window.expect.is_none() && !filters.identity.is_empty() && filters.identity.iter().all(|i| !i.starts_with('/')) {
            let mut names = filters.identity.clone();
            names.sort();
            names.dedup();
            window.expect = Some(names.len());
        }
        let req = self.request(DeployAction::Discover, None, None, filters);
        let (trusted, untrusted) = self.gather_all(&req, window).await?;
        let describe = |r: DeployReply, untrusted: Option<String>| {
            let announce: Option<AgentAnnounce> = serde_json::from_value(r.data.clone()).ok();
            let untrusted = match (&announce, untrusted) {
                (_, Some(why)) => Some(why),
                (Some(a), None) if a.identity != r.node => Some(format!("its description names {:?}, not {:?}", a.identity, r.node)),
                _ => None,
            };
            Discovered { reply: r, announce, untrusted }
        };
        let mut out: Vec<Discovered> = trusted.into_iter().map(|r| describe(r, None)).collect();
        out.extend(untrusted.into_iter().map(|(r, why)| describe(r, Some(why))));
        Ok(out)
    }

    /// Tags and branches per server for `site`.
    pub async fn tags(&self, site: &str, filters: Filters, limit: usize, window: Window) -> Result<Vec<DeployReply>, ControlError> {
        let mut req = self.request(DeployAction::Tags, Some(site), None, filters);
        req.limit = Some(limit);
        self.gather(&req, window).await
    }

    /// Status (live release, lock, journal) per server for `site`.
    pub async fn status(&self, site: &str, filters: Filters, window: Window) -> Result<Vec<DeployReply>, ControlError> {
        let req = self.request(DeployAction::Status, Some(site), None, filters);
        self.gather(&req, window).await
    }

    /// A dry run: per server, what is live and the commit log up to `tag`; nothing changes.
    pub async fn dry_run(&self, site: &str, tag: &str, filters: Filters, window: Window) -> Result<Vec<DeployReply>, ControlError> {
        valid_tag(tag)?;
        let mut req = self.request(DeployAction::Deploy, Some(site), Some(tag), filters);
        req.dry_run = true;
        self.gather(&req, window).await
    }

    /// The servers of `site` selected by `filters`, in a stable order.
    pub async fn select(&self, site: &str, filters: &Filters, window: Window) -> Result<Vec<String>, ControlError> {
        Ok(self.selection(site, filters, window).await?.nodes)
    }

    /// The servers of `site` selected by `filters`, and those that answered without a description (refusals).
    pub async fn selection(&self, site: &str, filters: &Filters, window: Window) -> Result<Selection, ControlError> {
        let found = self.discover(filters.clone(), window).await?;
        let mut out = Selection::default();
        for d in found {
            if let Some(why) = d.untrusted {
                out.refused.push((d.reply.node, format!("untrusted: {why}")));
                continue;
            }
            let (r, a) = (d.reply, d.announce);
            match a {
                Some(a) if r.state == StepState::Ok => {
                    if a.sites.iter().any(|s| s.name == site) {
                        out.nodes.push(r.node);
                    } else {
                        out.others.push(r.node);
                    }
                }
                _ => out.refused.push((r.node, r.error.unwrap_or_else(|| format!("answered {:?} without a description", r.state)))),
            }
        }
        out.nodes.sort();
        out.nodes.dedup();
        Ok(out)
    }

    /// Why no server answered: what refusing servers said, or [`unanswered_hint`] for this controller's key.
    fn why_unanswered(&self, refused: &[(String, String)]) -> String {
        if refused.is_empty() {
            unanswered_hint(self.public_key().as_deref())
        } else {
            refused.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; ")
        }
    }

    /// Runs a canary-first rollout. Progress goes to `events`; setting `stop`
    /// to true stops scheduling further batches (running ones finish).
    pub async fn rollout(&self, spec: &RolloutSpec, events: mpsc::UnboundedSender<RolloutEvent>, mut stop: watch::Receiver<bool>) -> Result<RolloutReport, ControlError> {
        let t0 = Instant::now();
        if let Some(tag) = &spec.tag {
            valid_tag(tag)?;
        }
        super::filters::validate(&spec.filters).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let selection = self.selection(&spec.site, &spec.filters, spec.discovery).await?;
        let answered = selection.answered();
        let nodes = selection.nodes;
        let mut missing: Vec<String> = spec.expected.iter().filter(|e| !nodes.contains(e)).cloned().collect();
        missing.sort();
        missing.dedup();
        // `expect` counts answers of any server (as the discovery window does).
        let missing_unnamed = spec.discovery.expect.map_or(0, |n| n.saturating_sub(answered + missing.len()));
        let report = |nodes: Vec<NodeResult>, stopped: Option<String>, request_ids: Vec<String>, missing: Vec<String>| RolloutReport {
            action: spec.action,
            site: spec.site.clone(),
            tag: spec.tag.clone(),
            nodes,
            stopped,
            request_ids,
            duration_ms: t0.elapsed().as_millis() as u64,
            missing,
            missing_unnamed,
        };
        if !missing.is_empty() || missing_unnamed > 0 {
            let _ = events.send(RolloutEvent::Missing { nodes: missing.clone(), unnamed: missing_unnamed });
            if !spec.allow_missing {
                let reason = missing_reason(&missing, missing_unnamed, &self.why_unanswered(&selection.refused));
                let _ = events.send(RolloutEvent::Stopped { reason: reason.clone() });
                let rest = nodes.iter().map(|n| NodeResult::without_reply(n, NodeState::NotStarted, None, 0, 0)).collect();
                return Ok(report(rest, Some(reason), Vec::new(), missing));
            }
        }
        if nodes.is_empty() {
            return Err(ControlError::NoServers { site: spec.site.clone(), window: spec.discovery.timeout, why: self.why_unanswered(&selection.refused) });
        }
        let batches = plan::batches(&nodes, spec.canary, spec.batch);
        let _ = events.send(RolloutEvent::Planned { batches: batches.clone() });
        let mut results: Vec<NodeResult> = Vec::new();
        let mut request_ids = Vec::new();
        let mut stopped = None;
        for (index, batch) in batches.iter().enumerate() {
            let failures = results.iter().filter(|r| r.state.failed()).count();
            let reason = if *stop.borrow_and_update() {
                Some(STOPPED_BY_OPERATOR.to_owned())
            } else if index > 0 && spec.canary > 0 && results.iter().take(spec.canary).any(|r| r.state.failed()) {
                Some("the canary failed".to_owned())
            } else if failures > spec.max_failures {
                Some(format!("{failures} failures exceed --max-failures {}", spec.max_failures))
            } else {
                None
            };
            if let Some(reason) = reason {
                let _ = events.send(RolloutEvent::Stopped { reason: reason.clone() });
                stopped = Some(reason);
                for (later, rest) in batches[index..].iter().enumerate() {
                    for node in rest {
                        let r = NodeResult::without_reply(node, NodeState::NotStarted, None, 0, index + later);
                        let _ = events.send(RolloutEvent::NodeDone { result: r.clone() });
                        results.push(r);
                    }
                }
                break;
            }
            let filters = Filters { identity: batch.clone(), ..Filters::default() };
            let mut req = self.request(spec.action, Some(&spec.site), spec.tag.as_deref(), filters);
            req.allow_downgrade = spec.allow_downgrade && spec.action == DeployAction::Deploy;
            request_ids.push(req.request_id.clone());
            let started = Instant::now();
            let mut pending = self.send(&req).await?;
            let _ = events.send(RolloutEvent::BatchStarted { index, nodes: batch.clone(), request_id: req.request_id.clone() });
            let deadline = started + spec.timeout;
            let mut done: BTreeMap<String, NodeResult> = BTreeMap::new();
            while done.len() < batch.len() {
                let Some(reply) = pending.next(deadline).await else {
                    break;
                };
                if !batch.contains(&reply.node) || done.contains_key(&reply.node) {
                    continue;
                }
                if !reply.is_final {
                    let _ = events.send(RolloutEvent::Step { reply });
                    continue;
                }
                let outcome: Option<DeployOutcome> = serde_json::from_value(reply.data.clone()).ok();
                let state = match reply.state {
                    StepState::Ok => NodeState::Ok,
                    StepState::Refused => NodeState::Refused,
                    _ => NodeState::Failed,
                };
                let r = NodeResult {
                    node: reply.node.clone(),
                    state,
                    error: reply.error.clone(),
                    steps: outcome.as_ref().map(|o| o.steps.clone()).unwrap_or_default(),
                    live: outcome.as_ref().and_then(|o| o.live.clone()),
                    previous: outcome.as_ref().and_then(|o| o.previous.clone()),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    batch: index,
                    unchanged: state == NodeState::Ok && outcome.as_ref().is_some_and(|o| o.unchanged),
                    commit: outcome.as_ref().and_then(|o| o.commit.clone()),
                };
                let _ = events.send(RolloutEvent::NodeDone { result: r.clone() });
                done.insert(reply.node.clone(), r);
            }
            for node in batch {
                let r = done.remove(node).unwrap_or_else(|| {
                    let error = Some(format!("no final answer within {:?}", spec.timeout));
                    let r = NodeResult::without_reply(node, NodeState::NoAnswer, error, started.elapsed().as_millis() as u64, index);
                    let _ = events.send(RolloutEvent::NodeDone { result: r.clone() });
                    r
                });
                results.push(r);
            }
        }
        Ok(report(results, stopped, request_ids, missing))
    }
}

/// Why a rollout with missing servers did not start.
fn missing_reason(missing: &[String], unnamed: usize, why: &str) -> String {
    let mut who = missing.join(", ");
    if unnamed > 0 {
        let more = format!("{unnamed} more expected server{} (by count)", if unnamed == 1 { "" } else { "s" });
        who = if who.is_empty() { more } else { format!("{who} and {more}") };
    }
    format!("missing: {who} did not answer discovery; nothing was deployed ({why}; allow missing servers to deploy to those that answered)")
}
