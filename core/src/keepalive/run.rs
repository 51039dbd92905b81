//! Keeping targets alive: once (cron), or every interval until told to stop.

use super::config::{Mode, Target};
use super::BODY;
use crate::stomp::{self, Client, ClientEvent, HeartbeatConfig, SendOptions, State};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Connects, SENDs a single newline to the target's destination (waiting for the
/// broker's receipt) and disconnects, as stomp-keepalive did from cron; returns how long it took.
pub async fn send_once(target: &Target) -> Result<Duration, stomp::Error> {
    let started = Instant::now();
    let mut config = target.client_config(HeartbeatConfig::off());
    if config.url.options.startup_max_reconnect_attempts.is_none() {
        config.url.options.startup_max_reconnect_attempts = Some(1);
    }
    let client = Client::connect(config).await?;
    let sent = client.send_with(&target.destination, BODY, SendOptions { receipt: true, ..SendOptions::default() }).await;
    let _ = client.disconnect().await;
    sent.map(|()| started.elapsed())
}

/// Keeps every target alive every `interval` until `shutdown` completes: send-mode
/// targets get a single-newline SEND each interval over one held connection,
/// hold-mode targets a connection with heart-beats at `interval` (emulated when
/// the broker offers none). Connections reconnect by themselves.
pub async fn run(targets: Vec<Target>, interval: Duration, shutdown: impl Future<Output = ()>) {
    run_with_events(targets, interval, shutdown, None).await
}

/// What the `--interval` daemon reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepaliveEvent {
    /// A send-mode keepalive was sent (and receipted) or failed.
    Sent {
        /// The target's name.
        target: String,
        /// Whether the broker receipted it.
        ok: bool,
        /// How long the SEND and its receipt took, in milliseconds.
        duration_ms: u64,
    },
    /// A target's connection came up (`reconnect`: after a loss) or went down.
    Connection {
        /// The target's name.
        target: String,
        /// Whether it is up now.
        up: bool,
        /// Whether this is a reconnect (up after a loss).
        reconnect: bool,
    },
}

/// [`run`], reporting each keepalive on `events`.
pub async fn run_with_events(targets: Vec<Target>, interval: Duration, shutdown: impl Future<Output = ()>, events: Option<broadcast::Sender<KeepaliveEvent>>) {
    let mut clients = Vec::with_capacity(targets.len());
    let mut tasks = tokio::task::JoinSet::new();
    for target in targets {
        let mut config = target.client_config(HeartbeatConfig::every(interval));
        // A daemon keeps trying: a broker that is down now may be back at the next interval.
        config.url.options.startup_max_reconnect_attempts = None;
        config.url.options.max_reconnect_attempts = None;
        let client = Client::start(config);
        clients.push(client.clone());
        tasks.spawn(watch_events(target.name.clone(), client.clone(), interval, events.clone()));
        if target.mode == Mode::Send {
            tasks.spawn(send_loop(target, client, interval, events.clone()));
        }
    }
    shutdown.await;
    tasks.abort_all();
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.disconnect()).await;
    }
}

/// A single-newline SEND every `interval` while connected.
async fn send_loop(target: Target, client: Client, interval: Duration, events: Option<broadcast::Sender<KeepaliveEvent>>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !matches!(client.state(), State::Ready(_)) {
            continue;
        }
        let started = Instant::now();
        let sent = client.send_with(&target.destination, BODY, SendOptions { receipt: true, ..SendOptions::default() }).await;
        if let Some(tx) = &events {
            let _ = tx.send(KeepaliveEvent::Sent { target: target.name.clone(), ok: sent.is_ok(), duration_ms: started.elapsed().as_millis() as u64 });
        }
        match sent {
            Ok(()) => {
                tracing::debug!(target = %target.name, destination = %target.destination, "keepalive sent")
            }
            Err(e) => {
                tracing::warn!(target = %target.name, destination = %target.destination, error = %e, "keepalive failed")
            }
        }
    }
}

/// Logs connection changes, and warns when the broker negotiated heart-beats slower than asked.
async fn watch_events(name: String, client: Client, interval: Duration, report: Option<broadcast::Sender<KeepaliveEvent>>) {
    let mut events = client.events();
    let tell = |up: bool, reconnect: bool| {
        if let Some(tx) = &report {
            let _ = tx.send(KeepaliveEvent::Connection { target: name.clone(), up, reconnect });
        }
    };
    if matches!(client.state(), State::Ready(_)) {
        tell(true, false);
    }
    loop {
        match events.recv().await {
            Ok(ClientEvent::Ready { endpoint, generation, reconnect, .. }) => {
                tell(true, reconnect);
                let plan = client.session().map(|s| s.heartbeat);
                let every = plan.as_ref().and_then(|p| p.send_every);
                tracing::info!(target = %name, %endpoint, generation, heartbeat = ?every, emulated = plan.as_ref().is_some_and(|p| p.emulated), "connected");
                if every.is_some_and(|e| e > interval) {
                    tracing::warn!(target = %name, "the broker negotiated heart-beats every {:?}, slower than the interval {interval:?}; hold mode may not keep this path open (use send mode)", every.unwrap_or_default());
                }
            }
            Ok(ClientEvent::Disconnected { endpoint, reason }) => {
                tell(false, false);
                tracing::warn!(target = %name, %endpoint, %reason, "connection lost; reconnecting")
            }
            Ok(ClientEvent::ConnectFailed { endpoint, error, attempt }) => tracing::warn!(target = %name, %endpoint, %error, attempt, "cannot connect"),
            Ok(ClientEvent::Closed { reason }) => {
                tell(false, false);
                tracing::error!(target = %name, %reason, "connection closed for good");
                return;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What a dk-keepalive reload takes: the targets and the interval.
pub type Plan = (Vec<Target>, Duration);

/// Starts the `--interval` daemon on the shared lifecycle ([`crate::daemon`]); a
/// reload restarts the connections with the new targets and interval. Its
/// connections keep reconnecting: a keepalive outlives the broker's absences.
/// Its events go to `events`, made by the caller so that observers (metrics)
/// subscribe before the first connection is reported.
pub fn spawn(targets: Vec<Target>, interval: Duration, events: broadcast::Sender<KeepaliveEvent>) -> crate::daemon::Daemon<Plan, KeepaliveEvent> {
    crate::daemon::Daemon::spawn_with_events("dk-keepalive", events, move |mut ctx| async move {
        let (mut targets, mut interval) = (targets, interval);
        let cancel = ctx.cancel.clone();
        loop {
            tracing::info!(targets = targets.len(), ?interval, "keeping targets alive");
            let round = cancel.child_token();
            let task = tokio::spawn(run_with_events(targets.clone(), interval, round.clone().cancelled_owned(), Some(ctx.events.clone())));
            let reload = tokio::select! {
                _ = cancel.cancelled() => None,
                r = ctx.next_reload() => Some(r),
            };
            round.cancel();
            let _ = task.await;
            match reload {
                None => return crate::daemon::Ended::Shutdown,
                Some(r) => {
                    let ((t, i), verdict) = r.into_parts();
                    (targets, interval) = (t, i);
                    verdict.send(Ok(()));
                }
            }
        }
    })
}
