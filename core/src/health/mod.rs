//! Health check and Prometheus metrics for every daemon (design.md: "connected,
//! subscribed, last message, last error").
//!
//! A daemon creates one [`Health`], feeds it from its event broadcast with
//! [`Health::watch`] (what counts as work and as failure) and [`Health::observe`]
//! (its labelled series, [`series`]), and serves it with [`Health::serve`]:
//!
//! - `GET /healthz`: the shared JSON shape of [`healthz`]; 503 while disconnected.
//! - `GET /metrics`: Prometheus text ([`metrics`]), every series labelled `daemon="…"`.

pub mod healthz;
pub mod metrics;
pub mod outcomes;
pub mod process;
pub mod series;

pub use healthz::Report;
pub use metrics::{Allowed, Metrics, MetricsError};

use crate::stomp::{Client, State};
use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// What a daemon event means for its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Work done (a message handled, a fetch, a deploy).
    Message,
    /// Something failed; the text is shown as `last_error`.
    Error(String),
    /// Not counted.
    Ignore,
}

/// A daemon's own `/healthz` field, computed at each request.
type Extra = (&'static str, Box<dyn Fn() -> serde_json::Value + Send + Sync>);

struct Inner {
    daemon: String,
    client: Option<Client>,
    degrades: bool,
    started: u64,
    messages: Counter,
    errors: Counter,
    last_message_ms: AtomicU64,
    last_error: Mutex<Option<(u64, String)>>,
    extra: Mutex<Vec<Extra>>,
    metrics: Metrics,
}

/// A daemon's health: connection state, counters, last message and last error, and its metrics.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("daemon", &self.inner.daemon).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Health {
    /// Health for `daemon`, whose bus connection is `client` (if it has one).
    pub fn new(daemon: impl Into<String>, client: Option<Client>) -> Health {
        Health::build(daemon.into(), client, false)
    }

    /// Health for a daemon that keeps working while the broker is away (`degraded`, HTTP 200).
    pub fn degrading(daemon: impl Into<String>, client: Option<Client>) -> Health {
        Health::build(daemon.into(), client, true)
    }

    fn build(daemon: String, client: Option<Client>, degrades: bool) -> Health {
        let metrics = Metrics::new(&daemon);
        let (messages, errors) = (Counter::default(), Counter::default());
        metrics.register("deploykit_messages", "Messages (work items) handled.", messages.clone());
        metrics.register("deploykit_errors", "Failures seen.", errors.clone());
        let h = Health {
            inner: Arc::new(Inner {
                daemon,
                client,
                degrades,
                started: now_ms(),
                messages,
                errors,
                last_message_ms: AtomicU64::new(0),
                last_error: Mutex::new(None),
                extra: Mutex::default(),
                metrics,
            }),
        };
        h.register_state();
        h
    }

    /// The gauges read from the report at each scrape, and the reconnect counter.
    fn register_state(&self) {
        let m = &self.inner.metrics;
        let weak = Arc::downgrade(&self.inner);
        let report = move || weak.upgrade().map(|inner| Health { inner }.report());
        let r = report.clone();
        m.gauge_fn("deploykit_up", "1 while /healthz says ok (0: degraded or disconnected).", move || r().map_or(0, |r| i64::from(r.status == "ok")));
        let r = report.clone();
        m.gauge_fn("deploykit_connected", "1 while the broker connection is up (and subscribed).", move || r().map_or(0, |r| i64::from(r.connected)));
        let r = report.clone();
        m.float_gauge_fn("deploykit_last_message_timestamp_seconds", "Unix time of the last message (0: none yet).", move || {
            r().and_then(|r| r.last_message_ms).unwrap_or(0) as f64 / 1000.0
        });
        let r = report.clone();
        m.float_gauge_fn("deploykit_last_error_timestamp_seconds", "Unix time of the last failure (0: none yet).", move || {
            r().and_then(|r| r.last_error_ms).unwrap_or(0) as f64 / 1000.0
        });
        let r = report;
        m.gauge_fn("deploykit_uptime_seconds", "Seconds since start.", move || r().map_or(0, |r| r.uptime_seconds as i64));
        let reconnects: Counter = Counter::default();
        m.register("deploykit_broker_reconnects", "Broker connections made after the first (reconnects).", reconnects.clone());
        if let (Some(client), Ok(rt)) = (&self.inner.client, tokio::runtime::Handle::try_current()) {
            let mut state = client.watch_state();
            rt.spawn(async move {
                let mut seen = 1;
                loop {
                    let now = *state.borrow_and_update();
                    if let State::Ready(generation) = now {
                        if generation > seen {
                            reconnects.inc_by(generation - seen);
                            seen = generation;
                        }
                    }
                    if now == State::Closed || state.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// The daemon's metrics registry (to add its own series).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Adds a field of the daemon's own to `/healthz`, computed at each request.
    pub fn extra(&self, name: &'static str, value: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        self.inner.extra.lock().unwrap_or_else(|p| p.into_inner()).push((name, Box::new(value)));
    }

    /// Counts a handled message.
    pub fn message(&self) {
        self.inner.messages.inc();
        self.inner.last_message_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Counts a failure and remembers it.
    pub fn error(&self, what: impl std::fmt::Display) {
        self.inner.errors.inc();
        *self.inner.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((now_ms(), what.to_string()));
    }

    /// Records `outcome`.
    pub fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Message => self.message(),
            Outcome::Error(e) => {
                self.message();
                self.error(e)
            }
            Outcome::Ignore => {}
        }
    }

    /// Feeds health from a daemon's event broadcast until it closes.
    pub fn watch<E: Clone + Send + 'static>(&self, events: broadcast::Receiver<E>, classify: impl Fn(&E) -> Outcome + Send + 'static) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        each(events, move |e| me.record(classify(e)))
    }

    /// Makes a daemon's event channel ([`crate::daemon::event_channel`]) and follows it:
    /// its events count for `/healthz` ([`outcomes::Reported`]) and feed `series` (one of
    /// [`series`]) until the broadcast closes. Pass the channel to the daemon's `spawn`:
    /// followed before the daemon starts, nothing it does at start-up goes uncounted.
    pub fn follow<E: outcomes::Reported + Clone + Send + 'static>(&self, series: impl Fn(&E) + Send + 'static) -> broadcast::Sender<E> {
        let events = crate::daemon::event_channel();
        self.watch(events.subscribe(), E::outcome);
        self.observe(events.subscribe(), series);
        events
    }

    /// Runs `observe` (a daemon's series, see [`series`]) on each event until the broadcast closes.
    pub fn observe<E: Clone + Send + 'static>(&self, events: broadcast::Receiver<E>, observe: impl Fn(&E) + Send + 'static) -> tokio::task::JoinHandle<()> {
        each(events, observe)
    }

    /// Whether the bus connection is up (true for daemons without one).
    pub fn connected(&self) -> bool {
        self.inner.client.as_ref().is_none_or(|c| matches!(c.state(), State::Ready(_)))
    }

    /// The current report.
    pub fn report(&self) -> Report {
        let i = &self.inner;
        let connected = self.connected();
        let broker = match i.client.as_ref().map(Client::state) {
            None => "none",
            Some(State::Ready(_)) => "ready",
            Some(State::Connecting) => "connecting",
            Some(State::Closed) => "closed",
        };
        let last_error = i.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = i.last_message_ms.load(Ordering::Relaxed);
        let extra = i.extra.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, f)| ((*k).to_owned(), f())).collect();
        Report {
            daemon: i.daemon.clone(),
            status: healthz::status(connected, i.degrades),
            connected,
            broker,
            messages: i.messages.get(),
            errors: i.errors.get(),
            last_message_ms: (last > 0).then_some(last),
            last_error_ms: last_error.as_ref().map(|(t, _)| *t),
            last_error: last_error.map(|(_, e)| e),
            uptime_seconds: now_ms().saturating_sub(i.started) / 1000,
            extra,
        }
    }

    /// The Prometheus text exposition.
    pub fn prometheus(&self) -> Result<String, MetricsError> {
        self.inner.metrics.encode()
    }

    /// The `/healthz` answer.
    pub fn healthz_response(&self) -> Response {
        let r = self.report();
        (r.status_code(), [(header::CONTENT_TYPE, "application/json")], r.json()).into_response()
    }

    /// The `/metrics` answer.
    pub fn metrics_response(&self) -> Response {
        match self.prometheus() {
            Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }

    /// A router serving `/healthz` and `/metrics` (to merge into a daemon's own).
    pub fn router<S>(&self) -> axum::Router<S> {
        axum::Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(self.clone())
    }

    /// Serves `/healthz` and `/metrics` on `addr`; returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app: axum::Router = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "health server stopped");
            }
        });
        Ok((local, task))
    }
}

