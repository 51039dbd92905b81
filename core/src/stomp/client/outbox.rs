//! The one ordered send path: callers encode their frames into a shared, bounded
//! buffer; the connection task swaps the buffer out and writes it whole.
//!
//! Everything a caller puts on the wire (plain and receipted SENDs, ACK/NACK,
//! transactions, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT) is appended here under one
//! lock, and a frame's bookkeeping (its receipt, a subscription to register) is
//! recorded in the same critical section as its bytes, as a [`Mark`] in buffer
//! order. The connection task registers the marks of a batch before it writes
//! the batch, so a RECEIPT can never arrive before its waiter, and wire order is
//! append order: a receipted SEND neither overtakes nor is overtaken.
//!
//! While no connection is up, frames wait unencoded (the next broker may
//! negotiate another version) and are encoded, in order, when one is; frames
//! already encoded when a connection drops are re-encoded if the next one
//! negotiates another version.

use super::actor::SubEntry;
use super::inbox::Deliver;
use super::AckMode;
use crate::stomp::codec::{encode_send, Incoming, Limits, SendHead, SendParts, StompCodec, Version};
use crate::stomp::error::{Error, Result};
use crate::stomp::frame::{Command, Frame};
use bytes::{Bytes, BytesMut};
use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::{Decoder, Encoder};

/// Where a caller waits for its frame's outcome.
pub(super) type Reply = oneshot::Sender<Result<()>>;

/// Room kept past `max_bytes` in a fresh buffer: the frame that crosses the bound still fits.
const HEADROOM: usize = 16 * 1024;

/// A fresh buffer is given room for at most this much up front (a larger bound grows as used).
const PREALLOCATE_AT_MOST: usize = 4 << 20;

/// Why a generation-pinned frame is refused once its connection is gone.
const STALE: &str = "the connection this belonged to has dropped (the broker aborted its transaction or will redeliver its messages)";

/// What the connection task must do for one frame of a batch before writing it.
pub(super) enum Effect {
    /// Nothing but purging it if the connection drops first (a pinned frame without receipt).
    None,
    /// Wait for this receipt on behalf of a caller.
    Receipt { receipt: String, reply: Reply },
    /// Register a subscription and wait for its receipt.
    Subscribe { id: String, receipt: String, entry: SubEntry },
    /// Forget a subscription (and answer its receipt, if any).
    Unsubscribe { id: String, receipt: Option<(String, Reply)> },
    /// The last frame: DISCONNECT, then wait for its receipt and stop.
    Disconnect { receipt: String, reply: Reply },
}

/// Bookkeeping for one frame in the buffer: its byte range and what it needs.
pub(super) struct Mark {
    start: usize,
    end: usize,
    /// Belongs to the current connection only (ACK/NACK, transactions).
    pinned: bool,
    /// What the connection task does for it.
    pub(super) effect: Effect,
}

/// What waits while no connection is up, in order.
pub(super) enum Offline {
    /// A frame to encode once the version is known.
    Frame { frame: Frame, reply: Option<Reply> },
    /// A subscription to register (the re-subscribe step sends it).
    Subscribe { id: String, entry: SubEntry },
    /// A subscription to forget.
    Unsubscribe { id: String },
}

/// What the connection task takes to write: bytes and their marks.
pub(super) struct Batch {
    /// Encoded frames, in order.
    pub(super) bytes: BytesMut,
    /// Marks of frames in `bytes`, in order.
    pub(super) marks: VecDeque<Mark>,
    /// The outbox was full when taken: senders may be waiting to append.
    pub(super) was_full: bool,
}

/// Why the client is ending, as the connection task learns it.
pub(super) enum Ending {
    /// Every handle is gone: write what is queued, then DISCONNECT.
    Dropped,
    /// The application asked to disconnect while no connection was up.
    Bye(Reply),
}

/// The encoded head of the last SEND appended without per-message headers, kept so
/// that a run of `send()`s to one destination copies it instead of encoding it again.
struct HeadCache {
    version: Version,
    destination: String,
    content_type: Option<String>,
    persistent: bool,
    /// The head these parts encode to, with the last body length's `content-length`.
    head: SendHead,
}

impl HeadCache {
    /// Whether `parts` at `version` encode to this head.
    fn fits(&self, version: Version, parts: &SendParts<'_>) -> bool {
        self.version == version && self.destination == parts.destination && self.content_type.as_deref() == parts.content_type && self.persistent == parts.persistent
    }
}

