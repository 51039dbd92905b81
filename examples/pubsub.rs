//! Publish and receive one message through an embedded broker:
//! `cargo run -p deploykit-examples --example pubsub`.

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::stomp::{Client, ClientConfig, SendOptions, SubscribeOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One line starts a broker on an ephemeral loopback port.
    let broker = Broker::start(BrokerConfig::default()).await?;
    let client = Client::connect(ClientConfig::new(&broker.url())?).await?;

    // subscribe() returns once the broker has confirmed the subscription.
    let mut sub = client.subscribe("/topic/deploykit.events", SubscribeOptions::default()).await?;
    client.send_with("/topic/deploykit.events", "web01  fetched change: [site] refs/heads/master 3f2a", SendOptions { receipt: true, ..Default::default() }).await?;

    let msg = sub.recv().await.expect("a message");
    println!("received on {}: {}", msg.destination(), msg.text().unwrap_or("<binary>"));
    client.disconnect().await?;
    broker.shutdown().await;
    Ok(())
}
