//! The one `/healthz` JSON shape every daemon answers with, and its status code.
//!
//! ```json
//! {"daemon":"dk-fetch","status":"ok","connected":true,"broker":"ready","messages":3,"errors":0,
//!  "last_message_ms":1764740000000,"last_error":null,"last_error_ms":null,"uptime_seconds":42}
//! ```
//!
//! `status` is `ok`; `degraded` when the broker is away but the daemon still does
//! its job (dk-webhook spools, dk-web shows history); `disconnected` otherwise
//! (HTTP 503). Daemons add their own fields (dk-webhook `spooled`, dk-web `deploys_running`).

use axum::http::StatusCode;
use serde::Serialize;

/// The `/healthz` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The daemon (`dk-agent`, …).
    pub daemon: String,
    /// `ok`, `degraded` (working without the broker) or `disconnected`.
    pub status: &'static str,
    /// Whether the broker connection is up (and every subscription confirmed).
    pub connected: bool,
    /// The broker connection: `ready`, `connecting`, `closed`, or `none` (no broker).
    pub broker: &'static str,
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
    pub uptime_seconds: u64,
    /// The daemon's own fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// 200 while `ok` or `degraded`, 503 while `disconnected`.
    pub fn status_code(&self) -> StatusCode {
        if self.status == "disconnected" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }

    /// The JSON text (with a final newline).
    pub fn json(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// The status for a connection state; `degrades` when the daemon works on without the broker.
pub fn status(connected: bool, degrades: bool) -> &'static str {
    match (connected, degrades) {
        (true, _) => "ok",
        (false, true) => "degraded",
        (false, false) => "disconnected",
    }
}
