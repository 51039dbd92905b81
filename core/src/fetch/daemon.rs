//! The fetch daemon as a library: subscription to the commit topic (and the
//! builds topic when a repo has `trigger = "build"`), per-repo coalescing,
//! parallel fetches under a limit, reconcile on start / reconnect / interval,
//! results and event lines, reload and graceful shutdown.
//!
//! `dk-fetch` is a thin `main` over [`FetchDaemon`]; tests and `dk-demo` run
//! the same code in-process.
//!
//! # Coalescing
//! Each configured repo is *idle*, *running*, or *running with a request
//! pending*. A commit message for an idle repo that has been quiet for the
//! [`DaemonOptions::quiet`] window (no commit message for it in that time)
//! starts a fetch at once (no added latency for a lone push). Any further
//! request while a fetch runs (or within the quiet window after the previous
//! message) is merged into the single pending request, whose
//! start is pushed back until the messages stop for `quiet` (but never beyond
//! [`DaemonOptions::max_delay`] after the first of them). So a burst of N
//! messages leads to one fetch now and at most one more, never N.
//!
//! The pending request remembers the pushed refnames. One refname is passed to
//! the repository operation as is; several different ones (e.g. a puppetmaster
//! repo with pushes to several branches) or any reconcile request merge into a
//! full sync (`refname = None`), which updates every branch.
//!
//! The timing and the idle / running / pending states are a
//! [`KeyedCoalescer`] (leading edge on, reconcile requests pushed as
//! immediate); this module keeps only what a pending request merges.
//!
//! # Build triggers
//! A repo with `trigger = "build"` is not fetched on commit messages (they give
//! [`DaemonEvent::Skipped`]). A build message (JSON, or the original's
//! jenkins-helper text) for one of its `jobs` with status `success` asks for a
//! fetch and the checkout of exactly the built commit (`ops::Checkout::Built`;
//! the checks that follow the fetch are in [`super::ops`]: the commit must be
//! reachable from the configured branch, and an ancestor of what is checked out
//! is skipped, never moved back to). Other statuses never trigger. A success
//! without a commit (the legacy text may carry none) falls back to a fetch and
//! checkout of the branch tip, as a commit message would (nothing is recorded
//! for it; a later reconcile does not move back from that tip). The commit text is
//! checked (7–64 hexadecimal digits) before anything runs; a bad one, or a
//! commit the clone refuses after the fetch, gives `problem: rejected build …`.
//!
//! Each verified built commit is recorded durably in `state_dir/REPO.built`
//! (temp file, fsync, rename, fsync of the directory). A reconcile (start,
//! reconnect, interval, reload) of a build-triggered repo fetches and checks
//! out that recorded commit, never the branch tip (which may be red); without
//! a record it only fetches. A pending request merges the built commits of the
//! messages it coalesces; the newest by history is checked out.
//!
//! # Retries
//! A fetch that fails (git server down, overloaded or silent past
//! `git_timeout`, a network cut) is retried as a full sync, trigger `retry`,
//! after 1 s, then 2, 4, … up to 60 s between attempts, until one succeeds;
//! the commit it was for stays attached, so its event line and correlation id
//! still go out. Any successful fetch of the repo ends the retries.
//!
//! # Hostile input
//! A repo name that is empty, begins with `-`, contains `..` or a control
//! character (NUL, newline, …), or a refname that `ops::validate_refname`
//! refuses, is rejected with the event line `HOST  problem: rejected …` and no
//! git operation. Other unknown repo names are ignored (debug log). A build
//! message's commit that is not 7–64 hexadecimal digits is rejected the same
//! way (`HOST  problem: rejected build for repo "R" commit "C": …`), as is,
//! after the fetch, one not reachable from the configured branch; jobs only
//! select configured repos and reach nothing else.

use super::config::{FetchConfig, RepoConfig, Trigger};
use super::ops::{self, BuiltVerdict, Checkout, FetchError, FetchOutcome, Request};
use crate::coalesce::KeyedCoalescer;
use crate::message::{decode, one_line, Build, BuildStatus, Commit, Dedup, Destinations, FetchResult, Message, Publisher, ID_HEADER};
use crate::stomp::{self, Client, ClientEvent, SubscribeOptions, Subscription};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The `source` of the daemon's event lines (legacy topics end with it).
pub const EVENT_SOURCE: &str = "fetch";

/// Runs one repository operation (fetch and the mode's checkout); synchronous,
/// called on a blocking thread. The default is [`default_runner`].
pub type Runner = Arc<dyn Fn(&str, &RepoConfig, &Request, Duration) -> Result<FetchOutcome, FetchError> + Send + Sync>;

/// The runner used unless [`DaemonOptions::runner`] says otherwise: `ops::run_request`.
pub fn default_runner() -> Runner {
    Arc::new(ops::run_request)
}

/// Where the newest verified built commit of `repo` is recorded: `STATE_DIR/REPO.built`.
pub fn built_state_file(state_dir: &Path, repo: &str) -> PathBuf {
    state_dir.join(format!("{repo}.built"))
}

/// The recorded built commit of `repo` (`None`: none yet, or not a commit id).
pub fn recorded_build(state_dir: &Path, repo: &str) -> Option<String> {
    let text = std::fs::read_to_string(built_state_file(state_dir, repo)).ok()?;
    let id = text.trim();
    ops::validate_built_commit(id).is_ok().then(|| id.to_owned())
}

/// Records `commit` as `repo`'s newest verified built commit (durably; the directory is created).
fn record_build(state_dir: &Path, repo: &str, commit: &str) -> Result<(), crate::durable::DurableError> {
    std::fs::create_dir_all(state_dir).map_err(|source| crate::durable::DurableError { path: state_dir.to_owned(), source })?;
    crate::durable::write_atomic_mode(&built_state_file(state_dir, repo), format!("{commit}\n").as_bytes(), 0o644)
}

