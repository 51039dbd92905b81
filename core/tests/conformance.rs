//! One client conformance suite, run against the embedded broker always and
//! against RabbitMQ and ActiveMQ when `./scripts/test` has started them.
//!
//! Ordering is used instead of waiting wherever possible: a "marker" message
//! sent after the ones that must not arrive proves they did not.

mod common;

use bytes::Bytes;
use common::targets::{recv, recv_none, Kind, Target};
use deploykit::stomp::{AckMode, Client, Error, HeartbeatConfig, SendOptions, SubscribeOptions, Version};
use std::time::Duration;

/// Sends with a receipt, so the test knows the broker has it.
async fn send(client: &Client, dest: &str, body: impl Into<Bytes>) {
    client.send_with(dest, body, SendOptions { receipt: true, ..SendOptions::default() }).await.unwrap_or_else(|e| panic!("send to {dest}: {e}"));
}

/// Subscribes with an ack mode and optional prefetch.
fn sub_opts(ack: AckMode, prefetch: Option<u32>) -> SubscribeOptions {
    SubscribeOptions { ack, prefetch, ..SubscribeOptions::default() }
}

async fn topic_fans_out(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("topic");
    let mut a = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let other = t.client().await;
    let mut b = other.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    send(&client, &dest, "déploiement ✓ 部署").await;
    for sub in [&mut a, &mut b] {
        let m = recv(sub).await;
        assert_eq!(m.text(), Some("déploiement ✓ 部署"));
        assert_eq!(m.destination(), dest);
    }
    client.disconnect().await.unwrap();
    other.disconnect().await.unwrap();
}

async fn queue_keeps_messages_and_shares_them(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("queue");
    for i in 0..4 {
        send(&client, &dest, format!("job {i}")).await;
    }
    // Retained while nobody listened; each delivered to exactly one of two consumers.
    let mut a = client.subscribe(&dest, sub_opts(AckMode::ClientIndividual, Some(1))).await.unwrap();
    let other = t.client().await;
    let mut b = other.subscribe(&dest, sub_opts(AckMode::ClientIndividual, Some(1))).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        tokio::select! {
            m = recv(&mut a) => { a.ack(&m).await.unwrap(); got.push(m.text().unwrap().to_owned()); }
            m = recv(&mut b) => { b.ack(&m).await.unwrap(); got.push(m.text().unwrap().to_owned()); }
        }
    }
    got.sort();
    assert_eq!(got, ["job 0", "job 1", "job 2", "job 3"]);
    send(&client, &dest, "marker").await;
    let m = tokio::select! { m = recv(&mut a) => m, m = recv(&mut b) => m };
    assert_eq!(m.text(), Some("marker"), "no duplicate deliveries before the marker");
}

async fn receipted_send_and_negotiated_version(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("topic");
    send(&client, &dest, "with receipt").await;
    assert!(client.session().is_some());
    assert_eq!(client.session().unwrap().version, Version::V1_2);
    client.disconnect().await.unwrap();
}

async fn client_individual_nack_redelivers(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("queue");
    let mut sub = client.subscribe(&dest, sub_opts(AckMode::ClientIndividual, None)).await.unwrap();
    send(&client, &dest, "first").await;
    let m = recv(&mut sub).await;
    assert_eq!(m.text(), Some("first"));
    if t.kind == Kind::ActiveMq {
        // ActiveMQ routes a NACKed STOMP message to its dead-letter queue instead of
        // redelivering it; its redelivery on disconnect is checked in
        // `unacked_redelivered_after_disconnect`.
        sub.nack(&m).await.unwrap();
        return;
    }
    sub.nack(&m).await.unwrap();
    let again = recv(&mut sub).await;
    assert_eq!(again.text(), Some("first"));
    assert_eq!(again.header("redelivered"), Some("true"));
    sub.ack(&again).await.unwrap();
    send(&client, &dest, "marker").await;
    assert_eq!(recv(&mut sub).await.text(), Some("marker"));
}

async fn client_ack_is_cumulative(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("queue");
    let mut sub = client.subscribe(&dest, sub_opts(AckMode::Client, None)).await.unwrap();
    for i in 0..3 {
        send(&client, &dest, format!("m{i}")).await;
    }
    let mut last = None;
    for i in 0..3 {
        let m = recv(&mut sub).await;
        assert_eq!(m.text(), Some(format!("m{i}").as_str()));
        last = Some(m);
    }
    sub.ack(last.as_ref().unwrap()).await.unwrap();
    sub.unsubscribe().await.unwrap();
    // Nothing left unacknowledged: a new consumer's first message is the marker.
    send(&client, &dest, "marker").await;
    let mut again = client.subscribe(&dest, sub_opts(AckMode::Auto, None)).await.unwrap();
    assert_eq!(recv(&mut again).await.text(), Some("marker"));
}

