//! Turning a burst of triggers into one run: a quiet period plus a minimum
//! interval between runs.
//!
//! A [`Coalescer`] collects items (package names, commits, …) as they arrive
//! and says when the single run covering all of them is due:
//!
//! - **quiet**: the run waits until no item has arrived for `quiet`, so a
//!   burst of twenty messages a few milliseconds apart becomes one run;
//! - **max_wait**: a stream that never pauses still runs once `max_wait` after
//!   its first item (no starvation);
//! - **min_interval**: two runs start at least `min_interval` apart; items
//!   arriving meanwhile wait for the next run (this bound wins over `max_wait`).
//!
//! It is a pure state machine over [`tokio::time::Instant`] (so tests can use
//! paused time or explicit instants); the caller owns the timer (sleep until
//! [`Coalescer::due`]) and decides whether a run may start (e.g. not while the
//! previous one still runs). dk-apt-watch uses it; dk-jenkins's per-job
//! triggering has the same shape.

use std::time::Duration;
use tokio::time::Instant;

/// Collects items and says when one run for all of them is due.
#[derive(Debug, Clone)]
pub struct Coalescer<T> {
    quiet: Duration,
    min_interval: Duration,
    max_wait: Duration,
    items: Vec<T>,
    first: Option<Instant>,
    last: Option<Instant>,
    last_run: Option<Instant>,
}

impl<T> Coalescer<T> {
    /// A coalescer with these windows; `max_wait` defaults to `max(10 × quiet, 1 s)`.
    pub fn new(quiet: Duration, min_interval: Duration) -> Coalescer<T> {
        Coalescer { quiet, min_interval, max_wait: (quiet * 10).max(Duration::from_secs(1)), items: Vec::new(), first: None, last: None, last_run: None }
    }

    /// Sets the longest a pending batch waits for a burst to end.
    pub fn max_wait(mut self, max_wait: Duration) -> Coalescer<T> {
        self.max_wait = max_wait;
        self
    }

    /// Adds an item that arrived at `now`.
    pub fn push(&mut self, item: T, now: Instant) {
        self.items.push(item);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Whether items wait for a run.
    pub fn is_pending(&self) -> bool {
        !self.items.is_empty()
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the pending run is due (`None`: nothing pending).
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        let settled = (last + self.quiet).min(first + self.max_wait);
        Some(match self.last_run {
            Some(r) => settled.max(r + self.min_interval),
            None => settled,
        })
    }

    /// If the run is due at `now`, returns its items and records `now` as the
    /// run's start; otherwise `None` and nothing changes.
    pub fn take(&mut self, now: Instant) -> Option<Vec<T>> {
        if self.due()? > now {
            return None;
        }
        self.first = None;
        self.last = None;
        self.last_run = Some(now);
        Some(std::mem::take(&mut self.items))
    }

    /// Empties the batch without recording a run (e.g. to hand it to a successor).
    pub fn take_all(&mut self) -> Vec<T> {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.items)
    }

    /// When the last run started.
    pub fn last_run(&self) -> Option<Instant> {
        self.last_run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_is_one_run_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(100), ms(10_000));
        assert_eq!(c.due(), None);
        for i in 0..20u64 {
            c.push(i, t0 + ms(i * 5));
        }
        // Last item at 95 ms: due at 195 ms.
        assert_eq!(c.due(), Some(t0 + ms(195)));
        assert!(c.take(t0 + ms(194)).is_none());
        assert_eq!(c.take(t0 + ms(195)).unwrap().len(), 20);
        assert!(!c.is_pending());
        assert_eq!(c.take(t0 + ms(300)), None);
    }

    #[test]
    fn min_interval_holds_the_next_run_back() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(10), ms(1000));
        c.push("a", t0);
        assert_eq!(c.take(t0 + ms(10)), Some(vec!["a"]));
        c.push("b", t0 + ms(20));
        assert_eq!(c.due(), Some(t0 + ms(1010)), "one min_interval after the previous run");
        assert!(c.take(t0 + ms(500)).is_none());
        c.push("c", t0 + ms(600));
        assert_eq!(c.take(t0 + ms(1010)), Some(vec!["b", "c"]));
    }

    #[test]
    fn an_endless_stream_still_runs_after_max_wait() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(50), Duration::ZERO).max_wait(ms(300));
        for i in 0..100u64 {
            c.push(i, t0 + ms(i * 10));
            if let Some(batch) = c.take(t0 + ms(i * 10)) {
                assert_eq!(i, 30, "first run at max_wait");
                assert_eq!(batch.len(), 31);
                return;
            }
        }
        panic!("never ran");
    }
}
