//! dk-agent: the deploy agent on each server.
//!
//! It subscribes to deploy requests and, in this order: verifies each one
//! (Ed25519 signature by a trusted key over the exact body, validity window,
//! UUID; no regex is built yet), drops unverified ones without any reply or
//! event line (a rate-limited log line and an [`AgentEvent::Unverified`]),
//! ignores those whose (capped) filters do not select it, refuses replays,
//! checks the site's policy, and runs the action, replying step by step to the
//! request's `reply_to`. At most `max_concurrent_requests` requests are handled
//! at once; beyond that the agent stops reading (back-pressure on the broker).
//! Replies and announcements are signed with the agent's own key
//! (`state_dir/identity.key`) and carry its enrollment certificate (see
//! [`crate::deploy::trust`]).
//!
//! - [`config`](mod@config): `agent.toml`.
//! - [`legacy_import`]: the gitagent/bloatagent files → `agent.toml` (`--import-legacy`).
//! - [`repo`]: tags and branches of a site's clone; validation of names.
//! - [`hooks`]: running hook scripts (argument vector, timeout, output tails).
//! - [`health`]: the health gate after post-deploy (a command or an HTTP URL, with retries).
//! - [`releases`]: release directories, the journal, atomic link swaps.
//! - [`lock`]: the per-site lease lock (and deploy journal for crash recovery).
//! - [`steps`]: the deploy and rollback pipelines, recovery.
//! - [`report`]: sending replies.

pub mod config;
pub mod health;
pub mod hooks;
pub mod intake;
pub mod legacy_import;
pub mod lock;
pub mod releases;
pub mod repo;
pub mod report;
pub mod steps;

use crate::deploy::filters::{self, Candidate, Selector};
use crate::deploy::identity::{AgentIdentity, EnrollmentError};
use crate::deploy::replay::ReplayCache;
use crate::message::{decode, AgentAnnounce, DeployAction, DeployRequest, Event, Message, SiteStatus, StepState};
use crate::stomp::{Client, Headers, SubscribeOptions};
pub use config::{AgentConfig, SiteConfig};
use report::Reporter;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// Ids the replay cache holds at most.
pub const REPLAY_CACHE_SIZE: usize = 100_000;
/// Largest clock difference tolerated on `issued_at`, in seconds.
pub const CLOCK_SKEW: u64 = 300;
/// How long an announcement stays valid for controllers, in seconds.
pub const ANNOUNCE_VALIDITY: u64 = 600;

/// Starting the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Subscribing to the request destination failed.
    #[error("subscribing to {destination}: {source}")]
    Subscribe {
        /// The destination.
        destination: String,
        /// The client error.
        source: crate::stomp::Error,
    },
    /// The state directory is unusable.
    #[error("state directory {path}: {source} (set `state_dir` in agent.toml to a directory this user can write)")]
    State {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The identity key or the enrollment certificate is unusable.
    #[error("{0}")]
    Identity(#[from] EnrollmentError),
}

/// What the agent did with a request (for logs, tests and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// Not for this agent (filters), or not a deploy request.
    Ignored {
        /// The request id, if it parsed.
        request_id: Option<String>,
    },
    /// Dropped unanswered: no valid signature by a trusted key, outside its
    /// validity window, or replayed. Nothing is sent on the bus for it.
    Unverified {
        /// The request id, as claimed (not authenticated).
        request_id: String,
        /// The action, as claimed (not authenticated).
        action: DeployAction,
        /// Why.
        reason: String,
    },
    /// Refused before anything ran.
    Refused {
        /// The request id.
        request_id: String,
        /// The action.
        action: DeployAction,
        /// Why.
        reason: String,
    },
    /// A deploy or rollback ran these steps (sent just before its `Done`).
    Steps {
        /// The site (a configured one).
        site: String,
        /// Each step's name, how it ended and its wall time.
        steps: Vec<StepTime>,
    },
    /// Handled; `ok` says whether it succeeded.
    Done {
        /// The request id.
        request_id: String,
        /// The action.
        action: DeployAction,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// One step of a deploy or rollback, as [`AgentEvent::Steps`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTime {
    /// `pre-deploy`, `checkout`, `pre-link`, `link`, `post-deploy`, …
    pub step: String,
    /// How it ended.
    pub state: StepState,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

struct Shared {
    config: watch::Receiver<Arc<AgentConfig>>,
    client: Client,
    identity: Arc<AgentIdentity>,
    replay: Mutex<ReplayCache>,
    events: broadcast::Sender<AgentEvent>,
    stats: Arc<Counters>,
    throttle: Mutex<intake::Throttle>,
}

#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    unverified: AtomicU64,
}

/// Request-handling figures of a running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStats {
    /// Requests being handled now.
    pub in_flight: usize,
    /// The most handled at once since start (at most `max_concurrent_requests`).
    pub peak_in_flight: usize,
    /// Requests dropped unanswered because they did not verify.
    pub unverified: u64,
}

