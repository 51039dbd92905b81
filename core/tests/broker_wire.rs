//! Byte-level tests of the embedded broker: literal STOMP bytes on a raw
//! socket against a broker on `127.0.0.1:0`, checking the exact replies.
//!
//! Every read is bounded by a timeout so a broken broker fails a test instead
//! of hanging it; waits are on events (bytes arriving, EOF), never sleeps used
//! as synchronisation. Short sleeps appear only where a test *asserts* that
//! nothing arrives, or paces a client's own heart-beats.

use bytes::{Buf, BytesMut};
use deploykit::broker::{Broker, BrokerConfig, BrokerHandle};
use deploykit::stomp::{Command, Frame, Incoming, StompCodec, Version};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Decoder;

/// Upper bound for anything we expect to happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long we watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// A raw STOMP client: a socket, a read buffer, and a codec to parse replies.
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

    /// Opens a connection and completes CONNECT with `accept-version:version`.
    async fn connected(broker: &BrokerHandle, version: &str) -> Wire {
        let mut w = Wire::open(broker).await;
        w.send(format!("CONNECT\naccept-version:{version}\nhost:/\n\n\0").as_bytes()).await;
        let f = w.frame().await;
        assert_eq!(f.command, Command::Connected, "{f:?}");
        w.codec.set_version(Version::parse(f.get("version").unwrap()).unwrap());
        w
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes)).await.expect("write timed out").expect("write");
    }

    async fn fill(&mut self) -> usize {
        timeout(WAIT, self.stream.read_buf(&mut self.buf)).await.expect("read timed out: broker sent nothing").expect("read")
    }

    /// The next frame, parsed (heart-beats skipped).
    async fn frame(&mut self) -> Frame {
        loop {
            match self.codec.decode(&mut self.buf).expect("broker sent a malformed frame") {
                Some(Incoming::Frame(f)) => return f,
                Some(Incoming::Heartbeat) => continue,
                None => {}
            }
            assert!(self.fill().await > 0, "connection closed while waiting for a frame");
        }
    }

    /// The exact bytes of the next frame, up to and including its NUL (leading EOLs skipped).
    async fn raw(&mut self) -> Vec<u8> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            if let Some(nul) = self.buf.iter().position(|&b| b == 0) {
                return self.buf.split_to(nul + 1).to_vec();
            }
            assert!(self.fill().await > 0, "connection closed while waiting for a frame");
        }
    }

    /// Asserts the broker closes the connection (after any frames, which are returned).
    async fn closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Incoming::Frame(f))) => {
                    frames.push(f);
                    continue;
                }
                Ok(Some(Incoming::Heartbeat)) => continue,
                _ => {}
            }
            match timeout(WAIT, self.stream.read_buf(&mut self.buf)).await.expect("broker did not close the connection") {
                Ok(0) | Err(_) => return frames,
                Ok(_) => {}
            }
        }
    }

    /// Asserts no frame arrives within [`QUIET`].
    async fn quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            if let Some(Incoming::Frame(f)) = self.codec.decode(&mut self.buf).expect("malformed") {
                panic!("unexpected frame {f:?}");
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return,
                Ok(Ok(0)) => panic!("connection closed"),
                Ok(_) => {}
            }
        }
    }

    /// Sends a frame with `receipt:r` and waits for its RECEIPT (frames before it are returned).
    async fn with_receipt(&mut self, frame_without_terminator: &str, r: &str) -> Vec<Frame> {
        let bytes = format!("{frame_without_terminator}receipt:{r}\n\n\0");
        self.send(bytes.as_bytes()).await;
        let mut before = Vec::new();
        loop {
            let f = self.frame().await;
            if f.command == Command::Receipt {
                assert_eq!(f.get("receipt-id"), Some(r), "{f:?}");
                return before;
            }
            assert_ne!(f.command, Command::Error, "{f:?}");
            before.push(f);
        }
    }

    async fn subscribe(&mut self, id: &str, dest: &str, extra: &str) {
        let before = self.with_receipt(&format!("SUBSCRIBE\nid:{id}\ndestination:{dest}\n{extra}"), &format!("sub-{id}")).await;
        assert!(before.is_empty(), "{before:?}");
    }

    /// SUBSCRIBE without a receipt (for destinations that deliver at once).
    async fn subscribe_now(&mut self, id: &str, dest: &str, extra: &str) {
        self.send(format!("SUBSCRIBE\nid:{id}\ndestination:{dest}\n{extra}\n\0").as_bytes()).await;
    }

    async fn publish(&mut self, dest: &str, body: &str) {
        self.send(format!("SEND\ndestination:{dest}\n\n{body}\0").as_bytes()).await;
    }

    /// The next MESSAGE's body as text.
    async fn body(&mut self) -> String {
        let f = self.frame().await;
        assert_eq!(f.command, Command::Message, "{f:?}");
        String::from_utf8(f.body.to_vec()).unwrap()
    }
}

async fn broker() -> BrokerHandle {
    Broker::start(BrokerConfig::default()).await.expect("broker start")
}

async fn broker_with(config: BrokerConfig) -> BrokerHandle {
    Broker::start(config).await.expect("broker start")
}