/// What a full sync of `repo` checks out: the branch tip (trigger = commit), or
/// the recorded built commit (trigger = build; fetch only without a record).
fn sync_checkout(state_dir: &Path, name: &str, repo: &RepoConfig) -> Checkout {
    match repo.trigger {
        Trigger::Commit => Checkout::Tip,
        Trigger::Build => match recorded_build(state_dir, name) {
            Some(c) => Checkout::Built(vec![c]),
            None => Checkout::FetchOnly,
        },
    }
}

/// Tuning that is not part of `fetch.toml`.
#[derive(Clone)]
pub struct DaemonOptions {
    /// Quiet window for coalescing (see the module docs); default 50 ms.
    pub quiet: Duration,
    /// Longest a pending request waits for a burst to end; default 2 s.
    pub max_delay: Duration,
    /// How long shutdown waits for running fetches; default 60 s.
    pub shutdown_grace: Duration,
    /// The repository operation; default [`default_runner`].
    pub runner: Runner,
    /// Where [`DaemonEvent`]s go; give one (and subscribe to it) to see the
    /// start-up reconcile too. Default: a new channel ([`DaemonHandle::subscribe`]).
    pub observer: Option<broadcast::Sender<DaemonEvent>>,
}

impl Default for DaemonOptions {
    fn default() -> DaemonOptions {
        DaemonOptions { quiet: Duration::from_millis(50), max_delay: Duration::from_secs(2), shutdown_grace: Duration::from_secs(60), runner: default_runner(), observer: None }
    }
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonOptions").field("quiet", &self.quiet).field("max_delay", &self.max_delay).field("shutdown_grace", &self.shutdown_grace).finish()
    }
}

/// What the daemon did, for observers (tests, dk-demo, health output).
#[derive(Debug, Clone, PartialEq)]
pub enum DaemonEvent {
    /// A fetch began (after coalescing and the parallel limit).
    Started {
        /// The configured repo.
        repo: String,
        /// Why: `commit`, `startup`, `reconnect`, `interval`, `reload`, `once`, `manual`.
        trigger: String,
        /// The refname passed to the operation (`None`: full sync).
        refname: Option<String>,
    },
    /// A fetch finished (ok or not); the same value is published on the results topic.
    Fetched(FetchResult),
    /// A message named a hostile repo or refname; nothing was run.
    Rejected {
        /// The repo name as received.
        repo: String,
        /// The refname as received.
        refname: String,
        /// Why.
        why: String,
    },
    /// A commit for a repo this server does not serve.
    Ignored {
        /// The repo name as received.
        repo: String,
    },
    /// A build message no repo of this server lists the job of.
    IgnoredBuild {
        /// The job name as received.
        job: String,
    },
    /// A message about a configured repo that does not move it: a commit for a
    /// build-triggered repo, a build that is not a success, a built commit older
    /// than the checkout.
    Skipped {
        /// The configured repo.
        repo: String,
        /// Why.
        why: String,
    },
    /// A build message's commit was refused (not hexadecimal, or not on the
    /// configured branch after the fetch); it was not checked out.
    RejectedBuild {
        /// The configured repo.
        repo: String,
        /// The commit as received.
        commit: String,
        /// Why.
        why: String,
    },
    /// A message that could not be read, or another problem worth an event line.
    Problem(String),
    /// A new configuration is in force.
    Reloaded {
        /// Whether the commit topic changed (and was re-subscribed).
        resubscribed: bool,
    },
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commit-topic messages received (keepalives excluded).
    pub messages: u64,
    /// Fetches started, per repo.
    pub fetches: BTreeMap<String, u64>,
    /// Fetches finished (ok or not), all repos.
    pub finished: u64,
    /// Fetches that failed, per repo.
    pub failures: BTreeMap<String, u64>,
    /// Commit messages merged into a running or pending fetch.
    pub coalesced: u64,
    /// Hostile messages rejected.
    pub rejected: u64,
    /// Commits for unknown repos.
    pub ignored: u64,
    /// Messages that could not be decoded.
    pub undecodable: u64,
    /// Reconciles run (every repo once).
    pub reconciles: u64,
    /// Retries started after a failed fetch.
    pub retries: u64,
    /// Build messages received (builds topic).
    pub builds: u64,
    /// Messages dropped as resends: their `dk-id` was seen lately (a publisher retried after a lost receipt).
    pub duplicates: u64,
}

/// Why the daemon could not start or apply a change.
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
    #[error("the fetch daemon has stopped")]
    Stopped,
}

/// Starts fetch daemons.
#[derive(Debug)]
pub struct FetchDaemon;

impl FetchDaemon {
    /// Subscribes `client` to the config's commit topic (and builds topic, when a
    /// repo has `trigger = "build"`) and starts the daemon
    /// (which reconciles every repo at once, trigger `startup`).
    pub async fn start(config: FetchConfig, client: Client) -> Result<DaemonHandle, DaemonError> {
        FetchDaemon::start_with(config, client, DaemonOptions::default()).await
    }

    /// As [`FetchDaemon::start`], with options.
    pub async fn start_with(config: FetchConfig, client: Client, options: DaemonOptions) -> Result<DaemonHandle, DaemonError> {
        // Listen to connection events before subscribing, so no Ready is missed.
        let client_events = client.events();
        let sub = subscribe(&client, &config.commits_topic).await?;
        let builds_sub = if config.wants_builds() { Some(subscribe(&client, &config.builds_topic).await?) } else { None };
        let observer = options.observer.clone().unwrap_or_else(|| broadcast::channel(1024).0);
        let stats = Arc::new(Mutex::new(Stats::default()));
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(&config, &client, &options, observer.clone(), stats.clone()));
        let sem = Arc::new(Semaphore::new(config.max_parallel.max(1)));
        let repos = KeyedCoalescer::new(options.quiet, options.max_delay, Pending::merge).leading_edge(true);
        let mut daemon =
            Daemon { config, client, shared, options, sub: Some(sub), builds_sub, repos, sem, tasks: JoinSet::new(), done_tx, retries: BTreeMap::new(), seen: Dedup::default() };
        daemon.reconcile("startup");
        let task = tokio::spawn(daemon.run(ctl_rx, done_rx, client_events));
        Ok(DaemonHandle { ctl: ctl_tx, observer, stats, task })
    }
}

