//! Health check and Prometheus metrics for every daemon (design.md: "connected,
//! subscribed, last message, last error").
//!
//! A daemon creates one [`Health`], feeds it from its event broadcast with
//! [`Health::watch`], and serves it with [`Health::serve`]:
//!
//! - `GET /healthz`: JSON; 200 while the broker connection is up, 503 otherwise.
//! - `GET /metrics`: Prometheus text format, every series labelled `daemon="…"`.

use crate::stomp::{Client, State};
use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use std::fmt::Write as _;
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

#[derive(Debug)]
struct Inner {
    daemon: String,
    client: Option<Client>,
    started: u64,
    messages: AtomicU64,
    errors: AtomicU64,
    last_message_ms: AtomicU64,
    last_error: Mutex<Option<(u64, String)>>,
}

/// A daemon's health: connection state, counters, last message and last error.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

/// The `/healthz` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The daemon (`dk-agent`, …).
    pub daemon: String,
    /// `ok` or `disconnected`.
    pub status: &'static str,
    /// Whether the broker connection is up (and every subscription confirmed).
    pub connected: bool,
    /// Messages (work items) handled.
    pub messages: u64,
    /// Failures seen.
    pub errors: u64,
    /// Unix milliseconds of the last message, if any.
    pub last_message_ms: Option<u64>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Unix milliseconds of the last failure, if any.
    pub last_error_ms: Option<u64>,
    /// Seconds since start.
    pub uptime_s: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Health {
    /// Health for `daemon`, whose bus connection is `client` (if it has one).
    pub fn new(daemon: impl Into<String>, client: Option<Client>) -> Health {
        Health {
            inner: Arc::new(Inner {
                daemon: daemon.into(),
                client,
                started: now_ms(),
                messages: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                last_message_ms: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// Counts a handled message.
    pub fn message(&self) {
        self.inner.messages.fetch_add(1, Ordering::Relaxed);
        self.inner.last_message_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Counts a failure and remembers it.
    pub fn error(&self, what: impl std::fmt::Display) {
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
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
    pub fn watch<E: Clone + Send + 'static>(&self, mut events: broadcast::Receiver<E>, classify: impl Fn(&E) -> Outcome + Send + 'static) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => me.record(classify(&e)),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::debug!(skipped = n, "health: events skipped"),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }

    /// Whether the bus connection is up (true for daemons without one).
    pub fn connected(&self) -> bool {
        self.inner.client.as_ref().is_none_or(|c| matches!(c.state(), State::Ready(_)))
    }

    /// The current report.
    pub fn report(&self) -> Report {
        let i = &self.inner;
        let connected = self.connected();
        let last_error = i.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = i.last_message_ms.load(Ordering::Relaxed);
        Report {
            daemon: i.daemon.clone(),
            status: if connected { "ok" } else { "disconnected" },
            connected,
            messages: i.messages.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            last_message_ms: (last > 0).then_some(last),
            last_error_ms: last_error.as_ref().map(|(t, _)| *t),
            last_error: last_error.map(|(_, e)| e),
            uptime_s: now_ms().saturating_sub(i.started) / 1000,
        }
    }

    /// The Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let r = self.report();
        let l = format!("daemon=\"{}\"", escape_label(&r.daemon));
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{l}}} {value}");
        };
        metric("deploykit_up", "gauge", "1 while the daemon runs.", 1.0);
        metric("deploykit_connected", "gauge", "1 while the broker connection is up.", if r.connected { 1.0 } else { 0.0 });
        metric("deploykit_messages_total", "counter", "Messages (work items) handled.", r.messages as f64);
        metric("deploykit_errors_total", "counter", "Failures seen.", r.errors as f64);
        metric("deploykit_last_message_timestamp_seconds", "gauge", "Unix time of the last message (0: none yet).", r.last_message_ms.unwrap_or(0) as f64 / 1000.0);
        metric("deploykit_last_error_timestamp_seconds", "gauge", "Unix time of the last failure (0: none yet).", r.last_error_ms.unwrap_or(0) as f64 / 1000.0);
        metric("deploykit_uptime_seconds", "gauge", "Seconds since start.", r.uptime_s as f64);
        s
    }

    /// Serves `/healthz` and `/metrics` on `addr`; returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = axum::Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(self.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "health server stopped");
            }
        });
        Ok((local, task))
    }
}

async fn healthz(AxumState(h): AxumState<Health>) -> impl IntoResponse {
    let r = h.report();
    let code = if r.connected { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&r).unwrap_or_default())
}

async fn metrics(AxumState(h): AxumState<Health>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.prometheus())
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
        let r = h.report();
        assert_eq!((r.messages, r.errors, r.connected, r.status), (2, 1, true, "ok"));
        assert_eq!(r.last_error.as_deref(), Some("fetch of site failed"));
        let p = h.prometheus();
        assert!(p.contains("deploykit_messages_total{daemon=\"dk-test\"} 2\n"), "{p}");
        assert!(p.contains("deploykit_errors_total{daemon=\"dk-test\"} 1\n"), "{p}");
        assert!(p.contains("# TYPE deploykit_connected gauge\n"), "{p}");
    }
}
