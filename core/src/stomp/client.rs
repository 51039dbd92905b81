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

use super::codec::{Heartbeat, Incoming, Version};
use super::connection::{self, Connection, Handshake};
use super::error::{Error, Result};
use super::frame::{Command, Frame, Headers};
use super::heartbeat::{self, HeartbeatConfig, KeepaliveWire, Plan};
use super::tls::TlsConfig;
use super::url::{BrokerUrl, Secret};
use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

/// How a subscription acknowledges messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// The broker considers a message acknowledged once sent.
    #[default]
    Auto,
    /// Cumulative: an ACK acknowledges this and every earlier message of the subscription.
    Client,
    /// Each message is acknowledged on its own.
    ClientIndividual,
}

impl AckMode {
    /// The `ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }

    /// Parses `auto`, `client` or `client-individual`.
    pub fn parse(s: &str) -> Option<AckMode> {
        match s {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }
}

/// Options for [`Client::subscribe`].
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Acknowledgement mode.
    pub ack: AckMode,
    /// Most unacknowledged messages in flight (sent as `prefetch-count` and `activemq.prefetchSize`).
    pub prefetch: Option<u32>,
    /// Subscription id; generated when unset.
    pub id: Option<String>,
    /// Extra SUBSCRIBE headers (e.g. `selector`, `durable`).
    pub headers: Headers,
}

/// Options for [`Client::send_with`].
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Extra headers.
    pub headers: Headers,
    /// Wait for the broker's RECEIPT before returning.
    pub receipt: bool,
    /// Ask the broker to persist the message (`persistent:true`).
    pub persistent: bool,
    /// `content-type` header.
    pub content_type: Option<String>,
}

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
}

impl ClientConfig {
    /// A configuration for `url` with defaults (vhost `/`, heart-beats 10 s, emulated if needed).
    pub fn new(url: &str) -> Result<ClientConfig> {
        Ok(ClientConfig::from_url(url.parse()?))
    }

