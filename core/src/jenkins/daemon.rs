//! The dk-jenkins daemon as a library: subscribes to commit messages, routes
//! each to its jobs, coalesces bursts per job over the quiet period, triggers
//! Jenkins (on the blocking pool) and publishes one event line per trigger.
//!
//! On shutdown, triggers still inside their quiet period are fired at once
//! rather than dropped: a commit that arrived is never a build that is lost.

use super::config::{JenkinsConfig, JobConfig};
use super::quiet::QuietPeriod;
use super::remote::{JenkinsRemote, TriggerRequest};
use super::route::{self, Skip};
use crate::message::{decode, Commit, Destinations, Message, Publisher};
use crate::stomp::{self, Client, SubscribeOptions, Subscription};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The `source` of the daemon's event lines (legacy topic `future.events.jenkins`).
pub const EVENT_SOURCE: &str = "jenkins";

/// How long shutdown waits for triggers in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Subscribing to the commit topic failed.
    #[error("subscribing to {topic}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// The bus error.
        source: stomp::Error,
    },
    /// The daemon has stopped.
    #[error("the dk-jenkins daemon has stopped")]
    Stopped,
}

/// What the daemon did, for tests and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JenkinsEvent {
    /// A commit arrived and opened or joined quiet periods.
    Queued {
        /// The repo.
        repo: String,
        /// The jobs it was queued for.
        jobs: Vec<String>,
    },
    /// A commit triggers nothing.
    Skipped {
        /// The repo.
        repo: String,
        /// Why.
        why: Skip,
    },
    /// Jenkins accepted a trigger.
    Triggered {
        /// The job.
        job: String,
        /// How many commits the quiet period merged into it.
        commits: u32,
        /// The `Location` Jenkins gave (queue item), if any.
        location: Option<String>,
        /// Attempts it took.
        attempts: u32,
    },
    /// A trigger failed for good.
    Failed {
        /// The job.
        job: String,
        /// Why.
        error: String,
    },
}

/// Controls a running daemon.
#[derive(Debug)]
pub struct DaemonHandle {
    ctl: mpsc::Sender<Control>,
    observer: broadcast::Sender<JenkinsEvent>,
    task: JoinHandle<()>,
}

enum Control {
    Reload(Box<JenkinsConfig>, oneshot::Sender<Result<(), DaemonError>>),
    Shutdown,
}

impl DaemonHandle {
    /// Receives the daemon's [`JenkinsEvent`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JenkinsEvent> {
        self.observer.subscribe()
    }

    /// Replaces the configuration (re-subscribing if the commit topic changed);
    /// on error the old one stays. Pending triggers keep their old job settings.
    pub async fn reload(&self, config: JenkinsConfig) -> Result<(), DaemonError> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Reload(Box::new(config), tx)).await.map_err(|_| DaemonError::Stopped)?;
        rx.await.map_err(|_| DaemonError::Stopped)?
    }

    /// Whether the daemon has stopped (its client closed for good).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops reading, fires what is pending, and waits for triggers in flight.
    pub async fn shutdown(self) {
        let _ = self.ctl.send(Control::Shutdown).await;
        let _ = self.task.await;
    }
}

/// The running daemon's state.
struct Daemon {
    config: JenkinsConfig,
    client: Client,
    sub: Option<Subscription>,
    publisher: Publisher,
    remote: Arc<JenkinsRemote>,
    quiet: QuietPeriod<String, (JobConfig, Commit)>,
    tasks: JoinSet<()>,
    observer: broadcast::Sender<JenkinsEvent>,
}

fn publisher(client: &Client, config: &JenkinsConfig) -> Publisher {
    let destinations = Destinations { events: config.events_topic.clone(), ..Destinations::default() };
    Publisher::new(client.clone(), EVENT_SOURCE).wire(config.wire).destinations(destinations)
}

async fn subscribe(client: &Client, topic: &str) -> Result<Subscription, DaemonError> {
    client.subscribe(topic, SubscribeOptions::default()).await.map_err(|source| DaemonError::Subscribe { topic: topic.to_owned(), source })
}

