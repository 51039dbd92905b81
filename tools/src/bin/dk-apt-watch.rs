//! dk-apt-watch: runs `apt-get update` (or any configured argument vector)
//! when a package this server watches changes, once per burst.
//!
//! A thin `main` over `deploykit::aptwatch`.

use anyhow::{Context, Result};
use clap::Parser;
use deploykit::aptwatch::WatchEvent;
use deploykit::aptwatch::{self, AptWatchConfig, AptWatchHandle};
use deploykit::health::{Health, Outcome};
use deploykit::stomp::Client;
use dk_tools::cli::{init_logging, BrokerArgs, HealthArgs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Refresh apt when watched packages change in the repository.
#[derive(Parser, Debug)]
#[command(
    name = "dk-apt-watch",
    version,
    after_help = "Examples:
  dk-apt-watch                                 run with /etc/deploykit/apt-watch.toml (defaults if missing)
  dk-apt-watch --config ./apt-watch.toml -v    another config, info logging
  dk-apt-watch --check                         print what the config means and exit

The config lists package names or globs (packages = [\"site-*\", \"nginx\"]), the
action as an argument vector (default [\"apt-get\", \"update\"]; never a shell), and
quiet / min_interval: a burst of package messages becomes one run, at most one
run per min_interval. Each run ends with an event line (HOST  … ok / problem: …).
A reconnect to the broker also triggers one run (a message may have been missed).

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT let a running action finish and exit 0; SIGHUP reloads the config.

Exit codes: 0 ok; 1 --check found problems; 2 usage or configuration error;
3 broker unreachable at start-up."
)]
struct Cli {
    /// The configuration file (TOML); a missing default file means all defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Validate the config, print its meaning and check the action's program exists.
    #[arg(long)]
    check: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

const DEFAULT_CONFIG: &str = "/etc/deploykit/apt-watch.toml";

fn load(path: Option<&Path>) -> Result<AptWatchConfig, deploykit::fetch::ConfigError> {
    match path {
        Some(p) => AptWatchConfig::load(p),
        None if Path::new(DEFAULT_CONFIG).exists() => AptWatchConfig::load(Path::new(DEFAULT_CONFIG)),
        None => AptWatchConfig::parse(""),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let config = match dk_tools::cli::load_config("dk-apt-watch", cli.check, || load(cli.config.as_deref())) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        println!("packages: {}", config.packages.patterns().join(" "));
        println!("distros: {}", if config.distros.is_empty() { "any".to_owned() } else { config.distros.join(" ") });
        println!("action: {:?}", config.action);
        println!("quiet {:?}, min_interval {:?}, max_wait {:?}, timeout {:?}", config.quiet, config.min_interval, config.max_wait, config.timeout);
        println!("topics: {} -> {}", config.packages_topic, config.events_topic);
        if deploykit::debrepo::config::find_program(Path::new(&config.action[0])).is_none() {
            println!("action: {} not found or not executable", config.action[0]);
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    dk_tools::cli::block_on("dk-apt-watch", run(cli, config))
}

async fn run(cli: Cli, config: AptWatchConfig) -> Result<ExitCode> {
    let client = Client::connect(cli.broker.with_section(&config.broker).client_config()?).await.context("connecting to the broker")?;
    let handle = aptwatch::start(config, client.clone()).await?;
    let health = cli.health.start("dk-apt-watch", &client).await?;
    watch(&health, &handle);
    let handle = wait_for_signals(handle, cli.config.as_deref(), &client, &health).await?;
    let stats = handle.shutdown().await;
    tracing::info!(?stats, "stopped");
    let _ = client.disconnect().await;
    Ok(ExitCode::SUCCESS)
}

/// Returns on SIGTERM/SIGINT; on SIGHUP starts a daemon with the new
/// configuration (subscribed before the old one is stopped, so no message falls between).
/// Feeds `health` from a daemon's events (again after every reload).
fn watch(health: &Health, handle: &AptWatchHandle) {
    health.watch(handle.subscribe(), |e| match e {
        WatchEvent::Ran(r) if r.ok => Outcome::Message,
        WatchEvent::Ran(r) => Outcome::Error(format!("action {}", r.status)),
        _ => Outcome::Ignore,
    });
}

async fn wait_for_signals(mut handle: AptWatchHandle, path: Option<&Path>, client: &Client, health: &Health) -> Result<AptWatchHandle> {
    let (mut stop, mut hup) = dk_tools::cli::signals()?;
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(handle),
            _ = hup.recv() => match load(path) {
                // Subscribe the new daemon before stopping the old one (no gap);
                // what the old one still had waiting is handed over.
                Ok(c) => match aptwatch::start(c, client.clone()).await {
                    Ok(new) => {
                        let (_, pending) = std::mem::replace(&mut handle, new).stop().await;
                        handle.hand_over(pending).await;
                        watch(health, &handle);
                        tracing::info!("configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "new configuration refused; the old one stays"),
                },
                Err(e) => tracing::error!(error = %e, "new configuration refused; the old one stays"),
            },
        }
        if handle.is_finished() {
            anyhow::bail!("the daemon stopped unexpectedly");
        }
    }
}
