//! One client connection: the CONNECT handshake, heart-beats, and every client frame.
//!
//! The session task reads and handles frames; a second task ([`Writer`]) writes
//! what the session and the router put in the session's [`Outbox`], so a client
//! that is slow to read never stops the broker from reading what it sends.

use super::budget::Charge;
use super::outbox::{Out, Outbox, Writer};
use super::router::{budget_exhausted, ProtoError, Wait};
use super::server::{Shared, Slot};
use crate::stomp::heartbeat;
use crate::stomp::AckMode;
use crate::stomp::{Command, Frame, FrameError, Incoming, StompCodec, Version};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// An open transaction: its buffered frames (copied out of the read buffer) and their charge on the budget.
#[derive(Default)]
struct Txn {
    frames: Vec<Frame>,
    charge: Option<Charge>,
}

/// Versions the broker speaks, in the order of preference.
const SUPPORTED: &str = "1.0,1.1,1.2";

/// How long the broker keeps reading (and discarding) after an ERROR, so the
/// client gets the ERROR before the connection is reset.
const LINGER: Duration = Duration::from_secs(1);

/// The reading half of a connection and its decoder.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    codec: StompCodec,
}

impl Reader {
    /// Reads more bytes; `Ok(0)` at EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            // Small reads before login (the limits are small), 64 KiB ones after.
            self.buf.reserve(self.codec.limits().max_frame_size.clamp(4096, 64 * 1024));
        }
        self.rd.read_buf(&mut self.buf).await
    }

    /// Reads and discards until EOF or `LINGER` has passed.
    async fn linger(&mut self) {
        let _ = tokio::time::timeout(LINGER, async {
            loop {
                self.buf.clear();
                match self.fill().await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

/// What CONNECT settled.
struct Hello {
    version: Version,
    /// Server → client heart-beat interval.
    send_every: Option<Duration>,
    /// Client → server heart-beat interval.
    recv_every: Option<Duration>,
    heart_beat: String,
    login: Option<String>,
}

/// Why the handshake did not produce a session.
enum HandshakeEnd {
    /// Closed, timed out, or failed before a frame arrived.
    Quiet(&'static str),
    /// Answer with this ERROR (escaped for the version; with a `version` header
    /// listing ours when the flag is set) and close.
    Refuse(ProtoError, Version, bool),
}

/// Why the read loop stopped.
enum End {
    /// The client closed its side.
    Eof,
    /// DISCONNECT, with its receipt id.
    Disconnect(Option<String>),
    /// A bad frame: ERROR and close.
    Error(ProtoError, Option<String>),
    /// No heart-beat within the grace period.
    Silent(Duration),
    /// Killed: slow consumer, kick, or write failure.
    Killed,
    /// The broker is shutting down.
    Shutdown,
    /// The socket failed.
    Io(std::io::Error),
}

/// What handling one frame leads to.
enum Flow {
    Continue,
    Disconnect,
}

/// Runs one connection to its end.
///
/// `slot` is the connection's place under the connection caps; it stops counting
/// as pending once CONNECTED is sent, and is given back when this returns.
pub(crate) async fn run(socket: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>, mut slot: Slot) {
    let _ = socket.set_nodelay(true);
    let (rd, mut wr) = socket.into_split();
    let limits = shared.config.limits;
    // Until CONNECT is accepted, the small pre-login limits bound what a peer can make us buffer.
    let mut reader = Reader { rd, buf: BytesMut::with_capacity(4096), codec: StompCodec::with_limits(Version::V1_2, shared.config.login_limits) };
    let kill = shared.kick_token().child_token();

    let hello = match handshake(&mut reader, &shared, &kill).await {
        Ok(hello) => hello,
        Err(HandshakeEnd::Quiet(why)) => {
            debug!(session = id, %peer, why, "connection closed before CONNECT");
            return;
        }
        Err(HandshakeEnd::Refuse(err, version, list_versions)) => {
            info!(session = id, %peer, error = %err, "connection refused");
            let mut frame = error_frame(&err, None);
            if list_versions {
                frame.headers.push("version", SUPPORTED);
            }
            let mut codec = StompCodec::new(version);
            let mut out = BytesMut::new();
            if codec.encode(&frame, &mut out).is_ok() {
                let _ = tokio::time::timeout(LINGER, async {
                    let _ = wr.write_all(&out).await;
                    let _ = wr.shutdown().await;
                })
                .await;
            }
            reader.linger().await;
            return;
        }
    };

    let session_name = format!("dk-{id}");
    let connected = Frame::new(Command::Connected)
        .header("version", hello.version.as_str())
        .header("session", session_name.clone())
        .header("server", format!("deploykit-broker/{}", crate::VERSION))
        .header("heart-beat", hello.heart_beat.clone());
    if write_direct(&mut wr, hello.version, &connected).await.is_err() {
        return;
    }
    reader.codec.set_version(hello.version);
    reader.codec.set_limits(limits);
    slot.logged_in();
    info!(
        session = id,
        %peer,
        version = %hello.version,
        login = hello.login.as_deref().unwrap_or("-"),
        heart_beat = %hello.heart_beat,
        "client connected"
    );

    let (outbox, rx) = Outbox::new(id, shared.config.max_outbox_bytes, kill.clone());
    shared.router.register(id, outbox.clone(), hello.version);
    let mut guard = Registered { shared: shared.clone(), id, live: true };
    let writer = Writer {
        wr,
        rx,
        outbox: outbox.clone(),
        codec: StompCodec::with_limits(hello.version, limits),
        id_prefix: Bytes::from(format!("{session_name}-")),
        heartbeat: hello.send_every,
    };
    let mut writer_task = tokio::spawn(writer.run());

    let mut session = Session { id, shared: shared.clone(), outbox: outbox.clone(), txns: HashMap::new(), waits: Vec::new(), kill: kill.clone() };
    let end = session.read_loop(&mut reader, hello.recv_every).await;

    // No more deliveries to this session; its unacknowledged queue messages go to others.
    guard.unregister();
    let (reason, linger) = match end {
        End::Eof => ("client closed the connection".to_owned(), false),
        End::Disconnect(receipt) => {
            if let Some(r) = receipt {
                outbox.push(Out::Frame(Frame::new(Command::Receipt).header("receipt-id", r)));
            }
            ("DISCONNECT".to_owned(), false)
        }
        End::Error(err, receipt) => {
            outbox.push(Out::Frame(error_frame(&err, receipt.as_deref())));
            (format!("error sent: {err}"), true)
        }
        End::Silent(d) => (format!("no heart-beat from the client for {} ms", d.as_millis()), false),
        End::Killed => ("connection dropped by the broker".to_owned(), false),
        End::Shutdown => ("broker shutting down".to_owned(), false),
        End::Io(e) => (format!("read failed: {e}"), false),
    };
    outbox.push(Out::Close);
    if tokio::time::timeout(Duration::from_secs(2), &mut writer_task).await.is_err() {
        kill.cancel();
        let _ = writer_task.await;
    }
    if linger {
        reader.linger().await;
    }
    info!(session = id, %peer, reason = %reason, "client disconnected");
}

/// Unregisters the session from the router on drop, also if the task is aborted.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
    live: bool,
}

impl Registered {
    fn unregister(&mut self) {
        if std::mem::take(&mut self.live) {
            // Waits for other sessions' outboxes are not ours to serve any more.
            drop(self.shared.router.unregister(self.id));
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Encodes and writes one frame straight to the socket (before the writer task exists).
async fn write_direct(wr: &mut OwnedWriteHalf, version: Version, frame: &Frame) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    StompCodec::new(version).encode(frame, &mut out).map_err(std::io::Error::other)?;
    wr.write_all(&out).await
}

/// An ERROR frame for `err`, answering the frame whose receipt was `receipt`.
fn error_frame(err: &ProtoError, receipt: Option<&str>) -> Frame {
    let mut frame = Frame::new(Command::Error).header("message", err.message.to_string());
    if let Some(r) = receipt {
        frame.headers.push("receipt-id", r);
    }
    if let Some(detail) = &err.detail {
        frame.headers.push("content-type", "text/plain");
        frame.body = Bytes::from(detail.clone());
    }
    frame
}

/// An ERROR for bytes the codec rejected.
fn malformed(e: &FrameError) -> ProtoError {
    ProtoError::detail("malformed frame", e.to_string())
}

/// Compares two secrets without an early exit on the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads CONNECT (or STOMP) and settles version, login and heart-beats.
async fn handshake(reader: &mut Reader, shared: &Shared, kill: &CancellationToken) -> Result<Hello, HandshakeEnd> {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let frame = loop {
        match reader.codec.decode(&mut reader.buf) {
            Ok(Some(Incoming::Frame(frame))) => break frame,
            Ok(Some(Incoming::Heartbeat)) => continue,
            Ok(None) => {}
            Err(e) => return Err(HandshakeEnd::Refuse(malformed(&e), Version::V1_2, false)),
        }
        let read = tokio::select! {
            r = reader.fill() => r,
            _ = tokio::time::sleep_until(deadline) => return Err(HandshakeEnd::Quiet("no CONNECT in time")),
            _ = kill.cancelled() => return Err(HandshakeEnd::Quiet("dropped by the broker")),
            _ = shared.shutdown.cancelled() => return Err(HandshakeEnd::Quiet("broker shutting down")),
        };
        match read {
            Ok(0) => return Err(HandshakeEnd::Quiet("closed")),
            Ok(_) => {}
            Err(_) => return Err(HandshakeEnd::Quiet("read failed")),
        }
    };
    if !matches!(frame.command, Command::Connect | Command::Stomp) {
        return Err(HandshakeEnd::Refuse(ProtoError::detail("expected CONNECT", format!("the first frame must be CONNECT or STOMP, not {}", frame.command)), Version::V1_2, false));
    }
    let version = match frame.get("accept-version") {
        None => Version::V1_0,
        Some(list) => match list.split(',').filter_map(Version::parse).max() {
            Some(v) => v,
            None => {
                return Err(HandshakeEnd::Refuse(
                    ProtoError::detail("unsupported protocol version", format!("accept-version {list:?}; this broker speaks {SUPPORTED}")),
                    Version::V1_0,
                    true,
                ))
            }
        },
    };
    let login = frame.get("login").map(str::to_owned);
    if let Some(users) = &shared.config.users {
        let ok = match (frame.get("login"), frame.get("passcode")) {
            (Some(l), Some(p)) => users.get(l).is_some_and(|want| same_secret(want, p)),
            _ => false,
        };
        if !ok {
            return Err(HandshakeEnd::Refuse(ProtoError::detail("access refused", "wrong or missing login or passcode"), version, false));
        }
    }
    let (cx, cy) = match frame.get("heart-beat") {
        Some(hb) if version >= Version::V1_1 => heartbeat::parse_header(hb)
            .ok_or_else(|| HandshakeEnd::Refuse(ProtoError::detail("invalid heart-beat header", format!("heart-beat {hb:?} is not two numbers (ms)")), version, false))?,
        _ => (0, 0),
    };
    let (sx, sy) = if version >= Version::V1_1 { shared.config.heartbeat_ms } else { (0, 0) };
    let send = heartbeat::agreed(u64::from(sx), cy);
    let recv = heartbeat::agreed(u64::from(sy), cx);
    let ms = |n: u64| (n > 0).then(|| Duration::from_millis(n));
    Ok(Hello { version, send_every: ms(send), recv_every: ms(recv), heart_beat: format!("{send},{recv}"), login })
}

/// A connected session's frame handling.
struct Session {
    id: u64,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    /// Open transactions and their buffered SEND/ACK/NACK frames.
    txns: HashMap<String, Txn>,
    /// Scratch list of what routing asks the publisher to wait for.
    waits: Vec<Wait>,
    kill: CancellationToken,
}

impl Session {
    /// Reads and handles frames until the connection ends.
    async fn read_loop(&mut self, reader: &mut Reader, recv_every: Option<Duration>) -> End {
        let grace = heartbeat::broker_read_timeout(recv_every);
        let mut line = heartbeat::Activity::new(Instant::now());
        loop {
            loop {
                match reader.codec.decode(&mut reader.buf) {
                    Ok(Some(Incoming::Frame(frame))) => {
                        let receipt = frame.get("receipt").map(str::to_owned);
                        match self.handle(frame, receipt.as_deref()).await {
                            Ok(Flow::Continue) => {}
                            Ok(Flow::Disconnect) => return End::Disconnect(receipt),
                            Err(e) => return End::Error(e, receipt),
                        }
                        if self.kill.is_cancelled() {
                            return End::Killed;
                        }
                    }
                    Ok(Some(Incoming::Heartbeat)) => {}
                    Ok(None) => break,
                    Err(e) => return End::Error(malformed(&e), None),
                }
            }
            // Measured from now: time spent handling frames (waiting for slow
            // consumers) is not the client's silence.
            line.read(Instant::now());
            let deadline = line.read_due(grace);
            let read = tokio::select! {
                biased;
                _ = self.kill.cancelled() => return End::Killed,
                _ = self.shared.shutdown.cancelled() => return End::Shutdown,
                r = reader.fill() => r,
                _ = sleep_until_opt(deadline) => return End::Silent(grace.unwrap_or_default()),
            };
            match read {
                Ok(0) => {
                    if !reader.buf.is_empty() {
                        debug!(session = self.id, bytes = reader.buf.len(), "connection closed inside a frame");
                    }
                    return End::Eof;
                }
                Ok(_) => {}
                Err(e) => return End::Io(e),
            }
        }
    }

    /// Handles one frame, then sends its receipt.
    async fn handle(&mut self, frame: Frame, receipt: Option<&str>) -> Result<Flow, ProtoError> {
        debug!(session = self.id, command = %frame.command, "frame");
        match frame.command {
            Command::Send => self.on_send(frame)?,
            Command::Subscribe => self.on_subscribe(&frame)?,
            Command::Unsubscribe => self.on_unsubscribe(&frame)?,
            Command::Ack | Command::Nack => self.on_ack(frame)?,
            Command::Begin => {
                let tx = transaction(&frame)?;
                if self.txns.contains_key(tx) {
                    return Err(ProtoError::detail("transaction already begun", format!("transaction {tx:?} is already open")));
                }
                let max = self.shared.config.max_open_transactions;
                if self.txns.len() >= max {
                    return Err(ProtoError::detail("too many transactions", format!("a session may have at most {max} transactions open; COMMIT or ABORT one first")));
                }
                self.txns.insert(tx.to_owned(), Txn::default());
            }
            Command::Commit => {
                let tx = transaction(&frame)?;
                let txn = self.txns.remove(tx).ok_or_else(|| unknown_txn(tx))?;
                // The messages charge the budget themselves once routed; the buffer's charge ends here.
                drop(txn.charge);
                for f in txn.frames {
                    match f.command {
                        Command::Send => self.shared.router.send(self.id, f.headers, f.body, &mut self.waits)?,
                        _ => self.settle(&f)?,
                    }
                }
            }
            Command::Abort => {
                let tx = transaction(&frame)?;
                self.txns.remove(tx).ok_or_else(|| unknown_txn(tx))?;
            }
            Command::Disconnect => return Ok(Flow::Disconnect),
            Command::Connect | Command::Stomp => return Err(ProtoError::new("already connected")),
            other => return Err(ProtoError::detail("unexpected frame", format!("{other} is a server frame; clients may not send it"))),
        }
        self.wait_for_consumers().await;
        if let Some(r) = receipt {
            self.outbox.push(Out::Frame(Frame::new(Command::Receipt).header("receipt-id", r)));
        }
        Ok(Flow::Continue)
    }

    /// Waits, outside the router lock, for the consumers routing filled up.
    async fn wait_for_consumers(&mut self) {
        let own = |w: &Wait| matches!(w, Wait::Outbox(o) if Arc::ptr_eq(o, &self.outbox));
        if self.outbox.is_full() && !self.waits.iter().any(own) {
            // Our own client is not reading its receipts or messages: stop reading
            // from it (TCP pushes back) until it does.
            self.waits.push(Wait::Outbox(self.outbox.clone()));
        }
        if self.waits.is_empty() {
            return;
        }
        let timeout = self.shared.config.slow_consumer_timeout;
        for wait in self.waits.drain(..) {
            match wait {
                Wait::Outbox(ob) => {
                    let ok = tokio::select! {
                        ok = ob.wait_room(timeout) => ok,
                        _ = self.kill.cancelled() => return,
                        _ = self.shared.shutdown.cancelled() => return,
                    };
                    if !ok && ob.is_full() && !ob.kill.is_cancelled() {
                        warn!(session = ob.session, timeout_ms = timeout.as_millis() as u64, "slow consumer: outbox stayed full; disconnecting it");
                        ob.kill.cancel();
                    }
                }
                Wait::Queue(name, room) => {
                    let ok = tokio::select! {
                        ok = self.shared.router.wait_queue(&name, &room, timeout) => ok,
                        _ = self.kill.cancelled() => return,
                        _ = self.shared.shutdown.cancelled() => return,
                    };
                    if !ok {
                        self.shared.router.trim_queue(&name);
                    }
                }
            }
        }
    }

    fn on_send(&mut self, frame: Frame) -> Result<(), ProtoError> {
        if frame.get("destination").is_none_or(str::is_empty) {
            return Err(ProtoError::new("SEND frame has no destination header"));
        }
        if let Some(tx) = frame.get("transaction").map(str::to_owned) {
            return self.buffer(&tx, frame);
        }
        self.shared.router.send(self.id, frame.headers, frame.body, &mut self.waits)
    }

    fn on_subscribe(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        let dest = frame.get("destination").filter(|d| !d.is_empty()).ok_or_else(|| ProtoError::new("SUBSCRIBE frame has no destination header"))?;
        let id = frame.get("id").unwrap_or(dest);
        let ack = match frame.get("ack") {
            None => AckMode::Auto,
            Some(a) => AckMode::parse(a).ok_or_else(|| ProtoError::detail("invalid ack mode", format!("ack {a:?}; expected auto, client or client-individual")))?,
        };
        let prefetch = match frame.get("prefetch-count").or_else(|| frame.get("activemq.prefetchSize")) {
            None => 0,
            Some(p) => p.trim().parse::<usize>().map_err(|_| ProtoError::detail("invalid prefetch", format!("prefetch {p:?} is not a number")))?,
        };
        self.shared.router.subscribe(self.id, id, dest, ack, prefetch, &mut self.waits)
    }

    fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        let id = match (frame.get("id"), frame.get("destination")) {
            (Some(id), _) => id.to_owned(),
            (None, Some(dest)) => {
                self.shared.router.sub_by_destination(self.id, dest).ok_or_else(|| ProtoError::detail("unknown subscription", format!("no subscription on {dest:?}")))?
            }
            (None, None) => return Err(ProtoError::new("UNSUBSCRIBE frame has no id header")),
        };
        self.shared.router.unsubscribe(self.id, &id, &mut self.waits)
    }

    fn on_ack(&mut self, frame: Frame) -> Result<(), ProtoError> {
        let id = ack_id(&frame)?;
        if let Some(tx) = frame.get("transaction") {
            if !self.txns.contains_key(tx) {
                return Err(unknown_txn(tx));
            }
            self.shared.router.check_ack(self.id, id, frame.get("subscription"))?;
            let tx = tx.to_owned();
            return self.buffer(&tx, frame);
        }
        self.settle(&frame)
    }

    /// Buffers a frame in open transaction `tx`, within the frame, byte and budget limits.
    fn buffer(&mut self, tx: &str, frame: Frame) -> Result<(), ProtoError> {
        let max_frames = self.shared.config.max_queue_len;
        let max_bytes = self.shared.config.max_transaction_bytes;
        let budget = self.shared.router.budget().clone();
        let txn = self.txns.get_mut(tx).ok_or_else(|| unknown_txn(tx))?;
        if txn.frames.len() >= max_frames {
            return Err(txn_too_large(tx, format!("{max_frames} frames")));
        }
        let size = super::message::size_of("", &frame.headers, frame.body.len());
        let held = txn.charge.as_ref().map_or(0, Charge::bytes);
        if held.saturating_add(size) > max_bytes {
            return Err(txn_too_large(tx, format!("{max_bytes} bytes")));
        }
        let charged = match &mut txn.charge {
            Some(c) => c.try_grow(size),
            None => budget.try_charge(size).map(|c| txn.charge = Some(c)).is_some(),
        };
        if !charged {
            return Err(budget_exhausted(&budget, size));
        }
        // Copied, so a small buffered frame does not pin the large read buffer it arrived in.
        let Frame { command, headers, body } = frame;
        txn.frames.push(Frame { command, headers: headers.iter().collect(), body: Bytes::copy_from_slice(&body) });
        Ok(())
    }

    /// Applies an ACK or NACK.
    fn settle(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        let id = ack_id(frame)?;
        self.shared.router.ack(self.id, id, frame.get("subscription"), frame.command == Command::Nack, &mut self.waits)
    }
}

/// The id an ACK/NACK names: `id` (1.2) or `message-id` (1.0, 1.1).
fn ack_id(frame: &Frame) -> Result<&str, ProtoError> {
    frame.get("id").or_else(|| frame.get("message-id")).ok_or_else(|| ProtoError::detail("missing id", format!("{} needs an id (1.2) or message-id header", frame.command)))
}

fn transaction(frame: &Frame) -> Result<&str, ProtoError> {
    frame.get("transaction").ok_or_else(|| ProtoError::detail("missing transaction header", format!("{} needs a transaction header", frame.command)))
}

fn txn_too_large(tx: &str, max: String) -> ProtoError {
    ProtoError::detail("transaction too large", format!("transaction {tx:?} would hold more than {max}"))
}

fn unknown_txn(tx: &str) -> ProtoError {
    ProtoError::detail("unknown transaction", format!("transaction {tx:?} was not begun (or already ended)"))
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
