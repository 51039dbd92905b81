//! The async STOMP client: one background task owns the connection, fails over
//! and reconnects, re-subscribes and confirms every subscription, keeps
//! heart-beats, and hands each subscription its own message stream.
//!
//! Guarantees:
//! - [`ClientEvent::Ready`] is emitted (and [`Client::wait_ready`] returns) only
//!   once every subscription is confirmed by a RECEIPT on the new connection, so
//!   a connected-but-unsubscribed client cannot go unnoticed; daemons reconcile
//!   on each `Ready` with `reconnect: true`.
//! - A SEND awaiting a RECEIPT when the connection drops fails with
//!   [`Error::ReceiptLost`]; it is **not** retried, because the broker may
//!   already have routed it. SENDs without a receipt that were queued but not
//!   yet written are sent after the reconnect.
//! - ACK/NACK and transactions belong to the connection they started on; after
//!   a reconnect they fail with [`Error::Invalid`] (the broker redelivers or
//!   aborts on its side).
//! - One ordered send path (`outbox.rs`): every frame a caller sends (plain or
//!   receipted SEND, ACK/NACK, transaction, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT)
//!   reaches the wire in the order the calls were made; a receipted SEND neither
//!   overtakes nor is overtaken. `send` waits once
//!   [`ClientConfig::send_buffer_bytes`] or [`ClientConfig::queue_capacity`]
//!   frames are queued, so a slow broker bounds the client's memory.
//!   [`Client::send_many`] queues many SENDs per turn of the lock, in order, with
//!   the same bound.

mod actor;
mod inbox;
mod options;
mod outbox;
mod subscription;

pub use options::{AckMode, SendOptions, SubscribeOptions};
pub use subscription::{Message, Subscription, Transaction};

use super::codec::SendParts;
use super::codec::Version;
use super::connection::Handshake;
use super::error::{Error, Result};
use super::frame::{Command, Frame, Headers};
use super::heartbeat::{HeartbeatConfig, Plan};
use super::tls::TlsConfig;
use super::url::{BrokerUrl, Secret};
use actor::Actor;
use bytes::Bytes;
use outbox::Outbox;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subscription::AckRef;
use tokio::sync::{broadcast, oneshot, watch};

/// Default for [`ClientConfig::send_buffer_bytes`]: 128 KiB, up to about 125 1 KiB messages per
/// write (against 64 KiB: ~6 % less client CPU per batched message, bench/README.md, stop 33).
pub const DEFAULT_SEND_BUFFER_BYTES: usize = 128 * 1024;

/// Everything the client needs to know to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Brokers and reconnect options.
    pub url: BrokerUrl,
    /// CONNECT details: vhost, credentials, versions, heart-beats, TLS, timeouts.
    pub handshake: Handshake,
    /// How long to wait for a RECEIPT.
    pub receipt_timeout: Duration,
    /// Frames queued for the connection task before `send` waits.
    pub queue_capacity: usize,
    /// Encoded bytes queued for the connection task before `send` waits (a slow
    /// broker bounds memory here); one frame may go past it. Default 128 KiB.
    pub send_buffer_bytes: usize,
    /// Messages a subscription holds for the application (plus what is left of the
    /// batch being read: the messages of one read are handed over together, at most
    /// 64 or this many); when it is full the client stops reading the socket (the
    /// backlog stays in TCP and the broker), so a slow reader cannot grow the heap.
    /// Default 1024.
    pub subscription_buffer: usize,
}

impl ClientConfig {
    /// A configuration for `url` with defaults (vhost `/`, heart-beats 10 s, emulated if needed).
    pub fn new(url: &str) -> Result<ClientConfig> {
        Ok(ClientConfig::from_url(url.parse()?))
    }

    /// A configuration for an already parsed URL.
    pub fn from_url(url: BrokerUrl) -> ClientConfig {
        ClientConfig {
            url,
            handshake: Handshake::default(),
            receipt_timeout: Duration::from_secs(10),
            queue_capacity: 1024,
            send_buffer_bytes: DEFAULT_SEND_BUFFER_BYTES,
            subscription_buffer: 1024,
        }
    }