/// Waits (bounded) until `cond` holds.
async fn eventually(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn connected_bytes(version: &str, session: u64, hb: &str) -> Vec<u8> {
    format!("CONNECTED\nversion:{version}\nsession:dk-{session}\nserver:deploykit-broker/{}\nheart-beat:{hb}\n\n\0", deploykit::VERSION).into_bytes()
}

// ---------------------------------------------------------------- handshake

#[tokio::test]
async fn connect_negotiates_the_highest_common_version() {
    let broker = broker().await;
    let cases = [
        ("CONNECT\n\n\0", "1.0"),
        ("CONNECT\naccept-version:1.0\n\n\0", "1.0"),
        ("CONNECT\naccept-version:1.0,1.1\nhost:/\n\n\0", "1.1"),
        ("CONNECT\naccept-version:1.1,1.2\nhost:deploykit\n\n\0", "1.2"),
        ("STOMP\naccept-version:1.2,1.1,1.0\nhost:127.0.0.1\n\n\0", "1.2"),
        ("CONNECT\naccept-version:1.1,2.0\n\n\0", "1.1"),
    ];
    for (i, (connect, version)) in cases.iter().enumerate() {
        let mut w = Wire::open(&broker).await;
        w.send(connect.as_bytes()).await;
        assert_eq!(w.raw().await, connected_bytes(version, i as u64 + 1, "0,0"), "for {connect:?}");
    }
}

#[tokio::test]
async fn connect_with_no_common_version_is_refused() {
    let broker = broker().await;
    let mut w = Wire::open(&broker).await;
    w.send(b"CONNECT\naccept-version:2.0,3.1\n\n\0").await;
    let frames = w.closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].command, Command::Error);
    assert_eq!(frames[0].get("message"), Some("unsupported protocol version"));
    assert_eq!(frames[0].get("version"), Some("1.0,1.1,1.2"));
}

#[tokio::test]
async fn connected_reports_negotiated_heart_beats() {
    // The broker offers 10000,10000 by default.
    let broker = broker().await;
    let cases = [("0,0", "0,0"), ("5000,20000", "20000,10000"), ("0,500", "10000,0"), ("30000,0", "0,30000")];
    for (i, (client, negotiated)) in cases.iter().enumerate() {
        let mut w = Wire::open(&broker).await;
        w.send(format!("CONNECT\naccept-version:1.2\nheart-beat:{client}\n\n\0").as_bytes()).await;
        assert_eq!(w.raw().await, connected_bytes("1.2", i as u64 + 1, negotiated), "client {client}");
    }
    // A broker that offers nothing negotiates nothing.
    let quiet = broker_with(BrokerConfig { heartbeat_ms: (0, 0), ..BrokerConfig::default() }).await;
    let mut w = Wire::open(&quiet).await;
    w.send(b"CONNECT\naccept-version:1.1\nheart-beat:1000,1000\n\n\0").await;
    assert_eq!(w.raw().await, connected_bytes("1.1", 1, "0,0"));
}

#[tokio::test]
async fn invalid_heart_beat_header_is_an_error() {
    let broker = broker().await;
    let mut w = Wire::open(&broker).await;
    w.send(b"CONNECT\naccept-version:1.2\nheart-beat:soon\n\n\0").await;
    let frames = w.closed().await;
    assert_eq!(frames[0].get("message"), Some("invalid heart-beat header"));
}

#[tokio::test]
async fn login_is_checked_when_users_are_configured() {
    let users: HashMap<String, String> = [("deploy".to_owned(), "s3cret".to_owned())].into_iter().collect();
    let broker = broker_with(BrokerConfig { users: Some(users), ..BrokerConfig::default() }).await;
    for bad in ["login:deploy\npasscode:wrong\n", "login:nobody\npasscode:s3cret\n", ""] {
        let mut w = Wire::open(&broker).await;
        w.send(format!("CONNECT\naccept-version:1.2\n{bad}\n\0").as_bytes()).await;
        let frames = w.closed().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].command, Command::Error);
        assert_eq!(frames[0].get("message"), Some("access refused"));
    }
    let mut w = Wire::open(&broker).await;
    w.send(b"CONNECT\naccept-version:1.2\nlogin:deploy\npasscode:s3cret\n\n\0").await;
    assert_eq!(w.frame().await.command, Command::Connected);
}

#[tokio::test]
async fn frames_before_connect_are_refused() {
    let broker = broker().await;
    let mut w = Wire::open(&broker).await;
    w.send(b"SEND\ndestination:/queue/a\n\nhi\0").await;
    let frames = w.closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].get("message"), Some("expected CONNECT"));
    // The broker is still fine for everyone else.
    Wire::connected(&broker, "1.2").await;
}

// ---------------------------------------------------------------- topics and queues

#[tokio::test]
async fn send_fans_out_to_every_topic_subscriber() {
    let broker = broker().await;
    let mut a = Wire::connected(&broker, "1.2").await; // dk-1
    let mut b = Wire::connected(&broker, "1.1").await; // dk-2
    let mut p = Wire::connected(&broker, "1.2").await; // dk-3
    a.subscribe("s1", "/topic/deploykit.git.commits", "").await;
    b.subscribe("s2", "/topic/deploykit.git.commits", "").await;
    p.send(b"SEND\ndestination:/topic/deploykit.git.commits\ndk-type:commit\npasscode:leak\nx-odd:a\\cb\ncontent-type:text/plain\n\nhello\0").await;
    assert_eq!(
        a.raw().await,
        b"MESSAGE\nsubscription:s1\nmessage-id:dk-m-1\ndestination:/topic/deploykit.git.commits\ndk-type:commit\nx-odd:a\\cb\ncontent-type:text/plain\ncontent-length:5\n\nhello\0"
    );
    assert_eq!(
        b.raw().await,
        b"MESSAGE\nsubscription:s2\nmessage-id:dk-m-1\ndestination:/topic/deploykit.git.commits\ndk-type:commit\nx-odd:a\\cb\ncontent-type:text/plain\ncontent-length:5\n\nhello\0"
    );
    // No retention: a late subscriber gets only later messages.
    let mut late = Wire::connected(&broker, "1.2").await;
    late.subscribe("s3", "/topic/deploykit.git.commits", "").await;
    p.publish("/topic/deploykit.git.commits", "second").await;
    assert_eq!(late.body().await, "second");
    assert_eq!(a.body().await, "second");
}