/// Starts the daemon on `client`; returns once the commit topic is subscribed.
pub async fn start(config: JenkinsConfig, client: Client) -> Result<DaemonHandle, DaemonError> {
    start_with_events(config, client, crate::daemon::event_channel()).await
}

/// [`start`] reporting to `observer`, a channel made beforehand (to subscribe before the first event).
pub async fn start_with_events(config: JenkinsConfig, client: Client, observer: broadcast::Sender<JenkinsEvent>) -> Result<DaemonHandle, DaemonError> {
    let sub = subscribe(&client, &config.commits_topic).await?;
    let (ctl, ctl_rx) = mpsc::channel(8);
    let daemon = Daemon {
        publisher: publisher(&client, &config),
        remote: Arc::new(JenkinsRemote::new(&config.jenkins)),
        quiet: QuietPeriod::new(config.quiet_period),
        config,
        client,
        sub: Some(sub),
        tasks: JoinSet::new(),
        observer: observer.clone(),
    };
    let task = tokio::spawn(daemon.run(ctl_rx));
    Ok(DaemonHandle { ctl, observer, task })
}

async fn recv_opt(sub: &mut Option<Subscription>) -> Option<stomp::Message> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    async fn run(mut self, mut ctl: mpsc::Receiver<Control>) {
        loop {
            let next_due = self.quiet.next_due();
            tokio::select! {
                c = ctl.recv() => match c {
                    Some(Control::Reload(config, reply)) => {
                        let r = self.reload(*config).await;
                        let _ = reply.send(r);
                    }
                    Some(Control::Shutdown) | None => break,
                },
                m = recv_opt(&mut self.sub) => match m {
                    Some(msg) => self.on_message(msg),
                    None => {
                        tracing::error!("commit subscription closed (client closed for good); dk-jenkins stops");
                        self.sub = None;
                        break;
                    }
                },
                _ = sleep_opt(next_due) => {
                    let due = self.quiet.take_due(Instant::now());
                    self.fire(due);
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        self.finish().await;
    }

    async fn finish(mut self) {
        if let Some(sub) = self.sub.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), sub.unsubscribe()).await;
        }
        let pending = self.quiet.take_all();
        if !pending.is_empty() {
            tracing::info!(jobs = pending.len(), "shutdown: triggering the jobs still in their quiet period now");
        }
        self.fire(pending);
        let wait = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, wait).await.is_err() {
            tracing::warn!("shutdown: triggers still running after {SHUTDOWN_GRACE:?}; abandoned");
        }
    }

    async fn reload(&mut self, config: JenkinsConfig) -> Result<(), DaemonError> {
        if config.commits_topic != self.config.commits_topic {
            let sub = subscribe(&self.client, &config.commits_topic).await?;
            if let Some(old) = self.sub.replace(sub) {
                let _ = old.unsubscribe().await;
            }
        }
        self.publisher = publisher(&self.client, &config);
        self.remote = Arc::new(JenkinsRemote::new(&config.jenkins));
        self.quiet.set_window(config.quiet_period);
        tracing::info!(repos = config.repos.len(), "configuration reloaded");
        self.config = config;
        Ok(())
    }

    fn emit(&self, ev: JenkinsEvent) {
        let _ = self.observer.send(ev);
    }

    fn on_message(&mut self, msg: stomp::Message) {
        let commit = match decode(msg.destination(), &msg.headers, &msg.body) {
            Ok(Message::Commit(c)) => c,
            Ok(Message::Keepalive) => return,
            Ok(other) => return tracing::debug!(kind = ?other.kind(), "not a commit message; ignored"),
            Err(e) => return tracing::warn!(error = %e, "unreadable message on the commit topic; ignored"),
        };
        if let Err(e) = commit.validate() {
            return tracing::warn!(error = %e, "invalid commit message; ignored");
        }
        match route::jobs_for(&self.config.repos, &commit) {
            Err(why) => {
                tracing::debug!(repo = %commit.repo, refname = %commit.refname, ?why, "commit triggers nothing");
                self.emit(JenkinsEvent::Skipped { repo: commit.repo.clone(), why });
            }
            Ok(jobs) => {
                let jobs: Vec<JobConfig> = jobs.into_iter().cloned().collect();
                let now = Instant::now();
                let names = jobs.iter().map(|j| j.job.clone()).collect();
                for job in jobs {
                    let opened = self.quiet.note(job.job.clone(), (job.clone(), commit.clone()), now);
                    tracing::info!(job = %job.job, repo = %commit.repo, refname = %commit.refname, merged = !opened, "trigger queued");
                }
                self.emit(JenkinsEvent::Queued { repo: commit.repo.clone(), jobs: names });
            }
        }
    }

    fn fire(&mut self, due: Vec<super::quiet::Due<String, (JobConfig, Commit)>>) {
        for d in due {
            let (job, commit) = d.value;
            let count = d.count;
            let remote = self.remote.clone();
            let publisher = self.publisher.clone();
            let observer = self.observer.clone();
            self.tasks.spawn(async move {
                let req = TriggerRequest {
                    job: job.job.clone(),
                    token: job.token.clone(),
                    parameters: if job.parameters { route::parameters(&commit) } else { Vec::new() },
                    with_parameters: job.parameters,
                };
                let result = tokio::task::spawn_blocking(move || remote.trigger(&req)).await;
                let burst = if count > 1 { format!(" ({count} commits)") } else { String::new() };
                let (line, ev) = match result {
                    Ok(Ok(t)) => {
                        tracing::info!(job = %job.job, location = ?t.location, attempts = t.attempts, "build triggered");
                        let at = t.location.as_deref().map(|l| format!(": {l}")).unwrap_or_default();
                        (
                            format!("triggered {} for {}{burst}{at}", job.job, commit.subject().trim_end()),
                            JenkinsEvent::Triggered { job: job.job.clone(), commits: count, location: t.location, attempts: t.attempts },
                        )
                    }
                    Ok(Err(e)) => {
                        tracing::error!(job = %job.job, error = %e, "trigger failed");
                        (
                            format!("problem: triggering {} for {}{burst}: {e}", job.job, commit.subject().trim_end()),
                            JenkinsEvent::Failed { job: job.job.clone(), error: e.to_string() },
                        )
                    }
                    Err(e) => (format!("problem: triggering {}: {e}", job.job), JenkinsEvent::Failed { job: job.job.clone(), error: e.to_string() }),
                };
                if let Err(e) = publisher.event(line, Some(commit.effective_correlation_id())).await {
                    tracing::warn!(error = %e, "could not publish the event line");
                }
                let _ = observer.send(ev);
            });
        }
    }
}

impl crate::daemon::Supervised for DaemonHandle {
    type Config = JenkinsConfig;
    async fn reload(&mut self, config: JenkinsConfig) -> Result<(), crate::daemon::ReloadError> {
        DaemonHandle::reload(self, config).await.map_err(|e| crate::daemon::ReloadError::Refused(e.to_string()))
    }
    fn is_finished(&self) -> bool {
        DaemonHandle::is_finished(self)
    }
    async fn stop(self) {
        self.shutdown().await;
    }
}

/// Starts dk-jenkins on the shared daemon lifecycle ([`crate::daemon`]); returns once the commit topic is subscribed.
/// It reports to `events`, made beforehand ([`crate::daemon::event_channel`]) so that observers miss nothing.
pub async fn spawn(config: JenkinsConfig, client: Client, events: broadcast::Sender<JenkinsEvent>) -> Result<crate::daemon::Daemon<JenkinsConfig, JenkinsEvent>, DaemonError> {
    let handle = start_with_events(config, client.clone(), events.clone()).await?;
    Ok(crate::daemon::Daemon::spawn_with_events("dk-jenkins", events, move |ctx| crate::daemon::supervise(handle, Some(client), ctx)))
}