/// The running agent.
pub struct AgentHandle {
    config: watch::Sender<Arc<AgentConfig>>,
    stop: watch::Sender<bool>,
    events: broadcast::Sender<AgentEvent>,
    stats: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    /// What the agent does with requests, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    /// Request-handling figures (in flight, peak, unverified).
    pub fn stats(&self) -> AgentStats {
        AgentStats {
            in_flight: self.stats.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.stats.peak_in_flight.load(Ordering::Relaxed),
            unverified: self.stats.unverified.load(Ordering::Relaxed),
        }
    }

    /// Replaces the configuration (keys, policies, sites) for the next requests.
    pub fn reload(&self, config: AgentConfig) {
        let _ = self.config.send(Arc::new(config));
    }

    /// Stops taking requests and waits for running ones to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Whether the agent stopped on its own (its subscription ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The deploy agent.
pub struct Agent;

impl Agent {
    /// Recovers interrupted deploys, subscribes to requests, announces itself, and serves.
    pub async fn start(config: AgentConfig, client: Client) -> Result<AgentHandle, AgentError> {
        Agent::start_with_events(config, client, crate::daemon::event_channel()).await
    }

    /// [`Agent::start`] reporting to `events`, a channel made beforehand (to subscribe before the first event).
    pub async fn start_with_events(config: AgentConfig, client: Client, events: broadcast::Sender<AgentEvent>) -> Result<AgentHandle, AgentError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::State { path: config.state_dir.clone(), source })?;
        let replay = ReplayCache::persistent(REPLAY_CACHE_SIZE, config.state_dir.join("replay-cache"), releases::now())
            .map_err(|source| AgentError::State { path: config.state_dir.clone(), source })?;
        let identity = Arc::new(AgentIdentity::load(&config.identity, &config.state_dir, config.enrollment.as_deref())?);
        for site in config.sites.values() {
            steps::recover_site(site);
        }
        let destination = config.destinations.deploy.clone();
        let mut sub = client.subscribe(&destination, SubscribeOptions::default()).await.map_err(|source| AgentError::Subscribe { destination: destination.clone(), source })?;
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let stats = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            config: config_rx,
            client: client.clone(),
            identity,
            replay: Mutex::new(replay),
            events: events.clone(),
            stats: stats.clone(),
            throttle: Mutex::default(),
        });
        announce(&shared).await;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut running = JoinSet::new();
            loop {
                // Back-pressure: at the limit, no message is read until a request finishes.
                let limit = shared.config.borrow().max_concurrent_requests.max(1);
                tokio::select! {
                    m = sub.recv(), if running.len() < limit => match m {
                        Some(m) => {
                            let s = shared.clone();
                            let now = s.stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                            s.stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
                            running.spawn(async move {
                                handle(&s, m).await;
                                s.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                            });
                        }
                        None => break,
                    },
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    _ = stopped.changed() => break,
                }
            }
            while running.join_next().await.is_some() {}
        });
        Ok(AgentHandle { config: config_tx, stop, events, stats, task })
    }
}

fn announcement(config: &AgentConfig) -> AgentAnnounce {
    AgentAnnounce {
        identity: config.identity.clone(),
        classes: config.classes.clone(),
        facts: config.facts.clone(),
        sites: config
            .sites
            .iter()
            .map(|(name, s)| {
                let current = releases::live(s);
                let commit = current.as_deref().and_then(|d| releases::commit_of(s, d));
                SiteStatus { name: name.clone(), current, repo: s.repo_name.clone(), commit }
            })
            .collect(),
        version: crate::VERSION.to_owned(),
        expires_at: releases::now() + ANNOUNCE_VALIDITY,
    }
}

