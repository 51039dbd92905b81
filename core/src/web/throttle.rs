//! Failed logins per client address: after [`FAILURES`] failures within
//! [`WINDOW`] the address gets 429 (with `Retry-After`) until its window ends,
//! without a password check. IPv6 clients count per /64. At most [`ADDRESSES`]
//! addresses are remembered: ended windows go first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins an address may have per window.
pub const FAILURES: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most.
pub const ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Count {
    start: Instant,
    failures: u32,
}

/// The failed-login counts.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: Duration,
    cap: usize,
    counts: Mutex<HashMap<IpAddr, Count>>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new(FAILURES, WINDOW, ADDRESSES)
    }
}

/// The key of an address: IPv4 (also when IPv4-mapped) as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl Throttle {
    /// `limit` failures per `window`, remembering at most `cap` addresses.
    pub fn new(limit: u32, window: Duration, cap: usize) -> Throttle {
        Throttle { limit: limit.max(1), window, cap: cap.max(1), counts: Mutex::default() }
    }

    /// How long `ip` must wait before it may try again, if it used up its failures.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let c = counts.get(&key(ip))?;
        let end = c.start + self.window;
        (c.failures >= self.limit && now < end).then(|| end - now)
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let k = key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !counts.contains_key(&k) && counts.len() >= self.cap {
            let window = self.window;
            counts.retain(|_, c| now.saturating_duration_since(c.start) < window);
            if counts.len() >= self.cap {
                if let Some(oldest) = counts.iter().min_by_key(|(_, c)| c.start).map(|(k, _)| *k) {
                    counts.remove(&oldest);
                }
            }
        }
        let c = counts.entry(k).or_insert(Count { start: now, failures: 0 });
        if now.saturating_duration_since(c.start) >= self.window {
            *c = Count { start: now, failures: 0 };
        }
        c.failures = c.failures.saturating_add(1);
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            t.failed(a, t0);
        }
        assert_eq!(t.blocked(a, t0), None);
        t.failed(a, t0);
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(20)), Some(Duration::from_secs(40)));
        assert_eq!(t.blocked("10.0.0.2".parse().unwrap(), t0), None);
        assert_eq!(t.blocked("::ffff:10.0.0.1".parse().unwrap(), t0), Some(Duration::from_secs(60)), "mapped v4 is the same client");
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(60)), None);
        t.failed(a, t0 + Duration::from_secs(61));
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(61)), None, "a new window");
    }

    #[test]
    fn ipv6_counts_per_64_and_memory_is_bounded() {
        let t = Throttle::new(2, Duration::from_secs(60), 50);
        let t0 = Instant::now();
        t.failed("2001:db8::1".parse().unwrap(), t0);
        t.failed("2001:db8::2".parse().unwrap(), t0);
        assert!(t.blocked("2001:db8::ffff".parse().unwrap(), t0).is_some());
        for i in 0..10_000u32 {
            t.failed(IpAddr::V4(i.into()), t0 + Duration::from_millis(u64::from(i)));
            assert!(t.len() <= 50);
        }
        assert!(t.blocked(IpAddr::V4(9_999u32.into()), t0).is_none());
    }
}