/// Sends to each of `dests` with a receipt, so every delivery is routed before it returns.
async fn publish_all(p: &mut Wire, dests: &[&str]) {
    for (i, d) in dests.iter().enumerate() {
        p.with_receipt(&format!("SEND\ndestination:{d}\n"), &format!("p{i}")).await;
    }
}

#[tokio::test]
async fn wildcard_topic_subscriptions_hear_every_matching_topic_in_both_syntaxes() {
    let broker = broker().await;
    let mut one = Wire::connected(&broker, "1.2").await;
    let mut amq = Wire::connected(&broker, "1.2").await;
    let mut rmq = Wire::connected(&broker, "1.1").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    // The original's eventbot read every future.events.* topic this way.
    one.subscribe("e", "/topic/future.events.*", "").await;
    amq.subscribe("a", "/topic/future.>", "").await;
    rmq.subscribe("r", "/topic/future.#", "").await;
    publish_all(&mut p, &["/topic/future.events.commit", "/topic/future.events.deploy.www", "/topic/future", "/topic/other.events.commit", "/topic/futures.x"]).await;
    let dest = |f: Frame| f.get("destination").unwrap().to_owned();
    assert_eq!(dest(one.frame().await), "/topic/future.events.commit");
    one.quiet().await; // not future.events.deploy.www (two words), not other.* or futures.*
    for w in [&mut amq, &mut rmq] {
        assert_eq!(dest(w.frame().await), "/topic/future.events.commit");
        assert_eq!(dest(w.frame().await), "/topic/future.events.deploy.www");
        assert_eq!(dest(w.frame().await), "/topic/future");
        w.quiet().await;
    }
    // An exact and a wildcard subscription of one session each get their copy;
    // after UNSUBSCRIBE the wildcard hears nothing more.
    one.subscribe("x", "/topic/future.events.commit", "").await;
    publish_all(&mut p, &["/topic/future.events.commit"]).await;
    let mut subs: Vec<String> = vec![one.frame().await.get("subscription").unwrap().to_owned(), one.frame().await.get("subscription").unwrap().to_owned()];
    subs.sort();
    assert_eq!(subs, ["e", "x"]);
    one.with_receipt("UNSUBSCRIBE\nid:e\n", "u").await;
    publish_all(&mut p, &["/topic/future.events.push"]).await;
    one.quiet().await;
    assert_eq!(broker.stats().subscriptions, 3, "{:?}", broker.stats());
}

#[tokio::test]
async fn binary_bodies_keep_their_nuls() {
    let broker = broker().await;
    let mut a = Wire::connected(&broker, "1.2").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    a.subscribe("s", "/topic/bin", "").await;
    let body: Vec<u8> = (0u8..=255).chain([0, 0, 0]).collect();
    let mut frame = format!("SEND\ndestination:/topic/bin\ncontent-length:{}\n\n", body.len()).into_bytes();
    frame.extend_from_slice(&body);
    frame.push(0);
    p.send(&frame).await;
    let m = a.frame().await;
    assert_eq!(m.command, Command::Message);
    assert_eq!(&m.body[..], &body[..]);
}

#[tokio::test]
async fn header_escaping_follows_each_subscribers_version() {
    let broker = broker().await;
    let mut v10 = Wire::connected(&broker, "1.0").await;
    let mut v12 = Wire::connected(&broker, "1.2").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    v10.subscribe("a", "/topic/esc", "").await;
    v12.subscribe("b", "/topic/esc", "").await;
    p.send(b"SEND\ndestination:/topic/esc\nurl:http\\c//x\nmulti:one\\ntwo\n\nx\0").await;
    // 1.0 has no escapes: ':' is written as is, a newline cannot be written at all.
    assert_eq!(v10.raw().await, b"MESSAGE\nsubscription:a\nmessage-id:dk-m-1\ndestination:/topic/esc\nurl:http://x\ncontent-length:1\n\nx\0");
    assert_eq!(v12.raw().await, b"MESSAGE\nsubscription:b\nmessage-id:dk-m-1\ndestination:/topic/esc\nurl:http\\c//x\nmulti:one\\ntwo\ncontent-length:1\n\nx\0");
}

#[tokio::test]
async fn queue_delivers_round_robin() {
    let broker = broker().await;
    let mut a = Wire::connected(&broker, "1.2").await;
    let mut b = Wire::connected(&broker, "1.2").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    a.subscribe("q", "/queue/work", "").await;
    b.subscribe("q", "/queue/work", "").await;
    for i in 1..=4 {
        p.publish("/queue/work", &format!("job{i}")).await;
    }
    assert_eq!(a.body().await, "job1");
    assert_eq!(b.body().await, "job2");
    assert_eq!(a.body().await, "job3");
    assert_eq!(b.body().await, "job4");
    a.quiet().await;
    b.quiet().await;
}