/// Runs `f` on each event of `events` until it closes (lagging skips events).
fn each<E: Clone + Send + 'static>(mut events: broadcast::Receiver<E>, f: impl Fn(&E) + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => f(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::debug!(skipped = n, "health: events skipped"),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

async fn healthz(AxumState(h): AxumState<Health>) -> Response {
    h.healthz_response()
}

async fn metrics(AxumState(h): AxumState<Health>) -> Response {
    h.metrics_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let h = Health::new("dk-test", None);
        h.record(Outcome::Message);
        h.record(Outcome::Error("fetch of site failed".into()));
        h.record(Outcome::Ignore);
        h.extra("spooled", || serde_json::json!(3));
        let r = h.report();
        assert_eq!((r.messages, r.errors, r.connected, r.status, r.broker), (2, 1, true, "ok", "none"));
        assert_eq!(r.last_error.as_deref(), Some("fetch of site failed"));
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!((json["daemon"].as_str(), json["spooled"].as_u64(), json["uptime_seconds"].as_u64()), (Some("dk-test"), Some(3), Some(0)), "{json}");
        let p = h.prometheus().unwrap();
        assert!(p.contains("deploykit_messages_total{daemon=\"dk-test\"} 2\n"), "{p}");
        assert!(p.contains("deploykit_errors_total{daemon=\"dk-test\"} 1\n"), "{p}");
        assert!(p.contains("# TYPE deploykit_connected gauge\n"), "{p}");
        assert!(p.contains("deploykit_connected{daemon=\"dk-test\"} 1\n"), "{p}");
        assert!(p.contains("deploykit_up{daemon=\"dk-test\"} 1\n"), "{p}");
        assert!(p.contains("deploykit_broker_reconnects_total{daemon=\"dk-test\"} 0\n"), "{p}");
    }

    #[tokio::test]
    async fn counts_reconnects_and_reports_the_broker_state() {
        use crate::broker::{Broker, BrokerConfig};
        let broker = Broker::start(BrokerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..BrokerConfig::default() }).await.unwrap();
        let (url, listen) = (broker.url(), broker.local_addr());
        let client = Client::connect(crate::stomp::ClientConfig::new(&url).unwrap()).await.unwrap();
        let h = Health::new("dk-test", Some(client.clone()));
        assert_eq!((h.report().broker, h.report().status), ("ready", "ok"));
        broker.shutdown().await;
        let mut state = client.watch_state();
        state.wait_for(|s| *s == State::Connecting).await.unwrap();
        assert_eq!((h.report().status, h.report().status_code()), ("disconnected", StatusCode::SERVICE_UNAVAILABLE));
        assert!(h.prometheus().unwrap().contains("deploykit_up{daemon=\"dk-test\"} 0\n"));
        let _again = Broker::start(BrokerConfig { listen, ..BrokerConfig::default() }).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(20), state.wait_for(|s| matches!(s, State::Ready(2)))).await.unwrap().unwrap();
        // The counter follows the state through its own task, which exposes no event to await:
        // poll, with a bound generous enough for a loaded machine.
        for _ in 0..500 {
            if h.prometheus().unwrap().contains("deploykit_broker_reconnects_total{daemon=\"dk-test\"} 1\n") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{}", h.prometheus().unwrap());
    }

    #[test]
    fn degraded_and_disconnected_codes() {
        assert_eq!((healthz::status(true, false), healthz::status(false, true), healthz::status(false, false)), ("ok", "degraded", "disconnected"));
        let mut r = Health::new("dk-test", None).report();
        assert_eq!(r.status_code(), StatusCode::OK);
        r.status = "disconnected";
        assert_eq!(r.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
