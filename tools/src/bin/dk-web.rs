//! dk-web: the browser front end for deploys (sites, tags, one-click canary-first
//! deploys with live progress, history, activity).
//!
//! A thin `main` over `deploykit::web`.

use anyhow::Result;
use clap::Parser;
use deploykit::web::{self, WebConfig};
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use dk_tools::exit::{Exit, OrExit};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The configuration read when --config is not given (and exists).
const DEFAULT_CONFIG: &str = "/etc/deploykit/web.toml";

/// Web UI for deploys: pick a site and a tag, deploy canary first, watch it live.
#[derive(Parser, Debug)]
#[command(
    name = "dk-web",
    version,
    after_help = concat!(
        "Examples:
  dk-web --config /etc/deploykit/web.toml
  dk-web --config web.toml --listen 127.0.0.1:8090 -v
  dk-web --config web.toml --check          validate the config, htpasswd, key and database
  dk-web --import-legacy grubby/sites.yaml > /etc/deploykit/web.toml    grubby's sites list
  dk-web --config web.toml --listen 0.0.0.0:8090   with public_url = \"https://deploy.example.com\" in the config

Pages: / (sites), /sites/NAME (tags, servers, deploy form, lock), /deploys/ID (live
progress, stop, rollback), /history, /activity; GET /healthz needs no login.
Metrics: GET /metrics only on --metrics-listen ADDR (with /healthz; keep it internal),
never on the public listener.
Users: [auth] mode = \"basic\" (htpasswd with bcrypt or argon2 hashes, e.g. htpasswd -B),
\"proxy\" (a reverse proxy's X-Remote-User header, honoured only from the addresses in
proxies = [..], which is required) or \"none\" (loopback only). 5 failed logins from an
address within a minute: 429 with Retry-After until the minute ends.
Host names: requests must name dk-web by its listen address (localhost too on loopback),
public_url = \"https://deploy.example.com\" or allowed_hosts = [\"name[:port]\"]; others get 421,
and POSTs need an Origin (or Referer) of those (DNS rebinding, cross-site forms).
Listening on 0.0.0.0 or [::] needs public_url or allowed_hosts.
Who may deploy: [sites.NAME] deployers = [\"ann\", \"bob\"]; everyone logged in may view.
Requests to the agents are signed with key_file (dk-deploy keygen makes one; give the
agents its public half) and name the web user.
Agents are believed per [trust] (fleet_keys = [\"ed25519:…\"] for agents enrolled with
`dk-deploy enroll`, [trust.agents] web01 = \"ed25519:…\" pinned, revoked_keys); others are
shown greyed as untrusted with the reason and never deployed to.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT stop scheduling further batches, let running ones finish
(up to 60 s), record them and exit 0; SIGHUP re-reads the config (users, sites, deployers, trusted and revoked agent keys).

A missing key file or database that cannot be opened is a configuration error (2).
If the broker is lost for good (failover maxReconnectAttempts), dk-web exits 3.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    /// The configuration file (TOML); default /etc/deploykit/web.toml when it exists, else built-in defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the config's `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Signing key file (overrides the config's `key_file`); under systemd, a credential:
    /// `LoadCredential=web.key:/etc/deploykit/web.key` with `DK_WEB_KEY_FILE=%d/web.key`.
    #[arg(long, env = "DK_WEB_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long, conflicts_with = "import_legacy")]
    check: bool,
    /// Print the web.toml equivalent of grubby's sites.yaml and exit.
    #[arg(long, value_name = "YAML", conflicts_with = "listen")]
    import_legacy: Option<PathBuf>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

fn load(cli: &Cli) -> Result<WebConfig, web::ConfigError> {
    let mut config = match dk_tools::cli::config_path(cli.config.as_deref(), DEFAULT_CONFIG) {
        Some(p) => WebConfig::load(&p)?,
        None => WebConfig::default(),
    };
    if let Some(k) = &cli.key_file {
        config.key_file = Some(k.clone());
    }
    if let Some(l) = cli.listen {
        config.listen = l;
        config.validate()?;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    if let Some(yaml) = &cli.import_legacy {
        return dk_tools::cli::import_legacy_file("dk-web", yaml, |text| web::legacy_import::import_legacy(text, &Default::default()));
    }
    let config = match dk_tools::cli::load_config("dk-web", cli.check, || load(&cli)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        // Every problem on stderr, or one `ok: …` line on stdout.
        return match web::check(&config) {
            Ok(summary) => {
                println!("ok: {summary}");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("dk-web: {p}");
                }
                ExitCode::from(1)
            }
        };
    }
    dk_tools::cli::block_on("dk-web", run(cli, config))
}

async fn run(cli: Cli, config: WebConfig) -> Result<ExitCode> {
    let key = web::load_key(&config).or_exit(Exit::Usage)?;
    let signals = Signals::install()?;
    let client = cli.broker.with_section(&config.broker).connect().await?;
    let health = deploykit::health::Health::degrading("dk-web", Some(client.clone()));
    cli.health.serve(&health).await?;
    let (daemon, addr) = match web::spawn_with_health(config, client.clone(), key, health).await {
        Ok(started) => started,
        Err(e @ web::WebError::Bind { .. }) => return Err(e).or_exit(Exit::Listen),
        Err(e @ web::WebError::Bus(_)) => return Err(e).or_exit(Exit::Broker),
        Err(e) => return Err(e).or_exit(Exit::Usage),
    };
    // Startup line on stderr regardless of -v, for scripts and tests waiting on it.
    eprintln!("dk-web: listening on http://{addr}");
    let reload = Box::new(move || load(&cli).map_err(|e| format!("{e:#}")));
    // Running deploys are told to stop after their batch and given web::SHUTDOWN_WAIT to finish.
    let grace = web::SHUTDOWN_WAIT + Duration::from_secs(10);
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace, client: Some(client) }).await)
}