/// Controls a running daemon; dropping it does not stop the daemon (use [`DaemonHandle::shutdown`]).
#[derive(Debug)]
pub struct DaemonHandle {
    ctl: mpsc::Sender<Control>,
    observer: broadcast::Sender<DaemonEvent>,
    stats: Arc<Mutex<Stats>>,
    task: tokio::task::JoinHandle<Stats>,
}

impl DaemonHandle {
    /// What the daemon does from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DaemonEvent> {
        self.observer.subscribe()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Applies a new configuration without dropping the connection (SIGHUP):
    /// repos added are fetched once (trigger `reload`), the commit topic is
    /// re-subscribed only if it changed. On error the old configuration stays.
    pub async fn reload(&self, config: FetchConfig) -> Result<(), DaemonError> {
        let (reply, done) = oneshot::channel();
        self.ctl.send(Control::Reload(Box::new(config), reply)).await.map_err(|_| DaemonError::Stopped)?;
        done.await.map_err(|_| DaemonError::Stopped)?
    }

    /// Fetches every configured repo once now (trigger `manual`).
    pub async fn reconcile(&self) -> Result<(), DaemonError> {
        self.ctl.send(Control::Reconcile).await.map_err(|_| DaemonError::Stopped)
    }

    /// Stops taking messages, lets running fetches finish (bounded by
    /// [`DaemonOptions::shutdown_grace`]) and returns the final counters.
    /// The client stays connected: disconnecting is the caller's.
    pub async fn shutdown(self) -> Stats {
        let _ = self.ctl.send(Control::Shutdown).await;
        match self.task.await {
            Ok(stats) => stats,
            Err(_) => self.stats.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }

    /// Whether the daemon task has ended (it only does on shutdown or when the client closed for good).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Requests to the daemon task.
enum Control {
    Reload(Box<FetchConfig>, oneshot::Sender<Result<(), DaemonError>>),
    Reconcile,
    Shutdown,
}

/// What a fetch task needs; replaced as a whole on reload.
struct Shared {
    /// `None`: results are not published (`--once` without a broker).
    publisher: Option<Publisher>,
    results_topic: String,
    node: String,
    state_dir: PathBuf,
    lock_stale_after: Duration,
    runner: Runner,
    observer: broadcast::Sender<DaemonEvent>,
    stats: Arc<Mutex<Stats>>,
}

impl Shared {
    fn new(config: &FetchConfig, client: &Client, options: &DaemonOptions, observer: broadcast::Sender<DaemonEvent>, stats: Arc<Mutex<Stats>>) -> Shared {
        Shared {
            publisher: Some(publisher_for(config, client.clone())),
            results_topic: config.results_topic.clone(),
            node: config.node.clone(),
            state_dir: config.state_dir.clone(),
            lock_stale_after: config.lock_stale_after,
            runner: options.runner.clone(),
            observer,
            stats,
        }
    }

    fn stat(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn emit(&self, ev: DaemonEvent) {
        let _ = self.observer.send(ev);
    }
}

/// The publisher for results and event lines of this configuration.
pub fn publisher_for(config: &FetchConfig, client: Client) -> Publisher {
    let destinations = Destinations { events: config.events_topic.clone(), ..Destinations::default() };
    Publisher::new(client, EVENT_SOURCE).wire(config.wire).destinations(destinations).host(config.node.clone())
}

/// The commit that asked for a fetch, for the event line and correlation.
#[derive(Debug, Clone)]
struct CommitCtx {
    subject: String,
    correlation_id: Option<String>,
}

/// A request waiting to run (its timing is the [`KeyedCoalescer`]'s).
#[derive(Debug)]
struct Pending {
    /// `None`: full sync.
    refs: Option<BTreeSet<String>>,
    trigger: String,
    commit: Option<CommitCtx>,
    /// What to check out (built commits accumulate).
    checkout: Checkout,
}

/// At most this many built commits wait in one pending request (the newest arrivals kept).
const MAX_BUILT: usize = 16;

impl Pending {
    /// Folds a later request in: refnames add up (any full sync makes it a
    /// full sync); the newest commit and its trigger win; built commits add up
    /// (the operation takes the newest by history), a later tip request
    /// replaces them and a fetch-only request changes nothing.
    fn merge(&mut self, later: Pending) {
        match (&mut self.refs, later.refs) {
            (Some(refs), Some(r)) => refs.extend(r),
            (refs, _) => *refs = None,
        }
        self.checkout = match (std::mem::take(&mut self.checkout), later.checkout) {
            (Checkout::Built(mut a), Checkout::Built(b)) => {
                for c in b {
                    a.retain(|x| *x != c);
                    a.push(c);
                }
                let excess = a.len().saturating_sub(MAX_BUILT);
                a.drain(..excess);
                Checkout::Built(a)
            }
            (a, Checkout::FetchOnly) => a,
            (_, b) => b,
        };
        if later.commit.is_some() {
            self.commit = later.commit;
            self.trigger = later.trigger;
        }
    }

    /// Takes the refname for the operation: the one refname, or `None` (full sync) for several.
    fn refname(&mut self) -> Option<String> {
        match self.refs.take() {
            Some(refs) if refs.len() == 1 => refs.into_iter().next(),
            _ => None,
        }
    }
}

/// A fetch task's report that the repository is free again.
struct Done {
    repo: String,
    /// Whether it failed (a refused built commit is not a failure: never retried).
    failed: bool,
    /// The commit the fetch was for (kept for the retry).
    commit: Option<CommitCtx>,
    /// What it was to check out (kept for the retry).
    checkout: Checkout,
}

/// The first retry after a failed fetch; each next one waits twice as long.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two retries.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// A repo whose last fetch failed.
struct Retry {
    /// Failed attempts in a row, minus one.
    attempt: u32,
    /// When the next retry starts (`None`: it is running).
    at: Option<Instant>,
    commit: Option<CommitCtx>,
    checkout: Checkout,
}

/// The wait before retry number `attempt + 1`.
fn retry_delay(attempt: u32) -> Duration {
    RETRY_FIRST.saturating_mul(1u32 << attempt.min(10)).min(RETRY_MAX)
}

struct Daemon {
    config: FetchConfig,
    client: Client,
    shared: Arc<Shared>,
    options: DaemonOptions,
    sub: Option<Subscription>,
    /// The builds topic, while some repo has `trigger = "build"`.
    builds_sub: Option<Subscription>,
    /// Per-repo coalescing: idle, running, or running with a request pending.
    repos: KeyedCoalescer<String, Pending>,
    sem: Arc<Semaphore>,
    tasks: JoinSet<()>,
    done_tx: mpsc::UnboundedSender<Done>,
    /// Repos whose last fetch failed, with their next retry.
    retries: BTreeMap<String, Retry>,
    /// Recent `dk-id`s: a resent commit or build is acted on once.
    seen: Dedup,
}

async fn subscribe(client: &Client, topic: &str) -> Result<Subscription, DaemonError> {
    client.subscribe(topic, SubscribeOptions::default()).await.map_err(|source| DaemonError::Subscribe { topic: topic.to_owned(), source })
}

impl Daemon {
    async fn run(mut self, mut ctl: mpsc::Receiver<Control>, mut done_rx: mpsc::UnboundedReceiver<Done>, mut client_events: broadcast::Receiver<ClientEvent>) -> Stats {
        let mut interval = self.new_interval();
        loop {
            self.start_retries();
            self.start_due();
            let next_due = [self.repos.next_due(), self.retries.values().filter_map(|r| r.at).min()].into_iter().flatten().min();
            tokio::select! {
                c = ctl.recv() => match c {
                    Some(Control::Reload(config, reply)) => {
                        let r = self.reload(*config).await;
                        if r.is_ok() {
                            interval = self.new_interval();
                        }
                        let _ = reply.send(r);
                    }
                    Some(Control::Reconcile) => self.reconcile("manual"),
                    Some(Control::Shutdown) | None => break,
                },
                m = recv_opt(&mut self.sub) => match m {
                    Some(msg) => self.on_message(msg),
                    None => {
                        tracing::warn!("commit subscription closed (client closed); no more commit messages");
                        self.sub = None;
                    }
                },
                m = recv_opt(&mut self.builds_sub) => match m {
                    Some(msg) => self.on_message(msg),
                    None => {
                        tracing::warn!("builds subscription closed (client closed); no more build messages");
                        self.builds_sub = None;
                    }
                },
                ev = client_events.recv() => match ev {
                    Ok(ClientEvent::Ready { reconnect: true, generation, .. }) => {
                        tracing::info!(generation, "reconnected and re-subscribed: reconciling every repo");
                        self.reconcile("reconnect");
                    }
                    Ok(ClientEvent::Disconnected { reason, .. }) => tracing::warn!(%reason, "connection lost; reconnecting"),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "missed connection events; reconciling to be safe");
                        self.reconcile("reconnect");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        client_events = self.client.events();
                        if self.sub.is_none() {
                            tracing::error!("client closed for good; the daemon stops");
                            break;
                        }
                    }
                },
                Some(done) = done_rx.recv() => self.on_done(done),
                _ = tick(&mut interval) => self.reconcile("interval"),
                _ = sleep_opt(next_due) => {}
            }
        }
        self.finish().await
    }

    fn new_interval(&self) -> Option<tokio::time::Interval> {
        self.config.reconcile_interval.filter(|d| !d.is_zero()).map(|d| {
            let mut i = tokio::time::interval_at(Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        })
    }

    /// Shutdown: stop reading, drop what is pending, wait for running fetches.
    async fn finish(mut self) -> Stats {
        for sub in [self.sub.take(), self.builds_sub.take()].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(5), sub.unsubscribe()).await;
        }
        let pending: Vec<&String> = self.repos.pending_keys().collect();
        if !pending.is_empty() {
            tracing::info!(?pending, "shutdown: pending fetches dropped (the next start reconciles)");
        }
        let running = self.tasks.len();
        if running > 0 {
            tracing::info!(running, "shutdown: waiting for running fetches");
        }
        let grace = self.options.shutdown_grace;
        let wait = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(?grace, "shutdown: fetches still running after the grace period; abandoning them");
            self.tasks.abort_all();
        }
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    async fn reload(&mut self, config: FetchConfig) -> Result<(), DaemonError> {
        let resubscribed = config.commits_topic != self.config.commits_topic;
        if resubscribed {
            // Subscribe to the new topic before leaving the old one: no gap.
            let sub = subscribe(&self.client, &config.commits_topic).await?;
            if let Some(old) = self.sub.replace(sub) {
                let _ = old.unsubscribe().await;
            }
        }
        // The builds topic: subscribed while some repo needs it (new one first: no gap).
        let builds_changed = config.builds_topic != self.config.builds_topic || config.wants_builds() != self.builds_sub.is_some();
        if builds_changed {
            let sub = if config.wants_builds() { Some(subscribe(&self.client, &config.builds_topic).await?) } else { None };
            if let Some(old) = std::mem::replace(&mut self.builds_sub, sub) {
                let _ = old.unsubscribe().await;
            }
        }
        if config.broker != self.config.broker {
            tracing::warn!("the broker section changed; it takes effect at the next restart (the connection is kept)");
        }
        if config.git_timeout != self.config.git_timeout {
            tracing::warn!("git_timeout changed; it takes effect at the next restart (libgit2's timeouts are process-wide)");
        }
        let added: Vec<String> = config.repos.keys().filter(|n| !self.config.repos.contains_key(*n)).cloned().collect();
        let changed: Vec<String> = config.repos.iter().filter(|(n, r)| self.config.repos.get(*n).is_some_and(|old| old != *r)).map(|(n, _)| n.clone()).collect();
        self.repos.retain(|n, running| config.repos.contains_key(n) || running);
        if config.max_parallel != self.config.max_parallel {
            self.sem = Arc::new(Semaphore::new(config.max_parallel.max(1)));
        }
        self.shared = Arc::new(Shared::new(&config, &self.client, &self.options, self.shared.observer.clone(), self.shared.stats.clone()));
        self.config = config;
        tracing::info!(?added, ?changed, resubscribed, "configuration reloaded");
        for name in added.iter().chain(changed.iter()) {
            let checkout = self.sync_checkout(name);
            self.request(name, None, "reload", None, checkout);
        }
        self.shared.emit(DaemonEvent::Reloaded { resubscribed });
        Ok(())
    }

