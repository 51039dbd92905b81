//! The dk-apt-watch daemon: package messages in, one action run per burst out.
//!
//! Every package message (JSON or the original's text) whose name matches the
//! configured names/globs, whose distribution and action are wanted, goes into
//! a [`Coalescer`]: the action starts once messages stop for `quiet` (or
//! `max_wait` after the first), never sooner than `min_interval` after the
//! previous run, and never while the previous run is still going. A reconnect
//! counts as a trigger too (a message may have been missed meanwhile).
//!
//! Each run ends with an event line: `HOST  apt-get update ok in 1.2 s (site-assets 1.4.2-1, +19 more)`
//! or `HOST  problem: apt-get update failed (exit 100) after 0.3 s (…): LAST OUTPUT LINE`.

use super::config::AptWatchConfig;
use crate::coalesce::Coalescer;
use crate::command;
use crate::message::{decode, Destinations, Message, Package, Publisher};
use crate::stomp::{self, Client, ClientEvent, SubscribeOptions, Subscription};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

/// The `source` of the event lines.
pub const EVENT_SOURCE: &str = "apt-watch";

/// What the daemon did, for observers (tests, health output).
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A package message that matters; a run will follow.
    Matched(Package),
    /// A package message that does not matter here.
    Ignored(Package),
    /// The action ran.
    Ran(RunReport),
}

/// One run of the action.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// What triggered it: `NAME VERSION` per package, or `(reconnect)`.
    pub triggers: Vec<String>,
    /// Whether it exited 0.
    pub ok: bool,
    /// Exit code, or why it could not run.
    pub status: String,
    /// Its output (stdout then stderr), trimmed.
    pub output: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The event line published for it (without the host prefix).
    pub line: String,
    /// When it started.
    pub started: Instant,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Package messages received.
    pub messages: u64,
    /// Of which matched.
    pub matched: u64,
    /// Action runs.
    pub runs: u64,
    /// Of which failed.
    pub failures: u64,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum AptWatchError {
    /// Subscribing to the package topic failed.
    #[error("subscribing to {topic}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// The bus error.
        source: stomp::Error,
    },
}

/// Controls a running daemon; dropping it stops the daemon.
#[derive(Debug)]
pub struct AptWatchHandle {
    stop: watch::Sender<bool>,
    hand_over: mpsc::Sender<Vec<String>>,
    observer: broadcast::Sender<WatchEvent>,
    stats: Arc<Mutex<Stats>>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl AptWatchHandle {
    /// What the daemon does from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.observer.subscribe()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Adds triggers (e.g. those a stopped predecessor still had waiting) to the next run.
    pub async fn hand_over(&self, triggers: Vec<String>) {
        if !triggers.is_empty() {
            let _ = self.hand_over.send(triggers).await;
        }
    }

    /// Whether the daemon task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops taking messages, lets a running action finish, and returns the counters.
    pub async fn shutdown(self) -> Stats {
        self.stop().await.0
    }

    /// As [`AptWatchHandle::shutdown`], also returning the triggers that were
    /// still waiting for a run (give them to the successor's [`AptWatchHandle::hand_over`] on a reload).
    pub async fn stop(self) -> (Stats, Vec<String>) {
        let _ = self.stop.send(true);
        let pending = self.task.await.unwrap_or_default();
        (self.stats.lock().map(|s| s.clone()).unwrap_or_default(), pending)
    }
}

/// Subscribes `client` to the package topic (confirmed by the broker before this returns) and starts the daemon.
pub async fn start(config: AptWatchConfig, client: Client) -> Result<AptWatchHandle, AptWatchError> {
    start_with_events(config, client, crate::daemon::event_channel()).await
}

/// [`start`] reporting to `observer`, a channel made beforehand (to subscribe before the first event).
pub async fn start_with_events(config: AptWatchConfig, client: Client, observer: broadcast::Sender<WatchEvent>) -> Result<AptWatchHandle, AptWatchError> {
    let client_events = client.events();
    let sub =
        client.subscribe(&config.packages_topic, SubscribeOptions::default()).await.map_err(|source| AptWatchError::Subscribe { topic: config.packages_topic.clone(), source })?;
    let destinations = Destinations { events: config.events_topic.clone(), ..Destinations::default() };
    let publisher = Publisher::new(client, EVENT_SOURCE).wire(config.wire).destinations(destinations).host(config.node.clone());
    let (stop, stop_rx) = watch::channel(false);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let coalescer = Coalescer::new(config.quiet, config.min_interval).max_wait(config.max_wait);
    let (hand_over, hand_over_rx) = mpsc::channel(4);
    let daemon = Daemon { config: Arc::new(config), publisher, observer: observer.clone(), stats: stats.clone(), coalescer };
    tracing::info!(topic = %daemon.config.packages_topic, packages = ?daemon.config.packages.patterns(), "dk-apt-watch subscribed");
    let task = tokio::spawn(daemon.run(sub, stop_rx, client_events, hand_over_rx));
    Ok(AptWatchHandle { stop, hand_over, observer, stats, task })
}

struct Daemon {
    config: Arc<AptWatchConfig>,
    publisher: Publisher,
    observer: broadcast::Sender<WatchEvent>,
    stats: Arc<Mutex<Stats>>,
    coalescer: Coalescer<String>,
}

impl Daemon {
    async fn run(
        mut self,
        mut sub: Subscription,
        mut stop: watch::Receiver<bool>,
        mut client_events: broadcast::Receiver<ClientEvent>,
        mut hand_over: mpsc::Receiver<Vec<String>>,
    ) -> Vec<String> {
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut running = false;
        let mut sub_open = true;
        let mut events_open = true;
        loop {
            let due = if running { None } else { self.coalescer.due() };
            tokio::select! {
                _ = stop.changed() => break,
                m = sub.recv(), if sub_open => match m {
                    Some(m) => self.on_message(m),
                    None => {
                        tracing::warn!("package subscription closed (client closed); no more messages");
                        sub_open = false;
                    }
                },
                ev = client_events.recv(), if events_open => match ev {
                    Ok(ClientEvent::Ready { reconnect: true, .. }) => {
                        tracing::info!("reconnected: running the action once in case a message was missed");
                        self.coalescer.push("(reconnect)".into(), Instant::now());
                    }
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                    _ => {}
                },
                _ = done_rx.recv() => running = false,
                Some(triggers) = hand_over.recv() => {
                    for t in triggers {
                        self.coalescer.push(t, Instant::now());
                    }
                }
                _ = sleep_until(due) => {
                    if let Some(triggers) = self.coalescer.take(Instant::now()) {
                        running = true;
                        let (config, publisher, observer, stats, done) = (self.config.clone(), self.publisher.clone(), self.observer.clone(), self.stats.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            let report = run_action(&config, triggers).await;
                            if let Ok(mut s) = stats.lock() {
                                s.runs += 1;
                                s.failures += u64::from(!report.ok);
                            }
                            if let Err(e) = publisher.event(report.line.clone(), None).await {
                                tracing::warn!(error = %e, "publishing the event line failed");
                            }
                            let _ = observer.send(WatchEvent::Ran(report));
                            let _ = done.send(()).await;
                        });
                    }
                }
            }
        }
        if running {
            let _ = done_rx.recv().await;
        }
        tracing::info!("dk-apt-watch stopped");
        let _ = sub.unsubscribe().await;
        self.coalescer.take_all()
    }

