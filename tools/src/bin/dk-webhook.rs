//! dk-webhook: receives GitHub, GitLab and Gitea/Forgejo webhooks and publishes commit messages.
//!
//! A thin `main` over `deploykit::webhook` (server, spool-backed publishing)
//! and `deploykit::forge` (payloads, signatures).

use anyhow::Result;
use clap::Parser;
use deploykit::stomp::Client;
use deploykit::webhook::{self, WebhookConfig};
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use dk_tools::exit::{Exit, OrExit};
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
    after_help = concat!(
        "Examples:
  dk-webhook --config /etc/deploykit/webhook.toml
  dk-webhook --listen 0.0.0.0:8088 --spool /var/spool/deploykit/webhook -v
  dk-webhook --config webhook.toml --check      validate the config (and read the secret files)

Endpoints: POST /github, /gitlab, /gitea (paths configurable), GET /healthz.
Metrics: GET /metrics (and /healthz) on --metrics-listen ADDR only (keep it internal).
Answers: 200 published, 202 spooled (broker down; sent when it is back) or ignored
(an event deploykit does not use), 200 duplicate (redelivery), 400 malformed (the
field is named), 401 bad or missing signature/token, 413 body over body_limit.
Secrets come from files or environment variables named in the config, never argv.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given. The
broker may be down at start-up: requests are spooled until it answers.
Signals: SIGTERM/SIGINT stop accepting, finish requests, try a last drain, exit 0;
SIGHUP re-reads the config and applies new secrets and repo naming.

dk-webhook keeps reconnecting to the broker for ever (requests wait in the spool);
a spool directory that cannot be opened is a configuration error (2).

",
    dk_tools::exit_codes!()
))]
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
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
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
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    let config = match dk_tools::cli::load_config("dk-webhook", cli.check, || load(&cli)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        let problems = config.check();
        for p in &problems {
            eprintln!("dk-webhook: {p}");
        }
        if !problems.is_empty() {
            return ExitCode::from(1);
        }
        let forges: Vec<String> =
            config.forges.iter().map(|f| format!("{} {}{}", f.forge.as_str(), f.path, if f.secret.is_some() { " (signed)" } else { " (UNSIGNED)" })).collect();
        println!("ok: listen {}, spool {}, {}", config.listen, config.spool.display(), forges.join(", "));
        return ExitCode::SUCCESS;
    }
    dk_tools::cli::block_on("dk-webhook", run(cli, config))
}

async fn run(cli: Cli, config: WebhookConfig) -> Result<ExitCode> {
    let mut client_config = cli.broker.with_section(&config.broker).client_config()?;
    // Requests are spooled while the broker is away, so keep trying for ever.
    client_config.url.options.startup_max_reconnect_attempts = None;
    client_config.url.options.max_reconnect_attempts = None;
    let signals = Signals::install()?;
    let client = Client::start(client_config);
    let health = deploykit::health::Health::degrading("dk-webhook", Some(client.clone()));
    cli.health.serve(&health).await?;
    let (daemon, addr) = match webhook::spawn_with_health(config, client.clone(), health).await {
        Ok(started) => started,
        Err(e @ webhook::WebhookError::Bind { .. }) => return Err(e).or_exit(Exit::Listen),
        Err(e) => return Err(e).or_exit(Exit::Usage),
    };
    // Startup line on stderr regardless of -v, for scripts and tests waiting on it.
    eprintln!("dk-webhook: listening on http://{addr}");
    let reload = Box::new(move || load(&cli).map_err(|e| format!("{e:#}")));
    let grace = webhook::SHUTDOWN_DRAIN + Duration::from_secs(30);
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace, client: Some(client) }).await)
}