/// The state behind the lock.
struct Queue {
    buf: BytesMut,
    marks: VecDeque<Mark>,
    /// Frames appended since the last swap (bounded by `queue_capacity`).
    frames: usize,
    offline: VecDeque<Offline>,
    /// Estimated encoded size of `offline`.
    offline_bytes: usize,
    /// The connection frames are encoded for: (generation, version).
    link: Option<(u64, Version)>,
    /// The version the bytes in `buf` are encoded at (kept while offline).
    encoded: Option<Version>,
    /// Subscription ids in use, so a duplicate is refused at once.
    subs: HashSet<String>,
    next_receipt: u64,
    /// A swapped-out buffer handed back for reuse.
    spare: Option<BytesMut>,
    /// The last plain SEND's encoded head.
    head: Option<HeadCache>,
    /// DISCONNECT queued or every handle dropped: nothing more is accepted.
    ending: Option<Ending>,
    /// A DISCONNECT is in the buffer (not yet taken); ends the client like `ending`.
    bye_queued: bool,
    /// The connection task has stopped.
    closed: bool,
}

impl Queue {
    /// Bytes held, encoded or not.
    fn bytes(&self) -> usize {
        self.buf.len() + self.offline_bytes
    }

    /// Whether there is nothing for the connection task.
    fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.marks.is_empty() && self.offline.is_empty()
    }

    /// A fresh receipt id; the connection task's own use other prefixes.
    fn receipt(&mut self, kind: &str) -> String {
        self.next_receipt += 1;
        format!("dk-{kind}-{}", self.next_receipt)
    }

    /// Refuses anything once the client is ending or closed.
    fn check_open(&self) -> Result<()> {
        if self.closed || self.ending.is_some() || self.bye_queued {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Refuses a frame pinned to `generation` unless that connection is the current one.
    fn check_pinned(&self, generation: Option<u64>) -> Result<()> {
        match (generation, self.link) {
            (Some(g), Some((current, _))) if g != current => Err(Error::Invalid(STALE.into())),
            (Some(_), None) => Err(Error::Invalid(STALE.into())),
            _ => Ok(()),
        }
    }

    /// Records a mark for the bytes appended since `start`.
    fn mark(&mut self, start: usize, pinned: bool, effect: Effect) {
        let end = self.buf.len();
        self.marks.push_back(Mark { start, end, pinned, effect });
    }

    /// Encodes `frame` at the link's version, with a receipt if `reply` is set; an
    /// unencodable frame's error goes to `reply` if there is one, else is returned.
    fn encode(&mut self, mut frame: Frame, reply: Option<Reply>, version: Version, pinned: bool) -> Result<()> {
        let receipt = reply.is_some().then(|| self.receipt("r"));
        if let Some(r) = &receipt {
            frame.headers.set("receipt", r.clone());
        }
        let start = self.buf.len();
        if let Err(e) = StompCodec::new(version).encode(&frame, &mut self.buf) {
            return match reply {
                Some(reply) => {
                    let _ = reply.send(Err(e.into()));
                    Ok(())
                }
                None => Err(e.into()),
            };
        }
        self.frames += 1;
        match (receipt, reply) {
            (Some(receipt), Some(reply)) => self.mark(start, pinned, Effect::Receipt { receipt, reply }),
            _ if pinned => self.mark(start, true, Effect::None),
            _ => {}
        }
        Ok(())
    }

    /// Re-encodes the buffered frames, encoded at `from`, at `to` (the next broker
    /// negotiated another version: escaping and what may be sent differ). A frame
    /// the new version cannot carry is dropped; its caller, if one waits, is told.
    fn reencode(&mut self, from: Version, to: Version) {
        // Our own bytes: no bound but arithmetic room.
        let unbounded = Limits { max_frame_size: usize::MAX / 2, max_headers: usize::MAX / 2, max_header_len: usize::MAX / 2 };
        let mut decoder = StompCodec::with_limits(from, unbounded);
        let mut encoder = StompCodec::new(to);
        let total = self.buf.len();
        let mut rest = std::mem::take(&mut self.buf);
        let mut marks = std::mem::take(&mut self.marks);
        loop {
            let start = total - rest.len();
            let frame = match decoder.decode(&mut rest) {
                Ok(Some(Incoming::Frame(f))) => f,
                Ok(Some(Incoming::Heartbeat)) => continue,
                // Our own bytes always decode; anything else ends the buffer.
                Ok(None) | Err(_) => break,
            };
            let mark = marks.front().filter(|m| m.start == start).is_some().then(|| marks.pop_front()).flatten();
            let new_start = self.buf.len();
            match encoder.encode(&frame, &mut self.buf) {
                Ok(()) => {
                    if let Some(m) = mark {
                        self.marks.push_back(Mark { start: new_start, end: self.buf.len(), ..m });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, command = %frame.command, version = %to, "queued frame dropped: the new connection's version cannot carry it");
                    self.frames = self.frames.saturating_sub(1);
                    if let Some(m) = mark {
                        let error = || Error::Invalid(format!("not sent: the broker reconnected with STOMP {to}, which cannot carry this frame ({e})"));
                        match m.effect {
                            Effect::Receipt { reply, .. } | Effect::Unsubscribe { receipt: Some((_, reply)), .. } | Effect::Disconnect { reply, .. } => {
                                let _ = reply.send(Err(error()));
                            }
                            Effect::Subscribe { id, entry, .. } => {
                                self.subs.remove(&id);
                                entry.fail(&error);
                            }
                            Effect::None | Effect::Unsubscribe { .. } => {}
                        }
                    }
                }
            }
        }
    }

    /// Appends a SEND built from its parts (encoded at once while connected, kept as a
    /// frame while not); with a reply, it asks for a receipt and the reply waits for it.
    fn push_send(&mut self, parts: &SendParts<'_>, reply: &mut Option<Reply>, pinned: Option<u64>, build: &impl Fn() -> Frame) -> Result<()> {
        self.check_pinned(pinned)?;
        let Some((_, version)) = self.link else {
            let frame = build();
            self.offline_bytes += estimate(&frame);
            self.offline.push_back(Offline::Frame { frame, reply: reply.take() });
            return Ok(());
        };
        let start = self.buf.len();
        match reply.take() {
            None => {
                self.append_plain_send(version, parts)?;
                self.frames += 1;
                if pinned.is_some() {
                    self.mark(start, true, Effect::None);
                }
            }
            Some(reply) => {
                let receipt = self.receipt("r");
                encode_send(&mut self.buf, version, &SendParts { receipt: Some(&receipt), ..*parts })?;
                self.frames += 1;
                self.mark(start, pinned.is_some(), Effect::Receipt { receipt, reply });
            }
        }
        Ok(())
    }

    /// Appends a plain SEND (no headers of its own, no receipt, not pinned) under the
    /// cached head, if the client is open, connected at the cache's version and the
    /// cache fits `parts`; `Some(was idle)` if it did, `None` to take the general path.
    fn append_cached(&mut self, parts: &SendParts<'_>) -> Option<bool> {
        if self.check_open().is_err() || !parts.is_plain() {
            return None;
        }
        let (_, version) = self.link?;
        let idle = self.is_idle();
        let cache = self.head.as_mut().filter(|c| c.fits(version, parts))?;
        cache.head.put(&mut self.buf, parts.body);
        self.frames += 1;
        Some(idle)
    }

    /// Encodes a SEND without receipt; when it has no headers of its own (what `send()`
    /// sends) its head comes from, or goes into, the one-entry cache. The bytes are those
    /// `encode_send` writes (`encode_send` is `encode_send_head` + `finish_send`).
    fn append_plain_send(&mut self, version: Version, parts: &SendParts<'_>) -> Result<()> {
        if !parts.is_plain() {
            return Ok(encode_send(&mut self.buf, version, parts)?);
        }
        if !self.head.as_ref().is_some_and(|c| c.fits(version, parts)) {
            let head = SendHead::new(version, parts)?;
            let content_type = parts.content_type.map(str::to_owned);
            self.head = Some(HeadCache { version, destination: parts.destination.to_owned(), content_type, persistent: parts.persistent, head });
        }
        let Some(cache) = &mut self.head else { return Ok(encode_send(&mut self.buf, version, parts)?) };
        cache.head.put(&mut self.buf, parts.body);
        Ok(())
    }

    /// Removes frames pinned to a lost connection from the buffer; their callers are told.
    fn purge_pinned(&mut self) {
        if !self.marks.iter().any(|m| m.pinned) {
            return;
        }
        let old = std::mem::take(&mut self.buf);
        let mut kept = VecDeque::with_capacity(self.marks.len());
        let mut pos = 0;
        for m in self.marks.drain(..) {
            self.buf.extend_from_slice(&old[pos..m.start]);
            pos = m.end;
            if m.pinned {
                if let Effect::Receipt { reply, .. } = m.effect {
                    let _ = reply.send(Err(Error::Invalid(STALE.into())));
                }
                continue;
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(&old[m.start..m.end]);
            kept.push_back(Mark { start, end: self.buf.len(), ..m });
        }
        self.buf.extend_from_slice(&old[pos..]);
        self.marks = kept;
    }
}

/// The shared outbound buffer: bounded, ordered, drained by the connection task.
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the connection task: something to write, or the client is ending.
    wake: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    /// Bytes held before senders wait.
    max_bytes: usize,
    /// Frames held before senders wait.
    max_frames: usize,
}

impl Outbox {
    /// An empty outbox holding at most `max_bytes` (plus one frame) and `max_frames` frames.
    pub(super) fn new(max_bytes: usize, max_frames: usize) -> Outbox {
        let max_bytes = max_bytes.max(1);
        Outbox {
            queue: Mutex::new(Queue {
                buf: BytesMut::with_capacity(batch_room(max_bytes)),
                marks: VecDeque::new(),
                frames: 0,
                offline: VecDeque::new(),
                offline_bytes: 0,
                link: None,
                encoded: None,
                subs: HashSet::new(),
                next_receipt: 0,
                spare: None,
                head: None,
                ending: None,
                bye_queued: false,
                closed: false,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            max_bytes,
            max_frames: max_frames.max(1),
        }
    }

    /// The lock; a panic elsewhere while holding it leaves consistent bytes, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` under the lock once there is room, waking the connection task if it was idle.
    async fn append<R>(&self, mut f: impl FnMut(&mut Queue) -> Result<R>) -> Result<R> {
        // The usual case, room at once: no waiter is set up.
        if let Some(r) = self.try_append(&mut f, None) {
            return r;
        }
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Full: registered for the next drain before the lock is let go.
            if let Some(r) = self.try_append(&mut f, Some(notified.as_mut())) {
                return r;
            }
            notified.await;
        }
    }

    /// Whether another frame may be appended (below both bounds).
    fn has_room(&self, q: &Queue) -> bool {
        q.bytes() < self.max_bytes && q.frames + q.offline.len() < self.max_frames
    }

    /// Runs `f` if there is room (`None` if not, after enabling `waiter` under the lock).
    fn try_append<R>(&self, f: &mut impl FnMut(&mut Queue) -> Result<R>, waiter: Option<std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>>) -> Option<Result<R>> {
        self.try_append_locked(self.lock(), f, waiter)
    }

    /// [`try_append`](Self::try_append) with the lock already taken.
    fn try_append_locked<R>(
        &self,
        mut q: MutexGuard<'_, Queue>,
        f: &mut impl FnMut(&mut Queue) -> Result<R>,
        waiter: Option<std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>>,
    ) -> Option<Result<R>> {
        if let Err(e) = q.check_open() {
            return Some(Err(e));
        }
        if self.has_room(&q) {
            let idle = q.is_idle();
            let r = f(&mut q);
            let wake = idle && !q.is_idle();
            drop(q);
            if wake {
                self.wake.notify_one();
            }
            return Some(r);
        }
        if let Some(w) = waiter {
            w.enable();
        }
        None
    }

    /// Appends a SEND built from its parts; `pinned` ties it to one connection (transactions).
    pub(super) async fn send(&self, parts: &SendParts<'_>, reply: Option<Reply>, pinned: Option<u64>, build: impl Fn() -> Frame) -> Result<()> {
        let mut reply = reply;
        self.append(|q| q.push_send(parts, &mut reply, pinned, &build)).await
    }

    /// Appends a SEND without receipt at once if there is room, else `None` (the caller
    /// then waits in [`Outbox::send`]): the usual case pays for no future but the caller's.
    pub(super) fn try_send(&self, parts: &SendParts<'_>, pinned: Option<u64>, build: impl Fn() -> Frame) -> Option<Result<()>> {
        let mut q = self.lock();
        // A run of `send()`s to one destination: one check of the state, then a copy.
        if pinned.is_none() && self.has_room(&q) {
            if let Some(idle) = q.append_cached(parts) {
                drop(q);
                if idle {
                    self.wake.notify_one();
                }
                return Some(Ok(()));
            }
        }
        self.try_append_locked(q, &mut |q: &mut Queue| q.push_send(parts, &mut None, pinned, &build), None)
    }

    /// Appends a SEND for each of `bodies` with the same parts, as many per lock as
    /// there is room for (waiting for room between runs); the last carries the
    /// receipt if `reply` is set. The bodies are copied as they are queued (into the
    /// buffer while connected; into the frame `build` makes, to keep, while offline).
    pub(super) async fn send_many<B: AsRef<[u8]>>(
        &self,
        parts: &SendParts<'_>,
        bodies: impl Iterator<Item = B>,
        reply: Option<Reply>,
        build: impl Fn(Bytes) -> Frame,
    ) -> Result<()> {
        let mut bodies = bodies.peekable();
        let mut reply = reply;
        while bodies.peek().is_some() {
            self.append(|q| {
                // The headers every SEND of this run shares, encoded once (the version
                // cannot change while the lock is held).
                let mut head: Option<SendHead> = None;
                while let Some(owned) = bodies.next() {
                    let body = owned.as_ref();
                    let mut last_reply = if bodies.peek().is_none() { reply.take() } else { None };
                    match q.link {
                        Some((_, version)) if last_reply.is_none() => {
                            let head = match &mut head {
                                Some(h) => h,
                                empty => empty.insert(SendHead::new(version, parts)?),
                            };
                            head.put(&mut q.buf, body);
                            q.frames += 1;
                        }
                        // Offline, or the last SEND, which asks for the receipt: as `send` queues them.
                        _ => q.push_send(&SendParts { body, ..*parts }, &mut last_reply, None, &|| build(Bytes::copy_from_slice(body)))?,
                    }
                    if !self.has_room(q) {
                        break;
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Appends any other frame, with a receipt if `reply` is set; `pinned` ties it to one connection.
    pub(super) async fn frame(&self, frame: Frame, reply: Option<Reply>, pinned: Option<u64>) -> Result<()> {
        let mut slot = Some((frame, reply));
        self.append(|q| {
            q.check_pinned(pinned)?;
            let Some((frame, reply)) = slot.take() else { return Ok(()) };
            match q.link {
                Some((_, version)) => q.encode(frame, reply, version, pinned.is_some()),
                None => {
                    q.offline_bytes += estimate(&frame);
                    q.offline.push_back(Offline::Frame { frame, reply });
                    Ok(())
                }
            }
        })
        .await
    }

    /// Appends a SUBSCRIBE (registered and confirmed by the connection task); refuses an id in use.
    pub(super) async fn subscribe(&self, id: String, frame: Frame, tx: Deliver, ack: AckMode, reply: Reply) -> Result<()> {
        let mut slot = Some((frame, tx, reply));
        self.append(|q| {
            if q.subs.contains(&id) {
                return Err(Error::Invalid(format!("subscription id {id:?} is already in use")));
            }
            let Some((frame, tx, reply)) = slot.take() else { return Ok(()) };
            q.subs.insert(id.clone());
            let entry = SubEntry::new(frame.clone(), tx, ack, reply);
            let Some((_, version)) = q.link else {
                q.offline_bytes += estimate(&frame);
                q.offline.push_back(Offline::Subscribe { id: id.clone(), entry });
                return Ok(());
            };
            let receipt = q.receipt("s");
            let mut wire = frame;
            wire.headers.set("receipt", receipt.clone());
            let start = q.buf.len();
            if let Err(e) = StompCodec::new(version).encode(&wire, &mut q.buf) {
                q.subs.remove(&id);
                return Err(e.into());
            }
            q.frames += 1;
            q.mark(start, false, Effect::Subscribe { id: id.clone(), receipt, entry });
            Ok(())
        })
        .await
    }

    /// Appends an UNSUBSCRIBE (never waits for room: a dropped subscription calls this).
    pub(super) fn unsubscribe(&self, id: &str, reply: Option<Reply>) {
        let mut q = self.lock();
        if q.closed || !q.subs.remove(id) {
            if let Some(r) = reply {
                let _ = r.send(if q.closed { Err(Error::Closed) } else { Ok(()) });
            }
            return;
        }
        if q.bye_queued {
            // DISCONNECT is queued already: it ends every subscription.
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        }
        let idle = q.is_idle();
        match q.link {
            None => {
                q.offline.push_back(Offline::Unsubscribe { id: id.to_owned() });
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
            }
            Some((_, version)) => {
                let mut frame = Frame::new(Command::Unsubscribe).header("id", id.to_owned());
                let receipt = reply.map(|r| (q.receipt("r"), r));
                if let Some((r, _)) = &receipt {
                    frame.headers.push("receipt", r.clone());
                }
                let start = q.buf.len();
                // An id and a receipt id always encode; a failure would only mean no UNSUBSCRIBE.
                if StompCodec::new(version).encode(&frame, &mut q.buf).is_ok() {
                    q.frames += 1;
                    q.mark(start, false, Effect::Unsubscribe { id: id.to_owned(), receipt });
                }
            }
        }
        drop(q);
        if idle {
            self.wake.notify_one();
        }
    }

    /// Queues DISCONNECT after everything already queued; nothing is accepted afterwards.
    pub(super) fn disconnect(&self, reply: Reply) -> Result<()> {
        let mut q = self.lock();
        q.check_open()?;
        match q.link {
            None => q.ending = Some(Ending::Bye(reply)),
            Some((_, version)) => {
                let receipt = q.receipt("bye");
                let frame = Frame::new(Command::Disconnect).header("receipt", receipt.clone());
                let start = q.buf.len();
                StompCodec::new(version).encode(&frame, &mut q.buf)?;
                q.mark(start, false, Effect::Disconnect { receipt, reply });
                q.bye_queued = true;
            }
        }
        drop(q);
        self.wake.notify_one();
        self.room.notify_waiters();
        Ok(())
    }

    /// Every client handle is gone: the connection task writes what is queued and stops.
    pub(super) fn handles_dropped(&self) {
        let mut q = self.lock();
        if q.ending.is_none() {
            q.ending = Some(Ending::Dropped);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Completes once a caller has queued something or the client is ending (a permit
    /// given while no one waited is kept for the next one).
    pub(super) fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Takes the queued bytes and marks (`None` when there are none); senders get room.
    pub(super) fn take(&self) -> Option<Batch> {
        let mut q = self.lock();
        if q.link.is_none() || (q.buf.is_empty() && q.marks.is_empty()) {
            return None;
        }
        let was_full = !self.has_room(&q);
        let mut fresh = q.spare.take().unwrap_or_default();
        fresh.reserve(batch_room(self.max_bytes));
        let bytes = std::mem::replace(&mut q.buf, fresh);
        let marks = std::mem::take(&mut q.marks);
        q.frames = 0;
        drop(q);
        self.room.notify_waiters();
        Some(Batch { bytes, marks, was_full })
    }

    /// Hands back a written buffer's allocation, unless it grew past twice the bound.
    pub(super) fn recycle(&self, mut buf: BytesMut) {
        if buf.capacity() > 2 * self.max_bytes + HEADROOM {
            return;
        }
        buf.clear();
        self.lock().spare = Some(buf);
    }

    /// How the client is ending, if it is; the DISCONNECT reply is handed over once.
    pub(super) fn ending(&self) -> Option<Ending> {
        let mut q = self.lock();
        match q.ending.take() {
            Some(Ending::Dropped) => {
                q.ending = Some(Ending::Dropped);
                Some(Ending::Dropped)
            }
            other => other,
        }
    }

    /// A connection is up: encode what waited, in order; returns the subscription changes made meanwhile.
    pub(super) fn go_online(&self, generation: u64, version: Version) -> Vec<Offline> {
        let mut q = self.lock();
        q.link = Some((generation, version));
        if let Some(from) = q.encoded.filter(|v| *v != version && !q.buf.is_empty()) {
            q.reencode(from, version);
        }
        q.encoded = Some(version);
        let waiting = std::mem::take(&mut q.offline);
        q.offline_bytes = 0;
        let mut changes = Vec::new();
        for item in waiting {
            match item {
                Offline::Frame { frame, reply } => {
                    let command = frame.command;
                    if let Err(e) = q.encode(frame, reply, version, false) {
                        tracing::warn!(error = %e, %command, "queued frame not sent");
                    }
                }
                other => changes.push(other),
            }
        }
        drop(q);
        self.room.notify_waiters();
        changes
    }

    /// The connection is gone: frames pinned to it are dropped, the rest wait for the next one.
    pub(super) fn go_offline(&self) {
        let mut q = self.lock();
        q.link = None;
        q.purge_pinned();
        drop(q);
        self.room.notify_waiters();
    }

    /// The broker refused a new subscription: its id is free again.
    pub(super) fn forget_sub(&self, id: &str) {
        self.lock().subs.remove(id);
    }

    /// The connection task stopped: fails everything still queued and every waiting sender.
    pub(super) fn close(&self, error: impl Fn() -> Error) {
        let mut q = self.lock();
        q.closed = true;
        q.link = None;
        q.buf.clear();
        q.offline_bytes = 0;
        let marks = std::mem::take(&mut q.marks);
        let offline = std::mem::take(&mut q.offline);
        let ending = q.ending.take();
        drop(q);
        for m in marks {
            match m.effect {
                Effect::Receipt { reply, .. } | Effect::Unsubscribe { receipt: Some((_, reply)), .. } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Effect::Disconnect { reply, .. } => {
                    let _ = reply.send(Ok(()));
                }
                Effect::Subscribe { entry, .. } => entry.fail(&error),
                Effect::None | Effect::Unsubscribe { .. } => {}
            }
        }
        for item in offline {
            match item {
                Offline::Frame { reply: Some(r), .. } => {
                    let _ = r.send(Err(Error::Closed));
                }
                Offline::Subscribe { entry, .. } => entry.fail(&error),
                _ => {}
            }
        }
        if let Some(Ending::Bye(reply)) = ending {
            let _ = reply.send(Ok(()));
        }
        self.room.notify_waiters();
    }
}

/// The room a fresh buffer gets up front, so that it holds a whole batch: growing
/// while callers append would copy everything queued so far (with 64 KiB batches of
/// 1 KiB messages that copy was a fifth of a SEND's instructions).
fn batch_room(max_bytes: usize) -> usize {
    max_bytes.min(PREALLOCATE_AT_MOST) + HEADROOM
}

/// About how many bytes `frame` encodes to, for the bound while offline.
fn estimate(frame: &Frame) -> usize {
    32 + frame.body.len() + frame.headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Frame {
        Frame::new(Command::Send).header("destination", "/queue/q").header("x-h", value).with_body(&b"body"[..])
    }

    #[tokio::test]
    async fn frames_queued_across_a_reconnect_are_encoded_for_the_new_version() {
        let outbox = Outbox::new(1 << 20, 1000);
        outbox.go_online(1, Version::V1_2);
        let (reply, mut answer) = oneshot::channel();
        outbox.frame(with_header("a:b"), Some(reply), None).await.unwrap();
        let (bad_reply, bad_answer) = oneshot::channel();
        outbox.frame(with_header("line\nbreak"), Some(bad_reply), None).await.unwrap();
        outbox.frame(with_header("c:d"), None, None).await.unwrap();
        // The connection drops before the task took these; the next broker speaks 1.0.
        outbox.go_offline();
        outbox.go_online(2, Version::V1_0);
        let batch = outbox.take().expect("the queued frames");
        let text = String::from_utf8_lossy(&batch.bytes).into_owned();
        assert!(text.contains("x-h:a:b\n") && text.contains("x-h:c:d\n"), "unescaped for 1.0: {text:?}");
        assert!(!text.contains("\\c") && !text.contains("line"), "{text:?}");
        assert_eq!(text.matches("SEND\n").count(), 2, "{text:?}");
        // The receipted frame keeps its mark, over its new bytes.
        assert_eq!(batch.marks.len(), 1);
        let m = &batch.marks[0];
        let marked = String::from_utf8_lossy(&batch.bytes[m.start..m.end]).into_owned();
        assert!(marked.starts_with("SEND\n") && marked.contains("x-h:a:b\n") && marked.contains("receipt:") && marked.ends_with('\0'), "{marked:?}");
        assert!(answer.try_recv().is_err(), "the carried frame's caller still waits for its receipt");
        let refused = bad_answer.await.unwrap().unwrap_err();
        assert!(refused.to_string().contains("STOMP 1.0"), "{refused}");
    }

    #[tokio::test]
    async fn send_many_writes_byte_for_byte_what_one_send_at_a_time_writes() {
        for version in Version::ALL {
            let outbox = Outbox::new(1 << 20, 1000);
            outbox.go_online(1, version);
            let headers: crate::stomp::frame::Headers = [("x-k", "a:b")].into_iter().collect();
            let parts = SendParts { destination: "/queue/q", content_type: Some("text/plain"), persistent: true, headers: &headers, transaction: None, receipt: None, body: &[] };
            let bodies = ["one", "", "three"].map(Bytes::from);
            let (reply, _answer) = oneshot::channel();
            outbox.send_many(&parts, bodies.clone().into_iter(), Some(reply), |_| unreachable!("online")).await.unwrap();
            let mut expected = BytesMut::new();
            for (i, body) in bodies.iter().enumerate() {
                let receipt = (i == 2).then_some("dk-r-1");
                encode_send(&mut expected, version, &SendParts { body, receipt, ..parts }).unwrap();
            }
            let batch = outbox.take().unwrap();
            assert_eq!(batch.bytes, expected, "{version}");
            assert_eq!(batch.marks.len(), 1, "the last SEND's receipt is awaited");
        }
    }

    /// While offline, `send_many` keeps a copy of each borrowed body in the frame it
    /// queues: the caller's buffer may be gone long before a connection comes up.
    #[tokio::test]
    async fn send_many_while_offline_keeps_copies_of_borrowed_bodies() {
        let outbox = Outbox::new(1 << 20, 1000);
        let headers = crate::stomp::frame::Headers::new();
        let parts = SendParts { destination: "/queue/q", content_type: None, persistent: false, headers: &headers, transaction: None, receipt: None, body: &[] };
        let (reply, mut answer) = oneshot::channel();
        let buffer = b"onetwothree".to_vec();
        let bodies = [&buffer[..3], &buffer[3..6], &buffer[6..]];
        outbox.send_many(&parts, bodies.into_iter(), Some(reply), |body| Frame::new(Command::Send).header("destination", "/queue/q").with_body(body)).await.unwrap();
        drop(buffer);
        outbox.go_online(1, Version::V1_2);
        let batch = outbox.take().expect("the queued SENDs");
        let text = String::from_utf8_lossy(&batch.bytes).into_owned();
        let sends: Vec<&str> = text.split_terminator('\0').collect();
        assert_eq!(sends.len(), 3, "{text:?}");
        for (send, body) in sends.iter().zip(["one", "two", "three"]) {
            assert!(send.starts_with("SEND\ndestination:/queue/q\n") && send.ends_with(&format!("\n\n{body}")), "{send:?}");
        }
        assert_eq!(sends.iter().map(|s| s.contains("receipt:")).collect::<Vec<_>>(), [false, false, true], "the last asks for the receipt");
        assert_eq!(batch.marks.len(), 1);
        assert!(answer.try_recv().is_err(), "the caller waits for the receipt");
    }

    /// A run of plain SENDs copies its cached head; any change of destination, content
    /// type, persistence, headers or version encodes a new one: the bytes are always
    /// those `encode_send` writes.
    #[tokio::test]
    async fn cached_heads_write_what_encoding_writes() {
        let extra: crate::stomp::frame::Headers = [("x-k", "v")].into_iter().collect();
        let none = crate::stomp::frame::Headers::new();
        let plain = |destination, content_type, persistent, headers| SendParts { destination, content_type, persistent, headers, transaction: None, receipt: None, body: b"body" };
        // Bodies of one length in a row, then another (the cached length line must follow).
        fn sized<'a>(parts: SendParts<'a>, body: &'a [u8]) -> SendParts<'a> {
            SendParts { body, ..parts }
        }
        // It starts and ends with a destination whose escaping differs between versions, so a
        // head cached at one version would be wrong at the next connection's.
        let steps = [
            plain("/queue/a:with\\escapes", None, false, &none),
            plain("/queue/a", None, false, &none),
            sized(plain("/queue/a", None, false, &none), b"longer body"),
            sized(plain("/queue/a", None, false, &none), b""),
            sized(plain("/queue/a", None, false, &none), b"0123456789"),
            plain("/queue/a", None, false, &none),
            plain("/queue/b", None, false, &none),
            plain("/queue/a", None, false, &none),
            plain("/queue/a", Some("text/plain"), false, &none),
            plain("/queue/a", Some("text/json"), false, &none),
            plain("/queue/a", Some("text/json"), true, &none),
            plain("/queue/a", None, false, &extra),
            plain("/queue/a", None, false, &none),
            plain("/queue/a:with\\escapes", None, false, &none),
        ];
        let outbox = Outbox::new(1 << 20, 1000);
        let mut expected = BytesMut::new();
        for (generation, version) in [(1, Version::V1_2), (2, Version::V1_0), (3, Version::V1_2), (4, Version::V1_1)] {
            outbox.go_online(generation, version);
            for parts in &steps {
                // `try_send` is `send()`'s path (a fitting cached head is copied without the
                // general checks); `send` waits for room and always takes the general path.
                outbox.try_send(parts, None, || unreachable!("online")).expect("room").unwrap();
                outbox.send(parts, None, None, || unreachable!("online")).await.unwrap();
                encode_send(&mut expected, version, parts).unwrap();
                encode_send(&mut expected, version, parts).unwrap();
            }
            assert_eq!(outbox.take().unwrap().bytes, expected, "{version}");
            expected.clear();
        }
    }

    /// The cached head's short path checks what the general one does: a client that is
    /// ending, closed or offline appends nothing, and a full outbox makes the caller wait.
    #[tokio::test]
    async fn a_cached_head_is_not_used_once_the_client_cannot_send() {
        let none = crate::stomp::frame::Headers::new();
        let parts = SendParts { destination: "/queue/a", content_type: None, persistent: false, headers: &none, transaction: None, receipt: None, body: b"body" };
        let cached = |max_frames| {
            let outbox = Outbox::new(1 << 20, max_frames);
            outbox.go_online(1, Version::V1_2);
            outbox.try_send(&parts, None, || unreachable!("online")).expect("room").unwrap();
            assert!(outbox.lock().head.is_some(), "the first send cached its head");
            outbox
        };
        let outbox = cached(1000);
        outbox.handles_dropped();
        assert!(matches!(outbox.try_send(&parts, None, || unreachable!()), Some(Err(Error::Closed))));
        let outbox = cached(1000);
        outbox.close(|| Error::Closed);
        assert!(matches!(outbox.try_send(&parts, None, || unreachable!()), Some(Err(Error::Closed))));
        let outbox = cached(1);
        assert!(outbox.try_send(&parts, None, || unreachable!()).is_none(), "full: the caller waits for room");
        assert_eq!(outbox.lock().frames, 1);
        let outbox = cached(1000);
        outbox.go_offline();
        let kept = outbox.lock().buf.len();
        outbox.try_send(&parts, None, || Frame::new(Command::Send).header("destination", "/queue/a")).expect("room").unwrap();
        let q = outbox.lock();
        assert_eq!((q.buf.len(), q.offline.len()), (kept, 1), "offline, the SEND waits as a frame to encode for the next connection's version");
    }

    #[tokio::test]
    async fn a_batch_fills_its_buffer_without_reallocating_it() {
        let bound = 64 * 1024;
        let outbox = Outbox::new(bound, 1_000_000);
        outbox.go_online(1, Version::V1_2);
        let headers = crate::stomp::frame::Headers::new();
        let parts = SendParts { destination: "/queue/q", content_type: None, persistent: false, headers: &headers, transaction: None, receipt: None, body: &[b'x'; 1024] };
        for round in 0..3 {
            let at = outbox.lock().buf.as_ptr();
            let mut sent = 0;
            while outbox.lock().bytes() < bound {
                outbox.send(&parts, None, None, || unreachable!("online")).await.unwrap();
                sent += 1;
            }
            assert!(sent > 60, "{sent}");
            assert_eq!(outbox.lock().buf.as_ptr(), at, "round {round}: the buffer moved while {sent} SENDs filled it");
            // As the connection task does: take the batch, write it (the buffer is consumed), hand it back.
            let mut bytes = outbox.take().unwrap().bytes;
            let written = bytes.len();
            bytes::Buf::advance(&mut bytes, written);
            outbox.recycle(bytes);
        }
    }

    #[tokio::test]
    async fn frames_queued_across_a_reconnect_at_the_same_version_are_kept_byte_for_byte() {
        let outbox = Outbox::new(1 << 20, 1000);
        outbox.go_online(1, Version::V1_2);
        outbox.frame(with_header("a:b"), None, None).await.unwrap();
        let before = outbox.lock().buf.clone();
        outbox.go_offline();
        outbox.go_online(2, Version::V1_2);
        assert_eq!(outbox.take().unwrap().bytes, before);
    }
}
