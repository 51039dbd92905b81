//! Fault injection: brokers restarted and kicking clients, dead network paths
//! (a proxy that blackholes), idle-killing firewalls, brokers down at start-up.
//!
//! Every wait is on the client's own signals (`events()`, `watch_state()`,
//! subscription streams) and bounded by `tokio::time::timeout`, so a bug fails
//! the test instead of hanging it. The only timed waits are the ones where the
//! elapsed time is what is measured: "no disconnect for 3 T" and detection
//! latencies.
//!
//! RabbitMQ is exercised when `DK_TEST_RABBITMQ` (a `stomp://` URL) and
//! `DK_TEST_RABBITMQCTL` (path of `rabbitmqctl`) are set; with
//! `DK_REQUIRE_BROKERS=1` their absence fails the test.

mod common;

use common::proxy::Proxy;
use deploykit::broker::{Broker, BrokerConfig, BrokerHandle};
use deploykit::stomp::{Client, ClientConfig, ClientEvent, Error, HeartbeatConfig, Message, SendOptions, State, SubscribeOptions, Subscription};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::{timeout, Instant};

/// Bound on any single wait that is not itself a measurement.
const STEP: Duration = Duration::from_secs(10);

/// Heart-beat interval of the blackhole tests.
const HB: Duration = Duration::from_millis(500);

/// Scheduling slack on top of two heart-beat intervals: the tokio timer wheel has
/// 1 ms resolution, and what remains is task wake-ups on a loaded 2-core CI
/// machine running the other tests in parallel (observed: at most 10 ms over the
/// read timeout, with both cores busy). 250 ms leaves a wide margin and is still
/// half an interval: a client that waited a third interval would fail.
const SLACK: Duration = Duration::from_millis(250);

/// Idle timeout of the idle-killing proxy (T).
const IDLE_T: Duration = Duration::from_secs(1);

/// Reconnect quickly in tests.
const FAST: &str = "initialReconnectDelay=10ms&maxReconnectDelay=100ms";

// ---------------------------------------------------------------- helpers

/// Awaits `fut`, failing the test with `what` after `within`.
async fn within<T>(within: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Starts an embedded broker with this heart-beat offer (ms), on `listen` or an ephemeral port.
async fn broker_with(heartbeat_ms: (u32, u32), listen: Option<SocketAddr>) -> BrokerHandle {
    let mut config = BrokerConfig { heartbeat_ms, ..BrokerConfig::default() };
    if let Some(addr) = listen {
        config.listen = addr;
    }
    within(STEP, "embedded broker start", Broker::start(config)).await.expect("embedded broker starts")
}

/// An embedded broker with its default settings.
async fn broker() -> BrokerHandle {
    within(STEP, "embedded broker start", Broker::start(BrokerConfig::default())).await.expect("embedded broker starts")
}

/// A client configuration: vhost `/`, these heart-beats, a short handshake timeout.
///
/// The handshake timeout bounds a connection attempt through a blackholed path
/// (TCP accepts, nothing answers): the client spends it on the dead endpoint
/// before trying the next one.
fn config(url: &str, hb: HeartbeatConfig) -> ClientConfig {
    let mut c = ClientConfig::new(url).unwrap_or_else(|e| panic!("test URL {url}: {e}")).vhost("/").heartbeat(hb);
    c.handshake.timeout = Duration::from_secs(1);
    c.receipt_timeout = STEP;
    c
}

/// `Client::connect`, bounded.
async fn connect(cfg: ClientConfig) -> Client {
    let url = cfg.url.to_string();
    within(STEP, &format!("connect to {url}"), Client::connect(cfg)).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The next event matching `pred` (others are skipped), with the instant it was seen.
async fn event(rx: &mut broadcast::Receiver<ClientEvent>, limit: Duration, what: &str, pred: impl Fn(&ClientEvent) -> bool) -> (ClientEvent, Instant) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(ev) if pred(&ev) => return (ev, Instant::now()),
                Ok(ev) => eprintln!("  (event while waiting for {what}: {ev:?})"),
                Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("  ({n} events lagged)"),
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("event channel closed while waiting for {what}")
                }
            }
        }
    };
    within(limit, what, wait).await
}

fn is_disconnected(ev: &ClientEvent) -> bool {
    matches!(ev, ClientEvent::Disconnected { .. })
}

fn is_ready(ev: &ClientEvent) -> bool {
    matches!(ev, ClientEvent::Ready { .. })
}

