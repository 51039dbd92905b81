//! Destinations, subscriptions and acknowledgements: the broker's shared state.
//!
//! Everything lives behind one `std::sync::Mutex`, held only for in-memory work
//! (never across an `.await`): routing a message is a few hash look-ups and a
//! non-blocking push per subscriber. Waiting for slow consumers happens outside
//! the lock, in the publisher's task, through the [`Wait`]s routing returns.
//!
//! # Destinations
//! - `/queue/NAME`: each message goes to one subscriber, round-robin (preferring
//!   subscribers whose outbox is not full), and waits in the queue while no
//!   subscriber has credit.
//! - `/temp-queue/NAME`: a queue private to the session that names it; it is
//!   known to everyone else as `/reply-queue/dk-N.NAME` (`reply-to` headers are
//!   rewritten to that), and is deleted with the session.
//! - Anything else (`/topic/…`, `/exchange/…`, plain names): a topic; each
//!   message goes to every current subscriber and is not kept. A `/topic/`
//!   subscription with wildcard words (`*`, `#`, `>`; see `wildcard`) hears
//!   every topic it matches.

use super::budget::{Budget, Charge};
use super::config::BrokerConfig;
use super::message::Message;
use super::outbox::{Delivery, Out, Outbox, SubInfo};
use super::wildcard::Pattern;
use crate::stomp::AckMode;
use crate::stomp::Version;
use bytes::{Bytes, BytesMut};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Prefix of per-session temporary queues, as clients name them.
pub(crate) const TEMP_QUEUE: &str = "/temp-queue/";
/// Prefix under which temporary queues are known to other sessions.
pub(crate) const REPLY_QUEUE: &str = "/reply-queue/";
/// Prefix of shared queues.
pub(crate) const QUEUE: &str = "/queue/";

/// A client mistake, answered with an ERROR frame and a close.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ProtoError {
    /// Short text for the ERROR frame's `message` header.
    pub message: Cow<'static, str>,
    /// Longer explanation for the ERROR frame's body.
    pub detail: Option<String>,
}

impl ProtoError {
    /// An error with a message only.
    pub fn new(message: impl Into<Cow<'static, str>>) -> ProtoError {
        ProtoError { message: message.into(), detail: None }
    }

    /// An error with a message and a body.
    pub fn detail(message: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> ProtoError {
        ProtoError { message: message.into(), detail: Some(detail.into()) }
    }
}

/// Something a publisher must wait for after routing, outside the lock.
#[derive(Debug)]
pub(crate) enum Wait {
    /// A subscriber's outbox went over its limit.
    Outbox(Arc<Outbox>),
    /// A queue with subscribers went over `max_queue_len` or `max_destination_bytes`.
    Queue(String, Arc<Notify>),
}

/// Where a subscription takes its messages from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Topic(String),
    Queue(String),
}

/// A subscription, addressed broker-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubKey {
    session: u64,
    sub: u32,
}

/// A message waiting in a queue or a subscription's backlog.
#[derive(Debug)]
struct Queued {
    msg: Arc<Message>,
    redelivered: bool,
}

/// How much one queue (or one topic subscription's backlog) may hold.
#[derive(Debug, Clone, Copy)]
struct Bound {
    /// Most messages.
    len: usize,
    /// Most bytes (by [`Message::size`]).
    bytes: usize,
}

#[derive(Debug)]
struct Queue {
    backlog: VecDeque<Queued>,
    /// Bytes of the messages in `backlog`.
    bytes: usize,
    subs: Vec<SubKey>,
    next: usize,
    /// The session owning a temporary queue.
    owner: Option<u64>,
    dropped: u64,
    room: Arc<Notify>,
    /// A publisher already waited in vain: drop the oldest at once until the queue drains.
    overflowing: bool,
}

impl Queue {
    fn new(owner: Option<u64>) -> Queue {
        Queue { backlog: VecDeque::new(), bytes: 0, subs: Vec::new(), next: 0, owner, dropped: 0, room: Arc::new(Notify::new()), overflowing: false }
    }

    fn push_back(&mut self, q: Queued) {
        self.bytes += q.msg.size();
        self.backlog.push_back(q);
    }

