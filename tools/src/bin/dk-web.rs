//! dk-web: the browser front end for deploys (sites, tags, one-click canary-first
//! deploys with live progress, history, activity).
//!
//! A thin `main` over `deploykit::web`.

use anyhow::Result;
use clap::{Parser, Subcommand};
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
  dk-web --config web.toml token add --user ann --sites www,shop --name ci    prints the API token once
  dk-web --config web.toml token list
  dk-web --config web.toml token revoke ci          then SIGHUP dk-web (or restart it)

Pages: / (sites), /sites/NAME (tags, servers, deploy form, lock), /deploys/ID (live
progress, stop, rollback), /history, /activity; GET /healthz needs no login.
API: /api/v1/… (JSON; docs/api.md; the OpenAPI document at /api/v1/openapi.json) with
`Authorization: Bearer TOKEN` only; tokens are made by `dk-web token add`, stored hashed in
the file [api] tokens = \"/etc/deploykit/web-tokens\" names, re-read on SIGHUP; a token acts
as its user on its sites only.
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
    #[command(subcommand)]
    command: Option<Cmd>,
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

/// Administration commands (dk-web does not serve when one is given).
#[derive(Subcommand, Debug)]
enum Cmd {
    /// API tokens: add (printed once), list, revoke. The file is the config's [api] tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Make a token for a user on some sites; prints it once on stdout (only its hash is kept).
    Add {
        /// The user the token acts as (deploys need the site's deployers to name them).
        #[arg(long)]
        user: String,
        /// The sites it may see and act on: `*` or names separated by commas.
        #[arg(long)]
        sites: String,
        /// Its name (for list, revoke and the logs).
        #[arg(long)]
        name: String,
    },
    /// List the tokens: name, user, sites, created (never the tokens).
    List,
    /// Remove a token by name (dk-web refuses it once it re-reads the file: SIGHUP).
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// `dk-web token …` on the config's tokens file: 0, 1 (refused), 2 (usage).
fn token(config: &WebConfig, cmd: &TokenCmd) -> ExitCode {
    use web::api::tokens;
    let Some(path) = &config.api_tokens else {
        eprintln!("dk-web: the config has no [api] tokens = \"FILE\"");
        return ExitCode::from(2);
    };
    match cmd {
        TokenCmd::Add { user, sites, name } => {
            let sites = match tokens::Sites::parse(sites) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("dk-web: {e}");
                    return ExitCode::from(2);
                }
            };
            if let tokens::Sites::Only(list) = &sites {
                if let Some(bad) = list.iter().find(|s| config.site(s).is_none()) {
                    eprintln!("dk-web: --sites: {bad:?} is not a site of the config");
                    return ExitCode::from(2);
                }
            }
            match tokens::add(path, name, user, &sites) {
                Ok(t) => {
                    eprintln!("dk-web: token {name:?} for {user} on {sites} added to {} (only its hash); it is shown once:", path.display());
                    println!("{t}");
                    eprintln!("dk-web: SIGHUP a running dk-web to make it read the file");
                    ExitCode::SUCCESS
                }
                Err(e @ (tokens::TokenError::Invalid(_) | tokens::TokenError::Exists(_))) => {
                    eprintln!("dk-web: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("dk-web: {e}");
                    ExitCode::from(1)
                }
            }
        }
        TokenCmd::List => match tokens::Tokens::load(path) {
            Ok(t) => {
                println!("{:<20} {:<16} {:<24} created", "name", "user", "sites");
                for e in t.entries() {
                    println!("{:<20} {:<16} {:<24} {}", e.name, e.user, e.sites.to_string(), web::pages::when(e.created));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dk-web: {e}");
                ExitCode::from(1)
            }
        },
        TokenCmd::Revoke { name } => match tokens::revoke(path, name) {
            Ok(e) => {
                eprintln!("dk-web: token {:?} of {} revoked; SIGHUP a running dk-web to make it read the file", e.name, e.user);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dk-web: {e}");
                ExitCode::from(1)
            }
        },
    }
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
    if let Some(Cmd::Token(cmd)) = &cli.command {
        return token(&config, cmd);
    }
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
