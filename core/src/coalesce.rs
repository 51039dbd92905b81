//! Turning a burst of triggers into one run: a quiet period plus a minimum
//! interval between runs, for one stream or per key.
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
//! A [`KeyedCoalescer`] does the same per key (a repo, a job) for runs that
//! must not overlap: each key is *idle*, *running*, or *running with one batch
//! pending*; a pending batch is never due while its key runs. It adds two ways
//! to skip the wait: a **leading edge** (a push for an idle key that has been
//! quiet for `quiet` is due at once) and **immediate** pushes (due at once and
//! not pushed back by later pushes). It keeps one merged value per batch (the
//! caller's merge function) rather than a list, and has no `min_interval`.
//!
//! Both are pure state machines over [`tokio::time::Instant`] (so tests can use
//! paused time or explicit instants); the caller owns the timer (sleep until
//! [`Coalescer::due`] / [`KeyedCoalescer::next_due`]) and decides whether a
//! run may start. Users: dk-apt-watch ([`Coalescer`]); dk-fetch (a
//! [`KeyedCoalescer`] per repo, leading edge on, reconciles immediate); dk-jenkins
//! (`jenkins::quiet::QuietPeriod`, a [`KeyedCoalescer`] per job whose quiet
//! period and longest wait are both the window).

use std::collections::HashMap;
use std::hash::Hash;
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
        let settled = settled(self.first?, self.last?, self.quiet, self.max_wait);
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

/// When a batch whose first push was at `first` and last at `last` is due:
/// `quiet` after the last, but never beyond `max_wait` after the first.
fn settled(first: Instant, last: Instant, quiet: Duration, max_wait: Duration) -> Instant {
    (last + quiet).min(first + max_wait)
}

/// Per-key batches for runs that must not overlap (see the module docs).
#[derive(Debug, Clone)]
pub struct KeyedCoalescer<K, T> {
    quiet: Duration,
    max_wait: Duration,
    leading_edge: bool,
    merge: fn(&mut T, T),
    keys: HashMap<K, Slot<T>>,
}

/// One key's state.
#[derive(Debug, Clone)]
struct Slot<T> {
    running: bool,
    /// When the last (non-immediate) push for this key arrived.
    last_push: Option<Instant>,
    pending: Option<Batch<T>>,
}

/// A key's pending batch.
#[derive(Debug, Clone)]
struct Batch<T> {
    value: T,
    first: Instant,
    due: Instant,
    /// Due at once (leading edge or an immediate push): not pushed back by later pushes.
    immediate: bool,
    /// The windows in force when the batch opened.
    quiet: Duration,
    max_wait: Duration,
}

/// What a push did to its key's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Whether the push opened a new batch (`false`: merged into the pending one).
    pub opened: bool,
    /// Whether the key was running at the time.
    pub running: bool,
    /// Whether the batch is now due at once (leading edge or immediate).
    pub immediate: bool,
}

impl<K: Hash + Eq + Clone, T> KeyedCoalescer<K, T> {
    /// No key yet; `merge(pending, later)` folds a later push into a pending batch; leading edge off.
    pub fn new(quiet: Duration, max_wait: Duration, merge: fn(&mut T, T)) -> KeyedCoalescer<K, T> {
        KeyedCoalescer { quiet, max_wait, leading_edge: false, merge, keys: HashMap::new() }
    }

    /// Sets whether a push for an idle key quiet for `quiet` is due at once.
    pub fn leading_edge(mut self, on: bool) -> KeyedCoalescer<K, T> {
        self.leading_edge = on;
        self
    }

    /// Changes the windows for batches opened from now on.
    pub fn set_windows(&mut self, quiet: Duration, max_wait: Duration) {
        self.quiet = quiet;
        self.max_wait = max_wait;
    }

    /// Adds an item for `key` at `now`: due once pushes for it stop for `quiet`, within `max_wait` of the batch's first.
    pub fn push(&mut self, key: K, item: T, now: Instant) -> Pushed {
        let (quiet, max_wait, leading_edge, merge) = (self.quiet, self.max_wait, self.leading_edge, self.merge);
        let slot = self.keys.entry(key).or_insert(Slot { running: false, last_push: None, pending: None });
        let quiet_since = slot.last_push.is_none_or(|t| now.duration_since(t) >= quiet);
        slot.last_push = Some(now);
        let running = slot.running;
        match &mut slot.pending {
            Some(b) => {
                merge(&mut b.value, item);
                if !b.immediate {
                    b.due = settled(b.first, now, b.quiet, b.max_wait);
                }
                Pushed { opened: false, running, immediate: b.immediate }
            }
            None => {
                let immediate = leading_edge && !running && quiet_since;
                let due = if immediate { now } else { settled(now, now, quiet, max_wait) };
                slot.pending = Some(Batch { value: item, first: now, due, immediate, quiet, max_wait });
                Pushed { opened: true, running, immediate }
            }
        }
    }

