//! Client behaviour that is ours rather than the broker's: the original's
//! keepalive SEND, refused logins, misuse errors, unsubscribe on drop, and a
//! closed client. Run against the embedded broker.

mod common;

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::stomp::{AckMode, Client, ClientConfig, ClientEvent, Error, HeartbeatConfig, KeepaliveWire, SendOptions, State, SubscribeOptions};
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn keepalive_send_mode_publishes_single_newlines() {
    // A broker that negotiates no heart-beats, and a client told to keep the
    // path alive the original way: SEND "\n" to a destination.
    let broker = Broker::start(BrokerConfig { heartbeat_ms: (0, 0), ..BrokerConfig::default() }).await.unwrap();
    let watcher = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = watcher.subscribe("/topic/keepalive", SubscribeOptions::default()).await.unwrap();
    let hb = HeartbeatConfig { wire: KeepaliveWire::SendTo("/topic/keepalive".into()), ..HeartbeatConfig::every(Duration::from_millis(100)) };
    let quiet = Client::connect(ClientConfig::new(&broker.url()).unwrap().heartbeat(hb)).await.unwrap();
    assert!(quiet.session().unwrap().heartbeat.emulated);
    for _ in 0..2 {
        let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("a keepalive within 10 s").unwrap();
        assert!(m.is_keepalive(), "body {:?}", m.body);
    }
    quiet.disconnect().await.unwrap();
}

#[tokio::test]
async fn refused_login_is_a_clear_error() {
    let users = HashMap::from([("deploy".to_owned(), "right".to_owned())]);
    let broker = Broker::start(BrokerConfig { users: Some(users), ..BrokerConfig::default() }).await.unwrap();
    let mut config = ClientConfig::new(&broker.url()).unwrap().credentials("deploy", "wrong-pass-xyz");
    config.url.options.startup_max_reconnect_attempts = Some(1);
    let err = Client::connect(config.clone()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::GaveUp { .. }), "{err:?}");
    assert!(matches!(err.root(), Error::Refused { .. }), "root() says the login was refused: {:?}", err.root());
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("wrong-pass-xyz"), "passcode leaked: {text}");
    assert!(!format!("{config:?}").contains("wrong-pass-xyz"), "passcode leaked in Debug");
    let ok = Client::connect(config.credentials("deploy", "right")).await.unwrap();
    ok.disconnect().await.unwrap();
}

#[tokio::test]
async fn misuse_gets_typed_errors() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let opts = SubscribeOptions { id: Some("same".into()), ..SubscribeOptions::default() };
    let mut auto = client.subscribe("/topic/a", opts.clone()).await.unwrap();
    let dup = client.subscribe("/topic/b", opts).await.unwrap_err();
    assert!(matches!(dup, Error::Invalid(ref m) if m.contains("already in use")), "{dup:?}");
    client.send_with("/topic/a", "x", SendOptions { receipt: true, ..Default::default() }).await.unwrap();
    let m = tokio::time::timeout(WAIT, auto.recv()).await.unwrap().unwrap();
    assert!(matches!(auto.ack(&m).await, Err(Error::Invalid(_))), "ack on an auto subscription is refused");
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let sub = client.subscribe("/queue/dropme", SubscribeOptions { ack: AckMode::ClientIndividual, ..Default::default() }).await.unwrap();
    assert_eq!(broker.stats().subscriptions, 1);
    drop(sub);
    // The UNSUBSCRIBE is queued before this receipted SEND, so once the receipt is back the broker has processed it.
    client.send_with("/queue/other", "x", SendOptions { receipt: true, ..Default::default() }).await.unwrap();
    assert_eq!(broker.stats().subscriptions, 0);
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn closed_client_says_so() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut events = client.events();
    let other = client.clone();
    client.disconnect().await.unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(ClientEvent::Closed { reason }) = events.recv().await {
                break reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(closed.contains("disconnected"), "{closed}");
    assert_eq!(other.state(), State::Closed);
    assert!(matches!(other.send("/topic/x", "late").await, Err(Error::Closed)));
}