    /// Sets login and passcode (overriding the URL's).
    pub fn credentials(mut self, login: impl Into<String>, passcode: impl Into<String>) -> ClientConfig {
        self.handshake.login = Some(login.into());
        self.handshake.passcode = Some(Secret::new(passcode));
        self
    }

    /// Sets the virtual host sent in the `host` header.
    pub fn vhost(mut self, vhost: impl Into<String>) -> ClientConfig {
        self.handshake.vhost = vhost.into();
        self
    }

    /// Sets heart-beat wishes.
    pub fn heartbeat(mut self, hb: HeartbeatConfig) -> ClientConfig {
        self.handshake.heartbeat = hb;
        self
    }

    /// Sets TLS settings.
    pub fn tls(mut self, tls: TlsConfig) -> ClientConfig {
        self.handshake.tls = tls;
        self
    }

    /// Restricts the offered protocol versions.
    pub fn versions(mut self, versions: &[Version]) -> ClientConfig {
        self.handshake.versions = versions.to_vec();
        self
    }
}

/// What happened to the client's connection; see [`Client::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Connected, every subscription confirmed: the client is fully working.
    Ready {
        /// The broker (password redacted).
        endpoint: String,
        /// Negotiated version.
        version: Version,
        /// Counts connections: 1 for the first, more after reconnects.
        generation: u64,
        /// Whether this follows a lost connection (messages may have been missed).
        reconnect: bool,
        /// Subscriptions confirmed on this connection.
        subscriptions: usize,
    },
    /// The connection was lost; reconnecting follows.
    Disconnected {
        /// The broker (password redacted).
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// The broker tried (password redacted).
        endpoint: String,
        /// The error.
        error: String,
        /// Attempts so far.
        attempt: u32,
    },
    /// The client stopped for good (closed, or gave up reconnecting).
    Closed {
        /// Why.
        reason: String,
    },
}

/// The client's state as a watchable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not (yet) connected, or re-subscribing.
    Connecting,
    /// Connected and subscribed; the number counts connections.
    Ready(u64),
    /// Closed for good.
    Closed,
}

/// Details of the current session, for status output.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// The broker (password redacted).
    pub endpoint: String,
    /// Negotiated version.
    pub version: Version,
    /// The broker's `server` header.
    pub server: Option<String>,
    /// The heart-beat plan in force.
    pub heartbeat: Plan,
}

/// How the connection task ended, for callers that ask afterwards.
#[derive(Clone)]
struct Closed {
    reason: String,
    /// Whether it ran out of reconnect attempts (else it was closed on purpose).
    gave_up: bool,
    /// The last connection attempt's error, when it gave up.
    last: Option<Arc<Error>>,
}

/// State shared by every handle of one client.
struct Shared {
    outbox: Arc<Outbox>,
    events: broadcast::Sender<ClientEvent>,
    state: watch::Receiver<State>,
    session: Mutex<Option<SessionInfo>>,
    closed: Mutex<Option<Closed>>,
    version: std::sync::atomic::AtomicU8,
    next_id: AtomicU64,
    receipt_timeout: Duration,
    subscription_buffer: usize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: the connection task writes what is queued and stops.
        self.outbox.handles_dropped();
    }
}

/// A STOMP client handle; cheap to clone, all clones share one connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("state", &*self.shared.state.borrow()).finish()
    }
}

