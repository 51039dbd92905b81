//! The broker-wide byte budget: every retained message (queued, waiting for
//! prefetch credit, unacknowledged, in an outbox) and every transaction's
//! buffered frames hold a [`Charge`] on it for as long as they live.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes held by messages and transactions, and the most that may be.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget { used: AtomicUsize::new(0), max })
    }

    /// Bytes currently charged.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The most bytes that may be charged.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Charges `bytes` if they fit; `None` (nothing charged) if they do not.
    pub fn try_charge(self: &Arc<Budget>, bytes: usize) -> Option<Charge> {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(bytes).filter(|&n| n <= self.max)).ok().map(|_| Charge { budget: self.clone(), bytes })
    }
}

/// Bytes held on a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// Adds `bytes` to this charge if the budget has room; false (nothing added) if not.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        match self.budget.try_charge(bytes) {
            Some(mut more) => {
                self.bytes += std::mem::take(&mut more.bytes);
                true
            }
            None => false,
        }
    }

    /// The bytes this charge holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_budget_and_are_given_back_on_drop() {
        let b = Budget::new(100);
        let mut a = b.try_charge(60).unwrap();
        assert!(b.try_charge(41).is_none());
        assert!(!a.try_grow(41));
        assert!(a.try_grow(40));
        assert_eq!((b.used(), a.bytes()), (100, 100));
        assert!(b.try_charge(usize::MAX).is_none());
        drop(a);
        assert_eq!(b.used(), 0);
    }
}
