//! The one daemon lifecycle every deploykit daemon runs on: start, reload,
//! shutdown, and death reported with its reason.
//!
//! A daemon is an async run function handed a [`Context`]: a cancellation token
//! (shutdown is passed in, as mini-redis passes its shutdown signal), a stream of
//! reload requests, and the sender of its events. [`Daemon::spawn`] runs it and
//! returns the one handle type every tool drives:
//!
//! - [`Daemon::reload`] hands a new configuration over and waits for the verdict;
//! - [`Daemon::shutdown`] cancels, waits up to a grace period, then aborts;
//! - [`Daemon::finished`] resolves with [`Ended`], why the daemon stopped — a daemon
//!   that stops on its own (the broker gone for good, a task that died) is a
//!   first-class event, so the process exits non-zero and systemd restarts it;
//! - dropping the handle cancels the daemon (the same for every daemon).
//!
//! [`supervise`] runs a daemon whose own handle predates this module: it maps
//! cancellation, reloads and the broker connection onto that handle.

use crate::stomp::{Client, State};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a daemon stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It was asked to stop and finished its work.
    Shutdown,
    /// The broker connection closed for good (reconnect attempts exhausted).
    BrokerLost(String),
    /// It stopped on its own for another reason (a task died, a listener closed).
    Failed(String),
}

impl Ended {
    /// Whether the daemon stopped because it was asked to.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, Ended::Shutdown)
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Shutdown => f.write_str("shut down"),
            Ended::BrokerLost(why) => write!(f, "the broker connection closed for good: {why}"),
            Ended::Failed(why) => write!(f, "stopped on its own: {why}"),
        }
    }
}

/// Why a reload did not take effect (the old configuration stays in force).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The daemon refused the new configuration.
    #[error("{0}")]
    Refused(String),
    /// The daemon is no longer running.
    #[error("the daemon is not running")]
    Stopped,
}

/// One reload request: the new configuration and where the verdict goes.
#[derive(Debug)]
pub struct Reload<C> {
    /// The configuration to apply.
    pub config: C,
    reply: oneshot::Sender<Result<(), ReloadError>>,
}

impl<C> Reload<C> {
    /// Reports the verdict to the caller of [`Daemon::reload`].
    pub fn answer(self, verdict: Result<(), ReloadError>) {
        let _ = self.reply.send(verdict);
    }

    /// Splits the request into its configuration and a verdict sender.
    pub fn into_parts(self) -> (C, Verdict) {
        (self.config, Verdict(self.reply))
    }
}

/// Where a reload's verdict goes, once the configuration has been taken out.
#[derive(Debug)]
pub struct Verdict(oneshot::Sender<Result<(), ReloadError>>);

impl Verdict {
    /// Reports the verdict.
    pub fn send(self, verdict: Result<(), ReloadError>) {
        let _ = self.0.send(verdict);
    }
}

/// What a daemon's run function receives: its shutdown token, its reloads, its event sender.
#[derive(Debug)]
pub struct Context<C, E> {
    /// Cancelled when the daemon must stop (finish running work, then return).
    pub cancel: CancellationToken,
    /// The daemon's events; subscribers get them through [`Daemon::subscribe`].
    pub events: broadcast::Sender<E>,
    reloads: mpsc::Receiver<Reload<C>>,
}

impl<C, E> Context<C, E> {
    /// The next reload request; pending forever once the handle is gone.
    pub async fn next_reload(&mut self) -> Reload<C> {
        match self.reloads.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }
}

/// The handle of a running daemon (the same type for every daemon).
#[derive(Debug)]
pub struct Daemon<C, E> {
    name: &'static str,
    cancel: CancellationToken,
    reloads: mpsc::Sender<Reload<C>>,
    events: broadcast::Sender<E>,
    ended: watch::Receiver<Option<Ended>>,
    task: Option<JoinHandle<()>>,
}

/// How many events a slow subscriber may lag behind before it misses some.
const EVENT_BUFFER: usize = 1024;

/// A daemon's event channel, made before the daemon starts so that observers
/// (metrics, tests) subscribe before its first event; pass it to
/// [`Daemon::spawn_with_events`] or the daemon's own `spawn`.
pub fn event_channel<E: Clone>() -> broadcast::Sender<E> {
    broadcast::channel(EVENT_BUFFER).0
}