    /// A configuration for an already parsed URL.
    pub fn from_url(url: BrokerUrl) -> ClientConfig {
        ClientConfig { url, handshake: Handshake::default(), receipt_timeout: Duration::from_secs(10), queue_capacity: 1024 }
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

/// A message delivered to a subscription.
#[derive(Debug, Clone)]
pub struct Message {
    /// The destination it was sent to.
    pub destination: String,
    /// All MESSAGE headers.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
    ack: Option<AckRef>,
}

/// What an ACK/NACK of a message needs.
#[derive(Debug, Clone)]
struct AckRef {
    headers: Headers,
    generation: u64,
}

impl Message {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// Whether the body is the original deploykit's keepalive (a single newline).
    pub fn is_keepalive(&self) -> bool {
        &self.body[..] == b"\n"
    }
}

/// A waiter for a RECEIPT.
enum Waiter {
    /// A frame whose sender waits for the outcome.
    Frame(oneshot::Sender<Result<()>>),
    /// A subscription to confirm; survives reconnects.
    Subscribe(String),
    /// DISCONNECT.
    Disconnect,
}

/// A request to the connection task.
enum Cmd {
    Frame { frame: Frame, reply: Option<oneshot::Sender<Result<()>>>, generation: Option<u64> },
    Subscribe { id: String, frame: Frame, tx: mpsc::UnboundedSender<Message>, ack: AckMode, reply: oneshot::Sender<Result<()>> },
    Unsubscribe { id: String, reply: Option<oneshot::Sender<Result<()>>> },
    Disconnect { reply: oneshot::Sender<Result<()>> },
}

/// A registered subscription, re-sent after every reconnect.
struct SubEntry {
    frame: Frame,
    tx: mpsc::UnboundedSender<Message>,
    ack: AckMode,
    confirmed: bool,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// State shared by every handle of one client.
struct Shared {
    cmd_tx: mpsc::Sender<Cmd>,
    events: broadcast::Sender<ClientEvent>,
    state: watch::Receiver<State>,
    session: Mutex<Option<SessionInfo>>,
    closed_reason: Mutex<Option<String>>,
    version: std::sync::atomic::AtomicU8,
    next_id: AtomicU64,
    receipt_timeout: Duration,
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
        let (cmd_tx, cmd_rx) = mpsc::channel(config.queue_capacity.max(1));
        let (events, _) = broadcast::channel(256);
        let (state_tx, state) = watch::channel(State::Connecting);
        let shared = Arc::new(Shared {
            cmd_tx,
            events: events.clone(),
            state,
            session: Mutex::new(None),
            closed_reason: Mutex::new(None),
            version: std::sync::atomic::AtomicU8::new(Version::V1_2 as u8),
            next_id: AtomicU64::new(1),
            receipt_timeout: config.receipt_timeout,
        });
        let actor = Actor {
            config,
            cmd_rx,
            events,
            state: state_tx,
            shared: Arc::downgrade(&shared),
            subs: HashMap::new(),
            pending: HashMap::new(),
            backlog: VecDeque::new(),
            generation: 0,
            next_receipt: 0,
            last_error: String::new(),
            current_endpoint: None,
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
        match self.shared.closed_reason.lock().ok().and_then(|r| r.clone()) {
            Some(reason) if reason.starts_with("gave up") => Error::GaveUp { last: reason },
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
        self.send_with(destination, body, SendOptions::default()).await
    }

    /// Sends with options: headers, receipt, persistence, content type.
    pub async fn send_with(&self, destination: &str, body: impl Into<Bytes>, opts: SendOptions) -> Result<()> {
        let frame = send_frame(destination, body.into(), &opts);
        self.submit(frame, opts.receipt, None).await
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
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, done) = oneshot::channel();
        self.command(Cmd::Subscribe { id: id.clone(), frame, tx, ack: opts.ack, reply }).await?;
        match tokio::time::timeout(self.shared.receipt_timeout, done).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                // Not confirmed in time: the subscription stays registered and will be
                // confirmed on reconnect, but the caller is told.
                let _ = self.command(Cmd::Unsubscribe { id: id.clone(), reply: None }).await;
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
        if self.command(Cmd::Disconnect { reply }).await.is_err() {
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
            State::Connecting => Err(Error::Invalid("not connected".into())),
        }
    }

    /// Queues a command for the connection task.
    async fn command(&self, cmd: Cmd) -> Result<()> {
        self.shared.cmd_tx.send(cmd).await.map_err(|_| Error::Closed)
    }

    /// Queues a frame, optionally waiting for its receipt; `generation` pins it to one connection.
    async fn submit(&self, frame: Frame, receipt: bool, generation: Option<u64>) -> Result<()> {
        self.check_encodable(&frame)?;
        if !receipt {
            return self.command(Cmd::Frame { frame, reply: None, generation }).await;
        }
        let (reply, done) = oneshot::channel();
        let what = format!("RECEIPT for {}", frame.command);
        self.command(Cmd::Frame { frame, reply: Some(reply), generation }).await?;
        match tokio::time::timeout(self.shared.receipt_timeout, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout { what, after: self.shared.receipt_timeout }),
        }
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
            return Err(Error::Invalid(
                "message was delivered on a connection that has since dropped; the broker will redeliver it".into(),
            ));
        }
        let mut frame = Frame { command, headers: ack.headers.clone(), body: Bytes::new() };
        if let Some((tx, _)) = transaction {
            frame.headers.push("transaction", tx);
        }
        self.submit(frame, false, Some(ack.generation)).await
    }
}

/// Builds a SEND frame.
fn send_frame(destination: &str, body: Bytes, opts: &SendOptions) -> Frame {
    let mut frame = Frame { command: Command::Send, headers: Headers::with_capacity(2 + opts.headers.len()), body };
    frame.headers.push("destination", destination);
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

/// A subscription's message stream; dropping it unsubscribes.
pub struct Subscription {
    id: String,
    destination: String,
    ack: AckMode,
    rx: mpsc::UnboundedReceiver<Message>,
    client: Client,
    open: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("destination", &self.destination).finish()
    }
}

impl Subscription {
    /// The next message, or `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The subscription id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The destination.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The acknowledgement mode.
    pub fn ack_mode(&self) -> AckMode {
        self.ack
    }

    /// Acknowledges `msg` (and, in `client` mode, every earlier one).
    pub async fn ack(&self, msg: &Message) -> Result<()> {
        self.client.acknowledge(msg, Command::Ack, None).await
    }

