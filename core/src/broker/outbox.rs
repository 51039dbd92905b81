//! The outgoing side of a session: a byte-bounded outbox and the task that writes it.
//!
//! Routing pushes into an outbox without waiting (under the router lock, so the
//! order of deliveries is the order of routing); a push that takes the outbox
//! over its limit tells the publisher, which then waits — outside the lock —
//! until the writer has drained it, or gives up after the slow-consumer timeout
//! and disconnects the consumer. Memory per session is thus bounded by the
//! limit plus one message per concurrent publisher.
//!
//! The writer encodes everything that is ready into one buffer and writes it
//! with a single syscall, so a busy subscriber gets large batched writes and an
//! idle one gets each frame at once. It also sends the server's heart-beats.

use super::message::Message;
use crate::stomp::heartbeat::Activity;
use crate::stomp::{Frame, Heartbeat, StompCodec};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Largest batch the writer builds before it writes.
const MAX_BATCH: usize = 256 * 1024;

/// What a subscription's deliveries need to know, shared by all of them.
#[derive(Debug)]
pub(crate) struct SubInfo {
    /// The subscription id, already escaped for the session's version.
    pub id_esc: Bytes,
    /// Whether MESSAGE frames carry an `ack` header (STOMP 1.2, client ack modes).
    pub ack_header: bool,
}

/// One message to one subscription.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The message.
    pub msg: Arc<Message>,
    /// The subscription it goes to.
    pub sub: Arc<SubInfo>,
    /// The session-unique delivery tag behind `ack` (the message's own `seq` is its `message-id`).
    pub tag: u64,
    /// Whether it was delivered before and not acknowledged.
    pub redelivered: bool,
}

/// An item for the writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// A MESSAGE frame.
    Deliver(Delivery),
    /// Any other server frame (RECEIPT, ERROR).
    Frame(Frame),
    /// Write everything before this, then close the connection.
    Close,
}

impl Out {
    /// What the item counts against the outbox limit.
    fn cost(&self) -> usize {
        match self {
            Out::Deliver(d) => d.msg.cost(),
            Out::Frame(f) => f.body.len() + 128,
            Out::Close => 0,
        }
    }
}

/// A session's outgoing queue, shared by the router (to deliver) and the session.
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    queued: AtomicUsize,
    limit: usize,
    room: Notify,
    /// Cancelled to drop the connection at once (slow consumer, kick, fatal error).
    pub kill: CancellationToken,
    /// The session's number, for logs.
    pub session: u64,
}

impl Outbox {
    /// A new outbox and the receiver its writer drains.
    pub fn new(session: u64, limit: usize, kill: CancellationToken) -> (Arc<Outbox>, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Outbox { tx, queued: AtomicUsize::new(0), limit, room: Notify::new(), kill, session }), rx)
    }

    /// Queues an item; returns true when the outbox is now over its limit.
    pub fn push(&self, out: Out) -> bool {
        let cost = out.cost();
        let before = self.queued.fetch_add(cost, Ordering::AcqRel);
        if self.tx.send(out).is_err() {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            return false;
        }
        before + cost > self.limit
    }

    /// Whether more than the limit is waiting to be written.
    pub fn is_full(&self) -> bool {
        self.queued.load(Ordering::Acquire) > self.limit
    }

    /// Waits until the outbox is at or below its limit; false on timeout or if the session is gone.
    pub async fn wait_room(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_full() {
                return true;
            }
            if self.kill.is_cancelled() || self.tx.is_closed() {
                return false;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.kill.cancelled() => return false,
                _ = tokio::time::sleep_until(deadline) => return !self.is_full(),
            }
        }
    }

    /// Accounts for `cost` bytes written; wakes waiting publishers when room appears.
    fn release(&self, cost: usize) {
        let before = self.queued.fetch_sub(cost, Ordering::AcqRel);
        if before > self.limit && before - cost <= self.limit {
            self.room.notify_waiters();
        }
    }
}