async fn announce(shared: &Shared) {
    let config = shared.config.borrow().clone();
    if let Ok(out) = crate::message::encode(&announcement(&config), crate::message::Wire::Json) {
        let mut headers = out.headers;
        shared.identity.sign(&out.body, &mut headers);
        let opts = crate::stomp::SendOptions { headers, ..Default::default() };
        if let Err(e) = shared.client.send_with(&config.destinations.agents, out.body, opts).await {
            tracing::warn!(error = %e, "announcement not sent");
        }
    }
}

/// The agent's name in its event lines: the original's `git-agent` in legacy wire, so
/// eventbot patterns written for it (`git-agent on HOST checked out tag …`) still match.
fn speaker(config: &AgentConfig) -> &'static str {
    match config.wire {
        crate::message::Wire::Legacy => "git-agent",
        crate::message::Wire::Json => "dk-agent",
    }
}

/// Publishes an event line in the configured wire (the `deploys` source; legacy topic `future.events.deploys`).
async fn event(shared: &Shared, config: &AgentConfig, text: String, correlation_id: Option<String>) {
    tracing::info!("{text}");
    let ev = Event { correlation_id, ..Event::new("deploys", text) };
    if let Ok(out) = crate::message::encode(&ev, config.wire) {
        let opts = crate::stomp::SendOptions { headers: out.headers, ..Default::default() };
        let _ = shared.client.send_with(&config.destinations.events_for("deploys"), out.body, opts).await;
    }
}

/// Verifies `req` (signature, trusted key, validity, UUID) and, only if it
/// selects this agent, records its id against replays; returns the signing
/// key's name, `Ok(None)` when the request is not for this agent.
fn verify(config: &AgentConfig, replay: &Mutex<ReplayCache>, headers: &Headers, body: &[u8], req: &DeployRequest) -> Result<Option<String>, Unanswered> {
    // A request naming only other servers (a rollout's batches) is dropped before its
    // signature check: it makes this agent do nothing either way, and a rollout then
    // costs each agent its own batch, not one check per batch (N² across a fleet).
    if filters::names_only_others(&req.filters, &config.identity) {
        return Ok(None);
    }
    let now = releases::now();
    let key = intake::authenticate(config, headers, body, req, now).map_err(Unanswered::Unverified)?;
    // Only now, for a request a trusted key signed, are its filters built (capped in count, length and regex size).
    let me = Candidate { identity: &config.identity, classes: &config.classes, facts: &config.facts };
    match Selector::compile(&req.filters) {
        Ok(s) if s.matches(me) => {}
        Ok(_) => return Ok(None),
        Err(e) => return Err(Unanswered::BadFilter(e.to_string())),
    }
    replay.lock().unwrap_or_else(|p| p.into_inner()).check_and_insert(&req.request_id, req.expires_at, now).map_err(|e| Unanswered::Unverified(e.to_string()))?;
    Ok(Some(key))
}

/// Why a request is dropped without an answer.
enum Unanswered {
    /// Not authentic, stale or replayed.
    Unverified(String),
    /// Signed, but its filters are over the caps or do not compile.
    BadFilter(String),
}

/// Logs (at most one line per [`intake::LOG_INTERVAL`]) and counts a request dropped unanswered.
fn unverified(shared: &Shared, request_id: &str, action: DeployAction, reason: String) {
    shared.stats.unverified.fetch_add(1, Ordering::Relaxed);
    let admitted = shared.throttle.lock().unwrap_or_else(|p| p.into_inner()).admit(std::time::Instant::now());
    if let Some(suppressed) = admitted {
        let request: String = request_id.chars().take(64).collect();
        tracing::warn!(?request, suppressed, "unverified request dropped without an answer: {reason}");
    }
    let _ = shared.events.send(AgentEvent::Unverified { request_id: request_id.chars().take(64).collect(), action, reason });
}

