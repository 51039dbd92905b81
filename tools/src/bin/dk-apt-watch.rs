//! dk-apt-watch: runs `apt-get update` (or any configured argument vector)
//! when a package this server watches changes, once per burst.
//!
//! A thin `main` over `deploykit::aptwatch`.

use anyhow::Result;
use clap::Parser;
use deploykit::aptwatch::{self, AptWatchConfig};
use deploykit::health::{series, Health};
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Refresh apt when watched packages change in the repository.
#[derive(Parser, Debug)]
#[command(
    name = "dk-apt-watch",
    version,
    after_help = concat!(
        "Examples:
  dk-apt-watch                                 run with /etc/deploykit/apt-watch.toml (defaults if missing)
  dk-apt-watch --config ./apt-watch.toml -v    another config, info logging
  dk-apt-watch --check                         print what the config means and exit
  dk-apt-watch --import-legacy /etc/stomp-repo/stomp-repo.yaml > /etc/deploykit/apt-watch.toml

The config lists package names or globs (packages = [\"site-*\", \"nginx\"]), the
action as an argument vector (default [\"apt-get\", \"update\"]; never a shell), and
quiet / min_interval: a burst of package messages becomes one run, at most one
run per min_interval. Each run ends with an event line (HOST  … ok / problem: …).
A reconnect to the broker also triggers one run (a message may have been missed).

--import-legacy never copies a secret into the TOML or a comment: the TOML names a file,
written (0600) into --secrets-dir if given, else a note on stderr says where to put it.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT let a running action finish and exit 0; SIGHUP reloads the config.

If the broker is lost for good (failover maxReconnectAttempts), dk-apt-watch exits 3.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    /// The configuration file (TOML); a missing default file means all defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Validate the config, print its meaning and check the action's program exists.
    #[arg(long, conflicts_with = "import_legacy")]
    check: bool,
    /// Print the TOML equivalent of a stomp-repo YAML config and exit.
    #[arg(long, value_name = "YAML")]
    import_legacy: Option<PathBuf>,
    /// With --import-legacy: write the secrets it finds (broker password) into files here (mode 0600).
    #[arg(long, value_name = "DIR", requires = "import_legacy")]
    secrets_dir: Option<PathBuf>,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

const DEFAULT_CONFIG: &str = "/etc/deploykit/apt-watch.toml";

fn load(path: Option<&Path>) -> Result<AptWatchConfig, deploykit::config::ConfigError> {
    match path {
        Some(p) => AptWatchConfig::load(p),
        None if Path::new(DEFAULT_CONFIG).exists() => AptWatchConfig::load(Path::new(DEFAULT_CONFIG)),
        None => AptWatchConfig::parse(""),
    }
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    if let Some(yaml) = &cli.import_legacy {
        let options = dk_tools::cli::import_options(cli.secrets_dir.as_deref());
        return dk_tools::cli::import_legacy_file("dk-apt-watch", yaml, |text| aptwatch::legacy_import::import_legacy(text, &options));
    }
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
        let problems = config.check();
        for p in &problems {
            println!("{p}");
        }
        return if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    dk_tools::cli::block_on("dk-apt-watch", run(cli, config))
}

async fn run(cli: Cli, config: AptWatchConfig) -> Result<ExitCode> {
    let signals = Signals::install()?;
    let client = cli.broker.with_section(&config.broker).connect().await?;
    // /healthz and /metrics are served once the daemon runs (subscribed).
    let health = Health::new("dk-apt-watch", Some(client.clone()));
    let events = health.follow(series::apt_watch(health.metrics()));
    let daemon = aptwatch::spawn(config, client.clone(), events).await?;
    cli.health.serve(&health).await?;
    tracing::info!("dk-apt-watch started");
    let path = cli.config.clone();
    // A reload starts a watcher with the new configuration before the old one stops (no gap).
    let reload = Box::new(move || load(path.as_deref()).map_err(|e| format!("{e:#}")));
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace: std::time::Duration::from_secs(90), client: Some(client) }).await)
}