#[tokio::test]
async fn queue_keeps_messages_until_someone_subscribes() {
    let broker = broker().await;
    let mut p = Wire::connected(&broker, "1.2").await;
    p.publish("/queue/later", "one").await;
    p.with_receipt("SEND\ndestination:/queue/later\n", "r2").await;
    assert_eq!(broker.stats().queued_messages, 2);
    let mut c = Wire::connected(&broker, "1.2").await;
    c.subscribe_now("s", "/queue/later", "").await;
    assert_eq!(c.body().await, "one");
    assert_eq!(c.body().await, "");
    c.quiet().await;
    assert_eq!(broker.stats().queued_messages, 0);
}

#[tokio::test]
async fn a_full_queue_without_subscribers_drops_its_oldest_messages() {
    let broker = broker_with(BrokerConfig { max_queue_len: 3, ..BrokerConfig::default() }).await;
    let mut p = Wire::connected(&broker, "1.2").await;
    for i in 1..=5 {
        p.publish("/queue/bounded", &format!("m{i}")).await;
    }
    p.with_receipt("DISCONNECT\n", "bye").await;
    let mut c = Wire::connected(&broker, "1.2").await;
    c.subscribe_now("0", "/queue/bounded", "").await;
    assert_eq!(c.body().await, "m3");
    assert_eq!(c.body().await, "m4");
    assert_eq!(c.body().await, "m5");
    c.quiet().await;
}

#[tokio::test]
async fn a_full_queue_pauses_its_publisher_then_drops_the_oldest() {
    let broker = broker_with(BrokerConfig { max_queue_len: 2, slow_consumer_timeout: Duration::from_millis(300), ..BrokerConfig::default() }).await;
    let mut c = Wire::connected(&broker, "1.2").await; // dk-1
    c.subscribe("s", "/queue/full", "ack:client-individual\nprefetch-count:1\n").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    for m in ["m1", "m2", "m3"] {
        p.publish("/queue/full", m).await;
    }
    assert_eq!(c.body().await, "m1"); // m2, m3 wait in the queue: it is full
    let start = Instant::now();
    p.send(b"SEND\ndestination:/queue/full\nreceipt:4\n\nm4\0").await;
    assert_eq!(p.frame().await.get("receipt-id"), Some("4"));
    let paused = start.elapsed();
    assert!(paused >= Duration::from_millis(250), "publisher was not paused: {paused:?}");
    // The queue is known to overflow now: the next publisher is not paused again.
    let start = Instant::now();
    p.with_receipt("SEND\ndestination:/queue/full\n", "5").await;
    assert!(start.elapsed() < Duration::from_millis(250), "paused again: {:?}", start.elapsed());
    // m2 and m3 were dropped (oldest first); m4 and the empty m5 are left.
    c.send(b"ACK\nid:dk-1-1\n\n\0").await;
    assert_eq!(c.body().await, "m4");
    c.send(b"ACK\nid:dk-1-2\n\n\0").await;
    assert_eq!(c.body().await, "");
    c.quiet().await;
}

#[tokio::test]
async fn stomp_1_0_subscriptions_without_id_use_the_destination() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.0").await;
    c.with_receipt("SUBSCRIBE\ndestination:/topic/old\n", "s").await;
    let mut p = Wire::connected(&broker, "1.0").await;
    p.publish("/topic/old", "hello").await;
    let m = c.frame().await;
    assert_eq!(m.get("subscription"), Some("/topic/old"));
    c.with_receipt("UNSUBSCRIBE\ndestination:/topic/old\n", "u").await;
    p.with_receipt("SEND\ndestination:/topic/old\n", "gone").await;
    c.quiet().await;
    assert_eq!(broker.stats().subscriptions, 0);
}

// ---------------------------------------------------------------- acknowledgements

#[tokio::test]
async fn client_ack_nack_redelivers_with_redelivered_header() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.2").await; // dk-1
    let mut p = Wire::connected(&broker, "1.2").await;
    c.subscribe("s", "/queue/jobs", "ack:client\n").await;
    p.publish("/queue/jobs", "a").await;
    assert_eq!(c.raw().await, b"MESSAGE\nsubscription:s\nmessage-id:dk-m-1\nack:dk-1-1\ndestination:/queue/jobs\ncontent-length:1\n\na\0");
    c.send(b"NACK\nid:dk-1-1\n\n\0").await;
    // The same message-id (as ActiveMQ keeps it); a new ack value for the new delivery.
    assert_eq!(c.raw().await, b"MESSAGE\nsubscription:s\nmessage-id:dk-m-1\nack:dk-1-2\nredelivered:true\ndestination:/queue/jobs\ncontent-length:1\n\na\0");
    c.with_receipt("ACK\nid:dk-1-2\n", "a2").await;
    assert_eq!(broker.stats().unacked, 0);
    // An id that was already settled is unknown.
    c.send(b"ACK\nid:dk-1-2\nreceipt:again\n\n\0").await;
    let frames = c.closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].get("message"), Some("unknown message id"));
    assert_eq!(frames[0].get("receipt-id"), Some("again"));
}