async fn handle(shared: &Shared, msg: crate::stomp::Message) {
    let (headers, body) = (&msg.headers, &msg.body);
    let config = shared.config.borrow().clone();
    let req = match decode(msg.destination(), headers, body) {
        Ok(Message::DeployRequest(r)) => r,
        Ok(Message::Keepalive) => return,
        Ok(_) => {
            let _ = shared.events.send(AgentEvent::Ignored { request_id: None });
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "unreadable request ignored");
            let _ = shared.events.send(AgentEvent::Ignored { request_id: None });
            return;
        }
    };
    let key = match verify(&config, &shared.replay, headers, body, &req) {
        Ok(Some(k)) => k,
        Ok(None) => {
            let _ = shared.events.send(AgentEvent::Ignored { request_id: Some(req.request_id.clone()) });
            return;
        }
        Err(Unanswered::Unverified(reason)) => return unverified(shared, &req.request_id, req.action, reason),
        Err(Unanswered::BadFilter(e)) => {
            tracing::warn!(request = %req.request_id, error = %e, "signed request with a bad filter ignored");
            let _ = shared.events.send(AgentEvent::Ignored { request_id: Some(req.request_id.clone()) });
            return;
        }
    };
    let reporter = Reporter::new(shared.client.clone(), &req, headers, shared.identity.clone());
    let refuse = |reason: String| async {
        let text = format!("{} on {} refused request {} from {}: {reason}", speaker(&config), config.identity, req.request_id, req.user);
        event(shared, &config, text, req.correlation_id.clone()).await;
        reporter.last(StepState::Refused, Some(reason.clone()), serde_json::Value::Null).await;
        let _ = shared.events.send(AgentEvent::Refused { request_id: req.request_id.clone(), action: req.action, reason });
    };
    let done = |ok: bool| {
        let _ = shared.events.send(AgentEvent::Done { request_id: req.request_id.clone(), action: req.action, ok });
    };
    if req.action == DeployAction::Discover {
        reporter.last(StepState::Ok, None, serde_json::to_value(announcement(&config)).unwrap_or_default()).await;
        return done(true);
    }
    let Some(site_name) = req.site.clone() else {
        return refuse("no site given".into()).await;
    };
    let Some(site) = config.sites.get(&site_name) else {
        return refuse(format!("site {site_name:?} is not configured on {}", config.identity)).await;
    };
    match req.action {
        DeployAction::Discover => unreachable!("answered above"),
        DeployAction::Status => {
            let journal = releases::Journal::open(&site.releases).map(|j| j.releases).unwrap_or_default();
            let data = serde_json::json!({
                "current": releases::live(site),
                "lock": lock::read(&releases::Journal::state_dir(&site.releases)).ok().flatten(),
                "releases": journal,
            });
            reporter.last(StepState::Ok, None, data).await;
            done(true)
        }
        DeployAction::Tags => {
            let (path, limit) = (site.repo.clone(), req.limit.unwrap_or(20).min(1000));
            match tokio::task::spawn_blocking(move || repo::list(&path, limit)).await {
                Ok(Ok(list)) => {
                    reporter.last(StepState::Ok, None, serde_json::to_value(list).unwrap_or_default()).await;
                    done(true)
                }
                Ok(Err(e)) => {
                    reporter.last(StepState::Failed, Some(e.to_string()), serde_json::Value::Null).await;
                    done(false)
                }
                Err(e) => {
                    reporter.last(StepState::Failed, Some(e.to_string()), serde_json::Value::Null).await;
                    done(false)
                }
            }
        }
        DeployAction::Deploy | DeployAction::Rollback => {
            let policy = if req.action == DeployAction::Deploy { &site.deploy } else { &site.rollback };
            if !policy.contains(&key) {
                let verb = if req.action == DeployAction::Deploy { "deploy" } else { "roll back" };
                return refuse(format!("key {key} may not {verb} site {site_name} on {}", config.identity)).await;
            }
            let ctx = steps::Ctx { name: &site_name, site, req: &req, reporter: &reporter };
            let result = if req.action == DeployAction::Deploy {
                let Some(tag) = req.tag.clone() else {
                    return refuse("no tag given".into()).await;
                };
                let path = site.repo.clone();
                let t = tag.clone();
                let resolved = match tokio::task::spawn_blocking(move || {
                    git2::Repository::open(&path)
                        .map_err(|e| repo::RepoError::Git { path: path.display().to_string(), message: e.message().to_owned() })
                        .and_then(|r| repo::resolve(&r, &t))
                })
                .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return refuse(e.to_string()).await,
                    Err(e) => return refuse(e.to_string()).await,
                };
                if req.dry_run {
                    let ok = dry_run(&reporter, site, resolved).await;
                    return done(ok);
                }
                steps::deploy(&ctx, resolved).await
            } else {
                steps::rollback(&ctx).await
            };
            let mut out = match result {
                Ok(out) => out,
                Err(refusal) => return refuse(refusal.to_string()).await,
            };
            out.commit = out.live.as_deref().and_then(|d| releases::commit_of(site, d));
            let target = site.links.first().map(|l| l.target.display().to_string()).unwrap_or_default();
            let tag = out.tag.clone().unwrap_or_default();
            let text = match (req.action, out.ok) {
                (DeployAction::Deploy, true) => {
                    format!("{} on {} checked out tag {tag} from repo {} to target {target} request id {}", speaker(&config), config.identity, site.repo_name, req.request_id)
                }
                (DeployAction::Rollback, true) => format!("{} on {} rolled back {site_name} to tag {tag} request id {}", speaker(&config), config.identity, req.request_id),
                (_, false) => format!(
                    "{} on {} failed to {} tag {tag} of repo {}: {} request id {}",
                    speaker(&config),
                    config.identity,
                    if req.action == DeployAction::Deploy { "deploy" } else { "roll back to" },
                    site.repo_name,
                    out.error.as_deref().unwrap_or("?"),
                    req.request_id
                ),
                _ => unreachable!(),
            };
            event(shared, &config, text, req.correlation_id.clone()).await;
            let state = if out.ok { StepState::Ok } else { StepState::Failed };
            reporter.last(state, out.error.clone(), serde_json::to_value(&out).unwrap_or_default()).await;
            let steps = out.steps.iter().map(|s| StepTime { step: s.step.clone(), state: s.state, duration_ms: s.duration_ms }).collect();
            let _ = shared.events.send(AgentEvent::Steps { site: site_name.clone(), steps });
            done(out.ok);
            if out.ok {
                announce(shared).await;
            }
        }
    }
}