fn is_closed(ev: &ClientEvent) -> bool {
    matches!(ev, ClientEvent::Closed { .. })
}

/// What a Ready event said.
#[derive(Debug)]
struct Readied {
    #[allow(dead_code)] // shown in failure messages through Debug
    endpoint: String,
    generation: u64,
    reconnect: bool,
    subscriptions: usize,
}

/// Awaits Disconnected, then the next Ready (failing on Closed or a Ready without a Disconnected first).
async fn expect_recovery(rx: &mut broadcast::Receiver<ClientEvent>, limit: Duration) -> Readied {
    let (ev, _) = event(rx, limit, "Disconnected", |e| is_disconnected(e) || is_ready(e) || is_closed(e)).await;
    assert!(is_disconnected(&ev), "expected Disconnected first, got {ev:?}");
    let (ev, _) = event(rx, limit, "Ready after reconnect", |e| is_ready(e) || is_closed(e)).await;
    match ev {
        ClientEvent::Ready { endpoint, generation, reconnect, subscriptions, .. } => Readied { endpoint, generation, reconnect, subscriptions },
        other => panic!("expected Ready, got {other:?}"),
    }
}

/// Awaits the state `Ready(generation)` on the client's watch.
async fn await_state(client: &Client, want: State) {
    let mut w = client.watch_state();
    within(STEP, &format!("state {want:?}"), w.wait_for(|s| *s == want)).await.expect("state watch closed");
}

/// The next message of `sub`, bounded.
async fn recv(sub: &mut Subscription) -> Message {
    let dest = sub.destination().to_owned();
    within(STEP, &format!("a message on {dest}"), sub.recv()).await.unwrap_or_else(|| panic!("subscription {dest} ended"))
}

/// Sends with a receipt, so the broker has it when this returns.
async fn send_confirmed(client: &Client, dest: &str, body: &str) {
    within(STEP, "SEND receipt", client.send_with(dest, body.to_owned(), SendOptions { receipt: true, ..SendOptions::default() }))
        .await
        .unwrap_or_else(|e| panic!("send to {dest}: {e}"));
}

