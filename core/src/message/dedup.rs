//! A bounded memory of `dk-id`s, so a message its publisher sent again (its
//! receipt lost when the broker restarted mid-send) is taken in once; dk-webhook
//! keeps forges' delivery ids in one too, against redeliveries.
//!
//! Publishers that resend (the JVM notifier, core's spool) give each message a
//! [`ID_HEADER`](super::ID_HEADER) once and keep it on every resend; a consumer
//! passes each message's headers to [`Dedup::first`] and skips it when false.
//! Messages without the header (older publishers, the original's daemons) always
//! pass. The window is a count of ids, the oldest forgotten first: it covers a
//! resend as long as fewer than `capacity` other messages arrived in between.

use super::ID_HEADER;
use crate::stomp::Headers;
use std::collections::{HashSet, VecDeque};

/// Ids remembered by [`Dedup::default`].
pub const DEFAULT_WINDOW: usize = 10_000;

/// Ids longer than this are not remembered (their messages always pass), so a peer cannot grow the window's memory.
pub const MAX_ID_LEN: usize = 200;

/// The last `capacity` message ids seen.
#[derive(Debug, Clone)]
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    duplicates: u64,
}

impl Default for Dedup {
    fn default() -> Dedup {
        Dedup::new(DEFAULT_WINDOW)
    }
}

impl Dedup {
    /// An empty window of at most `capacity` ids (0: nothing is remembered, every message passes).
    pub fn new(capacity: usize) -> Dedup {
        Dedup { seen: HashSet::new(), order: VecDeque::new(), capacity, duplicates: 0 }
    }

    /// Whether a message with these headers is taken: true without a `dk-id`, or with one not in the window (now remembered).
    pub fn first(&mut self, headers: &Headers) -> bool {
        match headers.get(ID_HEADER) {
            Some(id) => self.first_id(id),
            None => true,
        }
    }

    /// Whether `id` is new to the window (now remembered); false for a duplicate, which is counted.
    pub fn first_id(&mut self, id: &str) -> bool {
        if self.capacity == 0 || id.is_empty() || id.len() > MAX_ID_LEN {
            return true;
        }
        if self.seen.contains(id) {
            self.duplicates += 1;
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }

    /// Forgets `id` (its message could not be handled, so a repeat must be taken).
    pub fn forget(&mut self, id: &str) {
        if self.seen.remove(id) {
            self.order.retain(|x| x != id);
        }
    }

    /// Duplicates refused so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The `dk-id` of the event line that goes with the message whose id is `id`.
pub fn event_id(id: &str) -> String {
    format!("{id}.event")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &str) -> Headers {
        let mut h = Headers::new();
        h.push(ID_HEADER, id);
        h
    }

    #[test]
    fn a_resend_is_refused_and_counted() {
        let mut d = Dedup::new(3);
        assert!(d.first(&with_id("a")));
        assert!(!d.first(&with_id("a")));
        assert!(d.first(&with_id("a.event")));
        assert_eq!(d.duplicates(), 1);
        assert!(d.first(&Headers::new()) && d.first(&Headers::new()), "no id: always taken");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn bounded_oldest_forgotten_first() {
        let mut d = Dedup::new(2);
        assert!(d.first_id("a") && d.first_id("b") && d.first_id("c"));
        assert!(d.first_id("a"), "a was forgotten");
        assert!(!d.first_id("c"));
        assert_eq!(d.len(), 2);
        let mut off = Dedup::new(0);
        assert!(off.first_id("x") && off.first_id("x"));
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(d.first_id(&long) && d.first_id(&long), "over-long ids are not remembered");
        assert!(d.first_id("") && d.first_id(""));
    }

    #[test]
    fn a_forgotten_id_is_taken_again_and_zero_keeps_nothing() {
        let mut d = Dedup::new(2);
        assert!(d.first_id("a") && !d.first_id("a"));
        d.forget("a");
        assert!(d.first_id("a"));
        d.forget("never-seen");
        assert_eq!(d.len(), 1);
        let mut none = Dedup::new(0);
        assert!(none.first_id("x") && none.first_id("x"));
    }

    #[test]
    fn event_ids_differ_from_their_message() {
        assert_eq!(event_id("n-1"), "n-1.event");
    }
}