/// A deploy's dry run: what is live, the commits the tag adds (`log`) and, for a
/// tag that is not a descendant of the live release, the commits it removes
/// (`removed`, with `downgrade: true`); nothing changes.
async fn dry_run(reporter: &Reporter, site: &SiteConfig, resolved: repo::Resolved) -> bool {
    let live = releases::live(site);
    let journal = releases::Journal::open(&site.releases).ok();
    let live_commit = live.as_ref().and_then(|d| journal.as_ref()?.get(d).map(|r| r.commit.clone()));
    let (path, from, to) = (site.repo.clone(), live_commit.clone(), resolved.commit);
    let logs = tokio::task::spawn_blocking(move || {
        let log = repo::log_between(&path, from.as_deref(), to, 200)?;
        let removed = match &from {
            Some(live) => repo::removed_by(&path, to, live, 200)?.unwrap_or_default(),
            None => Vec::new(),
        };
        Ok::<_, repo::RepoError>((log, removed))
    })
    .await;
    let lock = lock::read(&releases::Journal::state_dir(&site.releases)).ok().flatten().filter(|l| !lock::is_stale(l, releases::now()));
    let already_live = live.is_some() && releases::dir_name(&site.repo_name, &resolved.name) == live;
    match logs {
        Ok(Ok((log, removed))) => {
            let data = serde_json::json!({
                "current": live,
                "current_commit": live_commit,
                "tag": resolved.name,
                "commit": resolved.commit.to_string(),
                "log": log,
                "downgrade": !removed.is_empty(),
                "removed": removed,
                "already_live": already_live,
                "lock": lock,
            });
            reporter.last(StepState::Ok, None, data).await;
            true
        }
        Ok(Err(e)) => {
            reporter.last(StepState::Failed, Some(e.to_string()), serde_json::Value::Null).await;
            false
        }
        Err(e) => {
            reporter.last(StepState::Failed, Some(e.to_string()), serde_json::Value::Null).await;
            false
        }
    }
}

impl crate::daemon::Supervised for AgentHandle {
    type Config = AgentConfig;
    async fn reload(&mut self, config: AgentConfig) -> Result<(), crate::daemon::ReloadError> {
        AgentHandle::reload(self, config);
        Ok(())
    }
    fn is_finished(&self) -> bool {
        AgentHandle::is_finished(self)
    }
    async fn stop(self) {
        self.shutdown().await;
    }
}

/// Starts dk-agent on the shared daemon lifecycle ([`crate::daemon`]).
/// It reports to `events`, made beforehand ([`crate::daemon::event_channel`]) so that observers miss nothing.
pub async fn spawn(config: AgentConfig, client: Client, events: broadcast::Sender<AgentEvent>) -> Result<crate::daemon::Daemon<AgentConfig, AgentEvent>, AgentError> {
    let handle = Agent::start_with_events(config, client.clone(), events.clone()).await?;
    Ok(crate::daemon::Daemon::spawn_with_events("dk-agent", events, move |ctx| crate::daemon::supervise(handle, Some(client), ctx)))
}
