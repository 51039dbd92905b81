//! Attacks on the embedded broker's memory and connection bounds, through the
//! real broker on a real TCP socket: unfinished CONNECTs, connection floods,
//! queues nobody reads, a subscriber that never acknowledges, and transactions
//! that are never committed. Each checks the broker's own accounting
//! ([`BrokerHandle::stats`]) and what the attacking client is told.

use bytes::BytesMut;
use deploykit::broker::{Broker, BrokerConfig, BrokerHandle};
use deploykit::stomp::{Command, Frame, Incoming, StompCodec, Version};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Decoder;

/// Upper bound for anything we expect to happen (generous: a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(20);
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A raw STOMP client.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    codec: StompCodec,
}

impl Wire {
    async fn open(broker: &BrokerHandle) -> Wire {
        let stream = timeout(WAIT, TcpStream::connect(broker.local_addr())).await.expect("connect timed out").expect("connect");
        Wire { stream, buf: BytesMut::new(), codec: StompCodec::new(Version::V1_2) }
    }

    async fn connected(broker: &BrokerHandle) -> Wire {
        let mut w = Wire::open(broker).await;
        w.send(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0").await;
        let f = w.frame().await;
        assert_eq!(f.command, Command::Connected, "{f:?}");
        w
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes)).await.expect("write timed out").expect("write");
    }

    /// The next frame (heart-beats skipped).
    async fn frame(&mut self) -> Frame {
        loop {
            match self.codec.decode(&mut self.buf).expect("broker sent a malformed frame") {
                Some(Incoming::Frame(f)) => return f,
                Some(Incoming::Heartbeat) => continue,
                None => {}
            }
            let n = timeout(WAIT, self.stream.read_buf(&mut self.buf)).await.expect("read timed out: broker sent nothing").expect("read");
            assert!(n > 0, "connection closed while waiting for a frame");
        }
    }

    /// Reads until the broker closes the connection; the frames it sent before.
    async fn closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            while let Ok(Some(item)) = self.codec.decode(&mut self.buf) {
                if let Incoming::Frame(f) = item {
                    frames.push(f);
                }
            }
            match timeout(WAIT, self.stream.read_buf(&mut self.buf)).await.expect("broker did not close the connection") {
                Ok(0) | Err(_) => return frames,
                Ok(_) => {}
            }
        }
    }

    /// Sends a frame with a receipt; the RECEIPT, or the ERROR the broker answered with.
    async fn receipted(&mut self, head: &str, body: &[u8], r: &str) -> Frame {
        let mut bytes = format!("{head}receipt:{r}\ncontent-length:{}\n\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        bytes.push(0);
        self.send(&bytes).await;
        loop {
            let f = self.frame().await;
            if matches!(f.command, Command::Receipt | Command::Error) {
                return f;
            }
        }
    }

    /// Sends with a receipt and asserts it came.
    async fn ok(&mut self, head: &str, body: &[u8], r: &str) {
        let f = self.receipted(head, body, r).await;
        assert_eq!(f.command, Command::Receipt, "{f:?}");
    }
}

