//! Heart-beats: the 1.1/1.2 negotiation, and emulation when a broker negotiates none.
//!
//! Negotiated (spec §Heart-beating): the client sends every `max(cx, sy)` and
//! expects the broker every `max(sx, cy)`. To keep a margin, the client asks
//! for the broker's heart-beats at *half* its `receive` interval and tolerates
//! `grace` (2.5) of the negotiated broker intervals: a broker whose beats are
//! late by up to two intervals (ActiveMQ 5.x's inactivity monitor skips a beat
//! after any write) is not declared dead, and a dead one is still noticed
//! within 1.25 × `receive`. Emulated (a 1.0
//! broker, or one that answers `0,0`): the client still writes EOLs every `cx`
//! so idle timers on firewalls never expire, and detects a dead broker by its
//! own read timeout, provoking a RECEIPT when the line has been quiet.

use std::time::Duration;
use tokio::time::Instant;

/// What the client writes to keep an idle connection alive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeepaliveWire {
    /// A bare EOL between frames (the STOMP 1.1 heart-beat).
    #[default]
    Eol,
    /// The original deploykit's keepalive: a SEND of a single newline to this
    /// destination, for brokers that reject bare EOLs. Receivers ignore it.
    SendTo(String),
}

/// The client's heart-beat wishes.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// How often the client offers to send (`cx`); zero offers nothing.
    pub send: Duration,
    /// How soon the client wants to notice a silent broker; it asks the broker for
    /// heart-beats at half this (`cy`) and gives up after `grace` of the negotiated intervals. Zero asks nothing.
    pub receive: Duration,
    /// Keep the line alive and watch it even when the broker negotiates no heart-beats.
    pub emulate: bool,
    /// What to write when a heart-beat is due.
    pub wire: KeepaliveWire,
    /// Negotiated broker intervals of silence tolerated before declaring it dead (spec: "some tolerance").
    pub grace: f64,
}

impl Default for HeartbeatConfig {
    fn default() -> HeartbeatConfig {
        HeartbeatConfig { send: Duration::from_secs(10), receive: Duration::from_secs(10), emulate: true, wire: KeepaliveWire::Eol, grace: 2.5 }
    }
}

impl HeartbeatConfig {
    /// Heart-beats off in both directions, no emulation.
    pub fn off() -> HeartbeatConfig {
        HeartbeatConfig { send: Duration::ZERO, receive: Duration::ZERO, emulate: false, ..HeartbeatConfig::default() }
    }

    /// The same interval both ways, negotiated or emulated.
    pub fn every(interval: Duration) -> HeartbeatConfig {
        HeartbeatConfig { send: interval, receive: interval, ..HeartbeatConfig::default() }
    }

    /// The `heart-beat` header value the client sends in CONNECT (`cx`, and `receive / 2` as `cy`).
    pub fn header(&self) -> String {
        format!("{},{}", self.send.as_millis(), self.asked_receive_ms())
    }

    /// The broker interval the client asks for: half of `receive` (at least 1 ms when non-zero).
    fn asked_receive_ms(&self) -> u64 {
        let r = self.receive.as_millis() as u64;
        if r == 0 {
            0
        } else {
            (r / 2).max(1)
        }
    }
}

/// Parses a `heart-beat: x,y` header into milliseconds. Each value must fit in
/// 32 bits (about 49 days), so no peer can make a timer overflow.
pub fn parse_header(value: &str) -> Option<(u64, u64)> {
    let (x, y) = value.split_once(',')?;
    let (x, y): (u32, u32) = (x.trim().parse().ok()?, y.trim().parse().ok()?);
    Some((u64::from(x), u64::from(y)))
}

/// STOMP 1.1's rule for one direction: 0 (off) if either side says 0, else the larger interval (ms).
pub fn agreed(ours_ms: u64, theirs_ms: u64) -> u64 {
    if ours_ms == 0 || theirs_ms == 0 {
        0
    } else {
        ours_ms.max(theirs_ms)
    }
}

/// How this connection keeps alive and detects death, once the broker has answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Write a heart-beat when nothing was written for this long.
    pub send_every: Option<Duration>,
    /// Declare the connection dead when nothing was read for this long.
    pub read_timeout: Option<Duration>,
    /// Provoke a RECEIPT when nothing was read for this long (emulated detection).
    pub probe_after: Option<Duration>,
    /// Whether any of this is emulated rather than negotiated.
    pub emulated: bool,
    /// What to write when a heart-beat is due.
    pub wire: KeepaliveWire,
}

