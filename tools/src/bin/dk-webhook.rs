//! dk-webhook: receives GitHub, GitLab and Gitea/Forgejo webhooks and publishes commit messages.
//!
//! A thin `main` over `deploykit::webhook` (server, spool-backed publishing)
//! and `deploykit::forge` (payloads, signatures).

use anyhow::{Context, Result};
use clap::Parser;
use deploykit::stomp::Client;
use deploykit::webhook::{self, WebhookConfig};
use dk_tools::cli::{init_logging, BrokerArgs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The configuration read when --config is not given (and exists).
const DEFAULT_CONFIG: &str = "/etc/deploykit/webhook.toml";

/// HTTP receiver for forge webhooks: pushes become commit messages on the bus.
#[derive(Parser, Debug)]
#[command(
    name = "dk-webhook",
    version,
    after_help = "Examples:
  dk-webhook --config /etc/deploykit/webhook.toml
  dk-webhook --listen 0.0.0.0:8088 --spool /var/spool/deploykit/webhook -v
  dk-webhook --config webhook.toml --check      validate the config (and read the secret files)

Endpoints: POST /github, /gitlab, /gitea (paths configurable), GET /healthz.
Answers: 200 published, 202 spooled (broker down; sent when it is back) or ignored
(an event deploykit does not use), 200 duplicate (redelivery), 400 malformed (the
field is named), 401 bad or missing signature/token, 413 body over body_limit.
Secrets come from files or environment variables named in the config, never argv.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given. The
broker may be down at start-up: requests are spooled until it answers.
Signals: SIGTERM/SIGINT stop accepting, finish requests, try a last drain, exit 0;
SIGHUP re-reads the config and applies new secrets and repo naming.

Exit codes: 0 ok; 1 --check found a problem; 2 usage or configuration error;
3 cannot listen or open the spool."
)]
struct Cli {
    /// The configuration file (TOML); default /etc/deploykit/webhook.toml when it exists, else built-in defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the config's `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Spool directory (overrides the config's `spool`).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    broker: BrokerArgs,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn load(cli: &Cli) -> Result<WebhookConfig, webhook::ConfigError> {
    let mut config = match dk_tools::cli::config_path(cli.config.as_deref(), DEFAULT_CONFIG) {
        Some(p) => WebhookConfig::load(&p)?,
        None => WebhookConfig::default(),
    };
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    if let Some(s) = &cli.spool {
        config.spool = s.clone();
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let config = match dk_tools::cli::load_config("dk-webhook", cli.check, || load(&cli)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        let forges: Vec<String> =
            config.forges.iter().map(|f| format!("{} {}{}", f.forge.as_str(), f.path, if f.secret.is_some() { " (signed)" } else { " (UNSIGNED)" })).collect();
        println!("ok: listen {}, spool {}, {}", config.listen, config.spool.display(), forges.join(", "));
        return ExitCode::SUCCESS;
    }
    dk_tools::cli::block_on_or("dk-webhook", 2, run(cli, config))
}

async fn run(cli: Cli, config: WebhookConfig) -> Result<ExitCode> {
    let mut client_config = cli.broker.with_section(&config.broker).client_config()?;
    // Requests are spooled while the broker is away, so keep trying for ever.
    client_config.url.options.startup_max_reconnect_attempts = None;
    client_config.url.options.max_reconnect_attempts = None;
    let client = Client::start(client_config);
    let handle = match webhook::start(config, client.clone()).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dk-webhook: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    // Startup line on stderr regardless of -v, for scripts and tests waiting on it.
    eprintln!("dk-webhook: listening on http://{}", handle.addr());
    let (mut stop, mut hup) = dk_tools::cli::signals()?;
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            _ = hup.recv() => match load(&cli) {
                Ok(new) => match handle.reload(&new) {
                    Ok(()) => tracing::warn!("configuration reloaded (secrets and repo naming)"),
                    Err(e) => tracing::error!("reload refused: {e}"),
                },
                Err(e) => tracing::error!(error = %e, "new configuration refused; the old one stays"),
            },
        }
    }
    tracing::info!("shutting down");
    let left = handle.shutdown(Duration::from_secs(5)).await;
    if left > 0 {
        tracing::warn!(spooled = left, "messages stay spooled for the next start");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await.context("disconnecting");
    Ok(ExitCode::SUCCESS)
}