async fn broker_with(config: BrokerConfig) -> BrokerHandle {
    Broker::start(config).await.expect("broker start")
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "not reached in time: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `chunks` × 64 KiB of `x` unless the broker closes first; true if it did close.
async fn stream_until_closed(w: &mut Wire, chunks: usize) -> bool {
    let chunk = vec![b'x'; 64 * KIB];
    for _ in 0..chunks {
        match timeout(WAIT, w.stream.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return true,
            Err(_) => panic!("write stalled"),
        }
    }
    false
}

#[tokio::test]
async fn an_unfinished_connect_is_cut_off_at_the_pre_login_limit() {
    let broker = broker_with(BrokerConfig::default()).await;
    // A CONNECT announcing a 15 MiB body (the old limit was 16 MiB for everyone): refused at once.
    let mut w = Wire::open(&broker).await;
    w.send(format!("CONNECT\naccept-version:1.2\ncontent-length:{}\n\n", 15 * MIB).as_bytes()).await;
    let frames = w.closed().await;
    let error = frames.first().unwrap_or_else(|| panic!("no ERROR before the close"));
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert!(String::from_utf8_lossy(&error.body).contains("limit of 8192 bytes"), "{error:?}");
    // A CONNECT whose body never ends (no content-length, no NUL): closed after about 8 KiB.
    let mut w = Wire::open(&broker).await;
    w.send(b"CONNECT\naccept-version:1.2\n\n").await;
    let _ = stream_until_closed(&mut w, 4).await;
    let frames = w.closed().await;
    assert!(frames.first().is_some_and(|f| f.command == Command::Error && String::from_utf8_lossy(&f.body).contains("exceeds the limit")), "{frames:?}");
    // A header line that never ends.
    let mut w = Wire::open(&broker).await;
    w.send(b"CONNECT\nlogin:").await;
    let _ = stream_until_closed(&mut w, 4).await;
    let frames = w.closed().await;
    assert!(frames.first().is_some_and(|f| f.command == Command::Error), "{frames:?}");
    // Nothing was kept for them, and a logged-in client still gets the normal (16 MiB) limit.
    let mut w = Wire::connected(&broker).await;
    w.ok("SEND\ndestination:/topic/nobody\n", &vec![b'y'; 2 * MIB], "big").await;
    assert_eq!(broker.stats().retained_bytes, 0);
    eventually("the cut-off connections are forgotten", || broker.stats().connections == 1).await;
}

#[tokio::test]
async fn pending_connections_are_capped_and_freed_by_logging_in() {
    let broker = broker_with(BrokerConfig { max_pending_connections: 4, ..BrokerConfig::default() }).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(Wire::open(&broker).await);
    }
    eventually("4 pending connections", || broker.stats().pending_connections == 4).await;
    // The fifth is closed at once, with an ERROR saying why.
    let mut fifth = Wire::open(&broker).await;
    let frames = fifth.closed().await;
    assert!(frames.iter().all(|f| f.command == Command::Error && f.get("message") == Some("too many connections waiting to log in")), "{frames:?}");
    assert!(broker.stats().refused_connections >= 1);
    // One of the four logs in: room for one more.
    idle[0].send(b"CONNECT\naccept-version:1.2\n\n\0").await;
    assert_eq!(idle[0].frame().await.command, Command::Connected);
    eventually("3 pending", || broker.stats().pending_connections == 3).await;
    let _ok = Wire::connected(&broker).await;
    // Closing the idle ones frees their places.
    drop(idle.drain(1..));
    eventually("none pending", || broker.stats().pending_connections == 0).await;
}

#[tokio::test]
async fn connections_are_capped_in_total_and_per_address() {
    let broker = broker_with(BrokerConfig { max_connections_per_ip: 3, per_ip_cap_on_loopback: true, ..BrokerConfig::default() }).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Wire::connected(&broker).await);
    }
    let mut fourth = Wire::open(&broker).await;
    let frames = fourth.closed().await;
    assert!(frames.iter().all(|f| f.get("message") == Some("too many connections from this address")), "{frames:?}");
    assert_eq!(broker.stats().sessions, 3);
    drop(clients.pop());
    eventually("a place is free", || broker.stats().connections == 2).await;
    let _again = Wire::connected(&broker).await;

    let broker = broker_with(BrokerConfig { max_connections: 2, ..BrokerConfig::default() }).await;
    let _a = Wire::connected(&broker).await;
    let _b = Wire::connected(&broker).await;
    let mut third = Wire::open(&broker).await;
    let frames = third.closed().await;
    assert!(frames.iter().all(|f| f.get("message") == Some("too many connections")), "{frames:?}");

    // By default loopback peers (every client on one machine) are not capped per address.
    let broker = broker_with(BrokerConfig { max_connections_per_ip: 2, ..BrokerConfig::default() }).await;
    let _many: Vec<Wire> = connect_many(&broker, 4).await;
    assert_eq!(broker.stats().sessions, 4);
}

/// `n` logged-in connections, one after the other.
async fn connect_many(broker: &BrokerHandle, n: usize) -> Vec<Wire> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Wire::connected(broker).await);
    }
    v
}

