//! The dk-reprepro daemon: watch every distribution's incoming directory
//! (inotify through the `notify` crate, with periodic scans as the safety net
//! and the fallback), include each complete `.deb` one at a time, and publish
//! a package message and the original's event line for each (in legacy wire,
//! package messages only for included packages, as the original did).
//!
//! Messages go through a [`Spool`] first (written to disk, then sent with
//! receipts): a broker that is down delays them, never loses them. The spool is
//! drained after every package, on every poll tick and after every reconnect.

use super::config::{RepreproConfig, WatchMode};
use super::include::{include, IncludeOutcome};
use super::incoming::{is_candidate_name, Tracker};
use crate::message::wire::encode;
use crate::message::{Event, MessageError, Outgoing, Package, PackageAction};
use crate::outbox::Outbox;
use crate::spool::{Spool, SpoolError};
use crate::stomp::Client;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::Watcher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

/// The `source` of the event lines (the legacy topic is `future.events.repository`).
pub const EVENT_SOURCE: &str = "repository";

/// What the daemon did, for observers (tests, health output).
#[derive(Debug, Clone, PartialEq)]
pub enum RepoEvent {
    /// A file was included (`Added`) or refused (`Failed`) and moved away.
    Done {
        /// The package (its message published, except a refused one in legacy wire).
        package: Package,
        /// Where the file is now.
        moved_to: PathBuf,
    },
    /// Included or refused, but the file could not be moved away (left alone until it changes).
    Stuck {
        /// The package (its message published, except a refused one in legacy wire).
        package: Package,
        /// Why.
        error: String,
    },
    /// A failure outside the package; the file stays and is tried again after `poll_interval`.
    Retry {
        /// The file.
        file: PathBuf,
        /// Why.
        error: String,
    },
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packages included.
    pub added: u64,
    /// Packages refused (moved to `failed/`).
    pub failed: u64,
    /// Attempts put off (reprepro missing, timeout).
    pub retries: u64,
    /// Files that could not be moved away.
    pub stuck: u64,
    /// Directory scans (every incoming directory once each).
    pub scans: u64,
}

