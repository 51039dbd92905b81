//! A subscription's delivery: the connection task hands the subscriber its messages in
//! batches (every MESSAGE of one read at once), bounded in messages, not batches, through
//! one locked queue the subscriber empties at once by swapping it for its own.

use super::subscription::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// Most messages one batch carries.
const BATCH_MOST: usize = 64;

/// What both ends share: the messages handed over and not taken yet, behind one lock.
/// The subscriber takes them all at once by swapping its emptied queue for this one,
/// so in the steady state a hand-over allocates nothing and costs one lock each side.
#[derive(Debug)]
struct Room {
    /// The shared state.
    slot: Mutex<Slot>,
    /// Most messages the subscription holds for the application.
    limit: usize,
    /// Signalled when the subscriber takes messages a waiting sender had no room for, or goes away.
    freed: Notify,
}

/// The state both ends change under the lock.
#[derive(Debug, Default)]
struct Slot {
    /// Messages handed over and not yet taken by the subscriber.
    msgs: VecDeque<Message>,
    /// The subscriber waits for messages: wake it with this on the next hand-over.
    waker: Option<Waker>,
    /// Handles of the connection task's end; none left means no more messages.
    senders: usize,
    /// The subscriber is gone: hand-overs are dropped.
    closed: bool,
    /// A hand-over found no room: the subscriber signals `freed` when it takes.
    wanted: bool,
}

impl Room {
    /// The lock; a panic elsewhere while holding it leaves a consistent queue, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `n` more messages fit beside `held` (a batch always fits an empty subscription).
    fn fits(&self, held: usize, n: usize) -> bool {
        held == 0 || held.saturating_add(n) <= self.limit
    }
}

/// A new delivery path for one subscription that holds at most about `limit` messages
/// (`limit` handed over but not taken, plus what is left of the batch being read).
pub(super) fn inbox(limit: usize) -> (Deliver, Inbox) {
    let slot = Slot { senders: 1, ..Slot::default() };
    let room = Arc::new(Room { slot: Mutex::new(slot), limit: limit.max(1), freed: Notify::new() });
    (Deliver { room: room.clone() }, Inbox { room, batch: VecDeque::new() })
}

/// The connection task's end.
#[derive(Debug)]
pub(super) struct Deliver {
    room: Arc<Room>,
}

impl Clone for Deliver {
    fn clone(&self) -> Deliver {
        self.room.lock().senders += 1;
        Deliver { room: self.room.clone() }
    }
}