    /// Adds an item for `key` that is due at `now` and is not pushed back by later pushes.
    pub fn push_immediate(&mut self, key: K, item: T, now: Instant) -> Pushed {
        let (quiet, max_wait, merge) = (self.quiet, self.max_wait, self.merge);
        let slot = self.keys.entry(key).or_insert(Slot { running: false, last_push: None, pending: None });
        let running = slot.running;
        let opened = match &mut slot.pending {
            Some(b) => {
                merge(&mut b.value, item);
                b.immediate = true;
                b.due = now;
                false
            }
            None => {
                slot.pending = Some(Batch { value: item, first: now, due: now, immediate: true, quiet, max_wait });
                true
            }
        };
        Pushed { opened, running, immediate: true }
    }

    /// The earliest due time of a pending batch whose key is not running.
    pub fn next_due(&self) -> Option<Instant> {
        self.keys.values().filter(|s| !s.running).filter_map(|s| s.pending.as_ref().map(|b| b.due)).min()
    }

    /// Takes every batch due by `now` whose key is idle, and marks those keys running.
    pub fn take_due(&mut self, now: Instant) -> Vec<(K, T)> {
        let mut due = Vec::new();
        for (key, slot) in &mut self.keys {
            let running = slot.running;
            if let Some(b) = slot.pending.take_if(|b| !running && b.due <= now) {
                slot.running = true;
                due.push((key.clone(), b.value));
            }
        }
        due
    }

    /// Marks `key`'s run finished: its pending batch (if any) may become due.
    pub fn finished(&mut self, key: &K) {
        if let Some(slot) = self.keys.get_mut(key) {
            slot.running = false;
        }
    }

    /// Whether `key` is marked running.
    pub fn is_running(&self, key: &K) -> bool {
        self.keys.get(key).is_some_and(|s| s.running)
    }

    /// Forgets `key` (running flag, last push and pending batch); returns the pending batch.
    pub fn remove(&mut self, key: &K) -> Option<T> {
        self.keys.remove(key).and_then(|s| s.pending).map(|b| b.value)
    }

