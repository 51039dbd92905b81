//! dk-keepalive through an idle-killing TCP proxy (a stateful firewall that
//! closes connections silent for T): without keepalive an idle subscriber dies
//! after about T; with it, it lives past 3T; the probe finds T within 20 %.

mod common;

use common::proxy::Proxy;
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::keepalive::{self, Mode, ProbeOptions, Target};
use deploykit::message::{decode, Message};
use deploykit::stomp::{Client, ClientConfig, ClientEvent, HeartbeatConfig, SubscribeOptions};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The firewall's idle limit.
const T: Duration = Duration::from_millis(1500);

fn idle_client_config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url).unwrap().heartbeat(HeartbeatConfig::off());
    c.url.options.max_reconnect_attempts = Some(1);
    c
}

/// Waits for the client's first disconnection, up to `within`; returns when it came.
async fn disconnected(events: &mut broadcast::Receiver<ClientEvent>, within: Duration) -> Option<Instant> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(ClientEvent::Disconnected { .. } | ClientEvent::Closed { .. }) | Err(broadcast::error::RecvError::Closed) => return Instant::now(),
                _ => {}
            }
        }
    })
    .await
    .ok()
}

fn topic() -> String {
    format!("/topic/dk.test.keepalive.{}", fastrand::u64(..))
}

#[tokio::test]
async fn without_keepalive_an_idle_subscriber_dies_after_t() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let proxy = Proxy::with_idle_timeout(broker.local_addr(), T).await.unwrap();
    let client = Client::connect(idle_client_config(&proxy.stomp_url())).await.unwrap();
    let mut events = client.events();
    let _sub = client.subscribe(&topic(), SubscribeOptions::default()).await.unwrap();
    let idle_since = Instant::now();
    let died = disconnected(&mut events, T * 4).await.expect("the firewall drops the idle connection");
    let lived = died - idle_since;
    assert!(lived >= T.mul_f64(0.8), "dropped after {lived:?}, before the idle limit {T:?}");
    assert_eq!(proxy.idle_kills(), 1);
}

#[tokio::test]
async fn send_mode_keeps_idle_subscribers_alive_past_3t() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let proxy = Proxy::with_idle_timeout(broker.local_addr(), T).await.unwrap();
    let dest = topic();
    let client = Client::connect(idle_client_config(&proxy.stomp_url())).await.unwrap();
    let mut events = client.events();
    let mut sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    // dk-keepalive's own connection crosses the same firewall.
    let target = Target::new(ClientConfig::new(&proxy.stomp_url()).unwrap(), dest.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(keepalive::run(vec![target], T / 3, async {
        let _ = stopped.await;
    }));
    assert!(disconnected(&mut events, T * 3 + T / 2).await.is_none(), "the subscriber was dropped despite the keepalives");
    assert_eq!(proxy.idle_kills(), 0);
    // What kept it alive: single-newline messages, which receivers read as keepalives.
    let mut keepalives = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.recv()).await {
        assert_eq!(decode(m.destination(), &m.headers, &m.body).unwrap(), Message::Keepalive);
        keepalives += 1;
    }
    assert!(keepalives >= 6, "{keepalives} keepalives in 3.5 T at T/3");
    let _ = stop.send(());
    daemon.await.unwrap();
}

#[tokio::test]
async fn hold_mode_keeps_its_own_connection_alive_past_3t() {
    // A broker that offers no heart-beats: the client emulates them.
    let broker = Broker::start(BrokerConfig { heartbeat_ms: (0, 0), ..BrokerConfig::default() }).await.unwrap();
    let proxy = Proxy::with_idle_timeout(broker.local_addr(), T).await.unwrap();
    let mut target = Target::new(ClientConfig::new(&proxy.stomp_url()).unwrap(), topic());
    target.mode = Mode::Hold;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(keepalive::run(vec![target], T / 3, async {
        let _ = stopped.await;
    }));
    // The window itself is what is tested: the proxy's counters are cumulative,
    // so one look at the end covers all of it (one connection, never killed).
    tokio::time::sleep(T * 3 + T / 2).await;
    assert_eq!(proxy.idle_kills(), 0, "the held connection was dropped");
    assert_eq!((proxy.accepted(), proxy.open_connections()), (1, 1));
    let _ = stop.send(());
    daemon.await.unwrap();
}

