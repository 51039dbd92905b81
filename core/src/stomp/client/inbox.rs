//! A subscription's delivery: the connection task hands the subscriber its messages in
//! batches (every MESSAGE of one read at once), bounded in messages, not batches.

use super::subscription::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::{mpsc, Notify};

/// Most messages one batch carries.
const BATCH_MOST: usize = 64;

/// What both ends share: how many delivered messages the subscriber has not taken yet.
#[derive(Debug)]
struct Room {
    /// Messages handed over and not yet taken by the subscriber.
    held: AtomicUsize,
    /// Most messages the subscription holds for the application.
    limit: usize,
    /// Signalled when the subscriber takes a batch or goes away.
    freed: Notify,
}

/// A new delivery path for one subscription that holds at most about `limit` messages
/// (`limit` handed over but not taken, plus what is left of the batch being read).
pub(super) fn inbox(limit: usize) -> (Deliver, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Room { held: AtomicUsize::new(0), limit: limit.max(1), freed: Notify::new() });
    (Deliver { tx, room: room.clone() }, Inbox { rx, room, batch: Vec::new().into_iter() })
}

/// The connection task's end.
#[derive(Debug, Clone)]
pub(super) struct Deliver {
    tx: mpsc::UnboundedSender<Vec<Message>>,
    room: Arc<Room>,
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

    /// Whether `n` more messages fit (a batch always fits an empty subscription).
    fn fits(&self, n: usize) -> bool {
        let held = self.room.held.load(Ordering::Acquire);
        held == 0 || held.saturating_add(n) <= self.room.limit
    }

    /// Hands `batch` over if it fits; gives it back when the subscription is full.
    pub(super) fn try_deliver(&self, batch: Vec<Message>) -> Result<Delivered, Vec<Message>> {
        if self.tx.is_closed() {
            return Ok(Delivered::Gone);
        }
        if !self.fits(batch.len()) {
            return Err(batch);
        }
        let n = batch.len();
        self.room.held.fetch_add(n, Ordering::AcqRel);
        match self.tx.send(batch) {
            Ok(()) => Ok(Delivered::Queued),
            Err(_) => Ok(Delivered::Gone),
        }
    }

    /// Waits until `n` more messages fit, or the subscriber is gone.
    pub(super) async fn room_for(&self, n: usize) {
        loop {
            let freed = self.room.freed.notified();
            if self.tx.is_closed() || self.fits(n) {
                return;
            }
            // A take between the check and here left a permit: this returns at once.
            freed.await;
        }
    }

    /// Waits for room, then hands `batch` over.
    pub(super) async fn deliver(&self, mut batch: Vec<Message>) -> Delivered {
        loop {
            self.room_for(batch.len()).await;
            match self.try_deliver(batch) {
                Ok(d) => return d,
                Err(back) => batch = back,
            }
        }
    }
}

/// The subscriber's end.
#[derive(Debug)]
pub(super) struct Inbox {
    rx: mpsc::UnboundedReceiver<Vec<Message>>,
    room: Arc<Room>,
    /// What is left of the batch being read.
    batch: std::vec::IntoIter<Message>,
}

impl Inbox {
    /// The next message, or `None` once the sender is gone and all is read.
    pub(super) async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message.
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            if let Some(msg) = self.batch.next() {
                return Poll::Ready(Some(msg));
            }
            let Some(batch) = ready!(self.rx.poll_recv(cx)) else { return Poll::Ready(None) };
            self.room.held.fetch_sub(batch.len(), Ordering::AcqRel);
            self.room.freed.notify_one();
            self.batch = batch.into_iter();
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // A connection task waiting for room must see the subscriber is gone.
        self.rx.close();
        self.room.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::frame::Headers;
    use bytes::Bytes;

    fn batch(from: usize, n: usize) -> Vec<Message> {
        (from..from + n).map(|i| Message { headers: Headers::new(), body: Bytes::from(i.to_string()), ack: None }).collect()
    }

    fn text(m: &Message) -> String {
        String::from_utf8_lossy(&m.body).into_owned()
    }

    #[tokio::test]
    async fn holds_at_most_its_limit_in_messages_and_reads_in_order() {
        let (tx, mut rx) = inbox(10);
        assert_eq!(tx.batch_most(), 10);
        assert!(matches!(tx.try_deliver(batch(0, 4)), Ok(Delivered::Queued)));
        assert!(matches!(tx.try_deliver(batch(4, 6)), Ok(Delivered::Queued)));
        // Ten held: one more message does not fit, and is given back whole.
        let back = tx.try_deliver(batch(10, 1)).expect_err("an 11th message fits in a subscription of 10");
        assert_eq!(back.len(), 1);
        // Taking the first batch makes room for four, and wakes a waiter.
        assert_eq!(rx.recv().await.as_ref().map(text).as_deref(), Some("0"));
        tokio::time::timeout(std::time::Duration::from_secs(10), tx.room_for(4)).await.expect("room after a batch was taken");
        assert!(tx.try_deliver(batch(10, 5)).is_err(), "five do not fit where four were taken");
        assert!(matches!(tx.try_deliver(back), Ok(Delivered::Queued)));
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
        assert!(matches!(tx.try_deliver(batch(0, 3)), Ok(Delivered::Queued)));
        assert!(tx.try_deliver(batch(3, 1)).is_err());
        let waiter = tokio::spawn({
            let tx = tx.clone();
            async move { tx.deliver(batch(3, 1)).await }
        });
        // The waiter parks (the subscription is full), then the subscriber goes.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "delivered into a full subscription");
        drop(rx);
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await.expect("a waiter is woken when the subscriber goes").unwrap();
        assert_eq!(outcome, Delivered::Gone);
        assert!(matches!(tx.try_deliver(batch(4, 1)), Ok(Delivered::Gone)));
    }
}