    /// Rejects `msg`; the broker may redeliver it (STOMP 1.1 and later).
    pub async fn nack(&self, msg: &Message) -> Result<()> {
        if self.client.session().map(|s| s.version) == Some(Version::V1_0) {
            return Err(Error::Invalid("NACK does not exist in STOMP 1.0".into()));
        }
        self.client.acknowledge(msg, Command::Nack, None).await
    }

    /// Unsubscribes and waits for the broker's receipt.
    pub async fn unsubscribe(mut self) -> Result<()> {
        self.open = false;
        let (reply, done) = oneshot::channel();
        self.client.command(Cmd::Unsubscribe { id: self.id.clone(), reply: Some(reply) }).await?;
        match tokio::time::timeout(self.client.shared.receipt_timeout, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout { what: "RECEIPT for UNSUBSCRIBE".into(), after: self.client.shared.receipt_timeout }),
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.open {
            let _ = self.client.shared.cmd_tx.try_send(Cmd::Unsubscribe { id: self.id.clone(), reply: None });
        }
    }
}

/// An open transaction; SENDs and ACKs through it take effect on [`Transaction::commit`].
#[derive(Debug)]
pub struct Transaction {
    client: Client,
    id: String,
    generation: u64,
}

impl Transaction {
    /// The transaction id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends within the transaction.
    pub async fn send_with(&self, destination: &str, body: impl Into<Bytes>, opts: SendOptions) -> Result<()> {
        let mut frame = send_frame(destination, body.into(), &opts);
        frame.headers.push("transaction", self.id.clone());
        self.client.submit(frame, opts.receipt, Some(self.generation)).await
    }

    /// Sends within the transaction with default options.
    pub async fn send(&self, destination: &str, body: impl Into<Bytes>) -> Result<()> {
        self.send_with(destination, body, SendOptions::default()).await
    }

    /// Acknowledges a message within the transaction.
    pub async fn ack(&self, msg: &Message) -> Result<()> {
        self.client.acknowledge(msg, Command::Ack, Some((&self.id, self.generation))).await
    }

    /// Commits, confirmed by a RECEIPT.
    pub async fn commit(self) -> Result<()> {
        let frame = Frame::new(Command::Commit).header("transaction", self.id.clone());
        self.client.submit(frame, true, Some(self.generation)).await
    }

    /// Aborts, confirmed by a RECEIPT.
    pub async fn abort(self) -> Result<()> {
        let frame = Frame::new(Command::Abort).header("transaction", self.id.clone());
        self.client.submit(frame, true, Some(self.generation)).await
    }
}

/// Why the connected loop ended.
enum Exit {
    /// The connection broke; reconnect.
    Lost(String),
    /// Closed on purpose; stop.
    Closed(String),
}

/// The connection task.
struct Actor {
    config: ClientConfig,
    cmd_rx: mpsc::Receiver<Cmd>,
    events: broadcast::Sender<ClientEvent>,
    state: watch::Sender<State>,
    shared: std::sync::Weak<Shared>,
    subs: HashMap<String, SubEntry>,
    pending: HashMap<String, Waiter>,
    backlog: VecDeque<Cmd>,
    generation: u64,
    next_receipt: u64,
    last_error: String,
    current_endpoint: Option<usize>,
}

/// Sleeps until `deadline`, or forever if there is none.
async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    /// Connects, serves, reconnects, until closed or out of attempts.
    async fn run(mut self) {
        // Connections that fail right after the handshake (a refused SUBSCRIBE, an
        // ERROR at once) count as failures too, so such a broker is not hammered.
        let mut unstable: u32 = 0;
        let reason = loop {
            if unstable > 0 {
                let delay = self.config.url.options.delay(unstable - 1);
                debug!(?delay, unstable, "last connection failed quickly; backing off");
                if !self.pause(delay).await {
                    break format!("closed while reconnecting: {}", self.last_error);
                }
            }
            let Some(mut conn) = self.connect().await else {
                break format!("gave up reconnecting: {}", self.last_error);
            };
            match self.resubscribe(&mut conn).await {
                Ok(()) => {}
                Err(Exit::Lost(why)) => {
                    self.lost(&conn.endpoint, why);
                    unstable = unstable.saturating_add(1);
                    continue;
                }
                Err(Exit::Closed(why)) => break why,
            }
            let served = Instant::now();
            match self.serve(&mut conn).await {
                Exit::Lost(why) => self.lost(&conn.endpoint, why),
                Exit::Closed(why) => break why,
            }
            unstable = if served.elapsed() < Duration::from_secs(1) { unstable.saturating_add(1) } else { 0 };
        };
        self.close(reason);
    }