    /// A fetch ended: the repo is free; a failure schedules its retry, a success ends them.
    fn on_done(&mut self, done: Done) {
        self.repos.finished(&done.repo);
        if !done.failed {
            self.retries.remove(&done.repo);
            return;
        }
        if !self.config.repos.contains_key(&done.repo) {
            return;
        }
        let attempt = self.retries.get(&done.repo).map_or(0, |r| r.attempt.saturating_add(1));
        let delay = retry_delay(attempt);
        tracing::info!(repo = done.repo, attempt = attempt + 1, retry_in_ms = delay.as_millis() as u64, "fetch failed: retrying");
        let commit = done.commit.or_else(|| self.retries.remove(&done.repo).and_then(|r| r.commit));
        self.retries.insert(done.repo, Retry { attempt, at: Some(Instant::now() + delay), commit, checkout: done.checkout });
    }

    /// Requests the retries that are due (a full sync each, immediate).
    fn start_retries(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self.retries.iter().filter(|(_, r)| r.at.is_some_and(|at| at <= now)).map(|(n, _)| n.clone()).collect();
        for name in due {
            let Some(r) = self.retries.get_mut(&name) else { continue };
            r.at = None;
            let (commit, checkout) = (r.commit.clone(), r.checkout.clone());
            if !self.config.repos.contains_key(&name) {
                self.retries.remove(&name);
                continue;
            }
            self.shared.stat(|s| s.retries += 1);
            self.repos.push_immediate(name, Pending { refs: None, trigger: "retry".into(), commit, checkout }, now);
        }
    }

