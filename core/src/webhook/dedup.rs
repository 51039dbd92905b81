//! A bounded memory of delivery ids, so a forge's redelivery is not published twice.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` delivery ids; the oldest is forgotten first.
#[derive(Debug)]
pub struct Deliveries {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Deliveries {
    /// An empty memory of at most `capacity` ids (0 disables deduplication).
    pub fn new(capacity: usize) -> Deliveries {
        Deliveries { seen: HashSet::new(), order: VecDeque::new(), capacity }
    }

    /// Records `id`; false if it was already there (a redelivery).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.seen.contains(id) {
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

    /// Forgets `id` (its delivery failed, so a redelivery must be accepted).
    pub fn remove(&mut self, id: &str) {
        if self.seen.remove(id) {
            self.order.retain(|x| x != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgetful() {
        let mut d = Deliveries::new(2);
        assert!(d.insert("a"));
        assert!(!d.insert("a"));
        assert!(d.insert("b"));
        assert!(d.insert("c")); // forgets a
        assert!(d.insert("a"));
        assert!(!d.insert("c"));
        d.remove("c");
        assert!(d.insert("c"));
        assert!(Deliveries::new(0).insert("x") && Deliveries::new(0).insert("x"));
    }
}