impl Drop for Deliver {
    fn drop(&mut self) {
        let mut slot = self.room.lock();
        slot.senders -= 1;
        // The last one gone: a waiting subscriber reads what is left, then the end.
        let waker = if slot.senders == 0 { slot.waker.take() } else { None };
        drop(slot);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What became of a batch handed over.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Delivered {
    /// The subscriber will read it.
    Queued,
    /// The subscriber is gone; the batch was dropped.
    Gone,
}

impl Deliver {
    /// Most messages to gather into one batch.
    pub(super) fn batch_most(&self) -> usize {
        self.room.limit.min(BATCH_MOST)
    }

    /// Hands the messages of `batch` over if they fit, leaving it empty with room for the
    /// next batch; `None`, and `batch` as it was, when the subscription is full.
    pub(super) fn try_deliver(&self, batch: &mut VecDeque<Message>) -> Option<Delivered> {
        let mut slot = self.room.lock();
        if slot.closed {
            batch.clear();
            return Some(Delivered::Gone);
        }
        if !self.room.fits(slot.msgs.len(), batch.len()) {
            slot.wanted = true;
            return None;
        }
        if slot.msgs.is_empty() {
            // The usual case, the subscriber took all before: the queues trade places
            // (an emptied one comes back to be filled), so no message is copied here.
            std::mem::swap(&mut slot.msgs, batch);
        } else {
            slot.msgs.extend(batch.drain(..));
        }
        let waker = slot.waker.take();
        drop(slot);
        if let Some(w) = waker {
            w.wake();
        }
        Some(Delivered::Queued)
    }

    /// Waits until `n` more messages fit, or the subscriber is gone.
    pub(super) async fn room_for(&self, n: usize) {
        loop {
            let freed = self.room.freed.notified();
            {
                let mut slot = self.room.lock();
                if slot.closed || self.room.fits(slot.msgs.len(), n) {
                    return;
                }
                slot.wanted = true;
            }
            // A take between the check and here left a permit: this returns at once.
            freed.await;
        }
    }

    /// Waits for room, then hands `batch` over.
    pub(super) async fn deliver(&self, mut batch: VecDeque<Message>) -> Delivered {
        loop {
            self.room_for(batch.len()).await;
            if let Some(d) = self.try_deliver(&mut batch) {
                return d;
            }
        }
    }
}

/// The subscriber's end.
#[derive(Debug)]
pub(super) struct Inbox {
    room: Arc<Room>,
    /// What is left of the messages taken last.
    batch: VecDeque<Message>,
}

impl Inbox {
    /// The next message, or `None` once the sender is gone and all is read.
    pub(super) async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message.
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if let Some(msg) = self.batch.pop_front() {
            return Poll::Ready(Some(msg));
        }
        // Taking a hand-over spends the task's budget as a channel receive does, so a
        // subscriber that always finds messages still lets its runtime's other tasks run.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut slot = self.room.lock();
        if slot.msgs.is_empty() {
            if slot.senders == 0 {
                return Poll::Ready(None);
            }
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        // All of them at once: the emptied queue goes back for the next hand-over.
        std::mem::swap(&mut slot.msgs, &mut self.batch);
        coop.made_progress();
        let wanted = std::mem::take(&mut slot.wanted);
        drop(slot);
        if wanted {
            self.room.freed.notify_one();
        }
        Poll::Ready(self.batch.pop_front())
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // A connection task waiting for room must see the subscriber is gone.
        let msgs = {
            let mut slot = self.room.lock();
            slot.closed = true;
            slot.waker = None;
            std::mem::take(&mut slot.msgs)
        };
        drop(msgs);
        self.room.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::frame::Headers;
    use bytes::Bytes;
    use std::future::Future;

    fn batch(from: usize, n: usize) -> VecDeque<Message> {
        (from..from + n).map(|i| Message { headers: Headers::new(), body: Bytes::from(i.to_string()), ack: None }).collect()
    }

    fn text(m: &Message) -> String {
        String::from_utf8_lossy(&m.body).into_owned()
    }

    /// A waker that counts its wake-ups, for polling one end by hand.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Wakes {
        /// Wake-ups so far.
        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A poll of the subscriber's end, with the message as text.
    fn next(rx: &mut Inbox, cx: &mut Context<'_>) -> Poll<Option<String>> {
        rx.poll_recv(cx).map(|m| m.as_ref().map(text))
    }

    #[tokio::test]
    async fn holds_at_most_its_limit_in_messages_and_reads_in_order() {
        let (tx, mut rx) = inbox(10);
        assert_eq!(tx.batch_most(), 10);
        assert_eq!(tx.try_deliver(&mut batch(0, 4)), Some(Delivered::Queued));
        assert_eq!(tx.try_deliver(&mut batch(4, 6)), Some(Delivered::Queued));
        // Ten held: one more message does not fit, and is left where it was.
        let mut back = batch(10, 1);
        assert_eq!(tx.try_deliver(&mut back), None, "an 11th message fits in a subscription of 10");
        assert_eq!(back.len(), 1);
        // Taking what was handed over makes room, and wakes a waiter.
        assert_eq!(rx.recv().await.as_ref().map(text).as_deref(), Some("0"));
        tokio::time::timeout(std::time::Duration::from_secs(10), tx.room_for(10)).await.expect("room after the messages were taken");
        assert_eq!(tx.try_deliver(&mut back), Some(Delivered::Queued));
        assert!(back.is_empty());
        let mut seen = vec!["0".to_owned()];
        drop(tx);
        while let Some(m) = rx.recv().await {
            seen.push(text(&m));
        }
        let want: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(seen, want);
    }

    #[tokio::test]
    async fn an_empty_subscription_takes_any_batch_and_a_gone_one_takes_none() {
        let (tx, rx) = inbox(2);
        assert_eq!(tx.batch_most(), 2);
        // Nothing held: even a batch over the limit is taken (it never waits forever).
        assert_eq!(tx.try_deliver(&mut batch(0, 3)), Some(Delivered::Queued));
        assert_eq!(tx.try_deliver(&mut batch(3, 1)), None);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        {
            // The waiter parks (the subscription is full), then the subscriber goes.
            let mut waiter = std::pin::pin!(tx.deliver(batch(3, 1)));
            assert!(waiter.as_mut().poll(&mut cx).is_pending(), "delivered into a full subscription");
            drop(rx);
            assert_eq!(wakes.count(), 1, "a waiter is woken when the subscriber goes");
            assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(Delivered::Gone));
        }
        let mut late = batch(4, 1);
        assert_eq!(tx.try_deliver(&mut late), Some(Delivered::Gone));
        assert!(late.is_empty(), "a batch for a gone subscriber is dropped");
    }

    /// A subscriber waiting on an empty inbox is woken by a hand-over, and by the last
    /// sender going (after reading what is left); one sender of two going ends nothing.
    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_by_a_hand_over_and_by_the_last_sender_going() {
        let (tx, mut rx) = inbox(8);
        let second = tx.clone();
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(next(&mut rx, &mut cx), Poll::Pending);
        assert_eq!(tx.try_deliver(&mut batch(0, 2)), Some(Delivered::Queued));
        assert_eq!(wakes.count(), 1, "a hand-over did not wake the waiting subscriber");
        assert_eq!(next(&mut rx, &mut cx), Poll::Ready(Some("0".to_owned())));
        assert_eq!(next(&mut rx, &mut cx), Poll::Ready(Some("1".to_owned())));
        assert_eq!(next(&mut rx, &mut cx), Poll::Pending);
        drop(tx);
        assert_eq!(next(&mut rx, &mut cx), Poll::Pending, "the inbox ended while a sender was left");
        assert_eq!(second.try_deliver(&mut batch(2, 1)), Some(Delivered::Queued));
        assert_eq!(wakes.count(), 2);
        assert_eq!(next(&mut rx, &mut cx), Poll::Ready(Some("2".to_owned())));
        assert_eq!(next(&mut rx, &mut cx), Poll::Pending);
        drop(second);
        assert_eq!(wakes.count(), 3, "the last sender going did not wake the waiting subscriber");
        assert_eq!(next(&mut rx, &mut cx), Poll::Ready(None));
    }

    /// In the steady state a hand-over allocates nothing and copies no message: the
    /// queues of the two ends trade places.
    #[tokio::test]
    async fn hand_overs_reuse_the_batch_and_the_queues() {
        let (tx, mut rx) = inbox(64);
        let mut gathered = VecDeque::new();
        for round in 0..8 {
            if round >= 3 {
                // Three queues take turns (gathering, handed over, being read), each
                // given room once: what comes back to be filled has room already.
                assert!(gathered.capacity() >= 16, "round {round}: the batch to fill has no room");
            }
            gathered.extend(batch(round * 16, 16));
            assert_eq!(tx.try_deliver(&mut gathered), Some(Delivered::Queued));
            assert!(gathered.is_empty());
            for i in 0..16 {
                assert_eq!(rx.recv().await.as_ref().map(text), Some((round * 16 + i).to_string()));
            }
        }
    }
}