/// The writing half of a session.
pub(crate) struct Writer {
    /// The socket's write half.
    pub wr: OwnedWriteHalf,
    /// Items to write.
    pub rx: mpsc::UnboundedReceiver<Out>,
    /// The outbox the items come from (for accounting).
    pub outbox: Arc<Outbox>,
    /// The codec, set to the negotiated version, for non-MESSAGE frames.
    pub codec: StompCodec,
    /// `ack` prefix of this session (`dk-N-`).
    pub id_prefix: Bytes,
    /// The negotiated server→client heart-beat interval, if any.
    pub heartbeat: Option<Duration>,
}

impl Writer {
    /// Writes until the session closes, is killed, or the socket fails.
    pub async fn run(mut self) {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut line = Activity::new(Instant::now());
        let far = || Instant::now() + Duration::from_secs(3600);
        let hb = tokio::time::sleep_until(line.write_due(self.heartbeat).unwrap_or_else(far));
        tokio::pin!(hb);
        let kill = self.outbox.kill.clone();
        loop {
            let first = tokio::select! {
                biased;
                _ = kill.cancelled() => return,
                item = self.rx.recv() => item,
                _ = &mut hb, if self.heartbeat.is_some() => {
                    let _ = self.codec.encode(Heartbeat, &mut buf);
                    if !self.write(&mut buf, &kill).await {
                        return;
                    }
                    line.wrote(Instant::now());
                    hb.as_mut().reset(line.write_due(self.heartbeat).unwrap_or_else(far));
                    continue;
                }
            };
            let Some(first) = first else {
                // Every sender is gone: the session ended without a Close.
                let _ = self.wr.shutdown().await;
                return;
            };
            let mut cost = 0;
            let mut close = self.encode(first, &mut buf, &mut cost);
            while !close && buf.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(item) => close = self.encode(item, &mut buf, &mut cost),
                    Err(_) => break,
                }
            }
            let ok = buf.is_empty() || self.write(&mut buf, &kill).await;
            self.outbox.release(cost);
            if !ok {
                return;
            }
            if close {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.shutdown()).await;
                return;
            }
            if self.heartbeat.is_some() {
                line.wrote(Instant::now());
                hb.as_mut().reset(line.write_due(self.heartbeat).unwrap_or_else(far));
            }
        }
    }

    /// Writes and clears `buf`; false if the socket failed or the session was killed.
    async fn write(&mut self, buf: &mut BytesMut, kill: &CancellationToken) -> bool {
        let result = tokio::select! {
            r = self.wr.write_all(buf) => r,
            _ = kill.cancelled() => return false,
        };
        buf.clear();
        match result {
            Ok(()) => true,
            Err(e) => {
                debug!(session = self.outbox.session, error = %e, "write failed");
                kill.cancel();
                false
            }
        }
    }

    /// Encodes one item into `buf`; returns true for [`Out::Close`].
    fn encode(&mut self, item: Out, buf: &mut BytesMut, cost: &mut usize) -> bool {
        *cost += item.cost();
        match item {
            Out::Deliver(d) => {
                let block = d.msg.block(self.codec.version());
                buf.reserve(96 + d.sub.id_esc.len() + block.len() + d.msg.body.len());
                buf.put_slice(b"MESSAGE\nsubscription:");
                buf.put_slice(&d.sub.id_esc);
                buf.put_slice(b"\nmessage-id:");
                buf.put_slice(super::message::MESSAGE_ID.as_bytes());
                buf.put_slice(itoa::Buffer::new().format(d.msg.seq).as_bytes());
                if d.sub.ack_header {
                    let mut tag_buf = itoa::Buffer::new();
                    let tag = tag_buf.format(d.tag);
                    buf.put_slice(b"\nack:");
                    buf.put_slice(&self.id_prefix);
                    buf.put_slice(tag.as_bytes());
                }
                if d.redelivered {
                    buf.put_slice(b"\nredelivered:true");
                }
                buf.put_u8(b'\n');
                buf.put_slice(block);
                buf.put_slice(&d.msg.body);
                buf.put_u8(0);
                false
            }
            Out::Frame(frame) => {
                if let Err(e) = self.codec.encode(&frame, buf) {
                    debug!(session = self.outbox.session, error = %e, command = %frame.command, "frame not encodable; dropped");
                }
                false
            }
            Out::Close => true,
        }
    }
}