#[tokio::test]
async fn client_ack_is_cumulative_and_uses_message_id_in_1_1() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.1").await; // dk-1
    let mut p = Wire::connected(&broker, "1.2").await;
    c.subscribe("s", "/queue/cumulative", "ack:client\n").await;
    for i in 1..=3 {
        p.publish("/queue/cumulative", &format!("{i}")).await;
    }
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let m = c.frame().await;
            assert_eq!(m.get("ack"), None, "no ack header in 1.1");
            ids.push(m.get("message-id").unwrap().to_owned());
        }
        ids
    };
    assert_eq!(broker.stats().unacked, 3);
    c.with_receipt(&format!("ACK\nsubscription:s\nmessage-id:{}\n", ids[1]), "a").await;
    assert_eq!(broker.stats().unacked, 1, "ACK of the 2nd acknowledges the 1st too");
}

#[tokio::test]
async fn client_individual_acks_one_message_only() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.2").await; // dk-1
    let mut other = Wire::connected(&broker, "1.2").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    c.subscribe("s", "/queue/indiv", "ack:client-individual\n").await;
    p.publish("/queue/indiv", "first").await;
    p.publish("/queue/indiv", "second").await;
    assert_eq!(c.body().await, "first");
    assert_eq!(c.body().await, "second");
    c.with_receipt("ACK\nid:dk-1-2\n", "a").await;
    assert_eq!(broker.stats().unacked, 1, "the first is still unacknowledged");
    other.subscribe("o", "/queue/indiv", "").await;
    c.send(b"DISCONNECT\n\n\0").await;
    c.closed().await;
    let m = other.frame().await;
    assert_eq!(std::str::from_utf8(&m.body).unwrap(), "first");
    assert_eq!(m.get("redelivered"), Some("true"));
    other.quiet().await;
}

#[tokio::test]
async fn unacked_messages_go_to_another_subscriber_on_disconnect() {
    let broker = broker().await;
    let mut a = Wire::connected(&broker, "1.2").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    a.subscribe("s", "/queue/failover", "ack:client\n").await;
    p.publish("/queue/failover", "x").await;
    p.publish("/queue/failover", "y").await;
    let (x, y) = (a.frame().await, a.frame().await);
    assert_eq!((&x.body[..], &y.body[..]), (&b"x"[..], &b"y"[..]));
    let mut b = Wire::connected(&broker, "1.2").await;
    b.subscribe("s", "/queue/failover", "").await;
    b.quiet().await;
    drop(a); // abrupt: no DISCONNECT
    let m1 = b.frame().await;
    let m2 = b.frame().await;
    assert_eq!((&m1.body[..], m1.get("redelivered")), (&b"x"[..], Some("true")));
    assert_eq!((&m2.body[..], m2.get("redelivered")), (&b"y"[..], Some("true")));
    // A redelivered message keeps its message-id (ActiveMQ does; the stomp gem's tests rely on it).
    assert_eq!((m1.get("message-id"), m2.get("message-id")), (x.get("message-id"), y.get("message-id")));
    assert_ne!(x.get("message-id"), y.get("message-id"));
}

#[tokio::test]
async fn a_1_1_ack_by_message_id_names_the_subscription_when_one_message_reached_two() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.1").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    c.subscribe("one", "/topic/twice", "ack:client-individual\n").await;
    c.subscribe("two", "/topic/twice", "ack:client-individual\n").await;
    publish_all(&mut p, &["/topic/twice"]).await;
    let (f1, f2) = (c.frame().await, c.frame().await);
    let id = f1.get("message-id").unwrap().to_owned();
    assert_eq!(f2.get("message-id"), Some(id.as_str()), "one message, one message-id");
    assert_eq!(broker.stats().unacked, 2);
    c.with_receipt(&format!("ACK\nsubscription:two\nmessage-id:{id}\n"), "a2").await;
    assert_eq!(broker.stats().unacked, 1);
    c.with_receipt(&format!("ACK\nsubscription:one\nmessage-id:{id}\n"), "a1").await;
    assert_eq!(broker.stats().unacked, 0);
    // Settled: acking it again is an error, as for any unknown id.
    c.send(format!("ACK\nsubscription:one\nmessage-id:{id}\n\n\0").as_bytes()).await;
    assert_eq!(c.frame().await.command, Command::Error);
}

#[tokio::test]
async fn unsubscribe_returns_unacked_messages_to_the_queue() {
    let broker = broker().await;
    let mut a = Wire::connected(&broker, "1.2").await;
    let mut b = Wire::connected(&broker, "1.2").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    a.subscribe("s", "/queue/unsub", "ack:client-individual\n").await;
    p.publish("/queue/unsub", "kept").await;
    assert_eq!(a.body().await, "kept");
    b.subscribe("s", "/queue/unsub", "").await;
    a.with_receipt("UNSUBSCRIBE\nid:s\n", "u").await;
    let m = b.frame().await;
    assert_eq!((&m.body[..], m.get("redelivered")), (&b"kept"[..], Some("true")));
}

#[tokio::test]
async fn nacked_topic_messages_are_dropped() {
    let broker = broker().await;
    let mut a = Wire::connected(&broker, "1.2").await; // dk-1
    let mut p = Wire::connected(&broker, "1.2").await;
    a.subscribe("s", "/topic/t", "ack:client-individual\n").await;
    p.publish("/topic/t", "once").await;
    assert_eq!(a.body().await, "once");
    a.with_receipt("NACK\nid:dk-1-1\n", "n").await;
    a.quiet().await;
    assert_eq!(broker.stats().unacked, 0);
}

