//! The quiet period: a burst of commits for one job within the window triggers it once.
//!
//! The first commit for a job opens its window; later ones within it replace
//! the remembered value (the newest commit is the one built) and are counted.
//! The window does not slide, so a steady stream of pushes still triggers a
//! build every `window` instead of never.

use crate::coalesce::Coalescer;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// Pending triggers per key, each due at the end of its window: one
/// [`Coalescer`] per key whose quiet period and longest wait are both the
/// window (so the window is fixed from the first note).
#[derive(Debug)]
pub struct QuietPeriod<K, V> {
    window: Duration,
    pending: HashMap<K, Coalescer<V>>,
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

fn due<K, V>(key: K, mut values: Vec<V>) -> Option<Due<K, V>> {
    let count = values.len() as u32;
    values.pop().map(|value| Due { key, value, count })
}

impl<K: Hash + Eq + Clone, V> QuietPeriod<K, V> {
    /// An empty set of windows of length `window`.
    pub fn new(window: Duration) -> QuietPeriod<K, V> {
        QuietPeriod { window, pending: HashMap::new() }
    }

    /// Changes the window for keys noted from now on.
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Notes a value for `key` at `now`; returns whether it opened a new window.
    pub fn note(&mut self, key: K, value: V, now: Instant) -> bool {
        let window = self.window;
        let c = self.pending.entry(key).or_insert_with(|| Coalescer::new(window, Duration::ZERO).max_wait(window));
        let opened = c.is_empty();
        c.push(value, now);
        opened
    }

    /// The earliest end of a window, if any is open.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().filter_map(Coalescer::due).min()
    }

    /// Removes and returns every key whose window ended by `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due<K, V>> {
        let keys: Vec<K> = self.pending.iter().filter(|(_, c)| c.due().is_some_and(|d| d <= now)).map(|(k, _)| k.clone()).collect();
        keys.into_iter().filter_map(|k| self.pending.remove(&k).and_then(|mut c| due(k, c.take_all()))).collect()
    }

    /// Removes and returns everything (shutdown: trigger now rather than lose it).
    pub fn take_all(&mut self) -> Vec<Due<K, V>> {
        self.pending.drain().filter_map(|(key, mut c)| due(key, c.take_all())).collect()
    }

    /// How many keys have an open window.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
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