impl<C: Send + 'static, E: Clone + Send + 'static> Daemon<C, E> {
    /// Runs `run` as the daemon called `name` and returns its handle.
    pub fn spawn<F, Fut>(name: &'static str, run: F) -> Daemon<C, E>
    where
        F: FnOnce(Context<C, E>) -> Fut,
        Fut: Future<Output = Ended> + Send + 'static,
    {
        Daemon::spawn_with_events(name, event_channel(), run)
    }

    /// [`Daemon::spawn`] with an event channel made beforehand (to subscribe before the first event).
    pub fn spawn_with_events<F, Fut>(name: &'static str, events: broadcast::Sender<E>, run: F) -> Daemon<C, E>
    where
        F: FnOnce(Context<C, E>) -> Fut,
        Fut: Future<Output = Ended> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let (reload_tx, reloads) = mpsc::channel(4);
        let (ended_tx, ended) = watch::channel(None);
        let fut = run(Context { cancel: cancel.clone(), events: events.clone(), reloads });
        let task = tokio::spawn(async move {
            let why = fut.await;
            let _ = ended_tx.send(Some(why));
        });
        Daemon { name, cancel, reloads: reload_tx, events, ended, task: Some(task) }
    }

    /// The daemon's name (`dk-fetch`, …).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Subscribes to the daemon's events.
    pub fn subscribe(&self) -> broadcast::Receiver<E> {
        self.events.subscribe()
    }

    /// Applies a new configuration; on an error the old one stays in force.
    pub async fn reload(&self, config: C) -> Result<(), ReloadError> {
        let (reply, verdict) = oneshot::channel();
        self.reloads.send(Reload { config, reply }).await.map_err(|_| ReloadError::Stopped)?;
        verdict.await.unwrap_or(Err(ReloadError::Stopped))
    }

    /// Whether the daemon has stopped.
    pub fn is_finished(&self) -> bool {
        self.ended.borrow().is_some()
    }

    /// Resolves once the daemon has stopped, with the reason.
    pub async fn finished(&self) -> Ended {
        let mut ended = self.ended.clone();
        let why = ended.wait_for(Option::is_some).await.map(|v| v.clone());
        match why {
            Ok(v) => v.unwrap_or(Ended::Shutdown),
            // The task is gone without a verdict: it panicked or was aborted.
            Err(_) => Ended::Failed("the daemon task died".into()),
        }
    }

    /// Asks the daemon to stop and waits up to `grace` for it; then aborts it.
    pub async fn shutdown(mut self, grace: Duration) -> Ended {
        self.cancel.cancel();
        match tokio::time::timeout(grace, self.finished()).await {
            Ok(why) => why,
            Err(_) => {
                if let Some(task) = self.task.take() {
                    task.abort();
                }
                Ended::Failed(format!("did not stop within {grace:?}; aborted"))
            }
        }
    }
}

impl<C, E> Drop for Daemon<C, E> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Resolves when `client` has closed for good, with the reason; pending while it lives.
pub async fn broker_lost(client: &Client) -> Ended {
    let mut state = client.watch_state();
    let _ = state.wait_for(|s| *s == State::Closed).await;
    Ended::BrokerLost("reconnect attempts exhausted".into())
}

/// A daemon handle from before this module, as [`supervise`] drives it.
pub trait Supervised: Send + 'static {
    /// The configuration a reload takes.
    type Config: Send + 'static;
    /// Applies a new configuration.
    fn reload(&mut self, config: Self::Config) -> impl Future<Output = Result<(), ReloadError>> + Send;
    /// Whether the daemon's own task has stopped.
    fn is_finished(&self) -> bool;
    /// Stops the daemon, letting running work finish.
    fn stop(self) -> impl Future<Output = ()> + Send;
}

/// How often [`supervise`] looks whether a supervised daemon's task has stopped on its own.
const LIVENESS_TICK: Duration = Duration::from_millis(500);

/// Runs a [`Supervised`] daemon under a [`Context`]: cancellation stops it,
/// reloads reach it, and it ends when the broker connection (if any) closes for
/// good or its own task stops.
pub async fn supervise<S: Supervised, E>(mut inner: S, client: Option<Client>, mut ctx: Context<S::Config, E>) -> Ended {
    let lost = async {
        match &client {
            Some(c) => broker_lost(c).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    let mut tick = tokio::time::interval(LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cancel = ctx.cancel.clone();
    let why = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ended::Shutdown,
            why = &mut lost => break why,
            reload = ctx.next_reload() => {
                let (config, verdict) = reload.into_parts();
                verdict.send(inner.reload(config).await);
            }
            _ = tick.tick() => {
                if inner.is_finished() {
                    break Ended::Failed("the daemon's task stopped".into());
                }
            }
        }
    };
    inner.stop().await;
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_and_reports() {
        let d: Daemon<u32, ()> = Daemon::spawn("t", |ctx| async move {
            ctx.cancel.cancelled().await;
            Ended::Shutdown
        });
        assert!(!d.is_finished());
        assert_eq!(d.shutdown(Duration::from_secs(5)).await, Ended::Shutdown);
    }

    #[tokio::test]
    async fn reloads_get_their_verdict() {
        let d: Daemon<u32, u32> = Daemon::spawn("t", |mut ctx| async move {
            let cancel = ctx.cancel.clone();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ended::Shutdown,
                    r = ctx.next_reload() => {
                        let ok = r.config % 2 == 0;
                        let _ = ctx.events.send(r.config);
                        r.answer(if ok { Ok(()) } else { Err(ReloadError::Refused("odd".into())) });
                    }
                }
            }
        });
        let mut events = d.subscribe();
        assert_eq!(d.reload(2).await, Ok(()));
        assert_eq!(d.reload(3).await, Err(ReloadError::Refused("odd".into())));
        assert_eq!(events.recv().await.unwrap(), 2);
        d.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn death_is_reported_and_reload_after_death_is_refused() {
        let d: Daemon<u32, ()> = Daemon::spawn("t", |_ctx| async move { Ended::Failed("boom".into()) });
        assert_eq!(d.finished().await, Ended::Failed("boom".into()));
        assert_eq!(d.reload(1).await, Err(ReloadError::Stopped));
    }

    #[tokio::test]
    async fn a_stuck_daemon_is_aborted_after_the_grace() {
        let d: Daemon<u32, ()> = Daemon::spawn("t", |_ctx| std::future::pending());
        assert!(matches!(d.shutdown(Duration::from_millis(50)).await, Ended::Failed(_)));
    }

    #[tokio::test]
    async fn dropping_the_handle_cancels() {
        let (tx, rx) = oneshot::channel();
        let d: Daemon<u32, ()> = Daemon::spawn("t", |ctx| async move {
            ctx.cancel.cancelled().await;
            let _ = tx.send(());
            Ended::Shutdown
        });
        drop(d);
        rx.await.expect("the daemon saw the cancellation");
    }
}