async fn unacked_redelivered_after_disconnect(t: &Target) {
    let dest = t.dest("queue");
    let first = t.client().await;
    let mut sub = first.subscribe(&dest, sub_opts(AckMode::ClientIndividual, None)).await.unwrap();
    send(&first, &dest, "keep me").await;
    assert_eq!(recv(&mut sub).await.text(), Some("keep me"));
    first.disconnect().await.unwrap();
    let second = t.client().await;
    let mut sub = second.subscribe(&dest, sub_opts(AckMode::ClientIndividual, None)).await.unwrap();
    let m = recv(&mut sub).await;
    assert_eq!(m.text(), Some("keep me"));
    assert_eq!(m.header("redelivered"), Some("true"));
    sub.ack(&m).await.unwrap();
}

async fn prefetch_limits_in_flight(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("queue");
    let mut sub = client.subscribe(&dest, sub_opts(AckMode::ClientIndividual, Some(1))).await.unwrap();
    send(&client, &dest, "one").await;
    send(&client, &dest, "two").await;
    let m = recv(&mut sub).await;
    assert_eq!(m.text(), Some("one"));
    // The second must wait for the ack: a bounded negative check.
    recv_none(&mut sub, Duration::from_millis(400)).await;
    sub.ack(&m).await.unwrap();
    assert_eq!(recv(&mut sub).await.text(), Some("two"));
}

async fn headers_with_colons_and_newlines(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("topic");
    let mut sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let mut opts = SendOptions { receipt: true, ..SendOptions::default() };
    opts.headers.push("x-subject", "[site] refs/heads/master: a\nb\\c");
    opts.headers.push("x-unicode", "ünï ✓");
    client.send_with(&dest, "h", opts).await.unwrap();
    let m = recv(&mut sub).await;
    assert_eq!(m.header("x-subject"), Some("[site] refs/heads/master: a\nb\\c"));
    assert_eq!(m.header("x-unicode"), Some("ünï ✓"));
}

async fn binary_and_large_bodies(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("queue");
    let mut sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 0, b'\n', 0]).collect();
    send(&client, &dest, binary.clone()).await;
    assert_eq!(recv(&mut sub).await.body, binary);
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    send(&client, &dest, big.clone()).await;
    let m = recv(&mut sub).await;
    assert_eq!(m.body.len(), big.len());
    assert!(m.body == big, "1 MiB body intact");
}

async fn transactions_commit_and_abort(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("queue");
    let mut sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let tx = client.begin().await.unwrap();
    tx.send(&dest, "in tx 1").await.unwrap();
    tx.send(&dest, "in tx 2").await.unwrap();
    send(&client, &dest, "outside").await;
    assert_eq!(recv(&mut sub).await.text(), Some("outside"), "transacted sends wait for COMMIT");
    tx.commit().await.unwrap();
    assert_eq!(recv(&mut sub).await.text(), Some("in tx 1"));
    assert_eq!(recv(&mut sub).await.text(), Some("in tx 2"));
    let tx = client.begin().await.unwrap();
    tx.send(&dest, "aborted").await.unwrap();
    tx.abort().await.unwrap();
    send(&client, &dest, "marker").await;
    assert_eq!(recv(&mut sub).await.text(), Some("marker"), "aborted sends never arrive");
}

async fn unsubscribe_stops_delivery(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("topic");
    let sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let mut watcher = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    sub.unsubscribe().await.unwrap();
    send(&client, &dest, "after").await;
    assert_eq!(recv(&mut watcher).await.text(), Some("after"));
}

async fn heartbeats_negotiated(t: &Target) {
    let config = t.config().heartbeat(HeartbeatConfig::every(Duration::from_millis(1000)));
    let client = Client::connect(config).await.unwrap();
    let info = client.session().unwrap();
    assert!(!info.heartbeat.emulated, "{:?} should negotiate heart-beats: {:?}", t.kind, info.heartbeat);
    assert!(info.heartbeat.send_every.is_some());
    assert!(info.heartbeat.read_timeout.is_some());
    client.disconnect().await.unwrap();
}

async fn idle_connection_survives_heartbeats(t: &Target) {
    // Idle for several negotiated intervals: heart-beats both ways must keep the
    // session up (ActiveMQ's first heart-beat comes late; a strict client flaps).
    let config = t.config().heartbeat(HeartbeatConfig::every(Duration::from_millis(500)));
    let client = Client::connect(config).await.unwrap();
    let mut events = client.events();
    let dest = t.dest("queue");
    let mut sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await; // the idle period is what is tested
    if let Ok(ev) = events.try_recv() {
        panic!("{:?}: connection event while idle: {ev:?}", t.kind);
    }
    assert_eq!(client.state(), deploykit::stomp::State::Ready(1), "still on the first connection");
    send(&client, &dest, "after idle").await;
    assert_eq!(recv(&mut sub).await.text(), Some("after idle"));
    client.disconnect().await.unwrap();
}

