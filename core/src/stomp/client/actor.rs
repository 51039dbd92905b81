//! The connection task: connect and fail over, re-subscribe, serve frames and heart-beats.

use super::inbox::{Deliver, Delivered};
use super::outbox::{Effect, Ending, Offline, Outbox};
use super::*;
use crate::stomp::codec::{FrameError, Heartbeat, Incoming, Version};
use crate::stomp::connection::{self, Connection};
use crate::stomp::error::{Error, Result};
use crate::stomp::frame::{Command, Frame, Headers};
use crate::stomp::heartbeat::{self, KeepaliveWire};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

/// A waiter for a RECEIPT.
pub(super) enum Waiter {
    /// A frame whose sender waits for the outcome.
    Frame(oneshot::Sender<Result<()>>),
    /// A subscription to confirm; survives reconnects.
    Subscribe(String),
    /// DISCONNECT.
    Disconnect,
}

/// A registered subscription, re-sent after every reconnect.
pub(super) struct SubEntry {
    frame: Frame,
    tx: Deliver,
    ack: AckMode,
    confirmed: bool,
    waiters: Vec<oneshot::Sender<Result<()>>>,
    /// Messages of the current read not handed over yet (see `Actor::filling`).
    batch: VecDeque<Message>,
}

impl SubEntry {
    /// A new, unconfirmed subscription whose caller waits on `reply`.
    pub(super) fn new(frame: Frame, tx: Deliver, ack: AckMode, reply: oneshot::Sender<Result<()>>) -> SubEntry {
        SubEntry { frame, tx, ack, confirmed: false, waiters: vec![reply], batch: VecDeque::new() }
    }

    /// Tells every waiter the subscription will not be confirmed.
    pub(super) fn fail(self, error: &impl Fn() -> Error) {
        for w in self.waiters {
            let _ = w.send(Err(error()));
        }
    }
}

/// How many times the connection task yields for more frames after a write before it
/// polls the socket and timers again (see `serve`).
const SPIN: usize = 16;

/// Most frames taken from what was read in one go before the connection task looks
/// at its timers and the outbox again.
const DRAIN: usize = 256;

/// Why the connected loop ended.
pub(super) enum Exit {
    /// The connection broke; reconnect.
    Lost(String),
    /// Closed on purpose; stop.
    Closed(String),
}

/// The connection task.
pub(super) struct Actor {
    pub(super) config: ClientConfig,
    pub(super) outbox: Arc<Outbox>,
    pub(super) events: broadcast::Sender<ClientEvent>,
    pub(super) state: watch::Sender<State>,
    pub(super) shared: std::sync::Weak<Shared>,
    pub(super) subs: foldhash::HashMap<String, SubEntry>,
    pub(super) pending: HashMap<String, Waiter>,
    pub(super) generation: u64,
    pub(super) next_receipt: u64,
    pub(super) last_error: String,
    pub(super) current_endpoint: Option<usize>,
    /// The last connection attempt's error, handed to callers if the client gives up.
    pub(super) last_failure: Option<Error>,
    /// Delivered messages waiting for room in their subscription; while set, the socket is not read.
    pub(super) stalled: Option<(Deliver, VecDeque<Message>)>,
    /// The subscription whose `batch` holds messages not handed over yet (one at a time:
    /// a MESSAGE for another subscription, any other frame, and the end of a read hand it over).
    pub(super) filling: Option<String>,
    /// The last write took a full outbox: senders waiting for room were woken.
    pub(super) room_freed: bool,
}

/// Sleeps until `deadline`, or forever if there is none.
async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// When the connection task must next look at the line: a heart-beat to write, the
/// broker's silence to check, a probe to send. Each is moved on lazily when the one
/// timer fires (a read or a write does not touch them), so the timer rarely fires
/// for nothing.
struct Deadlines {
    /// The next heart-beat write.
    write: Option<Instant>,
    /// When silence from the broker ends the connection.
    read: Option<Instant>,
    /// When silence from a broker without heart-beats calls for a probe.
    probe: Option<Instant>,
}

