//! Broker settings, with defaults fit for tests and demos.

use crate::stomp::Limits;
use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How the embedded broker listens, authenticates and bounds its memory.
///
/// Every field is public so a test can write
/// `BrokerConfig { max_queue_len: 10, ..BrokerConfig::default() }`.
#[derive(Clone)]
pub struct BrokerConfig {
    /// Address to bind (default `127.0.0.1:0`, an ephemeral port; bound with `SO_REUSEADDR`).
    pub listen: SocketAddr,
    /// Accepted `login` → `passcode` pairs; `None` accepts any login (the default).
    pub users: Option<HashMap<String, String>>,
    /// The broker's heart-beat offer in milliseconds, `(can send every, wants to receive every)`,
    /// as in the STOMP `heart-beat` header; `0` disables a direction (default `(10000, 10000)`).
    pub heartbeat_ms: (u32, u32),
    /// Most undelivered messages a queue holds; beyond it the oldest is dropped with a warning (default 10000).
    pub max_queue_len: usize,
    /// Bytes a session may have queued for writing before publishers to it wait (default 8 MiB).
    pub max_outbox_bytes: usize,
    /// How long a publisher waits for a full subscriber or queue before the subscriber is
    /// disconnected (or the queue's oldest messages are dropped) (default 10 s).
    pub slow_consumer_timeout: Duration,
    /// How long a new connection may take to send CONNECT (default 10 s).
    pub handshake_timeout: Duration,
    /// Frame size and header limits applied to a client once it is logged in (default 16 MiB frames).
    pub limits: Limits,
    /// Frame size and header limits until CONNECTED, so a peer that has not logged in
    /// cannot make the broker buffer much (default [`Limits::pre_login`]: 8 KiB frames).
    pub login_limits: Limits,
    /// Most open connections; beyond it a new socket is closed at once (default 1024).
    pub max_connections: usize,
    /// Most connections that have not completed CONNECT yet (default 64).
    pub max_pending_connections: usize,
    /// Most open connections from one source IP address (default 64). Loopback peers are
    /// exempt unless [`per_ip_cap_on_loopback`](Self::per_ip_cap_on_loopback) is set: on one
    /// machine every client is `127.0.0.1`, and `max_connections` still bounds them.
    pub max_connections_per_ip: usize,
    /// Applies `max_connections_per_ip` to loopback peers too (default false).
    pub per_ip_cap_on_loopback: bool,
    /// Most bytes held by all messages the broker retains (queued, waiting for credit,
    /// unacknowledged, or waiting in an outbox) and all open transactions (default 256 MiB).
    pub max_bytes: usize,
    /// Most bytes of undelivered messages one queue, or one topic subscription's backlog, holds (default 64 MiB).
    pub max_destination_bytes: usize,
    /// Most transactions one session may have open at once (default 16).
    pub max_open_transactions: usize,
    /// Most bytes of frames one transaction may buffer before COMMIT (default 16 MiB).
    pub max_transaction_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            users: None,
            heartbeat_ms: (10_000, 10_000),
            max_queue_len: 10_000,
            max_outbox_bytes: 8 * 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            login_limits: Limits::pre_login(),
            max_connections: 1024,
            max_pending_connections: 64,
            max_connections_per_ip: 64,
            per_ip_cap_on_loopback: false,
            max_bytes: 256 * 1024 * 1024,
            max_destination_bytes: 64 * 1024 * 1024,
            max_open_transactions: 16,
            max_transaction_bytes: 16 * 1024 * 1024,
        }
    }
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("listen", &self.listen)
            .field("users", &self.users.as_ref().map(|u| format!("<{} users>", u.len())))
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("max_queue_len", &self.max_queue_len)
            .field("max_outbox_bytes", &self.max_outbox_bytes)
            .field("slow_consumer_timeout", &self.slow_consumer_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("limits", &self.limits)
            .field("login_limits", &self.login_limits)
            .field("max_connections", &self.max_connections)
            .field("max_pending_connections", &self.max_pending_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("per_ip_cap_on_loopback", &self.per_ip_cap_on_loopback)
            .field("max_bytes", &self.max_bytes)
            .field("max_destination_bytes", &self.max_destination_bytes)
            .field("max_open_transactions", &self.max_open_transactions)
            .field("max_transaction_bytes", &self.max_transaction_bytes)
            .finish()
    }
}

/// Parses a users file: one `login:passcode` a line; blank lines and `#` comments are skipped.
///
/// Returns the line number (1-based) of the first malformed line as the error.
pub fn parse_users(text: &str) -> Result<HashMap<String, String>, usize> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((login, pass)) if !login.is_empty() => {
                users.insert(login.to_owned(), pass.to_owned());
            }
            _ => return Err(i + 1),
        }
    }
    Ok(users)
}
