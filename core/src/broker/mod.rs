//! The embedded STOMP broker behind `dk-broker`, demos and tests.
//!
//! **Not a production broker.** It is single-node and in memory: nothing
//! survives a restart, there is no clustering, no TLS and no per-destination
//! permissions. It exists so deploykit runs on one machine and so tests can
//! start a real broker in one line. A fleet uses RabbitMQ or ActiveMQ.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use deploykit::broker::{Broker, BrokerConfig};
//! let broker = Broker::start(BrokerConfig::default()).await?;
//! println!("connect to {}", broker.url()); // stomp://127.0.0.1:PORT
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`BrokerConfig`] and the users-file parser.
//! - `server`: [`bind`], the accept loop ([`serve`]) and graceful shutdown.
//! - `session`: one client connection: CONNECT, heart-beats, every client frame.
//! - `router`: topics, queues, temporary queues, subscriptions, acknowledgements.
//! - `outbox`: a session's bounded outgoing queue and the task that writes it.
//! - `message`: a published message, shared by all its deliveries.
//! - `budget`: the broker-wide byte budget and the charges messages and transactions hold on it.
//!
//! # Protocol
//! - STOMP 1.0, 1.1 and 1.2, by `CONNECT` or `STOMP`; the highest version in
//!   `accept-version` wins (none means 1.0). `CONNECTED` carries `version`,
//!   `session` (`dk-N`), `server` (`deploykit-broker/VERSION`) and `heart-beat`.
//!   Any `host` is accepted. When [`BrokerConfig::users`] is set, `login` and
//!   `passcode` must match, else ERROR and close.
//! - Heart-beats (1.1+): the broker offers [`BrokerConfig::heartbeat_ms`]
//!   (default `10000,10000`); each direction is the larger of the two sides'
//!   values, or off if either is 0. `CONNECTED` reports the negotiated pair
//!   (`server→client,client→server`), as RabbitMQ does. A client silent for
//!   twice its negotiated interval is disconnected.
//! - Destinations: `/queue/NAME` (one subscriber per message, round-robin; kept
//!   while no one listens), `/temp-queue/NAME` (private to the session, known to
//!   others as `/reply-queue/dk-N.NAME`, which `reply-to` is rewritten to; a
//!   session that uses `reply-to: /temp-queue/NAME` without subscribing gets
//!   the replies on an automatic subscription whose id is `/temp-queue/NAME`,
//!   as with RabbitMQ; deleted with the session; a message to a reply queue
//!   whose session is gone is dropped), and everything else — `/topic/…`,
//!   `/exchange/…`, plain names — is a topic: every subscriber gets every
//!   message, nothing is kept. A `/topic/` subscription may use wildcard words:
//!   `*` for one word, `#` (RabbitMQ) or `>` (ActiveMQ) for any number of them
//!   (`/topic/future.events.*`, `/topic/future.>`); other names match exactly.
//! - MESSAGE frames carry `subscription`, `message-id` (`dk-m-SEQ`, one per
//!   published message, the same for every subscriber and on every redelivery,
//!   as ActiveMQ keeps it), `ack` (1.2, client ack modes: `dk-N-TAG`, one per
//!   delivery), `redelivered:true`
//!   when applicable, `destination`, the publisher's headers (never `passcode`,
//!   `receipt` or `transaction`) and the body as sent, NULs included.
//! - Ack modes `auto`, `client` (cumulative) and `client-individual`. ACK and
//!   NACK name a delivery by `id` (1.2) or `message-id` (1.0/1.1; with a
//!   `subscription` header when one message reached several of the session's
//!   subscriptions, else the oldest delivery is meant). Unacknowledged
//!   queue messages go back to the front of their queue, with `redelivered:true`,
//!   on NACK, UNSUBSCRIBE or disconnect; NACKed topic messages are dropped.
//!   NACK in `client` mode is cumulative, like ACK.
//! - Prefetch: `prefetch-count` (RabbitMQ) or `activemq.prefetchSize` on a
//!   client-ack SUBSCRIBE bounds its unacknowledged deliveries (ignored for
//!   `auto`). Without one (or with 0) the bound is `max_queue_len`, so a client
//!   that never acknowledges cannot grow the broker without limit. Queue
//!   messages beyond it stay in the queue; topic messages wait per
//!   subscription (at most `max_queue_len`, oldest dropped).
//! - Every frame with `receipt` gets a RECEIPT once handled (DISCONNECT: then
//!   the connection closes). BEGIN/COMMIT/ABORT buffer SENDs, ACKs and NACKs
//!   until COMMIT (at most `max_queue_len` frames and
//!   [`BrokerConfig::max_transaction_bytes`] per transaction, at most
//!   [`BrokerConfig::max_open_transactions`] open per session, copied out of the
//!   read buffer and charged to the byte budget); ABORT (or a disconnect) drops them.
//! - Bad input — a malformed frame, a missing `destination`, a duplicate
//!   subscription id, an unknown ack id or transaction, any frame before
//!   CONNECT — gets an ERROR (`message`, `receipt-id` when the frame asked for
//!   a receipt, details in the body) and the connection is closed. Other
//!   clients are not affected.
//!
//! # Memory bounds and slow consumers
//! - Before login: frames of at most [`BrokerConfig::login_limits`] (8 KiB),
//!   CONNECT within [`BrokerConfig::handshake_timeout`]; at most
//!   [`BrokerConfig::max_connections`], [`BrokerConfig::max_pending_connections`]
//!   not logged in and [`BrokerConfig::max_connections_per_ip`] from one address
//!   (loopback exempt by default; beyond them: one non-blocking ERROR write, then close).
//! - A byte budget ([`BrokerConfig::max_bytes`]): every live message (queued,
//!   in a topic backlog, unacknowledged, in an outbox) and every transaction's
//!   buffer holds a charge on it until dropped. When full, the oldest messages of
//!   the largest queue nobody listens to are dropped first; if that is not enough
//!   the SEND is refused with ERROR `broker memory budget exhausted`.
//! - A queue, and a topic subscription's backlog, hold at most
//!   [`BrokerConfig::max_destination_bytes`] besides `max_queue_len` messages,
//!   with the same overflow handling as the count.
//! - Kept messages are copied out of the read buffer they arrived in, so a small
//!   message never pins a large buffer.
//! - A queue holds at most [`BrokerConfig::max_queue_len`] undelivered messages.
//!   With no subscriber, the oldest is dropped (warning logged). With
//!   subscribers that lack credit, the publisher is paused until the queue
//!   drains below the bound, for at most [`BrokerConfig::slow_consumer_timeout`],
//!   then the oldest are dropped (and later publishers do not wait again until
//!   the queue is back within its bound). A message kept in a queue nobody
//!   listens to is copied out of the read buffer it arrived in.
//! - Each session has an outbox bounded by [`BrokerConfig::max_outbox_bytes`].
//!   A publisher whose message fills a subscriber's outbox waits until the
//!   subscriber has read it down (backpressure, as RabbitMQ's flow control);
//!   a subscriber that stays full for `slow_consumer_timeout` is disconnected
//!   with a warning, so one stuck client cannot stall the others for long.
//!   A client that does not read its own receipts is paused (the broker stops
//!   reading from it) and disconnected the same way.
//!
//! # Faults for tests
//! [`BrokerHandle::kick_all`] drops every connection (a broker fault without a
//! restart); [`BrokerHandle::shutdown`] then [`Broker::start`] with
//! `listen: old_handle.local_addr()` restarts on the same port.