    fn on_message(&mut self, m: stomp::Message) {
        let package = match decode(m.destination(), &m.headers, &m.body) {
            Ok(Message::Package(p)) => p,
            Ok(Message::Keepalive) => return,
            Ok(other) => {
                tracing::debug!(kind = ?other.kind(), "not a package message; ignored");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable message on the package topic; ignored");
                return;
            }
        };
        let c = &self.config;
        let wanted =
            c.packages.is_match(&package.name) && c.on.contains(&package.action) && (c.distros.is_empty() || package.distro.is_empty() || c.distros.contains(&package.distro));
        if let Ok(mut s) = self.stats.lock() {
            s.messages += 1;
            s.matched += u64::from(wanted);
        }
        if wanted {
            tracing::info!(package = %package.name, version = %package.version, distro = %package.distro, "watched package changed");
            self.coalescer.push(format!("{} {}", package.name, package.version).trim().to_owned(), Instant::now());
            let _ = self.observer.send(WatchEvent::Matched(package));
        } else {
            tracing::debug!(package = %package.name, "package not watched here");
            let _ = self.observer.send(WatchEvent::Ignored(package));
        }
    }
}

/// Runs the action once and describes the result.
async fn run_action(config: &AptWatchConfig, triggers: Vec<String>) -> RunReport {
    let command_text = config.action.join(" ");
    let about = match triggers.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first}, +{} more", rest.len()),
    };
    tracing::info!(action = %command_text, triggers = triggers.len(), "running the action");
    let started = Instant::now();
    let result = command::run(&config.action, None, config.timeout).await;
    let secs = started.elapsed().as_secs_f64();
    let (ok, status, output) = match result {
        Ok(f) => (f.success(), f.status_text(), f.output()),
        Err(e) => (false, e.to_string(), String::new()),
    };
    let line = if ok {
        format!("{command_text} ok in {secs:.1} s ({about})")
    } else {
        let last = output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let tail = if last.is_empty() { String::new() } else { format!(": {last}") };
        format!("problem: {command_text} failed ({status}) after {secs:.1} s ({about}){tail}")
    };
    if ok {
        tracing::info!(%line, "action done");
    } else {
        tracing::warn!(%line, %output, "action failed");
    }
    RunReport { triggers, ok, status, output, duration_ms: (secs * 1000.0) as u64, line, started }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// dk-apt-watch under [`crate::daemon::supervise`]: a reload starts a daemon with the
/// new configuration (subscribed before the old one stops, so no message falls
/// between) and hands it what the old one still had waiting.
struct Restarting {
    handle: AptWatchHandle,
    client: Client,
    events: broadcast::Sender<WatchEvent>,
}

impl crate::daemon::Supervised for Restarting {
    type Config = AptWatchConfig;
    async fn reload(&mut self, config: AptWatchConfig) -> Result<(), crate::daemon::ReloadError> {
        let new = start_with_events(config, self.client.clone(), self.events.clone()).await.map_err(|e| crate::daemon::ReloadError::Refused(e.to_string()))?;
        let (_, pending) = std::mem::replace(&mut self.handle, new).stop().await;
        self.handle.hand_over(pending).await;
        Ok(())
    }
    fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
    async fn stop(self) {
        let stats = self.handle.shutdown().await;
        tracing::info!(?stats, "dk-apt-watch stopped");
    }
}

/// Starts dk-apt-watch on the shared daemon lifecycle ([`crate::daemon`]); reloads restart it without a gap.
/// It reports to `events`, made beforehand ([`crate::daemon::event_channel`]) so that observers miss nothing.
pub async fn spawn(config: AptWatchConfig, client: Client, events: broadcast::Sender<WatchEvent>) -> Result<crate::daemon::Daemon<AptWatchConfig, WatchEvent>, AptWatchError> {
    let handle = start_with_events(config, client.clone(), events.clone()).await?;
    Ok(crate::daemon::Daemon::spawn_with_events("dk-apt-watch", events, move |ctx| {
        let service = Restarting { handle, client: client.clone(), events: ctx.events.clone() };
        crate::daemon::supervise(service, Some(client), ctx)
    }))
}