    /// Keeps only the keys for which `keep(key, running)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, bool) -> bool) {
        self.keys.retain(|k, s| keep(k, s.running));
    }

    /// The keys with a pending batch.
    pub fn pending_keys(&self) -> impl Iterator<Item = &K> {
        self.keys.iter().filter(|(_, s)| s.pending.is_some()).map(|(k, _)| k)
    }

    /// Forgets every key and returns the pending batches (e.g. to run them at shutdown).
    pub fn take_all(&mut self) -> Vec<(K, T)> {
        self.keys.drain().filter_map(|(k, s)| s.pending.map(|b| (k, b.value))).collect()
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

    /// The keyed coalescer as dk-fetch configures it: 50 ms quiet, 2 s longest wait, leading edge; items count pushes.
    fn keyed() -> KeyedCoalescer<&'static str, u32> {
        KeyedCoalescer::new(ms(50), ms(2000), |n, m| *n += m).leading_edge(true)
    }

    #[test]
    fn keyed_a_lone_push_starts_at_once() {
        let t0 = Instant::now();
        let mut k = keyed();
        assert_eq!(k.next_due(), None);
        assert_eq!(k.push("repo", 1, t0), Pushed { opened: true, running: false, immediate: true });
        assert_eq!(k.next_due(), Some(t0));
        assert_eq!(k.take_due(t0), vec![("repo", 1)]);
        assert!(k.is_running(&"repo"));
        assert_eq!(k.pending_keys().count(), 0);
    }

    #[test]
    fn keyed_a_burst_is_one_run_now_and_at_most_one_more() {
        let t0 = Instant::now();
        let mut k = keyed();
        let mut runs = Vec::new();
        let mut finished_at = None;
        for i in 0..20u64 {
            let now = t0 + ms(i * 5);
            let pushed = k.push("repo", 1, now);
            assert_eq!(pushed.opened, i <= 1, "push {i}: the first starts, the second opens the one pending batch");
            if i == 6 {
                // The first run ends in the middle of the burst.
                k.finished(&"repo");
                finished_at = Some(now);
            }
            runs.extend(k.take_due(now));
        }
        assert_eq!(runs, vec![("repo", 1)], "only the leading edge ran during the burst");
        assert!(finished_at.is_some());
        // Last push at 95 ms: the pending batch is due 50 ms later.
        assert_eq!(k.next_due(), Some(t0 + ms(145)));
        assert!(k.take_due(t0 + ms(144)).is_empty());
        assert_eq!(k.take_due(t0 + ms(145)), vec![("repo", 19)]);
        k.finished(&"repo");
        assert_eq!(k.next_due(), None);
    }

    #[test]
    fn keyed_a_push_within_the_quiet_window_waits() {
        let t0 = Instant::now();
        let mut k = keyed();
        k.push("repo", 1, t0);
        assert_eq!(k.take_due(t0).len(), 1);
        k.finished(&"repo");
        // Idle again, but the previous push was only 20 ms ago: no leading edge.
        let p = k.push("repo", 1, t0 + ms(20));
        assert_eq!(p, Pushed { opened: true, running: false, immediate: false });
        assert_eq!(k.next_due(), Some(t0 + ms(70)));
        // Quiet for 50 ms since the last push: the next one is a leading edge again.
        assert_eq!(k.take_due(t0 + ms(70)), vec![("repo", 1)]);
        k.finished(&"repo");
        assert!(k.push("repo", 1, t0 + ms(120)).immediate);
    }

    #[test]
    fn keyed_an_endless_stream_runs_within_max_wait() {
        let t0 = Instant::now();
        let mut k = keyed();
        k.push("repo", 1, t0);
        k.take_due(t0);
        k.finished(&"repo");
        // A push every 10 ms from 10 ms on never leaves a 50 ms gap: the batch
        // opened at 10 ms is due 2 s later all the same.
        for i in 1..=300u64 {
            let now = t0 + ms(i * 10);
            k.push("repo", 1, now);
            let ran = k.take_due(now);
            if now < t0 + ms(2010) {
                assert!(ran.is_empty(), "ran at {i}");
                assert_eq!(k.next_due(), Some((now + ms(50)).min(t0 + ms(2010))));
            } else {
                assert_eq!(ran, vec![("repo", 201)], "due at max_wait after the batch's first push");
                return;
            }
        }
        panic!("never ran");
    }

    #[test]
    fn keyed_an_immediate_push_is_due_now_and_not_pushed_back() {
        let t0 = Instant::now();
        let mut k = keyed();
        // While the key runs: a commit, then a reconcile, then more commits.
        k.push("repo", 1, t0);
        k.take_due(t0);
        k.push("repo", 1, t0 + ms(10));
        assert_eq!(k.push_immediate("repo", 1, t0 + ms(20)), Pushed { opened: false, running: true, immediate: true });
        assert_eq!(k.push("repo", 1, t0 + ms(30)), Pushed { opened: false, running: true, immediate: true });
        assert_eq!(k.next_due(), None, "not due while the key runs");
        assert!(k.take_due(t0 + ms(1000)).is_empty());
        k.finished(&"repo");
        assert_eq!(k.next_due(), Some(t0 + ms(20)), "due at the immediate push, not 50 ms after the last");
        assert_eq!(k.take_due(t0 + ms(40)), vec![("repo", 3)]);
        // On an idle key that just had a push (no leading edge): due at once all the same.
        k.finished(&"repo");
        k.push("repo", 1, t0 + ms(50));
        assert_eq!(k.next_due(), Some(t0 + ms(100)));
        assert!(k.push_immediate("repo", 1, t0 + ms(60)).immediate);
        assert_eq!(k.next_due(), Some(t0 + ms(60)));
        // A fresh key: an immediate push opens a batch due now and leaves no quiet window behind.
        assert_eq!(k.push_immediate("other", 1, t0 + ms(70)), Pushed { opened: true, running: false, immediate: true });
        assert_eq!(k.take_due(t0 + ms(70)).len(), 2);
        k.finished(&"other");
        assert!(k.push("other", 1, t0 + ms(71)).immediate);
    }

    #[test]
    fn keyed_without_leading_edge_every_batch_waits_and_keeps_its_windows() {
        let t0 = Instant::now();
        let mut k: KeyedCoalescer<&str, u32> = KeyedCoalescer::new(ms(100), ms(100), |n, m| *n += m);
        assert_eq!(k.push("job", 1, t0), Pushed { opened: true, running: false, immediate: false });
        k.set_windows(ms(500), ms(500));
        k.push("job", 1, t0 + ms(50));
        assert_eq!(k.next_due(), Some(t0 + ms(100)), "the open batch keeps the windows it opened with");
        k.push("new", 1, t0 + ms(50));
        let mut due = k.take_due(t0 + ms(100));
        due.sort();
        assert_eq!(due, vec![("job", 2)]);
        assert_eq!(k.next_due(), Some(t0 + ms(550)));
    }

    #[test]
    fn keyed_remove_retain_and_take_all() {
        let t0 = Instant::now();
        let mut k = keyed();
        k.push("a", 1, t0);
        k.push("b", 1, t0);
        k.push("c", 1, t0);
        let mut ran: Vec<_> = k.take_due(t0).into_iter().map(|(key, _)| key).collect();
        ran.sort();
        assert_eq!(ran, vec!["a", "b", "c"]);
        k.push("a", 1, t0 + ms(1));
        k.push("b", 1, t0 + ms(1));
        k.finished(&"b");
        k.finished(&"c");
        // Keep running keys and "c".
        k.retain(|key, running| running || *key == "c");
        assert!(k.is_running(&"a") && !k.is_running(&"b"));
        assert_eq!(k.pending_keys().collect::<Vec<_>>(), vec![&"a"]);
        assert_eq!(k.remove(&"a"), Some(1));
        assert_eq!(k.remove(&"a"), None);
        k.push("d", 1, t0 + ms(2));
        assert_eq!(k.take_all(), vec![("d", 1)]);
        assert_eq!(k.next_due(), None);
        assert!(!k.is_running(&"c"));
    }
}