#[tokio::test]
async fn prefetch_count_limits_messages_in_flight() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.2").await; // dk-1
    let mut p = Wire::connected(&broker, "1.2").await;
    for i in 1..=3 {
        p.publish("/queue/slow", &format!("{i}")).await;
    }
    p.with_receipt("BEGIN\ntransaction:noop\n", "sync").await;
    c.subscribe_now("s", "/queue/slow", "ack:client\nprefetch-count:1\n").await;
    assert_eq!(c.body().await, "1");
    c.quiet().await;
    c.send(b"ACK\nid:dk-1-1\n\n\0").await;
    assert_eq!(c.body().await, "2");
    c.quiet().await;
    c.send(b"ACK\nid:dk-1-2\n\n\0").await;
    assert_eq!(c.body().await, "3");

    // ActiveMQ's spelling works too, on topics as well (messages wait for credit).
    let mut t = Wire::connected(&broker, "1.2").await; // dk-3
    t.subscribe("t", "/topic/prefetch", "ack:client-individual\nactivemq.prefetchSize:2\n").await;
    for i in 1..=3 {
        p.publish("/topic/prefetch", &format!("t{i}")).await;
    }
    assert_eq!(t.body().await, "t1");
    assert_eq!(t.body().await, "t2");
    t.quiet().await;
    t.send(b"ACK\nid:dk-3-1\n\n\0").await;
    assert_eq!(t.body().await, "t3");
}

// ---------------------------------------------------------------- receipts and transactions

#[tokio::test]
async fn every_client_frame_gets_its_receipt() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.2").await; // dk-1
    let frames = [("SUBSCRIBE\nid:s\ndestination:/queue/r\nack:client-individual\n", "1"), ("SEND\ndestination:/queue/r\n", "2"), ("SEND\ndestination:/queue/r\n", "3")];
    let mut got = Vec::new();
    for (frame, r) in frames {
        got.extend(c.with_receipt(frame, r).await);
    }
    while got.len() < 2 {
        got.push(c.frame().await);
    }
    assert_eq!(got.iter().map(|f| f.command).collect::<Vec<_>>(), [Command::Message, Command::Message]);
    let mut redelivered = Vec::new();
    for (frame, r) in [
        ("ACK\nid:dk-1-1\n", "4"),
        ("NACK\nid:dk-1-2\n", "5"),
        ("BEGIN\ntransaction:t1\n", "6"),
        ("COMMIT\ntransaction:t1\n", "7"),
        ("BEGIN\ntransaction:t2\n", "8"),
        ("ABORT\ntransaction:t2\n", "9"),
    ] {
        redelivered.extend(c.with_receipt(frame, r).await);
    }
    // The NACKed message came back (before NACK's receipt).
    assert_eq!(redelivered.len(), 1, "{redelivered:?}");
    assert_eq!(redelivered[0].get("redelivered"), Some("true"));
    c.with_receipt("UNSUBSCRIBE\nid:s\n", "10").await;
    c.send(b"DISCONNECT\nreceipt:77\n\n\0").await;
    assert_eq!(c.raw().await, b"RECEIPT\nreceipt-id:77\n\n\0");
    assert!(c.closed().await.is_empty());
}

#[tokio::test]
async fn transactions_deliver_on_commit_and_drop_on_abort() {
    let broker = broker().await;
    let mut c = Wire::connected(&broker, "1.2").await; // dk-1
    let mut p = Wire::connected(&broker, "1.2").await;
    c.subscribe("s", "/queue/tx", "ack:client-individual\n").await;
    p.send(b"BEGIN\ntransaction:a\n\n\0").await;
    p.send(b"SEND\ndestination:/queue/tx\ntransaction:a\n\naborted\0").await;
    p.with_receipt("ABORT\ntransaction:a\n", "abort").await;
    p.send(b"BEGIN\ntransaction:b\n\n\0").await;
    p.send(b"SEND\ndestination:/queue/tx\ntransaction:b\n\none\0").await;
    p.with_receipt("SEND\ndestination:/queue/tx\ntransaction:b\n", "buffered").await;
    c.quiet().await;
    p.with_receipt("COMMIT\ntransaction:b\n", "commit").await;
    let m = c.frame().await;
    assert_eq!(&m.body[..], b"one");
    assert_eq!(m.get("transaction"), None);
    assert_eq!(c.body().await, "");

    // Transactional ACK: settled on COMMIT only.
    c.send(b"BEGIN\ntransaction:acks\n\n\0").await;
    c.with_receipt("ACK\nid:dk-1-1\ntransaction:acks\n", "tack").await;
    assert_eq!(broker.stats().unacked, 2);
    c.with_receipt("COMMIT\ntransaction:acks\n", "c").await;
    assert_eq!(broker.stats().unacked, 1);

    // An unknown transaction is an error.
    p.send(b"SEND\ndestination:/queue/tx\ntransaction:nope\nreceipt:r\n\nx\0").await;
    let frames = p.closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].get("message"), Some("unknown transaction"));
    assert_eq!(frames[0].get("receipt-id"), Some("r"));
}

// ---------------------------------------------------------------- temporary queues