    fn push_front(&mut self, q: Queued) {
        self.bytes += q.msg.size();
        self.backlog.push_front(q);
    }

    fn pop_front(&mut self) -> Option<Queued> {
        let q = self.backlog.pop_front()?;
        self.bytes = self.bytes.saturating_sub(q.msg.size());
        Some(q)
    }

    /// Whether the queue holds more than `bound` allows.
    fn over(&self, bound: Bound) -> bool {
        self.backlog.len() > bound.len || self.bytes > bound.bytes
    }

    /// Drops the oldest messages until the queue is within `bound`, with a warning now and then.
    fn trim(&mut self, name: &str, bound: Bound) {
        let mut excess = 0u64;
        while self.over(bound) && self.pop_front().is_some() {
            excess += 1;
        }
        self.note_dropped(name, excess, "queue full: oldest messages dropped");
    }

    /// Counts `n` dropped messages, warning on the first and then every thousandth.
    fn note_dropped(&mut self, name: &str, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        let before = self.dropped;
        self.dropped += n;
        if before == 0 || before / 1000 != self.dropped / 1000 {
            warn!(queue = name, dropped_total = self.dropped, queued_bytes = self.bytes, "{why}");
        }
    }
}

#[derive(Debug)]
struct Sub {
    id: String,
    dest: Dest,
    ack: AckMode,
    /// Most unacknowledged deliveries (client ack modes).
    prefetch: usize,
    in_flight: usize,
    info: Arc<SubInfo>,
    /// Topic messages waiting for prefetch credit.
    backlog: VecDeque<Queued>,
    /// Bytes of the messages in `backlog`.
    backlog_bytes: usize,
    /// Created by a `reply-to: /temp-queue/…` rather than by SUBSCRIBE.
    implicit: bool,
}

impl Sub {
    fn has_credit(&self) -> bool {
        self.ack == AckMode::Auto || self.in_flight < self.prefetch
    }
}

#[derive(Debug)]
struct Unacked {
    sub: u32,
    msg: Arc<Message>,
}

#[derive(Debug)]
struct SessionState {
    outbox: Arc<Outbox>,
    version: Version,
    /// `message-id` prefix, `dk-N-`.
    prefix: String,
    subs: HashMap<u32, Sub>,
    sub_ids: HashMap<String, u32>,
    next_sub: u32,
    unacked: BTreeMap<u64, Unacked>,
    next_tag: u64,
    /// Temporary queue NAME → broker-wide queue name.
    temp_queues: HashMap<String, String>,
}

impl SessionState {
    /// Sends `msg` to subscription `sub_no` now (the caller checked credit).
    fn deliver(&mut self, sub_no: u32, msg: Arc<Message>, redelivered: bool, waits: &mut Vec<Wait>) {
        let Some(sub) = self.subs.get_mut(&sub_no) else {
            return;
        };
        self.next_tag += 1;
        let tag = self.next_tag;
        if sub.ack != AckMode::Auto {
            self.unacked.insert(tag, Unacked { sub: sub_no, msg: msg.clone() });
            sub.in_flight += 1;
        }
        let full = self.outbox.push(Out::Deliver(Delivery { msg, sub: sub.info.clone(), tag, redelivered }));
        if full && !waits.iter().any(|w| matches!(w, Wait::Outbox(o) if Arc::ptr_eq(o, &self.outbox))) {
            waits.push(Wait::Outbox(self.outbox.clone()));
        }
    }

    /// Delivers a topic subscription's backlog while it has credit.
    fn drain_backlog(&mut self, sub_no: u32, waits: &mut Vec<Wait>) {
        loop {
            let Some(sub) = self.subs.get_mut(&sub_no) else {
                return;
            };
            if !sub.has_credit() {
                return;
            }
            let Some(q) = sub.backlog.pop_front() else {
                return;
            };
            sub.backlog_bytes = sub.backlog_bytes.saturating_sub(q.msg.size());
            self.deliver(sub_no, q.msg, q.redelivered, waits);
        }
    }
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<u64, SessionState>,
    /// Subscribers of each topic name, exact.
    topics: HashMap<String, Vec<SubKey>>,
    /// Wildcard topic subscriptions, by the destination they named.
    wild: HashMap<String, (Pattern, Vec<SubKey>)>,
    queues: HashMap<String, Queue>,
}