    /// Tries the failover list with backoff; `None` when the attempt limit is reached or the client closed.
    async fn connect(&mut self) -> Option<Connection> {
        let opts = self.config.url.options.clone();
        let limit = if self.generation == 0 { opts.startup_max_reconnect_attempts.or(opts.max_reconnect_attempts) } else { opts.max_reconnect_attempts };
        let n = self.config.url.endpoints.len();
        // After a loss, start with the broker after the one that dropped us: a dead
        // path should not cost a handshake timeout before the next broker is tried.
        let first = self.current_endpoint.map_or(0, |i| (i + 1) % n);
        let mut order: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
        let mut attempt: u32 = 0;
        let mut pass: u32 = 0;
        loop {
            if opts.randomize {
                fastrand::shuffle(&mut order);
            }
            for &i in &order {
                let endpoint = self.config.url.endpoints[i].clone();
                let handshake = self.config.handshake.clone();
                let attempt_fut = connection::open(&endpoint, &handshake);
                tokio::pin!(attempt_fut);
                let result = loop {
                    tokio::select! {
                        r = &mut attempt_fut => break r,
                        cmd = self.cmd_rx.recv(), if self.backlog.len() < self.config.queue_capacity => {
                            if !self.offline_command(cmd) { return None; }
                        }
                    }
                };
                match result {
                    Ok(conn) => {
                        self.current_endpoint = Some(i);
                        return Some(conn);
                    }
                    Err(e) => {
                        attempt += 1;
                        self.last_error = e.to_string();
                        warn!(endpoint = %endpoint, attempt, error = %e, "STOMP connect failed");
                        let _ = self.events.send(ClientEvent::ConnectFailed { endpoint: endpoint.to_string(), error: e.to_string(), attempt });
                        if matches!(limit, Some(l) if attempt >= l) {
                            return None;
                        }
                    }
                }
            }
            let delay = opts.delay(pass);
            pass = pass.saturating_add(1);
            debug!(?delay, "all brokers tried; backing off");
            if !self.pause(delay).await {
                return None;
            }
        }
    }