#[tokio::test]
async fn send_once_delivers_a_single_newline_and_reports_an_unreachable_broker() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let dest = topic();
    let reader = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = reader.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    keepalive::send_once(&Target::new(ClientConfig::new(&broker.url()).unwrap(), dest.clone())).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap().unwrap();
    assert_eq!(&m.body[..], b"\n");
    let dead = Target::new(ClientConfig::new("stomp://127.0.0.1:1").unwrap(), dest);
    assert!(keepalive::send_once(&dead).await.is_err());
}

#[tokio::test]
async fn probe_finds_the_idle_limit_within_20_percent() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let proxy = Proxy::with_idle_timeout(broker.local_addr(), T).await.unwrap();
    let opts = ProbeOptions { min: Duration::from_millis(250), max: Duration::from_secs(8), ..ProbeOptions::default() };
    let report = keepalive::probe(ClientConfig::new(&proxy.stomp_url()).unwrap(), opts).await.unwrap();
    let found = report.dropped_after.expect("a limit is found");
    eprintln!("probe: {found:?} for {T:?}, {} trials", report.trials.len());
    let err = (found.as_secs_f64() - T.as_secs_f64()).abs() / T.as_secs_f64();
    assert!(err <= 0.2, "found {found:?} for a limit of {T:?} ({report:?})");
    assert!(report.exact, "the proxy closes connections, so the limit is observed directly");
    assert!(report.survived.is_some_and(|s| s < T), "{report:?}");
    assert!(report.recommended_interval() < T / 2 + T / 10);
}

#[tokio::test]
async fn probe_without_a_limit_reports_the_bound() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let opts = ProbeOptions { min: Duration::from_millis(200), max: Duration::from_millis(800), ..ProbeOptions::default() };
    let report = keepalive::probe(ClientConfig::new(&broker.url()).unwrap(), opts).await.unwrap();
    assert_eq!(report.dropped_after, None, "{report:?}");
    assert_eq!(report.survived, Some(Duration::from_millis(800)));
    assert_eq!(report.recommended_interval(), Duration::from_millis(400));
}

/// RabbitMQ's address and a client configuration for it that goes through `proxy` instead.
fn through(proxy: &Proxy, target: &common::targets::Target) -> ClientConfig {
    let mut c = target.config().heartbeat(HeartbeatConfig::off());
    c.url.endpoints[0].host = "127.0.0.1".into();
    c.url.endpoints[0].port = proxy.port();
    c.url.options.max_reconnect_attempts = Some(1);
    c
}

async fn rabbitmq_addr(target: &common::targets::Target) -> std::net::SocketAddr {
    let config = target.config();
    let (host, port) = (config.url.endpoints[0].host.clone(), config.url.endpoints[0].port);
    tokio::net::lookup_host(format!("{host}:{port}")).await.unwrap().next().unwrap()
}

#[tokio::test]
async fn rabbitmq_keepalives_keep_an_idle_subscriber_alive_and_the_probe_finds_t() {
    let Some(target) = common::targets::Target::real(common::targets::Kind::RabbitMq) else { return };
    let proxy = Proxy::with_idle_timeout(rabbitmq_addr(&target).await, T).await.unwrap();
    let dest = target.dest("topic");
    let client = Client::connect(through(&proxy, &target)).await.unwrap();
    let mut events = client.events();
    let _sub = client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(keepalive::run(vec![Target::new(through(&proxy, &target), dest)], T / 3, async {
        let _ = stopped.await;
    }));
    assert!(disconnected(&mut events, T * 3 + T / 2).await.is_none(), "the subscriber was dropped despite the keepalives");
    let _ = stop.send(());
    daemon.await.unwrap();
    let opts = ProbeOptions { min: Duration::from_millis(250), max: Duration::from_secs(8), ..ProbeOptions::default() };
    let report = keepalive::probe(through(&proxy, &target), opts).await.unwrap();
    let found = report.dropped_after.expect("a limit is found");
    assert!((found.as_secs_f64() - T.as_secs_f64()).abs() <= 0.2 * T.as_secs_f64(), "found {found:?} for {T:?}: {report:?}");
}