mod budget;
pub mod config;
mod message;
mod outbox;
mod router;
mod server;
mod session;
mod wildcard;

pub use config::{parse_users, BrokerConfig};
pub use router::BrokerStats;
pub use server::{bind, serve, spawn};

use server::Shared;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starts embedded brokers; see [`Broker::start`].
#[derive(Debug, Clone, Copy)]
pub struct Broker;

impl Broker {
    /// Binds `config.listen` and runs a broker in the background until the handle is shut down or dropped.
    pub async fn start(config: BrokerConfig) -> io::Result<BrokerHandle> {
        let listener = bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let shared = Shared::new(config);
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::run(listener, shared.clone(), stop.clone().cancelled_owned()));
        Ok(BrokerHandle { local_addr, stop, task: Some(task), shared })
    }
}

/// A running embedded broker; dropping it stops the broker (in the background).
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
    shared: Arc<Shared>,
}

impl BrokerHandle {
    /// The broker's URL for clients, `stomp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("stomp://{}", self.local_addr)
    }

    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Drops every client connection at once (a broker fault without a restart); new connections are accepted.
    pub fn kick_all(&self) {
        self.shared.kick_all();
    }

    /// Counts of connections, sessions, subscriptions, messages and bytes the broker holds.
    pub fn stats(&self) -> BrokerStats {
        let (connections, pending_connections, refused_connections) = self.shared.connection_counts();
        BrokerStats { connections, pending_connections, refused_connections, ..self.shared.router.stats() }
    }

    /// Stops accepting, closes every session (flushing what they were sent) and waits until the port is free.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "broker stopped with an error"),
                Err(e) => tracing::error!(error = %e, "broker task failed"),
            }
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