impl State {
    /// Every subscription a message sent to topic `name` reaches: exact ones first, then wildcard ones.
    fn topic_subs(&self, name: &str) -> Cow<'_, [SubKey]> {
        let exact = self.topics.get(name).map_or(&[][..], Vec::as_slice);
        if self.wild.is_empty() {
            return Cow::Borrowed(exact);
        }
        let mut all = exact.to_vec();
        all.extend(wild_subs(&self.wild, name));
        Cow::Owned(all)
    }
}

/// The wildcard subscriptions that hear topic `name` (no allocation when there are none).
fn wild_subs(wild: &HashMap<String, (Pattern, Vec<SubKey>)>, name: &str) -> Vec<SubKey> {
    if wild.is_empty() {
        return Vec::new();
    }
    wild.values().filter(|(p, _)| p.matches(name)).flat_map(|(_, subs)| subs.iter().copied()).collect()
}

/// The broker's routing table and acknowledgement tracker.
#[derive(Debug)]
pub(crate) struct Router {
    state: Mutex<State>,
    max_queue_len: usize,
    /// What one queue or topic subscription backlog may hold.
    bound: Bound,
    /// Bytes held by every live message and open transaction.
    budget: Arc<Budget>,
    /// The last message serial handed out (behind `message-id`).
    seq: std::sync::atomic::AtomicU64,
}

/// Counts of what the router holds, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Connected (post-CONNECT) sessions.
    pub sessions: usize,
    /// Live subscriptions.
    pub subscriptions: usize,
    /// Queues, temporary ones included.
    pub queues: usize,
    /// Messages waiting in queues.
    pub queued_messages: usize,
    /// Messages delivered and not yet acknowledged.
    pub unacked: usize,
    /// Bytes of messages waiting in queues.
    pub queued_bytes: usize,
    /// Bytes held on the broker's budget: every live message and open transaction.
    pub retained_bytes: usize,
    /// Open connections, logged in or not.
    pub connections: usize,
    /// Connections that have not completed CONNECT yet.
    pub pending_connections: usize,
    /// Connections closed at once because a connection cap was reached.
    pub refused_connections: u64,
}

/// Delivers a queue's messages to subscribers with credit, round-robin.
fn pump_queue(queue: &mut Queue, sessions: &mut HashMap<u64, SessionState>, bound: Bound, waits: &mut Vec<Wait>) {
    while !queue.backlog.is_empty() && !queue.subs.is_empty() {
        let n = queue.subs.len();
        let credit = |key: &SubKey| sessions.get(&key.session).and_then(|s| s.subs.get(&key.sub)).is_some_and(Sub::has_credit);
        let not_full = |key: &SubKey| sessions.get(&key.session).is_some_and(|s| !s.outbox.is_full());
        let start = queue.next % n;
        let pick = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| credit(&queue.subs[i]) && not_full(&queue.subs[i]))
            .or_else(|| (0..n).map(|i| (start + i) % n).find(|&i| credit(&queue.subs[i])));
        let Some(i) = pick else { break };
        queue.next = (i + 1) % n;
        let key = queue.subs[i];
        let Some(q) = queue.pop_front() else {
            break;
        };
        if let Some(sess) = sessions.get_mut(&key.session) {
            sess.deliver(key.sub, q.msg, q.redelivered, waits);
        }
    }
    if !queue.over(bound) {
        queue.overflowing = false;
        queue.room.notify_waiters();
    }
}

/// Removes `key` from the subscriber list of `dest`.
fn detach(state: &mut State, key: SubKey, dest: &Dest) {
    match dest {
        Dest::Topic(name) => {
            if let Some(subs) = state.topics.get_mut(name) {
                subs.retain(|k| *k != key);
                if subs.is_empty() {
                    state.topics.remove(name);
                }
            }
            if let Some((_, subs)) = state.wild.get_mut(name) {
                subs.retain(|k| *k != key);
                if subs.is_empty() {
                    state.wild.remove(name);
                }
            }
        }
        Dest::Queue(name) => {
            if let Some(q) = state.queues.get_mut(name) {
                if let Some(i) = q.subs.iter().position(|k| *k == key) {
                    q.subs.remove(i);
                    if i < q.next {
                        q.next -= 1;
                    }
                }
            }
        }
    }
}