async fn stomp_1_0_and_1_1_sessions(t: &Target) {
    for version in [Version::V1_0, Version::V1_1] {
        let client = Client::connect(t.config().versions(&[version])).await.unwrap();
        assert_eq!(client.session().unwrap().version, version);
        let dest = t.dest("queue");
        let mut sub = client.subscribe(&dest, sub_opts(AckMode::Client, None)).await.unwrap();
        send(&client, &dest, "old school").await;
        let m = recv(&mut sub).await;
        assert_eq!(m.text(), Some("old school"));
        sub.ack(&m).await.unwrap();
        if version == Version::V1_0 {
            assert!(matches!(sub.nack(&m).await, Err(Error::Invalid(_))), "NACK does not exist in 1.0");
            let mut bad = SendOptions::default();
            bad.headers.push("x", "line\nbreak");
            assert!(client.send_with(&dest, "x", bad).await.is_err(), "1.0 cannot carry newlines in headers");
        }
        client.disconnect().await.unwrap();
    }
}

async fn keepalive_message_recognised(t: &Target) {
    let client = t.client().await;
    let dest = t.dest("topic");
    let mut sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    send(&client, &dest, "\n").await;
    assert!(recv(&mut sub).await.is_keepalive());
}

/// Wildcard topic subscriptions in each broker's own syntax: `*` one word
/// everywhere; `#` (RabbitMQ) or `>` (ActiveMQ) any number. The embedded broker
/// takes both, and is held to what the production brokers do.
async fn wildcard_topics(t: &Target) {
    let client = t.client().await;
    let base = t.dest("topic");
    let many: &[&str] = match t.kind {
        Kind::RabbitMq => &["#"],
        Kind::ActiveMq => &[">"],
        _ => &["#", ">"],
    };
    let mut one = client.subscribe(&format!("{base}.*"), SubscribeOptions::default()).await.unwrap();
    let mut subs = Vec::new();
    for w in many {
        subs.push(client.subscribe(&format!("{base}.{w}"), SubscribeOptions::default()).await.unwrap());
    }
    for leaf in ["a", "a.b", "m"] {
        send(&client, &format!("{base}.{leaf}"), leaf).await;
    }
    // `*`: one word only, so the marker "m" comes right after "a".
    assert_eq!(recv(&mut one).await.destination(), format!("{base}.a"));
    assert_eq!(recv(&mut one).await.text(), Some("m"), "{base}.* heard a two-word topic");
    for sub in &mut subs {
        for leaf in ["a", "a.b", "m"] {
            let m = recv(sub).await;
            assert_eq!((m.text(), m.destination()), (Some(leaf), format!("{base}.{leaf}").as_str()));
        }
    }
    client.disconnect().await.unwrap();
}

/// A queue's backlog larger than the subscription's buffer: subscribe returns (the
/// broker may send the backlog before the SUBSCRIBE's RECEIPT) and everything arrives in order.
async fn subscribe_behind_a_backlog(t: &Target) {
    let producer = t.client().await;
    let dest = t.dest("queue");
    let n = 100;
    for i in 0..n {
        producer.send(&dest, format!("m{i}")).await.unwrap();
    }
    send(&producer, &dest, "last").await;
    let mut config = t.config();
    config.subscription_buffer = 2;
    let consumer = Client::connect(config).await.unwrap();
    let mut sub = consumer.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    for i in 0..n {
        assert_eq!(recv(&mut sub).await.text(), Some(format!("m{i}").as_str()));
    }
    assert_eq!(recv(&mut sub).await.text(), Some("last"));
    consumer.disconnect().await.unwrap();
    producer.disconnect().await.unwrap();
}

/// Generates one test per scenario and broker: `embedded::x`, `rabbitmq::x`, `activemq::x`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $name() { let t = crate::Target::embedded().await; super::$name(&t).await; })*
        }
        mod rabbitmq {
            $(#[tokio::test] async fn $name() { if let Some(t) = crate::Target::real(crate::Kind::RabbitMq) { super::$name(&t).await; } })*
        }
        mod activemq {
            $(#[tokio::test] async fn $name() { if let Some(t) = crate::Target::real(crate::Kind::ActiveMq) { super::$name(&t).await; } })*
        }
    };
}

conformance!(
    topic_fans_out,
    queue_keeps_messages_and_shares_them,
    receipted_send_and_negotiated_version,
    client_individual_nack_redelivers,
    client_ack_is_cumulative,
    unacked_redelivered_after_disconnect,
    prefetch_limits_in_flight,
    headers_with_colons_and_newlines,
    binary_and_large_bodies,
    transactions_commit_and_abort,
    unsubscribe_stops_delivery,
    heartbeats_negotiated,
    idle_connection_survives_heartbeats,
    stomp_1_0_and_1_1_sessions,
    keepalive_message_recognised,
    wildcard_topics,
    subscribe_behind_a_backlog,
);