impl Client {
    /// Connects (trying the failover list as configured) and returns once ready.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        // A broken TLS set-up (missing CA file, bad key) is a configuration error: report it now.
        if config.url.endpoints.iter().any(|e| e.tls) {
            super::tls::connector(&config.handshake.tls)?;
        }
        let client = Client::start(config);
        client.wait_ready().await?;
        Ok(client)
    }

    /// Starts the connection task and returns at once; see [`Client::wait_ready`].
    pub fn start(config: ClientConfig) -> Client {
        let outbox = Arc::new(Outbox::new(config.send_buffer_bytes, config.queue_capacity));
        let (events, _) = broadcast::channel(256);
        let (state_tx, state) = watch::channel(State::Connecting);
        let shared = Arc::new(Shared {
            outbox: outbox.clone(),
            events: events.clone(),
            state,
            session: Mutex::new(None),
            closed: Mutex::new(None),
            version: std::sync::atomic::AtomicU8::new(Version::V1_2 as u8),
            next_id: AtomicU64::new(1),
            receipt_timeout: config.receipt_timeout,
            subscription_buffer: config.subscription_buffer.max(1),
        });
        let actor = Actor {
            config,
            outbox,
            events,
            state: state_tx,
            shared: Arc::downgrade(&shared),
            subs: foldhash::HashMap::default(),
            pending: std::collections::HashMap::new(),
            generation: 0,
            next_receipt: 0,
            last_error: String::new(),
            current_endpoint: None,
            last_failure: None,
            stalled: None,
            filling: None,
            room_freed: false,
        };
        tokio::spawn(actor.run());
        Client { shared }
    }

    /// Waits until the client is connected and subscribed; fails if it closed or gave up.
    pub async fn wait_ready(&self) -> Result<()> {
        let mut state = self.shared.state.clone();
        loop {
            match *state.borrow_and_update() {
                State::Ready(_) => return Ok(()),
                State::Closed => return Err(self.closed_error()),
                State::Connecting => {}
            }
            if state.changed().await.is_err() {
                return Err(self.closed_error());
            }
        }
    }

    /// The error explaining why the client is closed.
    fn closed_error(&self) -> Error {
        match self.shared.closed.lock().ok().and_then(|r| r.clone()) {
            Some(Closed { reason, gave_up: true, last }) => Error::GaveUp { reason, last },
            _ => Error::Closed,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.shared.state.borrow()
    }

    /// A watch on the state, for daemons that react to reconnects.
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.shared.state.clone()
    }

    /// Subscribes to connection events (Ready, Disconnected, ConnectFailed, Closed).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// Details of the current session, if connected.
    pub fn session(&self) -> Option<SessionInfo> {
        self.shared.session.lock().ok().and_then(|s| s.clone())
    }

    /// Sends `body` to `destination` without waiting for a receipt.
    pub async fn send(&self, destination: &str, body: impl Into<Bytes>) -> Result<()> {
        static NONE: SendOptions = SendOptions::NONE;
        let body = body.into();
        if let Some(sent) = self.try_send_now(destination, &body, &NONE) {
            return sent;
        }
        self.send_parts(destination, body, &NONE, None).await
    }

    /// Sends with options: headers, receipt, persistence, content type.
    pub async fn send_with(&self, destination: &str, body: impl Into<Bytes>, opts: SendOptions) -> Result<()> {
        let body = body.into();
        if let Some(sent) = self.try_send_now(destination, &body, &opts) {
            return sent;
        }
        self.send_parts(destination, body, &opts, None).await
    }

    /// Queues a SEND without receipt at once when the outbox has room and the connection
    /// speaks STOMP 1.2 (nothing to refuse), else `None`: the usual case of `send` then
    /// builds no inner future, which costs more than the append itself.
    fn try_send_now(&self, destination: &str, body: &Bytes, opts: &SendOptions) -> Option<Result<()>> {
        if opts.receipt || self.shared.version.load(Ordering::Relaxed) != Version::V1_2 as u8 {
            return None;
        }
        let parts = send_parts(destination, opts, None, body);
        self.shared.outbox.try_send(&parts, None, || send_frame(destination, body.clone(), opts))
    }

    /// Sends each of `bodies` to `destination`, in order, with the same options: what a
    /// loop of [`send_with`](Self::send_with) does, but as many SENDs per turn of the
    /// outbox lock as there is room for, so a publisher with many messages ready pays
    /// the lock and the wake-up once per batch instead of once per message. It waits
    /// for room as `send` does (bounded memory); with `opts.receipt` only the last SEND
    /// asks for a receipt, and the broker answers it after the ones before it.
    /// On an error some of the bodies may have been queued already. The bodies are
    /// borrowed (`&[u8]`, `&str`, `Bytes`, `Vec<u8>`…) and copied as they are queued.
    ///
    /// ```no_run
    /// # async fn f(client: &deploykit::stomp::Client) -> deploykit::stomp::error::Result<()> {
    /// let events = ["started", "fetched", "deployed"];
    /// client.send_many("/topic/future.events.demo", events, &Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_many<I>(&self, destination: &str, bodies: I, opts: &SendOptions) -> Result<()>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let build = |body: Bytes| send_frame(destination, body, opts);
        if self.shared.version.load(Ordering::Relaxed) != Version::V1_2 as u8 {
            self.check_encodable(&build(Bytes::new()))?;
        }
        let parts = send_parts(destination, opts, None, &[]);
        let mut bodies = bodies.into_iter().peekable();
        if bodies.peek().is_none() {
            return Ok(());
        }
        if !opts.receipt {
            return self.shared.outbox.send_many(&parts, bodies, None, build).await;
        }
        let (reply, done) = oneshot::channel();
        self.shared.outbox.send_many(&parts, bodies, Some(reply), build).await?;
        self.await_reply(done, "RECEIPT for SEND").await
    }

    /// Queues a SEND straight into the outbox (encoded there, no frame built while
    /// connected), optionally in a transaction, and waits for its receipt if asked.
    async fn send_parts(&self, destination: &str, body: Bytes, opts: &SendOptions, transaction: Option<(&str, u64)>) -> Result<()> {
        let build = || {
            let mut frame = send_frame(destination, body.clone(), opts);
            if let Some((tx, _)) = transaction {
                frame.headers.push("transaction", tx);
            }
            frame
        };
        if self.shared.version.load(Ordering::Relaxed) != Version::V1_2 as u8 {
            self.check_encodable(&build())?;
        }
        let parts = send_parts(destination, opts, transaction.map(|(tx, _)| tx), &body);
        let pinned = transaction.map(|(_, g)| g);
        if !opts.receipt {
            if let Some(sent) = self.shared.outbox.try_send(&parts, pinned, build) {
                return sent;
            }
            return self.shared.outbox.send(&parts, None, pinned, build).await;
        }
        let (reply, done) = oneshot::channel();
        self.shared.outbox.send(&parts, Some(reply), pinned, build).await?;
        self.await_reply(done, "RECEIPT for SEND").await
    }

    /// Waits (bounded by the receipt timeout) for the connection task's answer.
    async fn await_reply(&self, done: oneshot::Receiver<Result<()>>, what: &str) -> Result<()> {
        match tokio::time::timeout(self.shared.receipt_timeout, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout { what: what.to_owned(), after: self.shared.receipt_timeout }),
        }
    }

    /// Subscribes to `destination`; returns once the broker confirmed it with a RECEIPT.
    pub async fn subscribe(&self, destination: &str, opts: SubscribeOptions) -> Result<Subscription> {
        let id = opts.id.clone().unwrap_or_else(|| format!("dk-sub-{}", self.next_id()));
        let mut frame = Frame::new(Command::Subscribe).header("id", id.clone()).header("destination", destination);
        frame.headers.push("ack", opts.ack.as_str());
        if let Some(n) = opts.prefetch {
            frame.headers.push("prefetch-count", n.to_string());
            frame.headers.push("activemq.prefetchSize", n.to_string());
        }
        for (k, v) in opts.headers.iter() {
            frame.headers.push(k, v);
        }
        let (tx, rx) = inbox::inbox(self.shared.subscription_buffer);
        let (reply, done) = oneshot::channel();
        self.shared.outbox.subscribe(id.clone(), frame, tx, opts.ack, reply).await?;
        match tokio::time::timeout(self.shared.receipt_timeout, done).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                // Not confirmed in time: the subscription stays registered and will be
                // confirmed on reconnect, but the caller is told.
                self.shared.outbox.unsubscribe(&id, None);
                return Err(Error::Timeout { what: format!("RECEIPT for SUBSCRIBE {destination}"), after: self.shared.receipt_timeout });
            }
        }
        Ok(Subscription { id, destination: destination.to_owned(), ack: opts.ack, rx, client: self.clone(), open: true })
    }

    /// Begins a transaction (BEGIN, confirmed by a RECEIPT).
    pub async fn begin(&self) -> Result<Transaction> {
        let generation = self.ready_generation()?;
        let id = format!("dk-tx-{}", self.next_id());
        let frame = Frame::new(Command::Begin).header("transaction", id.clone());
        self.submit(frame, true, Some(generation)).await?;
        Ok(Transaction { client: self.clone(), id, generation })
    }

    /// Sends DISCONNECT, waits for its receipt, and stops the client (all clones).
    pub async fn disconnect(self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        if self.shared.outbox.disconnect(reply).is_err() {
            return Ok(());
        }
        match tokio::time::timeout(self.shared.receipt_timeout, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(Error::Timeout { what: "RECEIPT for DISCONNECT".into(), after: self.shared.receipt_timeout }),
        }
    }

    /// A fresh number for ids.
    fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The generation of the current connection, or an error if not ready.
    fn ready_generation(&self) -> Result<u64> {
        match self.state() {
            State::Ready(g) => Ok(g),
            State::Closed => Err(Error::Closed),
            State::Connecting => Err(Error::Invalid("not connected right now (the client is connecting or reconnecting); await wait_ready() or a Ready event, then retry".into())),
        }
    }

    /// Queues a frame, optionally waiting for its receipt; `generation` pins it to one connection.
    async fn submit(&self, frame: Frame, receipt: bool, generation: Option<u64>) -> Result<()> {
        self.check_encodable(&frame)?;
        if !receipt {
            return self.shared.outbox.frame(frame, None, generation).await;
        }
        let (reply, done) = oneshot::channel();
        let what = format!("RECEIPT for {}", frame.command);
        self.shared.outbox.frame(frame, Some(reply), generation).await?;
        self.await_reply(done, &what).await
    }

    /// Refuses headers the negotiated version cannot carry (newlines under 1.0, CR under 1.1).
    fn check_encodable(&self, frame: &Frame) -> Result<()> {
        let v = self.shared.version.load(Ordering::Relaxed);
        if v == Version::V1_2 as u8 {
            return Ok(());
        }
        let version = if v == Version::V1_0 as u8 { Version::V1_0 } else { Version::V1_1 };
        for (name, value) in frame.headers.iter() {
            let why = if version == Version::V1_0 && (name.contains('\n') || value.contains('\n')) {
                "contains a newline"
            } else if version == Version::V1_0 && name.contains(':') {
                "name contains ':'"
            } else if name.contains('\r') || value.contains('\r') {
                "contains a carriage return"
            } else {
                continue;
            };
            return Err(super::codec::FrameError::Unencodable { name: name.to_owned(), version, why }.into());
        }
        Ok(())
    }

    /// Acknowledges (or not) a message; fails if it came on an earlier connection.
    async fn acknowledge(&self, msg: &Message, command: Command, transaction: Option<(&str, u64)>) -> Result<()> {
        let Some(ack) = &msg.ack else {
            return Err(Error::Invalid("message is from an auto-ack subscription; nothing to acknowledge".into()));
        };
        if let Some((_, g)) = transaction {
            if g != ack.generation {
                return Err(Error::Invalid("message and transaction belong to different connections".into()));
            }
        }
        if self.state() != State::Ready(ack.generation) {
            return Err(Error::Invalid("message was delivered on a connection that has since dropped; the broker will redeliver it".into()));
        }
        let mut frame = Frame { command, headers: ack.headers.clone(), body: Bytes::new() };
        if let Some((tx, _)) = transaction {
            frame.headers.push("transaction", tx);
        }
        self.submit(frame, false, Some(ack.generation)).await
    }
}

/// The encoder's view of a SEND to `destination` with `opts` (its receipt is added by the outbox).
fn send_parts<'a>(destination: &'a str, opts: &'a SendOptions, transaction: Option<&'a str>, body: &'a [u8]) -> SendParts<'a> {
    SendParts { destination, content_type: opts.content_type.as_deref(), persistent: opts.persistent, headers: &opts.headers, transaction, receipt: None, body }
}

/// Builds a SEND frame.
fn send_frame(destination: &str, body: Bytes, opts: &SendOptions) -> Frame {
    let mut frame = Frame { command: Command::Send, headers: Headers::with_capacity(2 + opts.headers.len()), body };
    frame.headers.push(bytestring::ByteString::from_static("destination"), destination);
    if let Some(ct) = &opts.content_type {
        frame.headers.push("content-type", ct.clone());
    }
    if opts.persistent {
        frame.headers.push("persistent", "true");
    }
    for (k, v) in opts.headers.iter() {
        frame.headers.push(k, v);
    }
    frame
}
