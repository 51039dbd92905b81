//! The brokers a test suite runs against: the embedded one always, RabbitMQ and
//! ActiveMQ when `DK_TEST_RABBITMQ` / `DK_TEST_ACTIVEMQ` name them.
//! With `DK_REQUIRE_BROKERS=1` (set by `./scripts/test`) a missing one fails the test.

use deploykit::broker::{Broker, BrokerConfig, BrokerHandle};
use deploykit::stomp::{Client, ClientConfig, Message, Subscription};
use std::time::Duration;

/// Which broker a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// deploykit's embedded broker, started in-process.
    Embedded,
    /// RabbitMQ with rabbitmq_stomp.
    RabbitMq,
    /// ActiveMQ 5.x with a STOMP connector.
    ActiveMq,
}

/// A broker to run a test against.
pub struct Target {
    /// Which broker.
    pub kind: Kind,
    /// Its STOMP URL.
    pub url: String,
    /// Keeps an embedded broker alive for the test.
    #[allow(dead_code)]
    pub broker: Option<BrokerHandle>,
}

impl Target {
    /// Starts an embedded broker on an ephemeral port.
    pub async fn embedded() -> Target {
        let broker = Broker::start(BrokerConfig::default()).await.expect("embedded broker starts");
        Target { kind: Kind::Embedded, url: broker.url(), broker: Some(broker) }
    }

    /// The real broker named by the environment, or None (a failure under DK_REQUIRE_BROKERS=1).
    pub fn real(kind: Kind) -> Option<Target> {
        let var = match kind {
            Kind::RabbitMq => "DK_TEST_RABBITMQ",
            Kind::ActiveMq => "DK_TEST_ACTIVEMQ",
            Kind::Embedded => unreachable!(),
        };
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Some(Target { kind, url, broker: None }),
            _ => {
                if std::env::var("DK_REQUIRE_BROKERS").as_deref() == Ok("1") {
                    panic!("{var} is not set but DK_REQUIRE_BROKERS=1: the broker suite must run (see scripts/brokers.sh)");
                }
                eprintln!("note: {var} not set; {kind:?} part skipped (./scripts/test runs it)");
                None
            }
        }
    }

    /// A client configuration for this broker (vhost `/`, short timeouts for tests).
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.url).expect("valid test URL").vhost("/");
        c.url.options.startup_max_reconnect_attempts = Some(3);
        c.receipt_timeout = Duration::from_secs(10);
        c
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(self.config()).await.unwrap_or_else(|e| panic!("{:?}: connect to {}: {e}", self.kind, self.url))
    }

    /// A destination name unique to this test run.
    pub fn dest(&self, kind: &str) -> String {
        format!("/{kind}/dk.test.{}.{}", std::process::id(), fastrand::u64(..))
    }
}

/// The next message, or a panic naming what was awaited after 10 s.
pub async fn recv(sub: &mut Subscription) -> Message {
    match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("subscription {} closed", sub.destination()),
        Err(_) => panic!("no message on {} within 10 s", sub.destination()),
    }
}

/// Asserts nothing arrives within `wait` (negative checks need a bounded wait).
pub async fn recv_none(sub: &mut Subscription, wait: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(wait, sub.recv()).await {
        panic!("unexpected message on {}: {:?}", sub.destination(), m.text());
    }
}

impl Target {
    /// Where controllers want replies on this broker: `None` (a private
    /// `/temp-queue/`) where SUBSCRIBE to one works; a topic on RabbitMQ, whose
    /// temp queues exist only through `reply-to` (see docs/security.md).
    pub fn reply_to(&self) -> Option<String> {
        (self.kind == Kind::RabbitMq).then(|| format!("{}.reply.{}", self.dest("topic"), fastrand::u64(..)))
    }
}