    /// Waits `delay` while still taking commands; false if the client is closing.
    async fn pause(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(deadline) => return true,
                cmd = self.cmd_rx.recv(), if self.backlog.len() < self.config.queue_capacity => {
                    if !self.offline_command(cmd) { return false; }
                }
            }
        }
    }

    /// Handles a command while disconnected; false means the client is closing.
    fn offline_command(&mut self, cmd: Option<Cmd>) -> bool {
        match cmd {
            None => {
                self.last_error = "all client handles dropped".into();
                false
            }
            Some(Cmd::Disconnect { reply }) => {
                let _ = reply.send(Ok(()));
                self.last_error = "closed by the application".into();
                false
            }
            Some(Cmd::Subscribe { id, frame, tx, ack, reply }) => {
                self.register_sub(id, frame, tx, ack, reply);
                true
            }
            Some(Cmd::Unsubscribe { id, reply }) => {
                self.subs.remove(&id);
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
                true
            }
            Some(cmd @ Cmd::Frame { .. }) => {
                self.backlog.push_back(cmd);
                true
            }
        }
    }

    /// Adds a subscription to the registry (sent on the next connection or now).
    fn register_sub(&mut self, id: String, frame: Frame, tx: mpsc::UnboundedSender<Message>, ack: AckMode, reply: oneshot::Sender<Result<()>>) {
        if self.subs.contains_key(&id) {
            let _ = reply.send(Err(Error::Invalid(format!("subscription id {id:?} is already in use"))));
            return;
        }
        self.subs.insert(id, SubEntry { frame, tx, ack, confirmed: false, waiters: vec![reply] });
    }

    /// Records a lost connection and fails receipts that can no longer come.
    fn lost(&mut self, endpoint: &str, why: String) {
        warn!(endpoint, reason = %why, "STOMP connection lost");
        let _ = self.state.send(State::Connecting);
        if let Some(shared) = self.shared.upgrade() {
            if let Ok(mut s) = shared.session.lock() {
                *s = None;
            }
        }
        for (receipt, waiter) in self.pending.drain() {
            if let Waiter::Frame(tx) = waiter {
                let _ = tx.send(Err(Error::ReceiptLost { receipt }));
            }
        }
        let _ = self.events.send(ClientEvent::Disconnected { endpoint: endpoint.to_owned(), reason: why.clone() });
        self.last_error = why;
    }

    /// Stops for good: fails everything waiting and publishes Closed.
    fn close(mut self, reason: String) {
        info!(reason = %reason, "STOMP client closed");
        for (_, waiter) in self.pending.drain() {
            if let Waiter::Frame(tx) = waiter {
                let _ = tx.send(Err(Error::Closed));
            }
        }
        for (_, sub) in self.subs.drain() {
            for w in sub.waiters {
                let _ = w.send(Err(Error::GaveUp { last: reason.clone() }));
            }
        }
        for cmd in self.backlog.drain(..) {
            if let Cmd::Frame { reply: Some(r), .. } = cmd {
                let _ = r.send(Err(Error::Closed));
            }
        }
        if let Some(shared) = self.shared.upgrade() {
            if let Ok(mut r) = shared.closed_reason.lock() {
                *r = Some(reason.clone());
            }
        }
        let _ = self.state.send(State::Closed);
        let _ = self.events.send(ClientEvent::Closed { reason });
    }

    /// A fresh receipt id.
    fn receipt_id(&mut self, kind: &str) -> String {
        self.next_receipt += 1;
        format!("dk-{kind}-{}", self.next_receipt)
    }

    /// Re-sends every SUBSCRIBE with a receipt and waits for all of them.
    async fn resubscribe(&mut self, conn: &mut Connection) -> Result<(), Exit> {
        self.generation += 1;
        let plan = heartbeat::negotiate(&self.config.handshake.heartbeat, conn.server_heartbeat);
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        for id in ids {
            let receipt = self.receipt_id("sub");
            let mut frame = self.subs[&id].frame.clone();
            frame.headers.set("receipt", receipt.clone());
            self.pending.insert(receipt, Waiter::Subscribe(id));
            if let Err(e) = conn.framed.feed(&frame).await {
                return Err(Exit::Lost(format!("writing SUBSCRIBE: {e}")));
            }
        }
        if let Err(e) = connection::flush(&mut conn.framed).await {
            return Err(Exit::Lost(format!("writing SUBSCRIBE: {e}")));
        }
        let deadline = Instant::now() + self.config.receipt_timeout;
        while self.pending.values().any(|w| matches!(w, Waiter::Subscribe(_))) {
            tokio::select! {
                item = conn.framed.next() => match item {
                    Some(Ok(Incoming::Frame(f))) => {
                        if let Err(exit) = self.incoming(conn, f) { return Err(exit); }
                    }
                    Some(Ok(Incoming::Heartbeat)) => {}
                    Some(Err(e)) => return Err(Exit::Lost(format!("protocol error: {e}"))),
                    None => return Err(Exit::Lost("connection closed while re-subscribing".into())),
                },
                _ = sleep_until(deadline) => {
                    return Err(Exit::Lost(format!("no RECEIPT for SUBSCRIBE within {:?}", self.config.receipt_timeout)));
                }
            }
        }
        let reconnect = self.generation > 1;
        info!(endpoint = %conn.endpoint, version = %conn.version, generation = self.generation, subscriptions = self.subs.len(), emulated_heartbeats = plan.emulated, "STOMP client ready");
        if let Some(shared) = self.shared.upgrade() {
            if let Ok(mut s) = shared.session.lock() {
                *s = Some(SessionInfo { endpoint: conn.endpoint.clone(), version: conn.version, server: conn.server.clone(), heartbeat: plan });
            }
            shared.version.store(conn.version as u8, Ordering::Relaxed);
        }
        let _ = self.state.send(State::Ready(self.generation));
        let _ = self.events.send(ClientEvent::Ready {
            endpoint: conn.endpoint.clone(),
            version: conn.version,
            generation: self.generation,
            reconnect,
            subscriptions: self.subs.len(),
        });
        Ok(())
    }

    /// Handles one frame from the broker.
    fn incoming(&mut self, conn: &Connection, frame: Frame) -> Result<(), Exit> {
        match frame.command {
            Command::Message => {
                let sub_id = frame.get("subscription").unwrap_or_default().to_owned();
                let Some(sub) = self.subs.get(&sub_id) else {
                    debug!(subscription = %sub_id, "MESSAGE for an unknown subscription dropped");
                    return Ok(());
                };
                let ack = (sub.ack != AckMode::Auto).then(|| AckRef { headers: ack_headers(&frame, conn.version, &sub_id), generation: self.generation });
                let destination = frame.get("destination").unwrap_or_default().to_owned();
                let msg = Message { destination, headers: frame.headers, body: frame.body, ack };
                if sub.tx.send(msg).is_err() {
                    debug!(subscription = %sub_id, "subscriber gone; unsubscribing");
                }
                Ok(())
            }
            Command::Receipt => {
                let id = frame.get("receipt-id").unwrap_or_default();
                match self.pending.remove(id) {
                    Some(Waiter::Frame(tx)) => {
                        let _ = tx.send(Ok(()));
                    }
                    Some(Waiter::Subscribe(sub)) => {
                        if let Some(entry) = self.subs.get_mut(&sub) {
                            entry.confirmed = true;
                            for w in entry.waiters.drain(..) {
                                let _ = w.send(Ok(()));
                            }
                        }
                    }
                    Some(Waiter::Disconnect) => return Err(Exit::Closed("disconnected by the application".into())),
                    None => debug!(receipt = %id, "RECEIPT nobody waits for"),
                }
                Ok(())
            }
            Command::Error => {
                let message = frame.get("message").unwrap_or("ERROR frame without message").to_owned();
                let details = String::from_utf8_lossy(&frame.body).trim().to_owned();
                if let Some(id) = frame.get("receipt-id") {
                    match self.pending.remove(id) {
                        Some(Waiter::Frame(tx)) => {
                            let _ = tx.send(Err(Error::Server { message: message.clone(), details: details.clone() }));
                        }
                        Some(Waiter::Subscribe(sub)) => {
                            // A new subscription the broker refuses is dropped and its caller told;
                            // one that worked before is kept and retried on the next connection
                            // (a half-started broker must not end a daemon's subscription).
                            if self.subs.get(&sub).is_some_and(|e| !e.confirmed) {
                                if let Some(entry) = self.subs.remove(&sub) {
                                    for w in entry.waiters {
                                        let _ = w.send(Err(Error::Server { message: message.clone(), details: details.clone() }));
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Err(Exit::Lost(format!("broker sent ERROR: {message}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })))
            }
            other => {
                debug!(command = %other, "unexpected frame from broker ignored");
                Ok(())
            }
        }
    }

    /// Serves the open connection: commands out, frames in, heart-beats both ways.
    async fn serve(&mut self, conn: &mut Connection) -> Exit {
        let plan = heartbeat::negotiate(&self.config.handshake.heartbeat, conn.server_heartbeat);
        let now = Instant::now();
        let mut last_read = now;
        let mut last_write = now;
        let mut probe_outstanding = false;
        // Commands queued while offline go first, in order.
        while let Some(cmd) = self.backlog.pop_front() {
            if let Err(exit) = self.outgoing(conn, cmd).await {
                return exit;
            }
        }
        if let Err(e) = connection::flush(&mut conn.framed).await {
            return Exit::Lost(format!("write failed: {e}"));
        }
        let far = |d: Option<Duration>, from: Instant| d.map(|d| from + d);
        let write_timer = sleep_opt(far(plan.send_every, last_write));
        let read_timer = sleep_opt(far(plan.read_timeout, last_read));
        let probe_timer = sleep_opt(far(plan.probe_after, last_read));
        tokio::pin!(write_timer, read_timer, probe_timer);
        loop {
            tokio::select! {
                biased;
                item = conn.framed.next() => {
                    last_read = Instant::now();
                    match item {
                        Some(Ok(Incoming::Frame(f))) => {
                            if f.command == Command::Receipt && f.get("receipt-id").is_some_and(|r| r.starts_with("dk-probe-")) {
                                probe_outstanding = false;
                                continue;
                            }
                            if let Err(exit) = self.incoming(conn, f) { return exit; }
                        }
                        Some(Ok(Incoming::Heartbeat)) => {}
                        Some(Err(e)) => return Exit::Lost(format!("protocol error: {e}")),
                        None => return Exit::Lost("broker closed the connection".into()),
                    }
                }
                cmd = self.cmd_rx.recv() => {
                    let Some(cmd) = cmd else {
                        let _ = conn.framed.send(&Frame::new(Command::Disconnect)).await;
                        return Exit::Closed("all client handles dropped".into());
                    };
                    if let Err(exit) = self.outgoing(conn, cmd).await { return exit; }
                    // Batch whatever else is queued, then flush once.
                    let mut n = 0;
                    while n < 256 {
                        match self.cmd_rx.try_recv() {
                            Ok(cmd) => {
                                if let Err(exit) = self.outgoing(conn, cmd).await { return exit; }
                                n += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = connection::flush(&mut conn.framed).await {
                        return Exit::Lost(format!("write failed: {e}"));
                    }
                    last_write = Instant::now();
                }
                () = &mut write_timer => {
                    let every = plan.send_every.unwrap_or(Duration::MAX);
                    let due = last_write + every;
                    if Instant::now() >= due {
                        let r = match &plan.wire {
                            KeepaliveWire::Eol => conn.framed.send(Heartbeat).await,
                            KeepaliveWire::SendTo(dest) => {
                                conn.framed.send(&Frame::new(Command::Send).header("destination", dest.clone()).with_body(&b"\n"[..])).await
                            }
                        };
                        if let Err(e) = r {
                            return Exit::Lost(format!("heart-beat write failed: {e}"));
                        }
                        last_write = Instant::now();
                        write_timer.as_mut().set(sleep_opt(Some(last_write + every)));
                    } else {
                        write_timer.as_mut().set(sleep_opt(Some(due)));
                    }
                }
                () = &mut read_timer => {
                    let timeout = plan.read_timeout.unwrap_or(Duration::MAX);
                    let due = last_read + timeout;
                    if Instant::now() >= due {
                        return Exit::Lost(format!(
                            "nothing received from the broker for {timeout:?} ({} heart-beat)",
                            if plan.emulated { "emulated" } else { "negotiated" }
                        ));
                    }
                    read_timer.as_mut().set(sleep_opt(Some(due)));
                }
                () = &mut probe_timer => {
                    let after = plan.probe_after.unwrap_or(Duration::MAX);
                    let due = last_read + after;
                    if Instant::now() >= due && !probe_outstanding {
                        // No heart-beats from this broker: provoke a RECEIPT to prove it is alive.
                        let id = self.receipt_id("probe");
                        let begin = Frame::new(Command::Begin).header("transaction", id.clone());
                        let abort = Frame::new(Command::Abort).header("transaction", id.clone()).header("receipt", id);
                        let r = async {
                            conn.framed.feed(&begin).await?;
                            conn.framed.send(&abort).await
                        }.await;
                        if let Err(e) = r {
                            return Exit::Lost(format!("probe write failed: {e}"));
                        }
                        probe_outstanding = true;
                        last_write = Instant::now();
                        probe_timer.as_mut().set(sleep_opt(Some(Instant::now() + after)));
                    } else {
                        probe_timer.as_mut().set(sleep_opt(Some(due.max(Instant::now() + after / 2))));
                    }
                }
            }
        }
    }

    /// Writes (feeds) one command's frame; the caller flushes.
    async fn outgoing(&mut self, conn: &mut Connection, cmd: Cmd) -> Result<(), Exit> {
        let write_err = |e: super::codec::FrameError| match e {
            super::codec::FrameError::Io(e) => Err(Exit::Lost(format!("write failed: {e}"))),
            other => Err(Exit::Lost(format!("encoding failed: {other}"))),
        };
        match cmd {
            Cmd::Frame { mut frame, reply, generation } => {
                if generation.is_some_and(|g| g != self.generation) {
                    if let Some(r) = reply {
                        let _ = r.send(Err(Error::Invalid(
                            "the connection this belonged to has dropped (the broker aborted its transaction or will redeliver its messages)".into(),
                        )));
                    }
                    return Ok(());
                }
                let receipt = reply.is_some().then(|| self.receipt_id("r"));
                if let Some(r) = &receipt {
                    frame.headers.set("receipt", r.clone());
                }
                match conn.framed.feed(&frame).await {
                    Ok(()) => {
                        if let (Some(r), Some(reply)) = (receipt, reply) {
                            if self.pending.len() >= 4096 {
                                // Callers that timed out no longer listen: forget their receipts.
                                self.pending.retain(|_, w| !matches!(w, Waiter::Frame(tx) if tx.is_closed()));
                            }
                            self.pending.insert(r, Waiter::Frame(reply));
                        }
                        Ok(())
                    }
                    Err(e @ super::codec::FrameError::Io(_)) => write_err(e),
                    Err(e) => {
                        // The caller's frame cannot be encoded: report it, keep the connection.
                        warn!(error = %e, "frame not sent");
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(e.into()));
                        }
                        Ok(())
                    }
                }
            }
            Cmd::Subscribe { id, mut frame, tx, ack, reply } => {
                if self.subs.contains_key(&id) {
                    let _ = reply.send(Err(Error::Invalid(format!("subscription id {id:?} is already in use"))));
                    return Ok(());
                }
                let receipt = self.receipt_id("sub");
                let registered = frame.clone();
                frame.headers.set("receipt", receipt.clone());
                self.subs.insert(id.clone(), SubEntry { frame: registered, tx, ack, confirmed: false, waiters: vec![reply] });
                self.pending.insert(receipt, Waiter::Subscribe(id));
                conn.framed.feed(&frame).await.or_else(write_err)
            }
            Cmd::Unsubscribe { id, reply } => {
                if self.subs.remove(&id).is_none() {
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                    return Ok(());
                }
                let mut frame = Frame::new(Command::Unsubscribe).header("id", id.clone());
                if let Some(r) = reply {
                    let receipt = self.receipt_id("r");
                    frame.headers.push("receipt", receipt.clone());
                    self.pending.insert(receipt, Waiter::Frame(r));
                }
                conn.framed.feed(&frame).await.or_else(write_err)
            }
            Cmd::Disconnect { reply } => {
                let receipt = self.receipt_id("bye");
                self.pending.insert(receipt.clone(), Waiter::Disconnect);
                let frame = Frame::new(Command::Disconnect).header("receipt", receipt);
                if let Err(e) = conn.framed.send(&frame).await {
                    let _ = reply.send(Ok(()));
                    return Err(Exit::Closed(format!("disconnected (write failed: {e})")));
                }
                // Wait for the receipt, bounded; then the connection is done.
                let deadline = Instant::now() + self.config.receipt_timeout;
                let outcome = loop {
                    tokio::select! {
                        item = conn.framed.next() => match item {
                            Some(Ok(Incoming::Frame(f))) => match self.incoming(conn, f) {
                                Ok(()) => continue,
                                Err(Exit::Closed(_)) => break Ok(()),
                                Err(Exit::Lost(why)) => break Err(Error::Server { message: why, details: String::new() }),
                            },
                            Some(Ok(Incoming::Heartbeat)) => continue,
                            Some(Err(e)) => break Err(e.into()),
                            None => break Ok(()),
                        },
                        _ = sleep_until(deadline) => break Err(Error::Timeout { what: "RECEIPT for DISCONNECT".into(), after: self.config.receipt_timeout }),
                    }
                };
                let _ = reply.send(outcome);
                Err(Exit::Closed("disconnected by the application".into()))
            }
        }
    }
}

/// The headers an ACK/NACK needs for this version.
fn ack_headers(frame: &Frame, version: Version, sub_id: &str) -> Headers {
    let mut h = Headers::with_capacity(2);
    match version {
        Version::V1_2 => {
            if let Some(ack) = frame.get("ack") {
                h.push("id", ack);
            } else if let Some(mid) = frame.get("message-id") {
                h.push("id", mid);
            }
        }
        Version::V1_1 => {
            if let Some(mid) = frame.get("message-id") {
                h.push("message-id", mid);
            }
            h.push("subscription", sub_id);
        }
        Version::V1_0 => {
            if let Some(mid) = frame.get("message-id") {
                h.push("message-id", mid);
            }
        }
    }
    h
}