/// Decides the plan from our wishes and the broker's CONNECTED `heart-beat` (None for 1.0 or absent).
pub fn negotiate(ours: &HeartbeatConfig, theirs: Option<(u64, u64)>) -> Plan {
    let ms = Duration::from_millis;
    let (cx, cy) = (ours.send.as_millis() as u64, ours.asked_receive_ms());
    let receive = ours.receive.as_millis() as u64;
    let (sx, sy) = theirs.unwrap_or((0, 0));
    let mut plan = Plan { send_every: None, read_timeout: None, probe_after: None, emulated: false, wire: ours.wire.clone() };
    if agreed(cx, sy) > 0 {
        plan.send_every = Some(ms(agreed(cx, sy)));
    } else if cx > 0 && ours.emulate {
        plan.send_every = Some(ms(cx));
        plan.emulated = true;
    }
    if agreed(sx, cy) > 0 {
        plan.read_timeout = Some(ms(agreed(sx, cy)).mul_f64(ours.grace.max(1.5)));
    } else if cy > 0 && ours.emulate {
        plan.probe_after = Some(ms(receive));
        plan.read_timeout = Some(ms(receive) * 2);
        plan.emulated = true;
    }
    if matches!(plan.wire, KeepaliveWire::SendTo(_)) && plan.send_every.is_none() && cx > 0 {
        plan.send_every = Some(ms(cx));
    }
    plan
}

/// One connection's heart-beat clock: when it last read and wrote, and the
/// deadlines an interval gives from them. The client's timers and the broker's
/// (its heart-beat writer and its silent-client check) all run on it.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    last_read: Instant,
    last_write: Instant,
}

impl Activity {
    /// A clock starting at `now`, the line counting as just read and written.
    pub fn new(now: Instant) -> Activity {
        Activity { last_read: now, last_write: now }
    }

    /// Something was read at `now`.
    pub fn read(&mut self, now: Instant) {
        self.last_read = now;
    }

    /// Something was written at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.last_write = now;
    }

    /// When a heart-beat is due unless something is written before (`None`: never).
    pub fn write_due(&self, every: Option<Duration>) -> Option<Instant> {
        every.and_then(|d| self.last_write.checked_add(d))
    }

    /// When the peer counts as silent unless something is read before (`None`: never).
    pub fn read_due(&self, after: Option<Duration>) -> Option<Instant> {
        after.and_then(|d| self.last_read.checked_add(d))
    }
}

/// How long the broker lets a client that promised heart-beats every `every`
/// stay silent before dropping it: two intervals (spec: "some tolerance").
pub fn broker_read_timeout(every: Option<Duration>) -> Option<Duration> {
    every.map(|d| d * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        assert_eq!(parse_header("30500,29500"), Some((30500, 29500)));
        assert_eq!(parse_header(" 0 , 0 "), Some((0, 0)));
        // A hostile peer's huge interval is refused, not turned into a timer that overflows.
        assert_eq!(parse_header("18446744073709551615,1"), None);
        assert_eq!(parse_header("4294967296,0"), None);
        assert_eq!(parse_header("4294967295,0"), Some((4294967295, 0)));
        assert_eq!(parse_header("10"), None);
        assert_eq!(parse_header("a,b"), None);
    }

    #[test]
    fn negotiated_takes_the_larger_interval_each_way() {
        let ours = HeartbeatConfig::every(Duration::from_millis(1000));
        assert_eq!(ours.header(), "1000,500");
        let p = negotiate(&ours, Some((4000, 500)));
        assert_eq!(p.send_every, Some(Duration::from_millis(1000)));
        assert_eq!(p.read_timeout, Some(Duration::from_millis(10000)));
        assert!(!p.emulated);
        assert_eq!(p.probe_after, None);
        // A broker that honours our wish: noticed within 1.25 x receive.
        let p = negotiate(&ours, Some((500, 1000)));
        assert_eq!(p.read_timeout, Some(Duration::from_millis(1250)));
    }

    #[test]
    fn emulated_when_broker_offers_nothing() {
        let ours = HeartbeatConfig::every(Duration::from_millis(1000));
        let p = negotiate(&ours, None);
        assert!(p.emulated);
        assert_eq!(p.send_every, Some(Duration::from_millis(1000)));
        assert_eq!(p.probe_after, Some(Duration::from_millis(1000)));
        assert_eq!(p.read_timeout, Some(Duration::from_millis(2000)));
        let p = negotiate(&ours, Some((0, 0)));
        assert!(p.emulated);
    }

    #[test]
    fn activity_moves_each_deadline_with_its_own_direction() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        let s = Duration::from_secs;
        assert_eq!((a.write_due(Some(s(1))), a.read_due(Some(s(3)))), (Some(t0 + s(1)), Some(t0 + s(3))));
        a.wrote(t0 + s(2));
        assert_eq!((a.write_due(Some(s(1))), a.read_due(Some(s(3)))), (Some(t0 + s(3)), Some(t0 + s(3))));
        a.read(t0 + s(5));
        assert_eq!(a.read_due(Some(s(3))), Some(t0 + s(8)));
        assert_eq!((a.write_due(None), a.read_due(None)), (None, None));
        // A far interval is "never", not an overflow.
        assert_eq!(a.read_due(Some(Duration::MAX)), None);
        assert_eq!(broker_read_timeout(Some(s(10))), Some(s(20)));
    }

    #[test]
    fn off_means_nothing() {
        let p = negotiate(&HeartbeatConfig::off(), Some((1000, 1000)));
        assert_eq!((p.send_every, p.read_timeout, p.probe_after), (None, None, None));
        let no_emulation = HeartbeatConfig { emulate: false, ..HeartbeatConfig::every(Duration::from_secs(1)) };
        let p = negotiate(&no_emulation, Some((0, 0)));
        assert_eq!((p.send_every, p.read_timeout), (None, None));
    }
}