#[tokio::test]
async fn temp_queue_carries_replies_back_to_the_requester() {
    let broker = broker().await;
    let mut requester = Wire::connected(&broker, "1.2").await; // dk-1
    let mut service = Wire::connected(&broker, "1.2").await; // dk-2
    service.subscribe("svc", "/queue/deploykit.deploy", "").await;
    requester.send(b"SEND\ndestination:/queue/deploykit.deploy\nreply-to:/temp-queue/answers\n\nping\0").await;
    let request = service.frame().await;
    let reply_to = request.get("reply-to").unwrap().to_owned();
    assert_eq!(reply_to, "/reply-queue/dk-1.answers");
    service.send(format!("SEND\ndestination:{reply_to}\n\npong\0").as_bytes()).await;
    // No SUBSCRIBE needed: replies arrive on the subscription named after the temp queue.
    assert_eq!(requester.raw().await, b"MESSAGE\nsubscription:/temp-queue/answers\nmessage-id:dk-m-2\ndestination:/reply-queue/dk-1.answers\ncontent-length:4\n\npong\0");
    // Others cannot subscribe to it.
    let mut thief = Wire::connected(&broker, "1.2").await;
    thief.send(format!("SUBSCRIBE\nid:x\ndestination:{reply_to}\n\n\0").as_bytes()).await;
    assert_eq!(thief.closed().await[0].command, Command::Error);
    // It goes away with its session; replies to it are dropped.
    requester.send(b"DISCONNECT\nreceipt:d\n\n\0").await;
    requester.frame().await;
    requester.closed().await;
    service.with_receipt(&format!("SEND\ndestination:{reply_to}\n"), "late").await;
    assert_eq!(broker.stats().queues, 1, "only /queue/deploykit.deploy is left");
}