impl Deadlines {
    /// The earliest of the three, if any.
    fn next(&self) -> Option<Instant> {
        [self.write, self.read, self.probe].into_iter().flatten().min()
    }
}

/// The next item if it is already read or readable without waiting (`Pending` if not):
/// the framed stream is polled once with the task's own waker, so a poll that would wait
/// leaves the task registered for the socket, as the next turn of the loop needs anyway
/// (a no-op waker there would be swapped in and out again on every read).
async fn next_ready(framed: &mut connection::FramedStream) -> std::task::Poll<Option<Result<Incoming, FrameError>>> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(framed.poll_next_unpin(cx))).await
}

/// Lets the other tasks in the run queue run once, then goes on: the task is put straight
/// back in the queue. (`tokio::task::yield_now` defers it until the runtime has also
/// polled its I/O driver: an `epoll_wait` system call per turn, which a publisher
/// filling the outbox between two writes paid for every batch.)
async fn requeue() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

impl Actor {
    /// Connects, serves, reconnects, until closed or out of attempts.
    pub(super) async fn run(mut self) {
        // Connections that fail right after the handshake (a refused SUBSCRIBE, an
        // ERROR at once) count as failures too, so such a broker is not hammered.
        let mut unstable: u32 = 0;
        let reason = loop {
            if unstable > 0 {
                let delay = self.config.url.options.delay(unstable - 1);
                debug!(?delay, unstable, "last connection failed quickly; backing off");
                if !self.pause(delay).await {
                    break (format!("closed while reconnecting: {}", self.last_error), false);
                }
            }
            let Some(mut conn) = self.connect().await else {
                break (format!("gave up reconnecting: {}", self.last_error), true);
            };
            self.go_online(&conn);
            let resubscribed = self.resubscribe(&mut conn).await;
            self.hand_over();
            match resubscribed {
                Ok(()) => {}
                Err(Exit::Lost(why)) => {
                    self.lost(&conn.endpoint, why);
                    unstable = unstable.saturating_add(1);
                    continue;
                }
                Err(Exit::Closed(why)) => break (why, false),
            }
            let served = Instant::now();
            let exit = self.serve(&mut conn).await;
            // What was read before the connection ended is the application's.
            self.hand_over();
            match exit {
                Exit::Lost(why) => self.lost(&conn.endpoint, why),
                Exit::Closed(why) => break (why, false),
            }
            unstable = if served.elapsed() < Duration::from_secs(1) { unstable.saturating_add(1) } else { 0 };
        };
        let (reason, gave_up) = reason;
        self.close(reason, gave_up);
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
                        () = self.outbox.woken() => {
                            if !self.still_wanted() { return None; }
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
                        self.last_failure = Some(e);
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
                () = self.outbox.woken() => {
                    if !self.still_wanted() { return false; }
                }
            }
        }
    }

    /// Checks, while disconnected, whether the client is ending; false means it is.
    fn still_wanted(&mut self) -> bool {
        match self.outbox.ending() {
            None => true,
            Some(Ending::Dropped) => {
                self.last_error = "all client handles dropped".into();
                false
            }
            Some(Ending::Bye(reply)) => {
                let _ = reply.send(Ok(()));
                self.last_error = "closed by the application".into();
                false
            }
        }
    }

    /// A connection is up: what waited in the outbox is encoded for it, and the
    /// subscriptions made or dropped meanwhile are applied before re-subscribing.
    fn go_online(&mut self, conn: &Connection) {
        for change in self.outbox.go_online(self.generation + 1, conn.version) {
            match change {
                Offline::Subscribe { id, entry } => {
                    self.subs.insert(id, entry);
                }
                Offline::Unsubscribe { id } => {
                    self.subs.remove(&id);
                }
                Offline::Frame { .. } => {}
            }
        }
    }

    /// Records a lost connection and fails receipts that can no longer come.
    fn lost(&mut self, endpoint: &str, why: String) {
        warn!(endpoint, reason = %why, "STOMP connection lost");
        let _ = self.state.send(State::Connecting);
        self.outbox.go_offline();
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
    fn close(mut self, reason: String, gave_up: bool) {
        info!(reason = %reason, "STOMP client closed");
        // Only a client that gave up reconnecting hands its last connection error on.
        let last = if gave_up { self.last_failure.take().map(std::sync::Arc::new) } else { None };
        for (_, waiter) in self.pending.drain() {
            if let Waiter::Frame(tx) = waiter {
                let _ = tx.send(Err(Error::Closed));
            }
        }
        let error = || if gave_up { Error::GaveUp { reason: reason.clone(), last: last.clone() } } else { Error::Closed };
        for (_, sub) in self.subs.drain() {
            sub.fail(&error);
        }
        self.outbox.close(error);
        if let Some(shared) = self.shared.upgrade() {
            if let Ok(mut r) = shared.closed.lock() {
                *r = Some(Closed { reason: reason.clone(), gave_up, last });
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
                        self.incoming(conn, f)?;
                        self.hand_over();
                        while let Some((tx, batch)) = self.stalled.take() {
                            tx.deliver(batch).await;
                            self.hand_over();
                        }
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
        let _ =
            self.events.send(ClientEvent::Ready { endpoint: conn.endpoint.clone(), version: conn.version, generation: self.generation, reconnect, subscriptions: self.subs.len() });
        Ok(())
    }

    /// Handles one frame from the broker.
    fn incoming(&mut self, conn: &Connection, frame: Frame) -> Result<(), Exit> {
        match frame.command {
            Command::Message => {
                let sub_id = frame.get("subscription").unwrap_or_default();
                // Another subscription than the one being filled: what was gathered for that
                // one goes first (a MESSAGE for none of ours changes nothing).
                if self.filling.as_deref() != Some(sub_id) && self.subs.contains_key(sub_id) {
                    self.hand_over();
                    self.filling = Some(sub_id.to_owned());
                }
                // One lookup per MESSAGE in the usual case, a run for one subscription.
                let Some(sub) = self.subs.get_mut(sub_id) else {
                    debug!(subscription = %sub_id, "MESSAGE for an unknown subscription dropped");
                    return Ok(());
                };
                // A MESSAGE for the subscription proves the broker took the SUBSCRIBE. Its
                // RECEIPT may be queued behind a backlog larger than the subscription's
                // buffer, unread until the application drains it, so the caller is
                // answered now (the RECEIPT, when read, finds no one waiting).
                if !sub.confirmed {
                    sub.confirmed = true;
                    for w in sub.waiters.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                }
                let ack = (sub.ack != AckMode::Auto).then(|| Box::new(AckRef { headers: ack_headers(&frame, conn.version, sub_id), generation: self.generation }));
                let msg = Message { headers: frame.headers, body: frame.body, ack };
                sub.batch.push_back(msg);
                if sub.batch.len() >= sub.tx.batch_most() {
                    self.hand_over();
                }
                Ok(())
            }
            Command::Receipt => {
                self.hand_over();
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
                self.hand_over();
                let message = frame.get("message").unwrap_or("ERROR frame without message").to_owned();
                let details = String::from_utf8_lossy(&frame.body).trim().to_owned();
                if let Some(id) = frame.get("receipt-id") {
                    match self.pending.remove(id) {
                        Some(Waiter::Frame(tx)) => {
                            let _ = tx.send(Err(Error::Server { message: message.clone(), details: details.clone() }));
                        }
                        // A new subscription the broker refuses is dropped and its caller told;
                        // one that worked before is kept and retried on the next connection
                        // (a half-started broker must not end a daemon's subscription).
                        Some(Waiter::Subscribe(sub)) if self.subs.get(&sub).is_some_and(|e| !e.confirmed) => {
                            self.outbox.forget_sub(&sub);
                            if let Some(entry) = self.subs.remove(&sub) {
                                for w in entry.waiters {
                                    let _ = w.send(Err(Error::Server { message: message.clone(), details: details.clone() }));
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

    /// Hands the messages gathered for the `filling` subscription over to it; when it is
    /// full they wait in `stalled` (and the socket is not read) until it has room.
    fn hand_over(&mut self) {
        if self.stalled.is_some() {
            return;
        }
        let Some(id) = self.filling.as_deref() else { return };
        let Some(sub) = self.subs.get_mut(id) else { return };
        if sub.batch.is_empty() {
            return;
        }
        // The batch keeps its room for the next read, which is likely the size of this one.
        match sub.tx.try_deliver(&mut sub.batch) {
            Some(Delivered::Queued) => {}
            Some(Delivered::Gone) => debug!(subscription = id, "subscriber gone; unsubscribing"),
            // The application is behind: hold these and stop reading the socket until
            // it has room, so the backlog stays in TCP and the broker.
            None => self.stalled = Some((sub.tx.clone(), std::mem::take(&mut sub.batch))),
        }
    }

    /// Handles one item read from the connection (a frame, a heart-beat, its end).
    fn on_read(&mut self, conn: &Connection, item: Option<Result<Incoming, FrameError>>, probe_outstanding: &mut bool) -> Result<(), Exit> {
        match item {
            Some(Ok(Incoming::Frame(f))) => {
                if f.command == Command::Receipt && f.get("receipt-id").is_some_and(|r| r.starts_with("dk-probe-")) {
                    *probe_outstanding = false;
                    return Ok(());
                }
                self.incoming(conn, f)
            }
            Some(Ok(Incoming::Heartbeat)) => Ok(()),
            Some(Err(e)) => Err(Exit::Lost(format!("protocol error: {e}"))),
            None => Err(Exit::Lost("broker closed the connection".into())),
        }
    }

    /// Serves the open connection: commands out, frames in, heart-beats both ways.
    async fn serve(&mut self, conn: &mut Connection) -> Exit {
        let plan = heartbeat::negotiate(&self.config.handshake.heartbeat, conn.server_heartbeat);
        let mut line = heartbeat::Activity::new(Instant::now());
        let mut probe_outstanding = false;
        // What was queued while offline or re-subscribing goes first, in order.
        if let Err(exit) = self.write_outbox(conn).await {
            return exit;
        }
        if let Some(exit) = self.ended(conn).await {
            return exit;
        }
        let mut due = Deadlines { write: line.write_due(plan.send_every), read: line.read_due(plan.read_timeout), probe: line.read_due(plan.probe_after) };
        // One timer for the three deadlines, and one wake-up future kept from turn to
        // turn: every turn of the loop polls what is not ready, so each future more is
        // paid for on every read (a timer's waker check, a fresh `Notified` put in and
        // taken out of the list under its lock).
        let tick = sleep_opt(due.next());
        let outbox = self.outbox.clone();
        let woken = outbox.woken();
        tokio::pin!(tick, woken);
        loop {
            // A sender clone only while messages wait for room in their subscription.
            let stalled = self.stalled.as_ref().map(|(tx, batch)| (tx.clone(), batch.len()));
            tokio::select! {
                biased;
                () = async { match &stalled { Some((tx, n)) => tx.room_for(*n).await, None => std::future::pending().await } }, if stalled.is_some() => {
                    if let Some((tx, mut batch)) = self.stalled.take() {
                        if tx.try_deliver(&mut batch).is_none() {
                            self.stalled = Some((tx, batch));
                            continue;
                        }
                    }
                    // Then what was gathered behind them; reading resumes once all is handed over.
                    self.hand_over();
                    if self.stalled.is_some() {
                        continue;
                    }
                    // What the broker sent meanwhile is waiting in the socket.
                    line.read(Instant::now());
                    due.read = line.read_due(plan.read_timeout);
                    tick.as_mut().set(sleep_opt(due.next()));
                }
                item = conn.framed.next(), if self.stalled.is_none() => {
                    line.read(Instant::now());
                    if let Err(exit) = self.on_read(conn, item, &mut probe_outstanding) {
                        return exit;
                    }
                    // Every frame already read goes the same way, without a turn through
                    // the timers and the outbox for each, so a subscription gets them all at
                    // once. A poll that would wait ends the round (nothing is awaited here).
                    for _ in 0..DRAIN {
                        if self.stalled.is_some() {
                            break;
                        }
                        let std::task::Poll::Ready(item) = next_ready(&mut conn.framed).await else { break };
                        if let Err(exit) = self.on_read(conn, item, &mut probe_outstanding) {
                            return exit;
                        }
                    }
                    self.hand_over();
                }
                () = &mut woken => {
                    woken.set(outbox.woken());
                    if let Err(exit) = self.write_outbox(conn).await { return exit; }
                    if let Some(exit) = self.ended(conn).await { return exit; }
                    line.wrote(Instant::now());
                    // A caller that sends one message, then awaits something else, appends the
                    // next while this task yields: written at once, without parking and polling
                    // the read side and the timers again for every message. At most SPIN
                    // rounds, so reading never waits long behind a steady sender. After a
                    // write that took a full outbox the senders it woke are already queued to
                    // run, so the task only requeues behind them (no system call); otherwise
                    // it yields the way that lets the runtime poll I/O first and run the
                    // tasks that yielded (a sender that sends, then yields).
                    for _ in 0..SPIN {
                        if self.room_freed {
                            requeue().await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                        match self.write_outbox(conn).await {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(exit) => return exit,
                        }
                        if let Some(exit) = self.ended(conn).await { return exit; }
                        line.wrote(Instant::now());
                    }
                }
                () = &mut tick => {
                    if let Err(exit) = self.on_deadlines(conn, &plan, &mut line, &mut due, &mut probe_outstanding).await {
                        return exit;
                    }
                    tick.as_mut().set(sleep_opt(due.next()));
                }
            }
        }
    }

    /// The timer fired: a heart-beat to write, silence to end the connection for, or a
    /// probe to send, each only when its deadline has come (see [`Deadlines`]); each
    /// deadline that came is then moved on.
    async fn on_deadlines(
        &mut self,
        conn: &mut Connection,
        plan: &heartbeat::Plan,
        line: &mut heartbeat::Activity,
        due: &mut Deadlines,
        probe_outstanding: &mut bool,
    ) -> Result<(), Exit> {
        let now = Instant::now();
        if due.write.is_some_and(|d| d <= now) {
            due.write = Self::heartbeat(conn, plan, line, now).await?;
        }
        if due.read.is_some_and(|d| d <= now) {
            due.read = self.silence(plan, line, now)?;
        }
        if due.probe.is_some_and(|d| d <= now) {
            due.probe = self.probe(conn, plan, line, now, probe_outstanding).await?;
        }
        Ok(())
    }

    /// Writes a heart-beat unless something was written since the deadline was set; the next deadline.
    async fn heartbeat(conn: &mut Connection, plan: &heartbeat::Plan, line: &mut heartbeat::Activity, now: Instant) -> Result<Option<Instant>, Exit> {
        let due = line.write_due(plan.send_every);
        if due.is_none_or(|d| d > now) {
            return Ok(due);
        }
        let r = match &plan.wire {
            KeepaliveWire::Eol => conn.framed.send(Heartbeat).await,
            KeepaliveWire::SendTo(dest) => conn.framed.send(&Frame::new(Command::Send).header("destination", dest.clone()).with_body(&b"\n"[..])).await,
        };
        r.map_err(|e| Exit::Lost(format!("heart-beat write failed: {e}")))?;
        line.wrote(Instant::now());
        Ok(line.write_due(plan.send_every))
    }

    /// Ends the connection if the broker has been silent too long (unless the socket is
    /// not read on purpose, a subscription being full); the next deadline.
    fn silence(&self, plan: &heartbeat::Plan, line: &heartbeat::Activity, now: Instant) -> Result<Option<Instant>, Exit> {
        let timeout = plan.read_timeout.unwrap_or(Duration::MAX);
        if self.stalled.is_some() {
            // Not reading on purpose: silence proves nothing now.
            return Ok(now.checked_add(timeout));
        }
        let due = line.read_due(plan.read_timeout);
        if due.is_some_and(|d| d <= now) {
            let kind = if plan.emulated { "emulated" } else { "negotiated" };
            return Err(Exit::Lost(format!("nothing received from the broker for {timeout:?} ({kind} heart-beat)")));
        }
        Ok(due)
    }

    /// Provokes a RECEIPT from a broker without heart-beats that has been silent, to prove
    /// it is alive (one probe outstanding at a time); the next deadline.
    async fn probe(
        &mut self,
        conn: &mut Connection,
        plan: &heartbeat::Plan,
        line: &mut heartbeat::Activity,
        now: Instant,
        outstanding: &mut bool,
    ) -> Result<Option<Instant>, Exit> {
        let Some(due) = line.read_due(plan.probe_after) else { return Ok(None) };
        let after = plan.probe_after.unwrap_or(Duration::MAX);
        if self.stalled.is_some() || now < due || *outstanding {
            return Ok(Some(due.max(now.checked_add(after / 2).unwrap_or(due))));
        }
        let id = self.receipt_id("probe");
        let begin = Frame::new(Command::Begin).header("transaction", id.clone());
        let abort = Frame::new(Command::Abort).header("transaction", id.clone()).header("receipt", id);
        let r = async {
            conn.framed.feed(&begin).await?;
            conn.framed.send(&abort).await
        }
        .await;
        r.map_err(|e| Exit::Lost(format!("probe write failed: {e}")))?;
        *outstanding = true;
        let sent = Instant::now();
        line.wrote(sent);
        Ok(sent.checked_add(after))
    }

    /// Takes what callers queued and writes it: registers each frame's receipt or
    /// subscription first (so no answer can come before its waiter), then writes the
    /// batch and flushes; a queued DISCONNECT ends the connection. `false`: nothing was queued.
    async fn write_outbox(&mut self, conn: &mut Connection) -> Result<bool, Exit> {
        let Some(batch) = self.outbox.take() else { return Ok(false) };
        self.room_freed = batch.was_full;
        let mut bye = None;
        for mark in batch.marks {
            match mark.effect {
                Effect::None => {}
                Effect::Receipt { receipt, reply } => self.wait_for(receipt, Waiter::Frame(reply)),
                Effect::Subscribe { id, receipt, entry } => {
                    self.subs.insert(id.clone(), entry);
                    self.wait_for(receipt, Waiter::Subscribe(id));
                }
                Effect::Unsubscribe { id, receipt } => {
                    self.subs.remove(&id);
                    if let Some((receipt, reply)) = receipt {
                        self.wait_for(receipt, Waiter::Frame(reply));
                    }
                }
                Effect::Disconnect { receipt, reply } => {
                    self.pending.insert(receipt, Waiter::Disconnect);
                    bye = Some(reply);
                }
            }
        }
        let written = write_batch(&mut conn.framed, batch.bytes).await;
        match written {
            Ok(spare) => self.outbox.recycle(spare),
            Err(e) => {
                if let Some(reply) = bye {
                    let _ = reply.send(Ok(()));
                    return Err(Exit::Closed(format!("disconnected (write failed: {e})")));
                }
                return Err(Exit::Lost(format!("write failed: {e}")));
            }
        }
        match bye {
            Some(reply) => Err(self.finish_disconnect(conn, reply).await),
            None => Ok(true),
        }
    }

    /// Ends the connection if every handle is gone or a DISCONNECT was asked for while offline.
    async fn ended(&mut self, conn: &mut Connection) -> Option<Exit> {
        let (reply, why) = match self.outbox.ending()? {
            Ending::Dropped => (None, "all client handles dropped"),
            Ending::Bye(reply) => (Some(reply), "disconnected by the application"),
        };
        let _ = conn.framed.send(&Frame::new(Command::Disconnect)).await;
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
        Some(Exit::Closed(why.into()))
    }

    /// Registers a waiter for `receipt`, first forgetting callers that stopped listening if there are many.
    fn wait_for(&mut self, receipt: String, waiter: Waiter) {
        if self.pending.len() >= 4096 {
            // Callers that timed out no longer listen: forget their receipts.
            self.pending.retain(|_, w| !matches!(w, Waiter::Frame(tx) if tx.is_closed()));
        }
        self.pending.insert(receipt, waiter);
    }

    /// After DISCONNECT was written: waits (bounded) for its receipt, then the connection is done.
    async fn finish_disconnect(&mut self, conn: &mut Connection, reply: oneshot::Sender<Result<()>>) -> Exit {
        let deadline = Instant::now() + self.config.receipt_timeout;
        let outcome = loop {
            tokio::select! {
                item = conn.framed.next() => match item {
                    Some(Ok(Incoming::Frame(f))) => match self.incoming(conn, f) {
                        Ok(()) => {
                            // Closing: a message the application has no room for is dropped
                            // (with client acks the broker redelivers it).
                            self.hand_over();
                            self.stalled = None;
                            continue;
                        }
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
        Exit::Closed("disconnected by the application".into())
    }
}

/// Writes a batch of encoded frames and flushes, returning the batch's own buffer for
/// reuse. When the framed write buffer is empty the batch is lent to it (no copy, one
/// `writev`) and the framed stream gets its small buffer back after the flush, so two
/// send buffers take turns, not three; otherwise the batch is appended behind what is
/// there and comes back unchanged (the outbox clears it).
async fn write_batch(framed: &mut connection::FramedStream, mut bytes: BytesMut) -> Result<BytesMut, crate::stomp::codec::FrameError> {
    let wbuf = framed.write_buffer_mut();
    let lent = wbuf.is_empty();
    if lent {
        std::mem::swap(wbuf, &mut bytes);
    } else {
        wbuf.extend_from_slice(&bytes);
    }
    connection::flush(framed).await?;
    if lent {
        std::mem::swap(framed.write_buffer_mut(), &mut bytes);
    }
    Ok(bytes)
}

/// The headers an ACK/NACK needs for this version.
fn ack_headers(frame: &Frame, version: Version, sub_id: &str) -> Headers {
    // Values share the MESSAGE's header block: no copy per message.
    let shared = |name: &str| frame.headers.get_shared(name);
    let mut h = Headers::with_capacity(2);
    match version {
        Version::V1_2 => {
            if let Some(id) = shared("ack").or_else(|| shared("message-id")) {
                h.push("id", id);
            }
        }
        Version::V1_1 => {
            if let Some(mid) = shared("message-id") {
                h.push("message-id", mid);
            }
            h.push("subscription", sub_id);
        }
        Version::V1_0 => {
            if let Some(mid) = shared("message-id") {
                h.push("message-id", mid);
            }
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Framed;

    /// A batch written while the framed buffer is empty comes back as the same allocation
    /// (what the outbox reuses next), and the framed stream keeps its own small buffer: a
    /// batch-sized third buffer would otherwise join the rotation (~144 KiB more memory,
    /// and each buffer filled only every third batch, colder in cache).
    #[tokio::test]
    async fn a_written_batch_comes_back_and_the_framed_stream_keeps_its_small_buffer() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut framed: connection::FramedStream = Framed::new(Box::new(ours), crate::stomp::codec::StompCodec::new(Version::V1_2));
        let small = framed.write_buffer().capacity();
        let frame = b"SEND\ndestination:/queue/a\ncontent-length:5\n\nhello\0";
        let mut batch = BytesMut::with_capacity(128 * 1024);
        while batch.len() + frame.len() <= 100_000 {
            batch.extend_from_slice(frame);
        }
        let len = batch.len();
        let allocation = batch.as_ptr() as usize..=batch.as_ptr() as usize + batch.capacity();
        let back = write_batch(&mut framed, batch).await.expect("write");
        assert!(back.is_empty());
        assert!(allocation.contains(&(back.as_ptr() as usize)), "the batch's own buffer, its bytes written, comes back");
        assert_eq!(framed.write_buffer().capacity(), small, "the framed stream keeps its own buffer");
        let mut got = vec![0; len];
        theirs.read_exact(&mut got).await.expect("read");
        assert!(got.chunks(frame.len()).all(|c| c == frame));

        // With bytes already in the framed buffer the batch is appended behind them and returned as it was.
        framed.write_buffer_mut().extend_from_slice(frame);
        let mut batch = BytesMut::with_capacity(4096);
        batch.extend_from_slice(frame);
        let back = write_batch(&mut framed, batch).await.expect("write");
        assert_eq!(&back[..], &frame[..]);
        let mut got = vec![0; 2 * frame.len()];
        theirs.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..frame.len()], &frame[..]);
        assert_eq!(&got[frame.len()..], &frame[..]);
    }
}