#[tokio::test]
async fn queues_nobody_reads_are_bounded_by_bytes_per_queue_and_in_total() {
    let broker = broker_with(BrokerConfig { max_destination_bytes: MIB, max_bytes: 3 * MIB, ..BrokerConfig::default() }).await;
    let mut w = Wire::connected(&broker).await;
    let body = vec![b'q'; 100 * KIB];
    // 30 × 100 KiB to one queue: only the newest ~1 MiB is kept.
    for i in 0..30 {
        w.ok(&format!("SEND\ndestination:/queue/a\nseq:{i}\n"), &body, &format!("a{i}")).await;
    }
    let s = broker.stats();
    assert!(s.queued_bytes <= MIB && s.queued_messages >= 8 && s.queued_messages < 30, "{s:?}");
    // 1 MiB to each of six more queues: the total stays within the budget (oldest dropped).
    for q in 0..6 {
        for i in 0..10 {
            w.ok(&format!("SEND\ndestination:/queue/b{q}\nseq:{i}\n"), &body, &format!("b{q}-{i}")).await;
        }
        let s = broker.stats();
        assert!(s.retained_bytes <= 3 * MIB && s.queued_bytes <= 3 * MIB, "{s:?}");
    }
    // The newest messages survive, whole and in order.
    let mut r = Wire::connected(&broker).await;
    r.send(b"SUBSCRIBE\nid:0\ndestination:/queue/b5\n\n\0").await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&9) {
        let m = r.frame().await;
        assert_eq!((m.command, m.body.len()), (Command::Message, body.len()), "{m:?}");
        seqs.push(m.get("seq").and_then(|s| s.parse::<u32>().ok()).expect("seq"));
    }
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn a_subscriber_that_never_acknowledges_cannot_grow_the_broker_past_its_budget() {
    let broker = broker_with(BrokerConfig { max_bytes: 2 * MIB, ..BrokerConfig::default() }).await;
    let mut sub = Wire::connected(&broker).await;
    sub.ok("SUBSCRIBE\nid:0\ndestination:/topic/t\nack:client\n", b"", "sub").await;
    let mut publisher = Wire::connected(&broker).await;
    let body = vec![b't'; 100 * KIB];
    let mut refused = None;
    for i in 0..100 {
        let f = publisher.receipted("SEND\ndestination:/topic/t\n", &body, &format!("p{i}")).await;
        if f.command == Command::Error {
            refused = Some((i, f));
            break;
        }
        assert!(broker.stats().retained_bytes <= 2 * MIB);
    }
    let (i, error) = refused.expect("the budget must refuse a publisher once full");
    assert!((15..=20).contains(&i), "refused after {i} messages of 100 KiB");
    assert_eq!(error.get("message"), Some("broker memory budget exhausted"), "{error:?}");
    // Once the subscriber goes, its messages are given back.
    drop(sub);
    eventually("budget given back", || broker.stats().retained_bytes == 0).await;
    let mut again = Wire::connected(&broker).await;
    again.ok("SEND\ndestination:/topic/t\n", &body, "after").await;
}

#[tokio::test]
async fn open_transactions_are_capped_in_number_and_bytes() {
    let broker = broker_with(BrokerConfig { max_transaction_bytes: 256 * KIB, ..BrokerConfig::default() }).await;
    let mut w = Wire::connected(&broker).await;
    // Sixteen open transactions (the default cap), each holding a frame: the seventeenth is refused.
    for t in 0..16 {
        w.ok(&format!("BEGIN\ntransaction:t{t}\n"), b"", &format!("b{t}")).await;
        w.ok(&format!("SEND\ndestination:/queue/x\ntransaction:t{t}\n"), &vec![b'z'; 100 * KIB], &format!("s{t}")).await;
    }
    assert!(broker.stats().retained_bytes >= 16 * 100 * KIB, "{:?}", broker.stats());
    let f = w.receipted("BEGIN\ntransaction:t16\n", b"", "b16").await;
    assert_eq!((f.command, f.get("message")), (Command::Error, Some("too many transactions")), "{f:?}");
    // The refused session is closed and its buffered frames given back.
    w.closed().await;
    eventually("transactions given back", || broker.stats().retained_bytes == 0).await;
    assert_eq!(broker.stats().queued_messages, 0, "aborted transactions publish nothing");
    // A transaction may not buffer more than max_transaction_bytes.
    let mut w = Wire::connected(&broker).await;
    w.ok("BEGIN\ntransaction:big\n", b"", "b").await;
    w.ok("SEND\ndestination:/queue/x\ntransaction:big\n", &vec![b'z'; 200 * KIB], "s1").await;
    let f = w.receipted("SEND\ndestination:/queue/x\ntransaction:big\n", &vec![b'z'; 100 * KIB], "s2").await;
    assert_eq!((f.command, f.get("message")), (Command::Error, Some("transaction too large")), "{f:?}");
    // A committed transaction within the limits still delivers.
    let mut w = Wire::connected(&broker).await;
    w.ok("BEGIN\ntransaction:ok\n", b"", "b").await;
    w.ok("SEND\ndestination:/queue/y\ntransaction:ok\n", b"hello", "s").await;
    w.ok("COMMIT\ntransaction:ok\n", b"", "c").await;
    assert_eq!(broker.stats().queued_messages, 1);
}