#[tokio::test]
async fn temp_queue_can_be_subscribed_explicitly() {
    let broker = broker().await;
    let mut r = Wire::connected(&broker, "1.2").await; // dk-1
    r.subscribe("mine", "/temp-queue/x", "").await;
    let mut other = Wire::connected(&broker, "1.2").await;
    other.publish("/reply-queue/dk-1.x", "hi").await;
    let m = r.frame().await;
    assert_eq!(m.get("subscription"), Some("mine"));
    assert_eq!(&m.body[..], b"hi");
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn malformed_frame_gets_an_error_and_a_close() {
    let broker = broker().await;
    let mut watcher = Wire::connected(&broker, "1.2").await;
    watcher.subscribe("w", "/topic/still-alive", "").await;
    for bad in [
        &b"FROB\n\n\0"[..],
        b"SEND\ndestination:/topic/x\nno colon here\n\n\0",
        b"SEND\ndestination:/topic/x\ncontent-length:2\n\nabc\0",
        b"SEND\ndestination:/topic/x\nbad:esc\\t\n\n\0",
    ] {
        let mut w = Wire::connected(&broker, "1.2").await;
        w.send(bad).await;
        let frames = w.closed().await;
        assert_eq!(frames.len(), 1, "for {bad:?}: {frames:?}");
        assert_eq!(frames[0].command, Command::Error);
        assert_eq!(frames[0].get("message"), Some("malformed frame"), "{:?}", frames[0]);
    }
    // Other clients keep their messages.
    let mut p = Wire::connected(&broker, "1.2").await;
    p.publish("/topic/still-alive", "yes").await;
    assert_eq!(watcher.body().await, "yes");
}

#[tokio::test]
async fn bad_requests_get_an_error_with_the_receipt_id() {
    let broker = broker().await;
    let cases: [(&str, &str); 7] = [
        ("SEND\n", "SEND frame has no destination header"),
        ("SUBSCRIBE\nid:1\n", "SUBSCRIBE frame has no destination header"),
        ("SUBSCRIBE\nid:1\ndestination:/queue/a\nack:sometimes\n", "invalid ack mode"),
        ("ACK\nid:dk-99-1\n", "unknown message id"),
        ("UNSUBSCRIBE\nid:never\n", "unknown subscription"),
        ("COMMIT\ntransaction:never\n", "unknown transaction"),
        ("CONNECT\naccept-version:1.2\n", "already connected"),
    ];
    for (frame, message) in cases {
        let mut w = Wire::connected(&broker, "1.2").await;
        w.send(format!("{frame}receipt:r-1\n\n\0").as_bytes()).await;
        let frames = w.closed().await;
        assert_eq!(frames.len(), 1, "for {frame:?}: {frames:?}");
        assert_eq!(frames[0].command, Command::Error);
        assert_eq!(frames[0].get("message"), Some(message), "for {frame:?}");
        assert_eq!(frames[0].get("receipt-id"), Some("r-1"));
    }
}

#[tokio::test]
async fn duplicate_subscription_id_is_an_error() {
    let broker = broker().await;
    let mut w = Wire::connected(&broker, "1.2").await;
    w.subscribe("dup", "/topic/a", "").await;
    w.send(b"SUBSCRIBE\nid:dup\ndestination:/topic/b\n\n\0").await;
    let frames = w.closed().await;
    assert_eq!(frames[0].get("message"), Some("duplicate subscription id"));
    assert_eq!(broker.stats().subscriptions, 0, "the session and its subscriptions are gone");
}

// ---------------------------------------------------------------- heart-beats

#[tokio::test]
async fn server_heart_beats_arrive_at_the_negotiated_interval() {
    let broker = broker_with(BrokerConfig { heartbeat_ms: (100, 0), ..BrokerConfig::default() }).await;
    let mut w = Wire::open(&broker).await;
    w.send(b"CONNECT\naccept-version:1.2\nheart-beat:0,150\n\n\0").await;
    assert_eq!(w.raw().await, connected_bytes("1.2", 1, "150,0"));
    let start = Instant::now();
    let mut beats = Vec::new();
    let mut chunk = [0u8; 64];
    while beats.len() < 4 {
        let n = timeout(Duration::from_secs(1), w.stream.read(&mut chunk)).await.expect("no heart-beat within 1 s").expect("read");
        assert!(n > 0, "closed");
        assert!(chunk[..n].iter().all(|&b| b == b'\n'), "only EOLs expected: {:?}", &chunk[..n]);
        beats.extend(std::iter::repeat_n(start.elapsed(), n));
    }
    // Four beats at 150 ms take about 600 ms; allow scheduling slack but not a silent second.
    let last = beats[3];
    assert!(last >= Duration::from_millis(450), "beats too fast: {beats:?}");
    assert!(last <= Duration::from_millis(1500), "beats too slow: {beats:?}");
}

#[tokio::test]
async fn silent_clients_are_dropped_and_beating_ones_kept() {
    let broker = broker_with(BrokerConfig { heartbeat_ms: (0, 100), ..BrokerConfig::default() }).await;
    // Negotiated client→server interval: max(100, 100) = 100 ms; dropped after ~200 ms of silence.
    let mut alive = Wire::open(&broker).await;
    alive.send(b"CONNECT\naccept-version:1.2\nheart-beat:100,0\n\n\0").await;
    assert_eq!(alive.raw().await, connected_bytes("1.2", 1, "0,100"));
    let mut silent = Wire::open(&broker).await;
    silent.send(b"CONNECT\naccept-version:1.2\nheart-beat:100,0\n\n\0").await;
    assert_eq!(silent.raw().await, connected_bytes("1.2", 2, "0,100"));
    let start = Instant::now();
    let beating = async {
        for _ in 0..12 {
            alive.send(b"\n").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        alive
    };
    let dropped = async {
        silent.closed().await;
        start.elapsed()
    };
    let (mut alive, after) = tokio::join!(beating, dropped);
    assert!(after >= Duration::from_millis(150), "dropped too early: {after:?}");
    assert!(after < Duration::from_secs(2), "dropped too late: {after:?}");
    // 600 ms of EOLs every 50 ms kept the other connection open.
    alive.with_receipt("SUBSCRIBE\nid:1\ndestination:/topic/x\n", "still-here").await;
}

#[tokio::test]
async fn connect_must_arrive_in_time() {
    let broker = broker_with(BrokerConfig { handshake_timeout: Duration::from_millis(200), ..BrokerConfig::default() }).await;
    let mut w = Wire::open(&broker).await;
    assert!(w.closed().await.is_empty());
}

// ---------------------------------------------------------------- faults and flow control

#[tokio::test]
async fn kick_all_drops_clients_and_restart_reuses_the_port() {
    let broker = broker().await;
    let addr = broker.local_addr();
    assert_eq!(broker.url(), format!("stomp://{addr}"));
    let mut a = Wire::connected(&broker, "1.2").await;
    a.subscribe("s", "/queue/k", "ack:client\n").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    p.publish("/queue/k", "m").await;
    assert_eq!(a.body().await, "m");
    broker.kick_all();
    a.closed().await;
    p.closed().await;
    // The message was never acknowledged: it waits for the next subscriber.
    let mut b = Wire::connected(&broker, "1.2").await;
    b.subscribe_now("s", "/queue/k", "").await;
    let m = b.frame().await;
    assert_eq!(m.get("redelivered"), Some("true"));

    // A connected client sees the connection close on shutdown; the same port is free again at once.
    broker.shutdown().await;
    b.closed().await;
    let again = broker_with(BrokerConfig { listen: addr, ..BrokerConfig::default() }).await;
    assert_eq!(again.local_addr(), addr);
    Wire::connected(&again, "1.2").await;
    // In-memory: nothing survived.
    assert_eq!(again.stats().queued_messages, 0);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_broker() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut w = Wire::connected(&broker, "1.2").await;
    drop(broker);
    w.closed().await;
    let refused = async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(WAIT, refused).await.expect("listener still open after drop");
}

#[tokio::test]
async fn a_stuck_consumer_is_disconnected_and_the_publisher_goes_on() {
    let broker = broker_with(BrokerConfig { max_outbox_bytes: 64 * 1024, slow_consumer_timeout: Duration::from_millis(300), ..BrokerConfig::default() }).await;
    let mut stuck = Wire::connected(&broker, "1.2").await;
    stuck.subscribe("s", "/topic/firehose", "").await;
    let mut fine = Wire::connected(&broker, "1.2").await;
    fine.subscribe("s", "/topic/firehose", "").await;
    let mut p = Wire::connected(&broker, "1.2").await;
    let body = "x".repeat(64 * 1024);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 400 {
            let _ = fine.frame().await;
            n += 1;
        }
        fine
    });
    // `stuck` never reads: kernel buffers fill, then its outbox, then the broker gives up on it.
    for i in 0..400 {
        p.send(format!("SEND\ndestination:/topic/firehose\nreceipt:{i}\n\n{body}\0").as_bytes()).await;
        let r = p.frame().await;
        assert_eq!(r.command, Command::Receipt);
    }
    timeout(WAIT, reader).await.expect("fine consumer starved").expect("reader");
    eventually(|| broker.stats().sessions == 2).await;
    stuck.closed().await;
}