/// Why the daemon could not start or publish.
#[derive(Debug, thiserror::Error)]
pub enum RepreproError {
    /// An incoming directory cannot be read.
    #[error("incoming directory {dir}: {source}")]
    Incoming {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The spool directory cannot be used.
    #[error("spool directory {dir}: {source}")]
    Spool {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// inotify could not be set up (with `watch = "inotify"`).
    #[error("inotify on {dir}: {source}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// notify's error.
        source: notify::Error,
    },
    /// A message could not be encoded.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// Writes package messages and their event lines to the spool. In the daemon
/// they go through the shared [`Outbox`] (its drainer sends them, after every
/// reconnect too); `--once` drains the spool itself before it exits.
#[derive(Debug)]
pub struct PackageSpool {
    spool: Spool,
    client: Option<Client>,
    /// The daemon's outbox and its drainer task (aborted when this is dropped).
    outbox: Option<(Outbox, tokio::task::JoinHandle<()>)>,
    config: Arc<RepreproConfig>,
}

impl Drop for PackageSpool {
    fn drop(&mut self) {
        if let Some((_, drainer)) = &self.outbox {
            drainer.abort();
        }
    }
}

impl PackageSpool {
    /// Opens the configured spool; `client` `None` only spools (`--once` without a broker).
    pub fn open(config: Arc<RepreproConfig>, client: Option<Client>) -> Result<PackageSpool, RepreproError> {
        let spool = Spool::open(&config.spool_dir).map_err(|source| RepreproError::Spool { dir: config.spool_dir.clone(), source })?;
        Ok(PackageSpool { spool, client, outbox: None, config })
    }

    /// As [`PackageSpool::open`], with the outbox's drainer sending what is spooled (the daemon).
    pub fn start(config: Arc<RepreproConfig>, client: Option<Client>) -> Result<PackageSpool, RepreproError> {
        let mut me = PackageSpool::open(config, client)?;
        me.outbox = me.client.clone().map(|c| Outbox::start(me.spool.clone(), c));
        Ok(me)
    }

    /// Spools the package message and its event line `Package FILE / DISTRO added to repository.`.
    /// In legacy wire a refused package gets its event line only: the original
    /// published package messages for what it included, and a legacy body has no status.
    pub fn record(&self, package: &Package) -> Result<(), RepreproError> {
        let event = Event::new(EVENT_SOURCE, package.event_line());
        let mut out = Vec::with_capacity(2);
        if package.published_in(self.config.wire) {
            out.push((&self.config.packages_topic, encode(package, self.config.wire)?));
        }
        out.push((&self.config.events_topic, encode(&event, self.config.wire)?));
        let spool_err = |source| RepreproError::Spool { dir: self.config.spool_dir.clone(), source };
        match &self.outbox {
            Some((outbox, _)) => {
                let messages: Vec<(String, Outgoing)> = out.into_iter().map(|(d, m)| (d.clone(), m)).collect();
                outbox.push(&messages).map_err(spool_err)?;
            }
            None => {
                for (dest, msg) in out {
                    self.spool.push(dest, &msg.headers, &msg.body).map_err(spool_err)?;
                }
            }
        }
        Ok(())
    }

    /// Sends what the spool holds now; returns how many were sent (0 without a client).
    /// The daemon needs no call: its outbox's drainer sends as messages arrive.
    pub async fn flush(&self) -> Result<usize, SpoolError> {
        match (&self.client, &self.outbox) {
            (Some(c), None) => self.spool.drain(c).await,
            _ => Ok(0),
        }
    }

    /// Messages waiting in the spool.
    pub fn pending(&self) -> usize {
        self.spool.pending().map(|p| p.len()).unwrap_or(0)
    }
}

/// Controls a running daemon; dropping it stops the daemon (after the file in progress).
#[derive(Debug)]
pub struct RepreproHandle {
    stop: watch::Sender<bool>,
    observer: broadcast::Sender<RepoEvent>,
    stats: Arc<Mutex<Stats>>,
    inotify: bool,
    task: tokio::task::JoinHandle<()>,
}

impl RepreproHandle {
    /// What the daemon does from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RepoEvent> {
        self.observer.subscribe()
    }

    /// Whether inotify is in use (else directory scans every `poll_interval`).
    pub fn inotify(&self) -> bool {
        self.inotify
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether the daemon task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops after the file in progress (if any) and returns the counters.
    pub async fn shutdown(self) -> Stats {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Starts the daemon: checks every incoming directory, sets up inotify (per
/// `watch`), takes what is already complete, then follows changes.
pub async fn start(config: RepreproConfig, client: Option<Client>) -> Result<RepreproHandle, RepreproError> {
    start_with_events(config, client, crate::daemon::event_channel()).await
}

/// [`start`] reporting to `observer`, a channel made beforehand: what is already complete
/// at start-up is taken at once, and an observer subscribed before misses none of it.
pub async fn start_with_events(config: RepreproConfig, client: Option<Client>, observer: broadcast::Sender<RepoEvent>) -> Result<RepreproHandle, RepreproError> {
    let config = Arc::new(config);
    for d in config.dists.values() {
        std::fs::read_dir(&d.incoming).map_err(|source| RepreproError::Incoming { dir: d.incoming.clone(), source })?;
    }
    let outbox = PackageSpool::start(config.clone(), client.clone())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = match config.watch {
        WatchMode::Poll => None,
        mode => match watch_dirs(&config, tx) {
            Ok(w) => Some(w),
            Err(e) if mode == WatchMode::Inotify => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, interval = ?config.poll_interval, "inotify unavailable: scanning the incoming directories instead");
                None
            }
        },
    };
    let inotify = watcher.is_some();
    let trackers = config.dists.iter().map(|(name, d)| (name.clone(), Tracker::new(&d.incoming, config.settle, inotify))).collect();
    let (stop, stop_rx) = watch::channel(false);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let daemon = Daemon { config, outbox, trackers, observer: observer.clone(), stats: stats.clone(), stop: stop_rx };
    tracing::info!(inotify, dists = daemon.trackers.len(), "dk-reprepro watching");
    let task = tokio::spawn(daemon.run(rx, watcher));
    Ok(RepreproHandle { stop, observer, stats, inotify, task })
}

/// Includes every complete `.deb` once and returns what became of each
/// (`--once`, for cron): each directory is scanned, and scanned again after
/// `settle`, so only files unchanged (and not open for writing) in between
/// are taken. Messages are spooled and, with a client, sent.
pub async fn run_once(config: RepreproConfig, client: Option<Client>) -> Result<Vec<RepoEvent>, RepreproError> {
    let config = Arc::new(config);
    let outbox = PackageSpool::open(config.clone(), client)?;
    let mut trackers: Vec<(String, Tracker)> = config.dists.iter().map(|(n, d)| (n.clone(), Tracker::new(&d.incoming, config.settle, false))).collect();
    for (_, t) in &mut trackers {
        t.scan(Instant::now()).map_err(|source| RepreproError::Incoming { dir: t.dir().to_owned(), source })?;
    }
    tokio::time::sleep(config.settle).await;
    let mut out = Vec::new();
    for (dist, t) in &mut trackers {
        let ready = t.scan(Instant::now()).map_err(|source| RepreproError::Incoming { dir: t.dir().to_owned(), source })?;
        for file in ready {
            let ev = process(&config, &outbox, dist, &file).await;
            out.push(ev);
        }
    }
    if let Err(e) = outbox.flush().await {
        tracing::warn!(error = %e, pending = outbox.pending(), "messages stay in the spool until the broker is back");
    }
    Ok(out)
}

/// Includes one file, spools its messages, and says what happened.
async fn process(config: &RepreproConfig, outbox: &PackageSpool, dist: &str, file: &Path) -> RepoEvent {
    let Some(d) = config.dists.get(dist) else {
        return RepoEvent::Retry { file: file.to_owned(), error: format!("distribution {dist} is no longer configured") };
    };
    let ev = match include(config, dist, d, file).await {
        IncludeOutcome::Done { package, moved_to } => RepoEvent::Done { package, moved_to },
        IncludeOutcome::Stuck { package, error } => {
            tracing::error!(file = %file.display(), %error, "file left in incoming");
            RepoEvent::Stuck { package, error }
        }
        IncludeOutcome::Retry { error } => {
            tracing::error!(file = %file.display(), %error, "not included; will try again");
            return RepoEvent::Retry { file: file.to_owned(), error };
        }
    };
    let package = match &ev {
        RepoEvent::Done { package, .. } | RepoEvent::Stuck { package, .. } => package,
        RepoEvent::Retry { .. } => unreachable!("returned above"),
    };
    match package.action {
        PackageAction::Added => tracing::info!(file = %package.file, dist, "added to the repository"),
        _ => tracing::warn!(file = %package.file, dist, detail = ?package.detail, "refused by the repository"),
    }
    if let Err(e) = outbox.record(package) {
        tracing::error!(error = %e, file = %package.file, "could not spool the package message");
    }
    if let Err(e) = outbox.flush().await {
        tracing::warn!(error = %e, "publishing delayed; the messages wait in the spool");
    }
    ev
}

type NotifyRx = mpsc::UnboundedReceiver<notify::Result<notify::Event>>;

fn watch_dirs(config: &RepreproConfig, tx: mpsc::UnboundedSender<notify::Result<notify::Event>>) -> Result<notify::RecommendedWatcher, RepreproError> {
    let first = config.dists.values().next().map(|d| d.incoming.clone()).unwrap_or_default();
    let mut w = notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    })
    .map_err(|source| RepreproError::Watch { dir: first, source })?;
    for d in config.dists.values() {
        w.watch(&d.incoming, notify::RecursiveMode::NonRecursive).map_err(|source| RepreproError::Watch { dir: d.incoming.clone(), source })?;
    }
    Ok(w)
}

struct Daemon {
    config: Arc<RepreproConfig>,
    outbox: PackageSpool,
    /// (distribution, tracker), one per incoming directory.
    trackers: Vec<(String, Tracker)>,
    observer: broadcast::Sender<RepoEvent>,
    stats: Arc<Mutex<Stats>>,
    stop: watch::Receiver<bool>,
}

impl Daemon {
    async fn run(mut self, mut rx: NotifyRx, _watcher: Option<notify::RecommendedWatcher>) {
        let mut scan_due = Instant::now();
        let mut next_poll = Instant::now() + self.config.poll_interval;
        let mut notify_open = true;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let wake = scan_due.min(next_poll);
            tokio::select! {
                _ = self.stop.changed() => break,
                // Closed at once when polling (no watcher holds the sender): the branch is then disabled.
                ev = rx.recv(), if notify_open => {
                    let Some(ev) = ev else {
                        notify_open = false;
                        continue;
                    };
                    let mut now = self.on_notify(ev);
                    // Take what else is queued, then look again when a file may be ready.
                    while let Ok(ev) = rx.try_recv() {
                        now |= self.on_notify(ev);
                    }
                    let next = if now { Some(Instant::now()) } else { self.trackers.iter().filter_map(|(_, t)| t.next_check()).min() };
                    scan_due = next.map_or(scan_due, |n| n.min(scan_due));
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= next_poll {
                        next_poll = now + self.config.poll_interval;
                    }
                    self.scan_and_process().await;
                    // A check time already past only happens when a directory could not be read: wait for the next poll then.
                    let now = Instant::now();
                    scan_due = self.trackers.iter().filter_map(|(_, t)| t.next_check()).min().filter(|t| *t > now).unwrap_or(next_poll);
                }
            }
        }
        tracing::info!("dk-reprepro stopped");
    }