    /// Every configured repo once (a full sync each).
    fn reconcile(&mut self, trigger: &str) {
        self.shared.stat(|s| s.reconciles += 1);
        let names: Vec<String> = self.config.repos.keys().cloned().collect();
        for name in names {
            let checkout = self.sync_checkout(&name);
            self.request(&name, None, trigger, None, checkout);
        }
    }

    /// What a full sync of `name` checks out (see [`sync_checkout`]).
    fn sync_checkout(&self, name: &str) -> Checkout {
        self.config.repos.get(name).map_or(Checkout::Tip, |r| sync_checkout(&self.config.state_dir, name, r))
    }

    fn on_message(&mut self, msg: stomp::Message) {
        if !self.seen.first(&msg.headers) {
            self.shared.stat(|s| s.duplicates += 1);
            tracing::debug!(destination = %msg.destination(), id = msg.headers.get(ID_HEADER).unwrap_or(""), "a resent message: acted on once already");
            return;
        }
        let decoded = decode(msg.destination(), &msg.headers, &msg.body);
        let commit = match decoded {
            Ok(Message::Keepalive) => return,
            Ok(Message::Commit(c)) => c,
            Ok(Message::Build(b)) => {
                self.shared.stat(|s| s.builds += 1);
                return self.on_build(b);
            }
            Ok(other) => {
                tracing::debug!(kind = ?other.kind(), "not a commit or build message; ignored");
                return;
            }
            Err(e) => {
                self.shared.stat(|s| {
                    s.messages += 1;
                    s.undecodable += 1;
                });
                tracing::warn!(error = %e, destination = %msg.destination(), "unreadable message");
                self.problem(format!("problem: {}", one_line(&e.to_string())), None);
                self.shared.emit(DaemonEvent::Problem(e.to_string()));
                return;
            }
        };
        self.shared.stat(|s| s.messages += 1);
        self.on_commit(commit);
    }

    fn on_commit(&mut self, commit: Commit) {
        let correlation_id = Some(commit.effective_correlation_id());
        if let Some(why) = hostile_repo_name(&commit.repo) {
            return self.reject(&commit, why, correlation_id);
        }
        let Some(repo) = self.config.repos.get(&commit.repo) else {
            tracing::debug!(repo = %commit.repo, "commit for a repo this server does not serve; ignored");
            self.shared.stat(|s| s.ignored += 1);
            self.shared.emit(DaemonEvent::Ignored { repo: commit.repo });
            return;
        };
        if repo.trigger == Trigger::Build {
            tracing::debug!(repo = %commit.repo, "commit for a build-triggered repo: waiting for its build");
            self.shared.emit(DaemonEvent::Skipped { repo: commit.repo, why: "trigger = build: commits wait for a successful build".into() });
            return;
        }
        // SVN commits (and git messages without a ref) ask for a full sync.
        let refname = if commit.svn.is_some() || commit.refname.is_empty() {
            None
        } else {
            if let Err(e) = ops::validate_refname(&commit.refname) {
                return self.reject(&commit, e.to_string(), correlation_id);
            }
            Some(commit.refname.clone())
        };
        let ctx = CommitCtx { subject: commit.subject(), correlation_id };
        self.request(&commit.repo, refname, "commit", Some(ctx), Checkout::Tip);
    }