#[tokio::test]
async fn receipt_timeout_is_reported() {
    // A "broker" that accepts TCP and answers CONNECTED but never sends receipts.
    let addr = fake_broker(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0").await;
    let mut config = ClientConfig::new(&format!("stomp://{addr}")).unwrap().heartbeat(HeartbeatConfig::off());
    config.receipt_timeout = Duration::from_millis(300);
    let client = Client::connect(config).await.unwrap();
    let err = client.send_with("/queue/x", "x", SendOptions { receipt: true, ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("RECEIPT for SEND"), "{err}");
}

#[tokio::test]
async fn slow_subscriber_stalls_reading_without_losing_or_disconnecting() {
    // A tiny subscription buffer and short heart-beats: while the application does
    // not read, the client stops reading the socket, keeps the session up across
    // several read-timeout periods, and then delivers everything in order.
    let broker = Broker::start(BrokerConfig { heartbeat_ms: (100, 200), ..BrokerConfig::default() }).await.unwrap();
    let mut config = ClientConfig::new(&broker.url()).unwrap().heartbeat(HeartbeatConfig::every(Duration::from_millis(200)));
    config.subscription_buffer = 4;
    let consumer = Client::connect(config).await.unwrap();
    let mut events = consumer.events();
    let read_timeout = consumer.session().unwrap().heartbeat.read_timeout.unwrap();
    let mut sub = consumer.subscribe("/queue/slow", SubscribeOptions::default()).await.unwrap();
    let producer = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let n = 300;
    for i in 0..n {
        producer.send("/queue/slow", format!("m{i}")).await.unwrap();
    }
    producer.send_with("/queue/slow", "last", SendOptions { receipt: true, ..Default::default() }).await.unwrap();
    // Not reading for several read timeouts is the point of this test.
    tokio::time::sleep(read_timeout * 4).await;
    if let Ok(ev) = events.try_recv() {
        panic!("connection event while the application was slow: {ev:?}");
    }
    for i in 0..n {
        let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("message within 10 s").unwrap();
        assert_eq!(m.text(), Some(format!("m{i}").as_str()), "in order, none lost");
    }
    assert_eq!(tokio::time::timeout(WAIT, sub.recv()).await.unwrap().unwrap().text(), Some("last"));
    assert_eq!(consumer.state(), State::Ready(1), "never reconnected");
}

#[tokio::test]
async fn subscribing_to_a_backlog_larger_than_the_buffer_returns_and_delivers_it_all() {
    // The broker may send a queue's backlog before the SUBSCRIBE's RECEIPT. With more
    // backlog than the subscription holds, the client stops reading at the full
    // buffer, so the receipt stays unread behind it: subscribe() must not wait for
    // it (a MESSAGE for the subscription proves the broker took the SUBSCRIBE).
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let producer = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let n = 200;
    for i in 0..n {
        producer.send("/queue/backlog", format!("m{i}")).await.unwrap();
    }
    producer.send_with("/queue/backlog", "last", SendOptions { receipt: true, ..Default::default() }).await.unwrap();
    let mut config = ClientConfig::new(&broker.url()).unwrap();
    config.subscription_buffer = 4;
    config.receipt_timeout = Duration::from_secs(5);
    let consumer = Client::connect(config).await.unwrap();
    let mut sub = consumer.subscribe("/queue/backlog", SubscribeOptions::default()).await.expect("subscribe returns with the backlog behind it");
    for i in 0..n {
        let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("message within 10 s").unwrap();
        assert_eq!(m.text(), Some(format!("m{i}").as_str()), "in order, none lost");
    }
    assert_eq!(tokio::time::timeout(WAIT, sub.recv()).await.unwrap().unwrap().text(), Some("last"));
    // The receipt behind the backlog is read in the end: a later receipted call works.
    consumer.send_with("/queue/other", "x", SendOptions { receipt: true, ..Default::default() }).await.unwrap();
    assert_eq!(consumer.state(), State::Ready(1), "never reconnected");
}

#[tokio::test]
async fn a_hostile_brokers_huge_heart_beat_is_refused_not_turned_into_timers() {
    // A "broker" whose CONNECTED announces heart-beats every u64::MAX ms: the value is refused
    // (over 32 bits) and taken as no heart-beat, so no timer is ever computed from it.
    let addr = fake_broker(b"CONNECTED\nversion:1.2\nheart-beat:18446744073709551615,18446744073709551615\n\n\0").await;
    let config = ClientConfig::new(&format!("stomp://{addr}")).unwrap().heartbeat(HeartbeatConfig::every(Duration::from_secs(5)));
    let client = tokio::time::timeout(WAIT, Client::connect(config)).await.expect("connect hangs").expect("connects");
    // The broker's values were refused: no read timeout or send interval was derived from them
    // (what remains is ours, 5 s, possibly emulated).
    let plan = client.session().expect("connected").heartbeat;
    let ours = |d: Option<Duration>| d.is_none_or(|d| d <= Duration::from_secs(60));
    assert!(ours(plan.read_timeout) && ours(plan.send_every), "{plan:?}");
    // The connection task is alive: a plain send goes out (no receipt asked, so the fake broker need not answer).
    client.send("/queue/x", "still here").await.expect("the connection task survived");
    assert_eq!(client.state(), State::Ready(1));
}

/// A one-connection "broker" on loopback: reads the CONNECT, answers `connected` as
/// given, then reads (and drops) whatever the client sends until it hangs up.
async fn fake_broker(connected: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(connected).await.unwrap();
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    addr
}

#[tokio::test]
async fn messages_read_together_reach_each_subscription_in_order_even_before_an_error() {
    // A scripted broker answers two SUBSCRIBEs, then writes 300 MESSAGEs for the two
    // subscriptions interleaved (and some for a subscription the client does not have)
    // and an ERROR, all in one write: the client reads many frames at once and hands
    // each subscription its own in batches, stalls while a small subscription is full,
    // and must still deliver every message read before the ERROR, in order, to the
    // right subscription, dropping the strays.
    use deploykit::stomp::{Command, Frame, Incoming, StompCodec, Version};
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Framed;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = 300;
    let to_b = |i: usize| i.is_multiple_of(3) || i.is_multiple_of(7);
    let broker = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut wire = Framed::new(s, StompCodec::new(Version::V1_2));
        let mut ids = Vec::new();
        // CONNECT, then the two SUBSCRIBEs, each answered with its RECEIPT.
        while ids.len() < 2 {
            let Some(Ok(Incoming::Frame(f))) = wire.next().await else { panic!("client hung up or sent garbage") };
            match f.command {
                Command::Connect | Command::Stomp => wire.send(&Frame::new(Command::Connected).header("version", "1.2").header("heart-beat", "0,0")).await.unwrap(),
                Command::Subscribe => {
                    ids.push(f.get("id").unwrap().to_owned());
                    wire.send(&Frame::new(Command::Receipt).header("receipt-id", f.get("receipt").unwrap().to_owned())).await.unwrap();
                }
                _ => {}
            }
        }
        let mut burst = Vec::new();
        for i in 0..n {
            let sub = &ids[usize::from(to_b(i))];
            let body = format!("m{i}");
            burst.extend_from_slice(format!("MESSAGE\nsubscription:{sub}\nmessage-id:{i}\ndestination:/queue/x\ncontent-length:{}\n\n{body}\0\n", body.len()).as_bytes());
            if i % 11 == 5 {
                // One for no subscription of ours, inside a run: dropped, and the run goes on.
                burst.extend_from_slice(format!("MESSAGE\nsubscription:nobody\nmessage-id:x{i}\ndestination:/queue/x\ncontent-length:2\n\nxx\0\n").as_bytes());
            }
        }
        burst.extend_from_slice(b"ERROR\nmessage:going away\n\n\0");
        wire.get_mut().write_all(&burst).await.unwrap();
        // Keep the socket open until the client has read everything and hung up.
        while let Some(Ok(_)) = wire.next().await {}
    });
    let mut config = ClientConfig::new(&format!("stomp://{addr}")).unwrap();
    config.subscription_buffer = 4;
    let client = Client::connect(config).await.unwrap();
    let mut events = client.events();
    let a = client.subscribe("/queue/a", SubscribeOptions::default()).await.unwrap();
    let b = client.subscribe("/queue/b", SubscribeOptions::default()).await.unwrap();
    let read = |mut sub: deploykit::stomp::Subscription, want: Vec<String>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < want.len() {
                let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("message within 10 s").expect("subscription open");
                assert_eq!(m.header("destination"), Some("/queue/x"));
                got.push(m.text().unwrap().to_owned());
            }
            assert_eq!(got, want, "in order, none lost, none misrouted");
        })
    };
    let want = |pick: bool| (0..n).filter(|&i| to_b(i) == pick).map(|i| format!("m{i}")).collect::<Vec<_>>();
    let (ra, rb) = (read(a, want(false)), read(b, want(true)));
    ra.await.unwrap();
    rb.await.unwrap();
    // The ERROR after them was read too: the connection is reported lost for it.
    let lost = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(ClientEvent::Disconnected { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("the ERROR ends the connection");
    assert!(lost.contains("going away"), "{lost}");
    drop(client);
    broker.abort();
}