    fn tracker_for(&mut self, path: &Path) -> Option<&mut Tracker> {
        if !path.file_name().is_some_and(is_candidate_name) {
            return None;
        }
        let parent = path.parent()?;
        self.trackers.iter_mut().map(|(_, t)| t).find(|t| t.dir() == parent)
    }

    /// Notes what an inotify event says about candidate files; `true` when
    /// everything must be scanned now (events were lost). Other events (the
    /// directory itself opened by our own scans, metadata, removals) change nothing.
    fn on_notify(&mut self, ev: notify::Result<notify::Event>) -> bool {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "inotify error: rescanning");
                self.trackers.iter_mut().for_each(|(_, t)| t.rescan());
                return true;
            }
        };
        if ev.need_rescan() {
            tracing::warn!("inotify queue overflowed: rescanning");
            self.trackers.iter_mut().for_each(|(_, t)| t.rescan());
            return true;
        }
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                for p in &ev.paths {
                    if let Some(t) = self.tracker_for(p) {
                        t.note_closed(p);
                    }
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let Some(p) = ev.paths.last() {
                    if let Some(t) = self.tracker_for(p) {
                        t.note_closed(p);
                    }
                }
            }
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                for p in &ev.paths {
                    if let Some(t) = self.tracker_for(p) {
                        t.note_modified(p);
                    }
                }
            }
            _ => {}
        }
        false
    }

    async fn scan_and_process(&mut self) {
        if let Ok(mut s) = self.stats.lock() {
            s.scans += 1;
        }
        for i in 0..self.trackers.len() {
            let ready = {
                let (_, t) = &mut self.trackers[i];
                match t.scan(Instant::now()) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(dir = %t.dir().display(), error = %e, "cannot read the incoming directory");
                        continue;
                    }
                }
            };
            for file in ready {
                if *self.stop.borrow() {
                    return;
                }
                let dist = self.trackers[i].0.clone();
                let ev = process(&self.config, &self.outbox, &dist, &file).await;
                let t = &mut self.trackers[i].1;
                let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                match &ev {
                    RepoEvent::Done { package, .. } => {
                        t.forget(&file);
                        if package.action == PackageAction::Added {
                            stats.added += 1;
                        } else {
                            stats.failed += 1;
                        }
                    }
                    RepoEvent::Stuck { .. } => {
                        t.give_up(&file);
                        stats.stuck += 1;
                    }
                    RepoEvent::Retry { .. } => {
                        t.retry_at(&file, Instant::now() + self.config.poll_interval);
                        stats.retries += 1;
                    }
                }
                drop(stats);
                let _ = self.observer.send(ev);
            }
        }
    }
}