    /// A build message: a listed job's success asks each repo listing it for a
    /// fetch and the built commit's checkout (see the module docs).
    fn on_build(&mut self, build: Build) {
        let names: Vec<String> = self.config.repos.iter().filter(|(_, r)| r.trigger == Trigger::Build && r.jobs.contains(&build.job)).map(|(n, _)| n.clone()).collect();
        if names.is_empty() {
            tracing::debug!(job = ?build.job, "build of a job no repo lists; ignored");
            self.shared.stat(|s| s.ignored += 1);
            self.shared.emit(DaemonEvent::IgnoredBuild { job: build.job });
            return;
        }
        let correlation_id = build.correlation_id.clone().or_else(|| build.commit.clone());
        for name in names {
            if build.status != BuildStatus::Success {
                tracing::debug!(repo = name, job = ?build.job, status = build.status.as_str(), "build is not a success; nothing fetched");
                self.shared.emit(DaemonEvent::Skipped { repo: name, why: format!("build {} #{} is {}", one_line(&build.job), build.number, build.status.as_str()) });
                continue;
            }
            let subject =
                format!("[{name}] build {} #{} {}", one_line(&build.job), build.number, build.commit.as_deref().map(one_line).unwrap_or_else(|| "(no commit: branch tip)".into()));
            let ctx = CommitCtx { subject, correlation_id: correlation_id.clone() };
            let checkout = match &build.commit {
                // The original's text may carry no commit: fall back to the branch tip.
                None => Checkout::Tip,
                Some(c) => match ops::validate_built_commit(c) {
                    Ok(()) => Checkout::Built(vec![c.clone()]),
                    Err(e) => {
                        self.reject_build(&name, c, e.to_string(), correlation_id.clone());
                        continue;
                    }
                },
            };
            self.request(&name, None, "build", Some(ctx), checkout);
        }
    }

    fn reject_build(&mut self, repo: &str, commit: &str, why: String, correlation_id: Option<String>) {
        tracing::warn!(repo, commit = ?commit, %why, "hostile build message rejected; nothing run");
        self.shared.stat(|s| s.rejected += 1);
        self.problem(format!("problem: rejected build for repo {repo:?} commit {:?}: {}", one_line(commit), one_line(&why)), correlation_id);
        self.shared.emit(DaemonEvent::RejectedBuild { repo: repo.to_owned(), commit: commit.to_owned(), why });
    }

    fn reject(&mut self, commit: &Commit, why: String, correlation_id: Option<String>) {
        tracing::warn!(repo = ?commit.repo, refname = ?commit.refname, %why, "hostile commit message rejected; nothing run");
        self.shared.stat(|s| s.rejected += 1);
        self.problem(format!("problem: rejected commit for repo {:?} ref {:?}: {}", commit.repo, commit.refname, one_line(&why)), correlation_id);
        self.shared.emit(DaemonEvent::Rejected { repo: commit.repo.clone(), refname: commit.refname.clone(), why });
    }

    /// Publishes an event line without holding up the loop.
    fn problem(&mut self, text: String, correlation_id: Option<String>) {
        let Some(publisher) = self.shared.publisher.clone() else {
            return;
        };
        self.tasks.spawn(async move {
            if let Err(e) = publisher.event(text, correlation_id).await {
                tracing::warn!(error = %e, "publishing an event line failed");
            }
        });
    }

    /// Asks for a fetch of `name` (merged into what is pending); a request
    /// without a commit (reconcile, reload) is immediate.
    fn request(&mut self, name: &str, refname: Option<String>, trigger: &str, commit: Option<CommitCtx>, checkout: Checkout) {
        let now = Instant::now();
        let reconcile = commit.is_none();
        let request = Pending { refs: refname.map(|r| BTreeSet::from([r])), trigger: trigger.to_owned(), commit, checkout };
        let pushed = if reconcile { self.repos.push_immediate(name.to_owned(), request, now) } else { self.repos.push(name.to_owned(), request, now) };
        if !reconcile && (pushed.running || !pushed.opened) {
            self.shared.stat(|s| s.coalesced += 1);
        }
        if pushed.opened {
            tracing::debug!(repo = name, trigger, immediate = pushed.immediate, running = pushed.running, "fetch requested");
        }
    }

    /// Starts every pending request that is due and whose repo is idle.
    fn start_due(&mut self) {
        for (name, mut p) in self.repos.take_due(Instant::now()) {
            let Some(repo) = self.config.repos.get(&name).cloned() else {
                self.repos.remove(&name);
                continue;
            };
            let refname = p.refname();
            self.shared.stat(|s| *s.fetches.entry(name.clone()).or_default() += 1);
            let shared = self.shared.clone();
            let sem = self.sem.clone();
            let done = self.done_tx.clone();
            let trigger = p.trigger;
            let commit = p.commit;
            let request = Request { refname, checkout: p.checkout };
            self.tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let checkout = request.checkout.clone();
                let result = fetch_one(&shared, &name, &repo, request, &trigger, commit.as_ref()).await;
                let _ = done.send(Done { repo: name, failed: result.failed, commit: commit.clone(), checkout });
                publish(&shared, &result, commit.as_ref()).await;
            });
        }
        // Reap finished tasks so the set does not grow.
        while let Some(r) = self.tasks.try_join_next() {
            if let Err(e) = r {
                if e.is_panic() {
                    tracing::error!("a fetch task panicked: {e}");
                }
            }
        }
    }
}