/// A destination unique to this process and call.
fn dest(kind: &str, name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("/{kind}/dk.faults.{name}.{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A port nothing listens on (bound then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Subscribes with default options, bounded.
async fn subscribe(client: &Client, dest: &str) -> Subscription {
    within(STEP, "SUBSCRIBE receipt", client.subscribe(dest, SubscribeOptions::default())).await.unwrap_or_else(|e| panic!("subscribe {dest}: {e}"))
}

// ------------------------------------------------------- broker restarts

/// Embedded broker shut down and started again on the same port under a
/// subscribed client: Disconnected, then Ready{reconnect, generation 2}, and the
/// same Subscription receives a message sent after the restart.
#[tokio::test]
async fn broker_restart_under_subscribed_client() {
    let b1 = broker().await;
    let addr = b1.local_addr();
    let client = connect(config(&format!("failover:(stomp://{addr})?{FAST}"), HeartbeatConfig::every(Duration::from_secs(5)))).await;
    let mut events = client.events();
    let q = dest("queue", "restart");
    let mut sub = subscribe(&client, &q).await;
    send_confirmed(&client, &q, "before").await;
    assert_eq!(recv(&mut sub).await.text(), Some("before"));

    within(STEP, "broker shutdown", b1.shutdown()).await;
    let (ev, _) = event(&mut events, STEP, "Disconnected", |e| is_disconnected(e) || is_ready(e)).await;
    assert!(is_disconnected(&ev), "{ev:?}");
    let b2 = broker_with(BrokerConfig::default().heartbeat_ms, Some(addr)).await;
    assert_eq!(b2.local_addr(), addr, "restarted on the same port");
    let (ev, _) = event(&mut events, STEP, "Ready after restart", |e| is_ready(e) || is_closed(e)).await;
    assert!(matches!(ev, ClientEvent::Ready { generation: 2, reconnect: true, subscriptions: 1, .. }), "{ev:?}");
    await_state(&client, State::Ready(2)).await;

    // Another client publishes after the restart; the old Subscription object gets it.
    let publisher = connect(config(&b2.url(), HeartbeatConfig::off())).await;
    send_confirmed(&publisher, &q, "after restart").await;
    assert_eq!(recv(&mut sub).await.text(), Some("after restart"));
    b2.shutdown().await;
}

/// The broker drops every connection (`kick_all`): same recovery.
#[tokio::test]
async fn broker_kicks_all_connections() {
    let b = broker().await;
    let client = connect(config(&format!("failover:({})?{FAST}", b.url()), HeartbeatConfig::every(Duration::from_secs(5)))).await;
    let mut events = client.events();
    let q = dest("queue", "kick");
    let mut sub = subscribe(&client, &q).await;

    b.kick_all();
    let r = expect_recovery(&mut events, STEP).await;
    assert!(r.generation == 2 && r.reconnect && r.subscriptions == 1, "{r:?}");
    await_state(&client, State::Ready(2)).await;
    let publisher = connect(config(&b.url(), HeartbeatConfig::off())).await;
    send_confirmed(&publisher, &q, "after kick").await;
    assert_eq!(recv(&mut sub).await.text(), Some("after kick"));
    b.shutdown().await;
}

/// The RabbitMQ URL and rabbitmqctl path, or None (a failure under DK_REQUIRE_BROKERS=1).
fn rabbitmq_env() -> Option<(String, String)> {
    let get = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    match (get("DK_TEST_RABBITMQ"), get("DK_TEST_RABBITMQCTL")) {
        (Some(url), Some(ctl)) => Some((url, ctl)),
        _ => {
            if std::env::var("DK_REQUIRE_BROKERS").as_deref() == Ok("1") {
                panic!("DK_TEST_RABBITMQ and DK_TEST_RABBITMQCTL must be set when DK_REQUIRE_BROKERS=1 (./scripts/test sets them)");
            }
            eprintln!("note: DK_TEST_RABBITMQ / DK_TEST_RABBITMQCTL not set; RabbitMQ fault test skipped (./scripts/test runs it)");
            None
        }
    }
}

/// Runs `rabbitmqctl ARGS…` (an argument vector, no shell), failing the test on error.
async fn rabbitmqctl(ctl: &str, args: &[&str]) {
    let ctl = ctl.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let shown = format!("{ctl} {}", args.join(" "));
    let out = within(Duration::from_secs(120), &shown, tokio::task::spawn_blocking(move || std::process::Command::new(&ctl).args(&args).output()))
        .await
        .expect("rabbitmqctl task")
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(out.status.success(), "{shown} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// RabbitMQ closes every connection, then restarts its application: the client
/// recovers each time and receives a message published after the restart.
/// This disrupts every client of that RabbitMQ node; cargo runs test binaries one
/// after another, and nothing else in this file uses RabbitMQ.
#[tokio::test]
async fn rabbitmq_restart_under_subscribed_client() {
    let Some((url, ctl)) = rabbitmq_env() else {
        return;
    };
    let rabbit_cfg = || {
        let mut c = config(&url, HeartbeatConfig::every(Duration::from_secs(2)));
        c.url.options.initial_reconnect_delay = Duration::from_millis(50);
        c.url.options.max_reconnect_delay = Duration::from_millis(500);
        c.handshake.timeout = Duration::from_secs(5);
        c
    };
    let client = connect(rabbit_cfg()).await;
    let mut events = client.events();
    // A topic: RabbitMQ gives each subscription an exclusive auto-delete queue, so nothing is left behind.
    let topic = dest("topic", "rabbit");
    let mut sub = subscribe(&client, &topic).await;

    let t0 = Instant::now();
    rabbitmqctl(&ctl, &["close_all_connections", "test"]).await;
    // Generations count successful CONNECTs, including any whose re-SUBSCRIBE a
    // half-started RabbitMQ refused, so only a lower bound is certain here.
    let r = expect_recovery(&mut events, Duration::from_secs(30)).await;
    assert!(r.generation >= 2 && r.reconnect && r.subscriptions == 1, "{r:?}");
    eprintln!("rabbitmq close_all_connections: ready again after {:?}", t0.elapsed());
    let publisher = connect(rabbit_cfg()).await;
    send_confirmed(&publisher, &topic, "after close_all_connections").await;
    assert_eq!(recv(&mut sub).await.text(), Some("after close_all_connections"));
    drop(publisher);

    rabbitmqctl(&ctl, &["stop_app"]).await;
    let (ev, _) = event(&mut events, Duration::from_secs(30), "Disconnected on stop_app", |e| is_disconnected(e) || is_ready(e)).await;
    assert!(is_disconnected(&ev), "{ev:?}");
    let t0 = Instant::now();
    rabbitmqctl(&ctl, &["start_app"]).await;
    let (ev, at) = event(&mut events, Duration::from_secs(60), "Ready after start_app", |e| is_ready(e) || is_closed(e)).await;
    eprintln!("rabbitmq start_app: client ready {:?} after start_app was run", at - t0);
    assert!(matches!(ev, ClientEvent::Ready { generation: 3.., reconnect: true, subscriptions: 1, .. }), "{ev:?}");
    let publisher = connect(rabbit_cfg()).await;
    send_confirmed(&publisher, &topic, "after restart").await;
    assert_eq!(recv(&mut sub).await.text(), Some("after restart"));
}

// --------------------------------------------------------------- blackhole

/// Blackholes the path to broker A and returns how long the client took to say Disconnected.
///
/// Callers blackhole right after a frame from the broker was read (a RECEIPT),
/// which is the worst case: the client's read timer has just been reset.
async fn blackhole_and_measure(proxy: &Proxy, events: &mut broadcast::Receiver<ClientEvent>) -> Duration {
    let t0 = Instant::now();
    proxy.blackhole(true);
    let (ev, at) = event(events, STEP, "Disconnected after blackhole", |e| is_disconnected(e) || is_ready(e)).await;
    let latency = at - t0;
    let ClientEvent::Disconnected { reason, .. } = &ev else { panic!("expected Disconnected, got {ev:?}") };
    // Detected by silence, not by a FIN the proxy would have passed on.
    assert!(reason.contains("nothing received"), "detected by heart-beat timeout, got: {reason}");
    latency
}

/// Client → proxy → broker A, failing over to broker B; heart-beats 500 ms both
/// ways. A blackholed path is noticed within two intervals and the client is
/// ready again on B, where a message round-trips.
#[tokio::test]
async fn blackhole_detected_within_two_heartbeats_and_fails_over() {
    let ms = HB.as_millis() as u32;
    // The brokers can beat as often as the client asks (HB / 2, as RabbitMQ does).
    let a = broker_with((ms / 2, ms), None).await;
    let b = broker_with((ms / 2, ms), None).await;
    let proxy = Proxy::start(a.local_addr()).await.unwrap();
    let url = format!("failover:({},{})?{FAST}", proxy.stomp_url(), b.url());
    let client = connect(config(&url, HeartbeatConfig::every(HB))).await;
    assert!(client.session().unwrap().endpoint.contains(&format!(":{}", proxy.port())), "first connection goes through the proxy");
    let mut events = client.events();
    let q = dest("queue", "blackhole");
    let mut sub = subscribe(&client, &q).await;
    send_confirmed(&client, &q, "via A").await;
    assert_eq!(recv(&mut sub).await.text(), Some("via A"));

    let t0 = Instant::now();
    let latency = blackhole_and_measure(&proxy, &mut events).await;
    eprintln!("blackhole (negotiated {HB:?} heart-beats): Disconnected after {latency:?}");
    assert!(latency <= 2 * HB + SLACK, "dead path noticed after {latency:?}, more than two heart-beat intervals ({:?}) + {SLACK:?}", 2 * HB);

    let (ev, at) = event(&mut events, STEP, "Ready on broker B", |e| is_ready(e) || is_closed(e)).await;
    eprintln!("blackhole: Ready again {:?} after the blackhole: {ev:?}", at - t0);
    let ClientEvent::Ready { endpoint, generation, reconnect, subscriptions, .. } = ev else { panic!("{ev:?}") };
    assert!(endpoint.contains(&format!(":{}", b.local_addr().port())), "ready on B ({}), got {endpoint}", b.url());
    assert_eq!((generation, reconnect, subscriptions), (2, true, 1));
    send_confirmed(&client, &q, "via B").await;
    assert_eq!(recv(&mut sub).await.text(), Some("via B"));
}

/// The broker negotiates no heart-beats (offers 0,0): the client emulates, probing
/// with BEGIN/ABORT+receipt when the line is quiet, and still notices the dead
/// path within about two intervals (its read timeout is 2 × interval).
#[tokio::test]
async fn blackhole_detected_by_emulated_heartbeats() {
    let a = broker_with((0, 0), None).await;
    let b = broker_with((0, 0), None).await;
    let proxy = Proxy::start(a.local_addr()).await.unwrap();
    let url = format!("failover:({},{})?{FAST}", proxy.stomp_url(), b.url());
    let client = connect(config(&url, HeartbeatConfig::every(HB))).await;
    let plan = client.session().unwrap().heartbeat;
    assert!(plan.emulated && plan.probe_after.is_some(), "broker offered 0,0, so heart-beats are emulated: {plan:?}");
    let mut events = client.events();
    let q = dest("queue", "emulated");
    let _sub = subscribe(&client, &q).await;

    let latency = blackhole_and_measure(&proxy, &mut events).await;
    eprintln!("blackhole (emulated {HB:?} heart-beats, broker offers 0,0): Disconnected after {latency:?}");
    assert!(latency <= 2 * HB + SLACK, "dead path noticed after {latency:?}, more than 2 × {HB:?} + {SLACK:?}");
    let (ev, _) = event(&mut events, STEP, "Ready on broker B", |e| is_ready(e) || is_closed(e)).await;
    let ClientEvent::Ready { endpoint, .. } = ev else { panic!("{ev:?}") };
    assert!(endpoint.contains(&format!(":{}", b.local_addr().port())), "ready on B, got {endpoint}");
}

/// A SEND awaiting its RECEIPT when the path dies fails with `Error::ReceiptLost`.
/// The client does NOT retry receipted SENDs: the broker may already have routed
/// the frame (only the receipt may have been lost), so resending could duplicate
/// it; the caller decides. A SEND without receipt queued while disconnected is
/// written after the reconnect.
#[tokio::test]
async fn receipted_send_in_flight_fails_and_queued_send_is_delivered() {
    let ms = HB.as_millis() as u32;
    let broker = broker_with((ms / 2, ms), None).await;
    let proxy = Proxy::start(broker.local_addr()).await.unwrap();
    let consumer = connect(config(&broker.url(), HeartbeatConfig::off())).await;
    let q = dest("queue", "receipt");
    let mut sub = subscribe(&consumer, &q).await;

    let client = connect(config(&format!("failover:({})?{FAST}", proxy.stomp_url()), HeartbeatConfig::every(HB))).await;
    let mut events = client.events();
    proxy.blackhole(true);
    let in_flight = tokio::spawn({
        let client = client.clone();
        let q = q.clone();
        async move { client.send_with(&q, "receipted, lost on the dead path", SendOptions { receipt: true, ..SendOptions::default() }).await }
    });
    let (ev, _) = event(&mut events, STEP, "Disconnected", |e| is_disconnected(e) || is_ready(e)).await;
    assert!(is_disconnected(&ev), "{ev:?}");
    let outcome = within(STEP, "the receipted SEND to fail", in_flight).await.unwrap();
    assert!(matches!(outcome, Err(Error::ReceiptLost { .. })), "expected ReceiptLost, got {outcome:?}");

    // Still blackholed: every reconnect attempt hangs, so the client is offline now.
    within(STEP, "queueing a SEND", client.send(&q, "queued while disconnected")).await.unwrap();
    assert_eq!(client.state(), State::Connecting, "the SEND was queued while disconnected");
    // Heal the path; kill the attempt that is stuck on the dead path so the next one goes through.
    proxy.blackhole(false);
    proxy.kill_all();
    let (ev, _) = event(&mut events, STEP, "Ready after heal", |e| is_ready(e) || is_closed(e)).await;
    assert!(matches!(ev, ClientEvent::Ready { reconnect: true, .. }), "{ev:?}");
    // The lost SEND never reached the broker (it was discarded): the first message is the queued one.
    assert_eq!(recv(&mut sub).await.text(), Some("queued while disconnected"));
}

// ----------------------------------------------------------- idle killer

/// Control: with heart-beats off, an idle-killing proxy (T = 1 s) cuts the
/// connection, and the client notices. Proves the proxy's idle killer works.
#[tokio::test]
async fn idle_killer_drops_a_silent_client() {
    let b = broker().await;
    let proxy = Proxy::with_idle_timeout(b.local_addr(), IDLE_T).await.unwrap();
    let client = connect(config(&format!("failover:({})?{FAST}", proxy.stomp_url()), HeartbeatConfig::off())).await;
    let plan = client.session().unwrap().heartbeat;
    assert_eq!((plan.send_every, plan.read_timeout), (None, None), "heart-beats are off");
    let mut events = client.events();
    let t0 = Instant::now();
    let (_, at) = event(&mut events, IDLE_T * 3, "Disconnected by the idle killer", is_disconnected).await;
    eprintln!("idle killer (T = {IDLE_T:?}): silent client cut {:?} after it was ready", at - t0);
    assert!(proxy.idle_kills() >= 1, "the proxy's idle killer closed it");
    assert!(proxy.last_kill().is_some());
}

/// Waits 3 T and asserts the client stayed connected through the idle-killing proxy.
async fn stays_connected(proxy: &Proxy, client: &Client, label: &str) {
    let mut events = client.events();
    let generation = match client.state() {
        State::Ready(g) => g,
        s => panic!("{label}: not ready: {s:?}"),
    };
    // Elapsed time is the thing tested here: no Disconnected for 3 T.
    let quiet = timeout(IDLE_T * 3, async {
        loop {
            if let Ok(ev @ (ClientEvent::Disconnected { .. } | ClientEvent::Closed { .. })) = events.recv().await {
                return ev;
            }
        }
    })
    .await;
    if let Ok(ev) = quiet {
        panic!("{label}: dropped within 3 T = {:?}: {ev:?} (idle kills: {})", IDLE_T * 3, proxy.idle_kills());
    }
    assert_eq!(proxy.idle_kills(), 0, "{label}: the idle killer never fired");
    assert_eq!(proxy.accepted(), 1, "{label}: one connection, never replaced");
    assert_eq!(client.state(), State::Ready(generation), "{label}: still on the first connection");
}

/// Heart-beats at T/2, negotiated with the embedded broker: the line is never idle for T.
#[tokio::test]
async fn negotiated_heartbeats_keep_idle_killer_away() {
    let half = (IDLE_T / 2).as_millis() as u32;
    let b = broker_with((half, half), None).await;
    let proxy = Proxy::with_idle_timeout(b.local_addr(), IDLE_T).await.unwrap();
    let client = connect(config(&format!("failover:({})?{FAST}", proxy.stomp_url()), HeartbeatConfig::every(IDLE_T / 2))).await;
    let plan = client.session().unwrap().heartbeat;
    assert!(!plan.emulated && plan.send_every == Some(IDLE_T / 2), "negotiated T/2: {plan:?}");
    stays_connected(&proxy, &client, "negotiated heart-beats").await;
}

/// Heart-beats at T/2 emulated (the broker offers 0,0): the client's own EOLs keep the line alive.
#[tokio::test]
async fn emulated_heartbeats_keep_idle_killer_away() {
    let b = broker_with((0, 0), None).await;
    let proxy = Proxy::with_idle_timeout(b.local_addr(), IDLE_T).await.unwrap();
    let client = connect(config(&format!("failover:({})?{FAST}", proxy.stomp_url()), HeartbeatConfig::every(IDLE_T / 2))).await;
    let plan = client.session().unwrap().heartbeat;
    assert!(plan.emulated && plan.send_every == Some(IDLE_T / 2), "emulated T/2: {plan:?}");
    stays_connected(&proxy, &client, "emulated heart-beats").await;
}

// --------------------------------------------------------------- start-up

/// The first broker of the list is down at start-up: `connect` succeeds on the second.
#[tokio::test]
async fn first_broker_down_at_startup() {
    let live = broker().await;
    let url = format!("failover:(stomp://127.0.0.1:{},{})?{FAST}", closed_port(), live.url());
    let client = connect(config(&url, HeartbeatConfig::off())).await;
    let endpoint = client.session().unwrap().endpoint;
    assert!(endpoint.contains(&format!(":{}", live.local_addr().port())), "connected to the live broker, got {endpoint}");
}

/// Both brokers down with maxReconnectAttempts=2: `connect` gives up quickly, naming the last error.
#[tokio::test]
async fn all_brokers_down_gives_up() {
    let (p1, p2) = (closed_port(), closed_port());
    let url = format!("failover:(stomp://127.0.0.1:{p1},stomp://127.0.0.1:{p2})?{FAST}&maxReconnectAttempts=2");
    let t0 = Instant::now();
    let r = within(STEP, "connect to give up", Client::connect(config(&url, HeartbeatConfig::off()))).await;
    let elapsed = t0.elapsed();
    match r {
        Err(e @ Error::GaveUp { .. }) => {
            let text = e.to_string();
            eprintln!("gave up after {elapsed:?}: {text}");
            assert!(text.contains(&format!("127.0.0.1:{p2}")), "the message names the last endpoint tried: {text}");
            assert!(text.to_lowercase().contains("refused"), "and the last error: {text}");
            assert!(matches!(e.root(), Error::Connect { .. }), "root() is the last attempt's error: {:?}", e.root());
        }
        other => panic!("expected Error::GaveUp, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(2), "giving up took {elapsed:?}");
}

// Jitter: `FailoverOptions::delay` with jitter 0.5 over 50 samples is covered by
// the unit test `url::tests::backoff_grows_caps_and_jitters`; not repeated here.
