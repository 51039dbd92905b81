//! The quiet period: a burst of commits for one job within the window triggers it once.
//!
//! The first commit for a job opens its window; later ones within it replace
//! the remembered value (the newest commit is the one built) and are counted.
//! The window does not slide, so a steady stream of pushes still triggers a
//! build every `window` instead of never.

use crate::coalesce::KeyedCoalescer;
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// Pending triggers per key, each due at the end of its window: a
/// [`KeyedCoalescer`] (no leading edge, runs not tracked) whose quiet period
/// and longest wait are both the window (so the window is fixed from the
/// first note); its batch is the newest value and a count.
#[derive(Debug)]
pub struct QuietPeriod<K, V> {
    pending: KeyedCoalescer<K, (V, u32)>,
}

/// A key whose window ended: its newest value and how many notes it absorbed.
#[derive(Debug, PartialEq, Eq)]
pub struct Due<K, V> {
    /// The key (a job name).
    pub key: K,
    /// The newest value noted.
    pub value: V,
    /// How many notes the window absorbed (1 = no burst).
    pub count: u32,
}

/// Keeps the newer value and adds up the counts.
fn newest<V>(kept: &mut (V, u32), later: (V, u32)) {
    kept.0 = later.0;
    kept.1 += later.1;
}

fn due<K, V>((key, (value, count)): (K, (V, u32))) -> Due<K, V> {
    Due { key, value, count }
}

impl<K: Hash + Eq + Clone, V> QuietPeriod<K, V> {
    /// An empty set of windows of length `window`.
    pub fn new(window: Duration) -> QuietPeriod<K, V> {
        QuietPeriod { pending: KeyedCoalescer::new(window, window, newest) }
    }

    /// Changes the window for keys noted from now on.
    pub fn set_window(&mut self, window: Duration) {
        self.pending.set_windows(window, window);
    }

    /// Notes a value for `key` at `now`; returns whether it opened a new window.
    pub fn note(&mut self, key: K, value: V, now: Instant) -> bool {
        self.pending.push(key, (value, 1), now).opened
    }

    /// The earliest end of a window, if any is open.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.next_due()
    }

    /// Removes and returns every key whose window ended by `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due<K, V>> {
        let taken = self.pending.take_due(now);
        for (key, _) in &taken {
            // Forget the key rather than mark it running: a window never waits for a build.
            self.pending.remove(key);
        }
        taken.into_iter().map(due).collect()
    }

    /// Removes and returns everything (shutdown: trigger now rather than lose it).
    pub fn take_all(&mut self) -> Vec<Due<K, V>> {
        self.pending.take_all().into_iter().map(due).collect()
    }

    /// How many keys have an open window.
    pub fn len(&self) -> usize {
        self.pending.pending_keys().count()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.pending.pending_keys().next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_trigger_with_the_newest_value() {
        let t0 = Instant::now();
        let mut q = QuietPeriod::new(Duration::from_secs(5));
        assert!(q.note("job", 1, t0));
        assert!(!q.note("job", 2, t0 + Duration::from_secs(1)));
        assert!(q.note("other", 9, t0 + Duration::from_secs(2)));
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(5)));
        assert!(q.take_due(t0 + Duration::from_millis(4999)).is_empty());
        assert_eq!(q.take_due(t0 + Duration::from_secs(5)), vec![Due { key: "job", value: 2, count: 2 }]);
        // The window does not slide: a new note after it opens a new one.
        assert!(q.note("job", 3, t0 + Duration::from_secs(6)));
        let mut all = q.take_all();
        all.sort_by_key(|d| d.key);
        assert_eq!(all.len(), 2);
        assert!(q.is_empty());
    }
}
