//! The message spool against the embedded broker: order, receipts, a bus that
//! fails half-way, corrupt files, concurrent drains.

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::spool::{Spool, SpoolError};
use deploykit::stomp::{Client, ClientConfig, Headers, SubscribeOptions};
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dk-spool-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut h = Headers::new();
    for (k, v) in pairs {
        h.push(*k, *v);
    }
    h
}

async fn recv_text(sub: &mut deploykit::stomp::Subscription) -> String {
    let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("a message within 10 s").expect("subscription open");
    m.text().expect("utf-8").to_owned()
}

#[tokio::test]
async fn drains_oldest_first_with_headers_and_binary_bodies() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let dir = temp("order");
    let spool = Spool::open(&dir).unwrap();
    for i in 0..5 {
        spool.push("/queue/spool.order", &headers(&[("subject", &format!("n{i}"))]), format!("message {i}").as_bytes()).unwrap();
    }
    let binary: Vec<u8> = (0..=255u8).collect();
    spool.push("/queue/spool.order", &headers(&[("content-type", "application/octet-stream")]), &binary).unwrap();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = client.subscribe("/queue/spool.order", SubscribeOptions::default()).await.unwrap();
    assert_eq!(spool.drain(&client).await.unwrap(), 6);
    assert!(spool.pending().unwrap().is_empty());
    for i in 0..5 {
        let m = tokio::time::timeout(WAIT, sub.recv()).await.unwrap().unwrap();
        assert_eq!((m.text().unwrap(), m.header("subject")), (format!("message {i}").as_str(), Some(format!("n{i}").as_str())));
    }
    let m = tokio::time::timeout(WAIT, sub.recv()).await.unwrap().unwrap();
    assert_eq!(&m.body[..], &binary[..]);
    assert_eq!(m.header("content-type"), Some("application/octet-stream"));
    // An empty spool drains to nothing.
    assert_eq!(spool.drain(&client).await.unwrap(), 0);
    client.disconnect().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn corrupt_files_go_to_bad_and_never_block_the_rest() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let dir = temp("bad");
    let spool = Spool::open(&dir).unwrap();
    spool.push("/queue/spool.bad", &Headers::new(), b"first").unwrap();
    let broken = spool.push("/queue/spool.bad", &Headers::new(), b"broken").unwrap();
    spool.push("/queue/spool.bad", &Headers::new(), b"third").unwrap();
    std::fs::write(&broken, b"DKSPOOL1\n{not json\nbroken").unwrap();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = client.subscribe("/queue/spool.bad", SubscribeOptions::default()).await.unwrap();
    assert_eq!(spool.drain(&client).await.unwrap(), 2);
    assert_eq!(recv_text(&mut sub).await, "first");
    assert_eq!(recv_text(&mut sub).await, "third");
    assert!(spool.pending().unwrap().is_empty());
    let kept = spool.bad_dir().join(broken.file_name().unwrap());
    assert_eq!(std::fs::read(&kept).unwrap(), b"DKSPOOL1\n{not json\nbroken", "the corrupt file is kept as it was");
    client.disconnect().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failing_bus_keeps_the_rest_in_order_for_the_next_drain() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let url = broker.url();
    let dir = temp("fail");
    let spool = Spool::open(&dir).unwrap();
    for i in 0..3 {
        spool.push("/queue/spool.fail", &Headers::new(), format!("m{i}").as_bytes()).unwrap();
    }
    // A client that gives up at once when its broker goes away.
    let mut config = ClientConfig::new(&url).unwrap();
    config.url.options.max_reconnect_attempts = Some(1);
    config.url.options.initial_reconnect_delay = Duration::from_millis(1);
    config.receipt_timeout = Duration::from_secs(2);
    let client = Client::connect(config).await.unwrap();
    broker.shutdown().await;
    let err = tokio::time::timeout(WAIT, spool.drain(&client)).await.expect("drain gives up in time").unwrap_err();
    match &err {
        SpoolError::Bus { sent: 0, pending: 3, .. } => {}
        other => panic!("expected a bus failure with everything pending, got {other:?}"),
    }
    assert_eq!(spool.pending().unwrap().len(), 3);

    // The broker is back (same port): the next drain sends all three, in order.
    let listen = url.trim_start_matches("stomp://").parse().unwrap();
    let broker = Broker::start(BrokerConfig { listen, ..BrokerConfig::default() }).await.unwrap();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = client.subscribe("/queue/spool.fail", SubscribeOptions::default()).await.unwrap();
    assert_eq!(spool.drain(&client).await.unwrap(), 3);
    for i in 0..3 {
        assert_eq!(recv_text(&mut sub).await, format!("m{i}"));
    }
    client.disconnect().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn concurrent_drains_send_each_message_once() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let dir = temp("concurrent");
    let spool = Spool::open(&dir).unwrap();
    for i in 0..40 {
        spool.push("/queue/spool.once", &Headers::new(), format!("{i}").as_bytes()).unwrap();
    }
    let a = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let b = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = a.subscribe("/queue/spool.once", SubscribeOptions::default()).await.unwrap();
    let (s1, s2) = (spool.clone(), Spool::open(&dir).unwrap());
    let (n1, n2) = tokio::join!(s1.drain(&a), s2.drain(&b));
    assert_eq!(n1.unwrap() + n2.unwrap(), 40);
    for i in 0..40 {
        assert_eq!(recv_text(&mut sub).await, i.to_string());
    }
    assert!(tokio::time::timeout(Duration::from_millis(200), sub.recv()).await.is_err(), "no duplicate");
    let _ = std::fs::remove_dir_all(&dir);
}