/// Puts unacknowledged queue messages back at the front of their queue, in order.
fn requeue(state: &mut State, name: &str, msgs: Vec<Arc<Message>>) {
    if let Some(q) = state.queues.get_mut(name) {
        for msg in msgs.into_iter().rev() {
            q.push_front(Queued { msg, redelivered: true });
        }
    }
}

/// Forgets a queue that holds nothing and serves no one (temporary queues live as long as their owner).
fn gc_queue(state: &mut State, name: &str) {
    if let Some(q) = state.queues.get(name) {
        if q.owner.is_none() && q.subs.is_empty() && q.backlog.is_empty() {
            state.queues.remove(name);
        }
    }
}

impl Router {
    /// An empty router with `config`'s queue bounds and byte budget.
    pub fn new(config: &BrokerConfig) -> Router {
        let max_queue_len = config.max_queue_len.max(1);
        Router {
            state: Mutex::new(State::default()),
            max_queue_len,
            bound: Bound { len: max_queue_len, bytes: config.max_destination_bytes.max(1) },
            budget: Budget::new(config.max_bytes),
            seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The broker-wide byte budget (transactions charge their buffered frames to it).
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Charges `size` bytes for a new message; when the budget is full, the oldest
    /// messages of queues nobody listens to are dropped first (largest queue first).
    fn charge(&self, state: &mut State, size: usize) -> Result<Charge, ProtoError> {
        loop {
            if let Some(c) = self.budget.try_charge(size) {
                return Ok(c);
            }
            let victim = state.queues.iter_mut().filter(|(_, q)| q.subs.is_empty() && !q.backlog.is_empty()).max_by_key(|(_, q)| q.bytes);
            let Some((name, q)) = victim else {
                return Err(budget_exhausted(&self.budget, size));
            };
            let mut n = 0u64;
            while self.budget.used().saturating_add(size) > self.budget.max() && q.pop_front().is_some() {
                n += 1;
            }
            q.note_dropped(name, n, "broker byte budget full: oldest messages of an unwatched queue dropped");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take every other client down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session after a successful CONNECT.
    pub fn register(&self, id: u64, outbox: Arc<Outbox>, version: Version) {
        let state = SessionState {
            outbox,
            version,
            prefix: format!("dk-{id}-"),
            subs: HashMap::new(),
            sub_ids: HashMap::new(),
            next_sub: 0,
            unacked: BTreeMap::new(),
            next_tag: 0,
            temp_queues: HashMap::new(),
        };
        self.lock().sessions.insert(id, state);
    }

    /// Removes a session: unacknowledged queue messages go back to their queues
    /// (and on to other subscribers), temporary queues are deleted.
    pub fn unregister(&self, id: u64) -> Vec<Wait> {
        let mut waits = Vec::new();
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(mut sess) = state.sessions.remove(&id) else {
            return waits;
        };
        let mut touched = Vec::new();
        let mut sub_nos: Vec<u32> = sess.subs.keys().copied().collect();
        sub_nos.sort_unstable();
        for sub_no in sub_nos {
            let Some(sub) = sess.subs.remove(&sub_no) else {
                continue;
            };
            detach(state, SubKey { session: id, sub: sub_no }, &sub.dest);
            if let Dest::Queue(name) = sub.dest {
                let msgs: Vec<Arc<Message>> = sess.unacked.iter().filter(|(_, u)| u.sub == sub_no).map(|(_, u)| u.msg.clone()).collect();
                if !msgs.is_empty() {
                    requeue(state, &name, msgs);
                }
                touched.push(name);
            }
        }
        for (_, real) in sess.temp_queues.drain() {
            state.queues.remove(&real);
        }
        for name in touched {
            if let Some(q) = state.queues.get_mut(&name) {
                pump_queue(q, &mut state.sessions, self.bound, &mut waits);
            }
            gc_queue(state, &name);
        }
        waits
    }

    /// The broker-wide name of this session's temporary queue `name`, created if needed.
    fn temp_queue(state: &mut State, session: u64, name: &str) -> Option<String> {
        let sess = state.sessions.get_mut(&session)?;
        if let Some(real) = sess.temp_queues.get(name) {
            return Some(real.clone());
        }
        let real = format!("{REPLY_QUEUE}dk-{session}.{name}");
        sess.temp_queues.insert(name.to_owned(), real.clone());
        state.queues.insert(real.clone(), Queue::new(Some(session)));
        Some(real)
    }

    /// Subscribes; delivers what a queue holds at once.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(&self, session: u64, id: &str, destination: &str, ack: AckMode, prefetch: usize, waits: &mut Vec<Wait>) -> Result<(), ProtoError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let dest = if let Some(name) = destination.strip_prefix(TEMP_QUEUE) {
            let real = Self::temp_queue(state, session, name).ok_or_else(|| ProtoError::new("session gone"))?;
            // An explicit subscription replaces the one a reply-to created.
            let implicit = state.sessions.get(&session).and_then(|s| s.subs.iter().find(|(_, sub)| sub.implicit && sub.dest == Dest::Queue(real.clone())).map(|(n, _)| *n));
            if let Some(sub_no) = implicit {
                self.remove_sub(state, session, sub_no, waits);
            }
            Dest::Queue(real)
        } else if destination.starts_with(REPLY_QUEUE) {
            let owner = state.queues.get(destination).and_then(|q| q.owner);
            if owner != Some(session) {
                return Err(ProtoError::detail(
                    "cannot subscribe to another session's reply queue",
                    format!("{destination} is private to the session that created it (as /temp-queue/NAME)"),
                ));
            }
            Dest::Queue(destination.to_owned())
        } else if destination.starts_with(QUEUE) {
            Dest::Queue(destination.to_owned())
        } else {
            Dest::Topic(destination.to_owned())
        };
        let sess = state.sessions.get_mut(&session).ok_or_else(|| ProtoError::new("session gone"))?;
        if sess.sub_ids.contains_key(id) {
            return Err(ProtoError::detail("duplicate subscription id", format!("subscription id {id:?} is already in use")));
        }
        let mut esc = BytesMut::new();
        if !super::message::put_escaped(&mut esc, id, sess.version, false) {
            return Err(ProtoError::detail("invalid subscription id", format!("subscription id {id:?} cannot be written in STOMP {}", sess.version)));
        }
        let info = Arc::new(SubInfo { id_esc: Bytes::from(esc), ack_header: sess.version == Version::V1_2 && ack != AckMode::Auto });
        let sub_no = sess.next_sub;
        sess.next_sub += 1;
        sess.sub_ids.insert(id.to_owned(), sub_no);
        sess.subs.insert(
            sub_no,
            Sub {
                id: id.to_owned(),
                dest: dest.clone(),
                ack,
                // Without a prefetch, client-ack subscriptions still get a bound.
                prefetch: if prefetch == 0 { self.max_queue_len } else { prefetch },
                in_flight: 0,
                info,
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                implicit: false,
            },
        );
        let key = SubKey { session, sub: sub_no };
        match dest {
            Dest::Topic(name) => match Pattern::parse(&name) {
                Some(pattern) => state.wild.entry(name).or_insert_with(|| (pattern, Vec::new())).1.push(key),
                None => state.topics.entry(name).or_default().push(key),
            },
            Dest::Queue(name) => {
                let q = state.queues.entry(name.clone()).or_insert_with(|| Queue::new(None));
                q.subs.push(key);
                pump_queue(q, &mut state.sessions, self.bound, waits);
            }
        }
        Ok(())
    }

    /// Adds the implicit subscription `/temp-queue/NAME` a `reply-to` asks for, unless one exists.
    fn implicit_sub(&self, state: &mut State, session: u64, name: &str, real: &str, waits: &mut Vec<Wait>) {
        let Some(sess) = state.sessions.get_mut(&session) else {
            return;
        };
        let dest = Dest::Queue(real.to_owned());
        if sess.subs.values().any(|s| s.dest == dest) {
            return;
        }
        let id = format!("{TEMP_QUEUE}{name}");
        if sess.sub_ids.contains_key(&id) {
            return;
        }
        let mut esc = BytesMut::new();
        if !super::message::put_escaped(&mut esc, &id, sess.version, false) {
            return;
        }
        let sub_no = sess.next_sub;
        sess.next_sub += 1;
        sess.sub_ids.insert(id.clone(), sub_no);
        let info = Arc::new(SubInfo { id_esc: Bytes::from(esc), ack_header: false });
        sess.subs.insert(sub_no, Sub { id, dest, ack: AckMode::Auto, prefetch: 0, in_flight: 0, info, backlog: VecDeque::new(), backlog_bytes: 0, implicit: true });
        if let Some(q) = state.queues.get_mut(real) {
            q.subs.push(SubKey { session, sub: sub_no });
            pump_queue(q, &mut state.sessions, self.bound, waits);
        }
    }

    /// Cancels subscription `id` (or the one on destination `id`, STOMP 1.0 style).
    pub fn unsubscribe(&self, session: u64, id: &str, waits: &mut Vec<Wait>) -> Result<(), ProtoError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let sess = state.sessions.get(&session).ok_or_else(|| ProtoError::new("session gone"))?;
        let sub_no = sess.sub_ids.get(id).copied().ok_or_else(|| ProtoError::detail("unknown subscription", format!("no subscription with id {id:?}")))?;
        self.remove_sub(state, session, sub_no, waits);
        Ok(())
    }

    /// The id of the subscription on `destination`, for STOMP 1.0 UNSUBSCRIBE by destination.
    pub fn sub_by_destination(&self, session: u64, destination: &str) -> Option<String> {
        let state = self.lock();
        let sess = state.sessions.get(&session)?;
        let real = match destination.strip_prefix(TEMP_QUEUE) {
            Some(name) => sess.temp_queues.get(name)?.clone(),
            None => destination.to_owned(),
        };
        sess.subs.values().find(|s| matches!(&s.dest, Dest::Topic(n) | Dest::Queue(n) if *n == real)).map(|s| s.id.clone())
    }

    /// Removes a subscription; its unacknowledged queue messages are redelivered.
    fn remove_sub(&self, state: &mut State, session: u64, sub_no: u32, waits: &mut Vec<Wait>) {
        let Some(sess) = state.sessions.get_mut(&session) else {
            return;
        };
        let Some(sub) = sess.subs.remove(&sub_no) else {
            return;
        };
        sess.sub_ids.remove(&sub.id);
        let tags: Vec<u64> = sess.unacked.iter().filter(|(_, u)| u.sub == sub_no).map(|(t, _)| *t).collect();
        let msgs: Vec<Arc<Message>> = tags.iter().filter_map(|t| sess.unacked.remove(t)).map(|u| u.msg).collect();
        detach(state, SubKey { session, sub: sub_no }, &sub.dest);
        if let Dest::Queue(name) = &sub.dest {
            if !msgs.is_empty() {
                requeue(state, name, msgs);
            }
            if let Some(q) = state.queues.get_mut(name) {
                pump_queue(q, &mut state.sessions, self.bound, waits);
            }
            gc_queue(state, name);
        }
    }

    /// Routes a SEND (the session checked that `destination` is present). A `reply-to`
    /// naming a temporary queue is rewritten to the queue's broker-wide name.
    pub fn send(&self, session: u64, mut headers: crate::stomp::Headers, body: Bytes, waits: &mut Vec<Wait>) -> Result<(), ProtoError> {
        let mut destination = headers.get("destination").unwrap_or_default().to_owned();
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(name) = headers.get("reply-to").and_then(|r| r.strip_prefix(TEMP_QUEUE)).map(str::to_owned) {
            if let Some(real) = Self::temp_queue(state, session, &name) {
                self.implicit_sub(state, session, &name, &real, waits);
                headers.set("reply-to", real);
            }
        }
        let is_queue = if let Some(name) = destination.strip_prefix(TEMP_QUEUE) {
            destination = Self::temp_queue(state, session, name).ok_or_else(|| ProtoError::new("session gone"))?;
            true
        } else if destination.starts_with(REPLY_QUEUE) {
            if !state.queues.contains_key(&destination) {
                debug!(%destination, "reply queue no longer exists; message dropped");
                return Ok(());
            }
            true
        } else {
            destination.starts_with(QUEUE)
        };
        if !is_queue && state.topic_subs(&destination).is_empty() {
            return Ok(()); // A topic nobody listens to: nothing to deliver or keep.
        }
        // A message that may be kept (queued, waiting for credit or an ACK) gets its own
        // small allocations, so it does not pin the (much larger) read buffer its headers
        // and body arrived in.
        let kept = is_queue || self.topic_may_keep(state, &destination);
        let (headers, body) = if kept { (headers.iter().collect::<crate::stomp::Headers>(), Bytes::copy_from_slice(&body)) } else { (headers, body) };
        let charge = self.charge(state, super::message::size_of(&destination, &headers, body.len()))?;
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let msg = Arc::new(Message::new(destination, headers, body, seq, Some(charge)));
        let key = msg.destination.as_str();
        if !is_queue {
            let State { sessions, topics, wild, .. } = state;
            let exact = topics.get(key).map_or(&[][..], Vec::as_slice);
            let wildcard = wild_subs(wild, key);
            for k in exact.iter().chain(&wildcard) {
                let Some(sess) = sessions.get_mut(&k.session) else {
                    continue;
                };
                let Some(sub) = sess.subs.get_mut(&k.sub) else {
                    continue;
                };
                if sub.has_credit() && sub.backlog.is_empty() {
                    sess.deliver(k.sub, msg.clone(), false, waits);
                } else {
                    sub.backlog_bytes += msg.size();
                    sub.backlog.push_back(Queued { msg: msg.clone(), redelivered: false });
                    while sub.backlog.len() > self.bound.len || sub.backlog_bytes > self.bound.bytes {
                        let Some(old) = sub.backlog.pop_front() else { break };
                        sub.backlog_bytes = sub.backlog_bytes.saturating_sub(old.msg.size());
                        warn!(session = k.session, subscription = %sub.id, "subscriber backlog full (prefetch exhausted): oldest message dropped");
                    }
                }
            }
            return Ok(());
        }
        let bound = self.bound;
        let State { sessions, queues, .. } = state;
        if !queues.contains_key(key) {
            queues.insert(key.to_owned(), Queue::new(None));
        }
        let Some(q) = queues.get_mut(key) else {
            return Ok(());
        };
        q.push_back(Queued { msg: msg.clone(), redelivered: false });
        pump_queue(q, sessions, bound, waits);
        if q.over(bound) {
            if q.subs.is_empty() || q.overflowing {
                q.trim(key, bound);
            } else {
                waits.push(Wait::Queue(key.to_owned(), q.room.clone()));
            }
        }
        Ok(())
    }

    /// Whether a topic message may be kept beyond its outbox: a subscriber acknowledges, or waits for credit.
    fn topic_may_keep(&self, state: &State, topic: &str) -> bool {
        state
            .topic_subs(topic)
            .iter()
            .any(|k| state.sessions.get(&k.session).and_then(|s| s.subs.get(&k.sub)).is_some_and(|sub| sub.ack != AckMode::Auto || !sub.backlog.is_empty()))
    }

    /// Waits until queue `name` is back within its bound; false on timeout.
    pub async fn wait_queue(&self, name: &str, room: &Notify, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.lock().queues.get(name).is_some_and(|q| q.over(self.bound)) {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Drops the oldest messages of queue `name` beyond the bound (after a publisher gave up waiting).
    pub fn trim_queue(&self, name: &str) {
        if let Some(q) = self.lock().queues.get_mut(name) {
            q.overflowing = q.over(self.bound);
            q.trim(name, self.bound);
        }
    }

    /// Validates an ACK/NACK id of this session without settling it (for transactions).
    pub fn check_ack(&self, session: u64, id: &str, subscription: Option<&str>) -> Result<(), ProtoError> {
        let state = self.lock();
        let sess = state.sessions.get(&session).ok_or_else(|| ProtoError::new("session gone"))?;
        Self::unacked_tag(sess, id, subscription).map(|_| ()).ok_or_else(|| unknown_ack(id))
    }

    /// The unacknowledged delivery an ACK/NACK names: by its `ack` value
    /// (`dk-SESSION-TAG`, 1.2), or by `message-id` (`dk-m-SEQ`, 1.0/1.1), then
    /// on `subscription` if given, else the oldest delivery of that message.
    fn unacked_tag(sess: &SessionState, id: &str, subscription: Option<&str>) -> Option<u64> {
        if let Some(tag) = id.strip_prefix(sess.prefix.as_str()).and_then(|t| t.parse::<u64>().ok()) {
            return sess.unacked.contains_key(&tag).then_some(tag);
        }
        let seq: u64 = id.strip_prefix(super::message::MESSAGE_ID)?.parse().ok()?;
        let sub_no = match subscription {
            Some(s) => Some(*sess.sub_ids.get(s)?),
            None => None,
        };
        sess.unacked.iter().find(|(_, u)| u.msg.seq == seq && sub_no.is_none_or(|n| u.sub == n)).map(|(t, _)| *t)
    }

    /// Settles an ACK (or NACK) for delivery `id`; cumulative for `client` subscriptions.
    /// NACKed queue messages are redelivered; NACKed topic messages are dropped.
    pub fn ack(&self, session: u64, id: &str, subscription: Option<&str>, nack: bool, waits: &mut Vec<Wait>) -> Result<(), ProtoError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let sess = state.sessions.get_mut(&session).ok_or_else(|| ProtoError::new("session gone"))?;
        let tag = Self::unacked_tag(sess, id, subscription).ok_or_else(|| unknown_ack(id))?;
        let sub_no = sess.unacked.get(&tag).map(|u| u.sub).ok_or_else(|| unknown_ack(id))?;
        let Some(sub) = sess.subs.get(&sub_no) else {
            return Err(unknown_ack(id));
        };
        let (mode, dest) = (sub.ack, sub.dest.clone());
        let tags: Vec<u64> = if mode == AckMode::Client { sess.unacked.range(..=tag).filter(|(_, u)| u.sub == sub_no).map(|(t, _)| *t).collect() } else { vec![tag] };
        let mut msgs = Vec::new();
        for t in &tags {
            if let Some(u) = sess.unacked.remove(t) {
                if nack {
                    msgs.push(u.msg);
                }
            }
        }
        if let Some(sub) = sess.subs.get_mut(&sub_no) {
            sub.in_flight = sub.in_flight.saturating_sub(tags.len());
        }
        match dest {
            Dest::Topic(_) => sess.drain_backlog(sub_no, waits),
            Dest::Queue(name) => {
                if !msgs.is_empty() {
                    requeue(state, &name, msgs);
                }
                if let Some(q) = state.queues.get_mut(&name) {
                    pump_queue(q, &mut state.sessions, self.bound, waits);
                }
            }
        }
        Ok(())
    }

    /// Counts of sessions, subscriptions and messages held.
    pub fn stats(&self) -> BrokerStats {
        let state = self.lock();
        BrokerStats {
            sessions: state.sessions.len(),
            subscriptions: state.sessions.values().map(|s| s.subs.len()).sum(),
            queues: state.queues.len(),
            queued_messages: state.queues.values().map(|q| q.backlog.len()).sum(),
            unacked: state.sessions.values().map(|s| s.unacked.len()).sum(),
            queued_bytes: state.queues.values().map(|q| q.bytes).sum(),
            retained_bytes: self.budget.used(),
            ..BrokerStats::default()
        }
    }
}

/// The ERROR for a message or transaction frame the byte budget has no room for.
pub(crate) fn budget_exhausted(budget: &Budget, size: usize) -> ProtoError {
    ProtoError::detail(
        "broker memory budget exhausted",
        format!("{size} more bytes do not fit: the broker holds {} of its {} bytes for undelivered messages and transactions; try again later", budget.used(), budget.max()),
    )
}

fn unknown_ack(id: &str) -> ProtoError {
    ProtoError::detail("unknown message id", format!("no unacknowledged message with id {id:?} in this session"))
}
