//! dk-demo: the deploykit flow on one machine, on the embedded broker.
//!
//! This first version shows the bus: it starts the embedded broker, subscribes
//! the way every deploykit daemon does, publishes a commit-shaped message and
//! reports what arrived and how fast. Later versions add fetch, deploy and web.

use anyhow::{Context, Result};
use clap::Parser;
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::stomp::{Client, ClientConfig, SendOptions, SubscribeOptions};
use dk_tools::cli::init_logging;
use std::time::{Duration, Instant};

/// Run the deploykit flow on one machine, on the embedded broker.
#[derive(Parser, Debug)]
#[command(
    name = "dk-demo",
    version,
    after_help = "Example:
  cargo run --release --bin dk-demo

Starts an embedded broker on 127.0.0.1 (an ephemeral port), connects two clients,
publishes a commit message and a burst of 1000 events, and prints what arrived."
)]
struct Cli {
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// How many events to publish in the burst.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
}

/// The commit topic of design.md's bus conventions.
const COMMITS: &str = "/topic/deploykit.git.commits";
/// The event topic of design.md's bus conventions.
const EVENTS: &str = "/topic/deploykit.events";

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let broker = Broker::start(BrokerConfig::default()).await.context("starting the embedded broker")?;
    println!("dk-demo: embedded broker listening on {}", broker.url());

    let config = ClientConfig::new(&broker.url())?;
    let server = Client::connect(config.clone()).await.context("connecting the subscriber")?;
    let session = server.session().context("no session after connect")?;
    println!(
        "dk-demo: \"server\" connected with STOMP {} (heart-beat every {:?})",
        session.version,
        session.heartbeat.send_every.unwrap_or_default()
    );
    let mut commits = server.subscribe(COMMITS, SubscribeOptions::default()).await?;
    let mut events = server.subscribe(EVENTS, SubscribeOptions::default()).await?;
    println!("dk-demo: subscribed to {COMMITS} and {EVENTS} (confirmed by receipts)");

    let hook = Client::connect(config).await.context("connecting the publisher")?;
    let body = "repo: site\noldrev: 0000000000000000000000000000000000000000\nnewrev: 3f2a9c1e\nrefname: refs/heads/master\n";
    let mut opts = SendOptions { receipt: true, ..SendOptions::default() };
    opts.headers.push("subject", "[site] refs/heads/master 3f2a9c1e");
    let sent = Instant::now();
    hook.send_with(COMMITS, body, opts).await.context("publishing the commit")?;
    let msg = tokio::time::timeout(Duration::from_secs(10), commits.recv()).await.context("commit message did not arrive")?.context("subscription closed")?;
    println!(
        "dk-demo: commit message arrived in {:.2} ms: {}",
        sent.elapsed().as_secs_f64() * 1000.0,
        msg.header("subject").unwrap_or("?")
    );

    let started = Instant::now();
    for i in 0..cli.burst {
        hook.send(EVENTS, format!("demo event {i}")).await?;
    }
    for i in 0..cli.burst {
        let m = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.context("event burst stalled")?.context("subscription closed")?;
        anyhow::ensure!(m.text() == Some(&format!("demo event {i}")), "event {i} out of order: {:?}", m.text());
    }
    let secs = started.elapsed().as_secs_f64();
    println!("dk-demo: {} events published and received in order in {:.1} ms ({:.0} msgs/s)", cli.burst, secs * 1000.0, cli.burst as f64 / secs);

    hook.disconnect().await?;
    server.disconnect().await?;
    broker.shutdown().await;
    println!("dk-demo: done. Next steps: ./scripts/test runs every suite; see README.md for the tools.");
    Ok(())
}
