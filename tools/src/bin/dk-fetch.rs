//! dk-fetch: keeps this server's clones fresh the moment a commit message names them.
//!
//! A thin `main` over `deploykit::fetch::daemon` (the daemon) and
//! `deploykit::fetch::config` (fetch.toml, `--check`) and `deploykit::fetch::legacy_import`
//! (`--import-legacy`).

use anyhow::Result;
use clap::Parser;
use deploykit::fetch::config::FetchConfig;
use deploykit::fetch::daemon::{self, DaemonOptions, Runner};
use deploykit::fetch::{legacy_import, privilege};
use deploykit::health::{series, Allowed, Health};
use deploykit::stomp::Client;
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Fetch-on-commit daemon: every configured repo is fetched (and checked out per its mode)
/// the moment a commit message names it (or, with trigger = "build", the moment one of its
/// CI jobs succeeds: exactly the built commit), and reconciled after every reconnect.
#[derive(Parser, Debug)]
#[command(
    name = "dk-fetch",
    version,
    after_help = concat!(
        "Examples:
  dk-fetch                                   run the daemon with /etc/deploykit/fetch.toml
  dk-fetch --config ./fetch.toml -v          another config, info logging
  dk-fetch --once                            fetch every repo once, publish results, exit (cron)
  dk-fetch --check                           validate the config and every repo path
  dk-fetch --import-legacy stomp-git.yaml > /etc/deploykit/fetch.toml
  dk-fetch --import-legacy stomp-git.yaml --secrets-dir /etc/deploykit > fetch.toml   broker password to /etc/deploykit/passcode

--import-legacy never copies a password into the TOML or a comment: the TOML names a
passcode_file, written (0600) into --secrets-dir if given, else a note on stderr says
where to put it.

Build triggers: a repo with trigger = \"build\" and jobs = [\"JOB\", …] is not fetched on commit
messages; a success build message of a listed job (dk-notify success, JSON or the original's
text, on builds_topic) fetches it and checks out exactly the built commit, once verified to be
on the configured branch and not older than the checkout. Failures never trigger; a success
without a commit checks out the branch tip. The newest verified built commit is recorded in
state_dir (default /var/lib/deploykit/fetch), and reconciles check that out, never the tip.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT finish the running fetches and exit 0; SIGHUP reloads the config
(a broken new config is logged and the old one kept; the connection is not dropped).
If the broker is lost for good (failover maxReconnectAttempts), dk-fetch exits 3.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/deploykit/fetch.toml", value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Fetch every configured repo once, publish the results, and exit (non-zero if any failed).
    #[arg(long, conflicts_with_all = ["check", "import_legacy"])]
    once: bool,
    /// Validate the config and every repo path; one line per problem; exit 1 if any.
    #[arg(long, conflicts_with = "import_legacy")]
    check: bool,
    /// Print the TOML equivalent of a stomp-git YAML config and exit.
    #[arg(long, value_name = "YAML")]
    import_legacy: Option<PathBuf>,
    /// With --import-legacy: write the secrets it finds (broker password) into files here (mode 0600).
    #[arg(long, value_name = "DIR", requires = "import_legacy")]
    secrets_dir: Option<PathBuf>,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

fn main() -> ExitCode {
    // The privilege-dropped helper for `user = "…"` repos (not for humans).
    if std::env::args().nth(1).as_deref() == Some("__fetch-as") {
        return privilege::child_main();
    }
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    if let Some(yaml) = &cli.import_legacy {
        let options = dk_tools::cli::import_options(cli.secrets_dir.as_deref());
        return dk_tools::cli::import_legacy_file("dk-fetch", yaml, |text| legacy_import::import_legacy(text, &options));
    }
    let config = match dk_tools::cli::load_config("dk-fetch", cli.check, || FetchConfig::load(&cli.config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        return dk_tools::cli::check_report(&cli.config, &config.check(), &format!("{} repos", config.repos.len()));
    }
    // Before the runtime's threads exist: libgit2's timeouts are process-wide.
    deploykit::git::timeouts::set(config.git_timeout);
    dk_tools::cli::block_on("dk-fetch", run(cli, config))
}

/// The repository operation: in-process, or through `dk-fetch __fetch-as` for `user = "…"` repos
/// (which gets `git_timeout` in its environment).
fn runner(git_timeout: Option<std::time::Duration>) -> Runner {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("dk-fetch"));
    Arc::new(move |name, repo, request, stale| {
        privilege::run_configured_request(name, repo, request, stale, || {
            let mut c = std::process::Command::new(&exe);
            c.arg("__fetch-as");
            if let Some(t) = git_timeout {
                c.env(privilege::GIT_TIMEOUT_ENV, t.as_millis().to_string());
            }
            c
        })
    })
}

async fn run(cli: Cli, config: FetchConfig) -> Result<ExitCode> {
    let mut args = cli.broker.clone();
    let b = &config.broker;
    args.apply_config(Some(&b.url), Some(&b.vhost), b.login.as_deref(), b.passcode_file.as_deref());
    let client_config = args.client_config()?;
    if cli.once {
        let client = match Client::connect(client_config).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "broker unreachable: fetching without publishing results");
                None
            }
        };
        let results = daemon::run_once(&config, client.clone(), Some(runner(config.git_timeout))).await;
        let mut failed = 0;
        for r in &results {
            match &r.error {
                None => println!("{}: ok {} ({} ms)", r.repo, r.new_head.as_deref().unwrap_or("-"), r.duration_ms),
                Some(e) => {
                    failed += 1;
                    println!("{}: FAILED {e}", r.repo);
                }
            }
        }
        if let Some(c) = client {
            let _ = c.disconnect().await;
        }
        return Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }

    let signals = Signals::install()?;
    let client = args.connect().await?;
    let (repos, topic) = (config.repos.len(), config.commits_topic.clone());
    let names = Allowed::new(config.repos.keys());
    let run_git = runner(config.git_timeout);
    // The start-up reconcile's fetches are counted even when they finish at once;
    // /healthz and /metrics are served once the daemon runs (subscribed).
    let health = Health::new("dk-fetch", Some(client.clone()));
    let observer = health.follow(series::fetch(health.metrics(), names.clone()));
    let daemon = daemon::spawn(config, client.clone(), DaemonOptions { runner: run_git, observer: Some(observer), ..DaemonOptions::default() }).await?;
    cli.health.serve(&health).await?;
    tracing::info!(repos, %topic, "dk-fetch started");
    let path = cli.config.clone();
    let reload = Box::new(move || {
        let config = FetchConfig::load(&path).map_err(|e| e.to_string())?;
        names.add(config.repos.keys());
        Ok(config)
    });
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace: GRACE, client: Some(client) }).await)
}

/// How long running fetches may take to finish at shutdown.
const GRACE: std::time::Duration = std::time::Duration::from_secs(90);