/// What one operation gave: the published result and what its event lines need.
struct Ran {
    result: FetchResult,
    /// Self-healing done (each gets a `problem: … repaired` line).
    healed: Vec<String>,
    /// The verdicts on built commits.
    built: Vec<BuiltVerdict>,
    /// The operation failed (retried); a refused built commit is not a failure.
    failed: bool,
}

/// Runs one operation on a blocking thread and builds its result (emitted to
/// observers); records an accepted built commit in the state directory.
async fn fetch_one(shared: &Shared, name: &str, repo: &RepoConfig, request: Request, trigger: &str, commit: Option<&CommitCtx>) -> Ran {
    let refname = request.refname.clone();
    shared.emit(DaemonEvent::Started { repo: name.to_owned(), trigger: trigger.to_owned(), refname: refname.clone() });
    let started = std::time::Instant::now();
    let runner = shared.runner.clone();
    let stale = shared.lock_stale_after;
    let (n, r) = (name.to_owned(), repo.clone());
    let state_dir = shared.state_dir.clone();
    let outcome = match tokio::task::spawn_blocking(move || {
        let out = runner(&n, &r, &request, stale)?;
        // Record the accepted built commit (durably) before the result goes out.
        if let Some(BuiltVerdict::Accepted(c)) = out.built.last() {
            if recorded_build(&state_dir, &n).as_deref() != Some(c.as_str()) {
                if let Err(e) = record_build(&state_dir, &n, c) {
                    tracing::warn!(repo = n, error = %e, "recording the built commit failed (a reconcile may not find it)");
                }
            }
        }
        Ok::<_, FetchError>(out)
    })
    .await
    {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the fetch task failed: {e}")),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    shared.stat(|s| s.finished += 1);
    let mut result = FetchResult {
        repo: name.to_owned(),
        node: shared.node.clone(),
        mode: mode_name(repo),
        refname,
        old_head: None,
        new_head: None,
        duration_ms,
        ok: outcome.is_ok(),
        error: None,
        trigger: trigger.to_owned(),
        correlation_id: commit.and_then(|c| c.correlation_id.clone()),
    };
    let mut healed = Vec::new();
    let mut built = Vec::new();
    let failed = outcome.is_err();
    match outcome {
        Ok(o) => {
            result.old_head = o.old_head;
            result.new_head = o.new_head;
            healed = o.healed;
            built = o.built;
            tracing::info!(repo = name, trigger, changed = o.changed, actions = ?o.actions, duration_ms, "fetched");
        }
        Err(e) => {
            tracing::warn!(repo = name, trigger, error = %e, "fetch failed");
            shared.stat(|s| *s.failures.entry(name.to_owned()).or_default() += 1);
            result.error = Some(e);
        }
    }
    for v in &built {
        match v {
            BuiltVerdict::Accepted(_) => {}
            BuiltVerdict::Older { built, current } => {
                tracing::debug!(repo = name, built, current, "built commit is older than the checkout: skipped");
                shared.emit(DaemonEvent::Skipped { repo: name.to_owned(), why: format!("built commit {built} is an ancestor of the checked-out {current}") });
            }
            BuiltVerdict::Refused { commit, why } => {
                tracing::warn!(repo = name, commit, why, "built commit refused after the fetch; not checked out");
                shared.stat(|s| s.rejected += 1);
                shared.emit(DaemonEvent::RejectedBuild { repo: name.to_owned(), commit: commit.clone(), why: why.clone() });
            }
        }
    }
    // Only refusals: nothing was checked out, and the result says why.
    if !built.is_empty() && built.iter().all(|v| matches!(v, BuiltVerdict::Refused { .. })) {
        result.ok = false;
        if let Some(BuiltVerdict::Refused { commit, why }) = built.first() {
            result.error = Some(format!("rejected built commit {commit}: {why}"));
        }
    }
    shared.emit(DaemonEvent::Fetched(result.clone()));
    Ran { result, healed, built, failed }
}

/// Publishes a result on the results topic and its event lines:
/// `HOST  fetched change: SUBJECT` / `HOST  problem: ERROR` /
/// `HOST  problem: rejected build …`; a reconcile that changed nothing, or a
/// built commit older than the checkout, publishes the result only.
async fn publish(shared: &Shared, ran: &Ran, commit: Option<&CommitCtx>) {
    let Some(publisher) = &shared.publisher else {
        return;
    };
    let result = &ran.result;
    if let Err(e) = publisher.send(&shared.results_topic, result).await {
        tracing::warn!(repo = %result.repo, error = %e, "publishing the fetch result failed");
    }
    let cid = result.correlation_id.clone();
    let mut lines = Vec::new();
    for h in &ran.healed {
        lines.push(format!("problem: [{}] repaired: {}", result.repo, one_line(h)));
    }
    for v in &ran.built {
        if let BuiltVerdict::Refused { commit, why } = v {
            lines.push(format!("problem: rejected build for repo {:?} commit {:?}: {}", result.repo, one_line(commit), one_line(why)));
        }
    }
    let accepted = ran.built.is_empty() || ran.built.iter().any(|v| matches!(v, BuiltVerdict::Accepted(_)));
    match (&result.error, commit) {
        (Some(_), _) if !ran.failed => {}
        (Some(e), _) => lines.push(format!("problem: [{}] {}", result.repo, one_line(e))),
        (None, _) if !accepted => {}
        (None, Some(c)) => lines.push(format!("fetched change: {}", c.subject)),
        (None, None) if result.old_head != result.new_head => {
            lines.push(format!("fetched change: [{}] ({}) {}", result.repo, result.trigger, result.new_head.as_deref().unwrap_or("(no head)")))
        }
        (None, None) => {}
    }
    for line in lines {
        if let Err(e) = publisher.event(line, cid.clone()).await {
            tracing::warn!(repo = %result.repo, error = %e, "publishing the event line failed");
        }
    }
}

/// Fetches every configured repo once (trigger `once`), at most `max_parallel`
/// at a time, publishing each result when `publisher` is given; returns the
/// results in repo-name order (`dk-fetch --once`).
/// Without a client nothing is published.
pub async fn run_once(config: &FetchConfig, client: Option<Client>, runner: Option<Runner>) -> Vec<FetchResult> {
    let (observer, _) = broadcast::channel(16);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let shared = Arc::new(Shared {
        publisher: client.map(|c| publisher_for(config, c)),
        results_topic: config.results_topic.clone(),
        node: config.node.clone(),
        state_dir: config.state_dir.clone(),
        lock_stale_after: config.lock_stale_after,
        runner: runner.unwrap_or_else(default_runner),
        observer,
        stats,
    });
    let sem = Arc::new(Semaphore::new(config.max_parallel.max(1)));
    let mut tasks = JoinSet::new();
    for (name, repo) in &config.repos {
        let (shared, sem, name, repo) = (shared.clone(), sem.clone(), name.clone(), repo.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let request = Request { refname: None, checkout: sync_checkout(&shared.state_dir, &name, &repo) };
            let out = fetch_one(&shared, &name, &repo, request, "once", None).await;
            publish(&shared, &out, None).await;
            out.result
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    results.sort_by(|a, b| a.repo.cmp(&b.repo));
    results
}

/// Why a repo name from a message is hostile (never looked up), if it is.
pub fn hostile_repo_name(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("empty repo name".into())
    } else if name.starts_with('-') {
        Some("repo name begins with '-'".into())
    } else if name.contains("..") {
        Some("repo name contains '..'".into())
    } else if name.chars().any(char::is_control) {
        Some("repo name contains a control character (NUL, newline, …)".into())
    } else {
        None
    }
}

/// The mode's name as published in results.
fn mode_name(repo: &RepoConfig) -> String {
    repo.mode.to_string()
}

async fn recv_opt(sub: &mut Option<Subscription>) -> Option<stomp::Message> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl crate::daemon::Supervised for DaemonHandle {
    type Config = FetchConfig;
    async fn reload(&mut self, config: FetchConfig) -> Result<(), crate::daemon::ReloadError> {
        DaemonHandle::reload(self, config).await.map_err(|e| crate::daemon::ReloadError::Refused(e.to_string()))
    }
    fn is_finished(&self) -> bool {
        DaemonHandle::is_finished(self)
    }
    async fn stop(self) {
        let stats = self.shutdown().await;
        tracing::info!(?stats, "dk-fetch stopped");
    }
}

/// Starts dk-fetch on the shared daemon lifecycle ([`crate::daemon`]); it reports to
/// `options.observer` (made beforehand, so that observers miss nothing) or to a new channel.
pub async fn spawn(config: FetchConfig, client: Client, options: DaemonOptions) -> Result<crate::daemon::Daemon<FetchConfig, DaemonEvent>, DaemonError> {
    let events = options.observer.clone().unwrap_or_else(crate::daemon::event_channel);
    let handle = FetchDaemon::start_with(config, client.clone(), DaemonOptions { observer: Some(events.clone()), ..options }).await?;
    Ok(crate::daemon::Daemon::spawn_with_events("dk-fetch", events, move |ctx| crate::daemon::supervise(handle, Some(client), ctx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(ids: &[&str]) -> Pending {
        let commit = Some(CommitCtx { subject: "s".into(), correlation_id: None });
        Pending { refs: None, trigger: "build".into(), commit, checkout: Checkout::Built(ids.iter().map(|s| s.to_string()).collect()) }
    }

    #[test]
    fn a_pending_request_keeps_every_built_commit_for_the_newest_to_be_chosen() {
        let mut p = Pending { refs: None, trigger: "startup".into(), commit: None, checkout: Checkout::FetchOnly };
        p.merge(built(&["aaaaaaa"]));
        assert_eq!((p.trigger.as_str(), &p.checkout), ("build", &Checkout::Built(vec!["aaaaaaa".into()])));
        p.merge(built(&["ccccccc"]));
        p.merge(built(&["bbbbbbb", "aaaaaaa"]));
        assert_eq!(p.checkout, Checkout::Built(vec!["ccccccc".into(), "bbbbbbb".into(), "aaaaaaa".into()]));
        // A reconcile without a record changes nothing; a tip request (a success without a commit) replaces them.
        p.merge(Pending { refs: None, trigger: "interval".into(), commit: None, checkout: Checkout::FetchOnly });
        assert!(matches!(&p.checkout, Checkout::Built(v) if v.len() == 3));
        p.merge(Pending { refs: None, trigger: "build".into(), commit: Some(CommitCtx { subject: "t".into(), correlation_id: None }), checkout: Checkout::Tip });
        assert_eq!(p.checkout, Checkout::Tip);
        // Bounded.
        let mut p = built(&[]);
        for i in 0..40 {
            p.merge(built(&[&format!("{i:07x}")]));
        }
        assert!(matches!(&p.checkout, Checkout::Built(v) if v.len() == MAX_BUILT && v.last().map(String::as_str) == Some("0000027")));
    }

    #[test]
    fn recorded_builds_are_validated() {
        let dir = std::env::temp_dir().join(format!("dk-fetch-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(recorded_build(&dir, "site"), None);
        record_build(&dir, "site", &"a".repeat(40)).unwrap();
        assert_eq!(recorded_build(&dir, "site"), Some("a".repeat(40)));
        std::fs::write(built_state_file(&dir, "site"), "HEAD\n").unwrap();
        assert_eq!(recorded_build(&dir, "site"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