/// dk-reprepro under [`crate::daemon::supervise`]: a reload stops the watcher
/// (after the file in progress) and starts one with the new configuration — or,
/// if that fails, with the old one again.
struct Restarting {
    handle: Option<RepreproHandle>,
    config: RepreproConfig,
    client: Option<Client>,
    events: broadcast::Sender<RepoEvent>,
}

impl crate::daemon::Supervised for Restarting {
    type Config = RepreproConfig;
    async fn reload(&mut self, config: RepreproConfig) -> Result<(), crate::daemon::ReloadError> {
        if let Some(old) = self.handle.take() {
            old.shutdown().await;
        }
        let (handle, verdict) = match start_with_events(config.clone(), self.client.clone(), self.events.clone()).await {
            Ok(h) => {
                self.config = config;
                (Ok(h), Ok(()))
            }
            Err(e) => (start_with_events(self.config.clone(), self.client.clone(), self.events.clone()).await, Err(crate::daemon::ReloadError::Refused(e.to_string()))),
        };
        match handle {
            Ok(h) => self.handle = Some(h),
            // Neither configuration starts now (an incoming directory vanished): the daemon ends.
            Err(e) => tracing::error!(error = %e, "restarting with the old configuration failed"),
        }
        verdict
    }
    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(RepreproHandle::is_finished)
    }
    async fn stop(self) {
        if let Some(h) = self.handle {
            let stats = h.shutdown().await;
            tracing::info!(?stats, "dk-reprepro stopped");
        }
    }
}

/// Starts dk-reprepro on the shared daemon lifecycle ([`crate::daemon`]); a reload restarts the watcher.
/// It reports to `events`, made beforehand ([`crate::daemon::event_channel`]): packages already
/// complete at start-up are taken at once, and an observer subscribed before counts them.
pub async fn spawn(
    config: RepreproConfig,
    client: Option<Client>,
    events: broadcast::Sender<RepoEvent>,
) -> Result<crate::daemon::Daemon<RepreproConfig, RepoEvent>, RepreproError> {
    let handle = start_with_events(config.clone(), client.clone(), events.clone()).await?;
    tracing::info!(inotify = handle.inotify(), "dk-reprepro started");
    Ok(crate::daemon::Daemon::spawn_with_events("dk-reprepro", events, move |ctx| {
        let service = Restarting { handle: Some(handle), config, client: client.clone(), events: ctx.events.clone() };
        crate::daemon::supervise(service, client, ctx)
    }))
}
