//! dk-reprepro: includes every complete `.deb` dropped into a distribution's
//! incoming directory with `reprepro includedeb`, and announces it on the bus.
//!
//! A thin `main` over `deploykit::debrepo`.

use anyhow::Result;
use clap::Parser;
use deploykit::debrepo::{self, RepoEvent, RepreproConfig};
use deploykit::health::{series, Health};
use deploykit::message::PackageAction;
use deploykit::stomp::Client;
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use dk_tools::exit::{Exit, OrExit};
use std::path::PathBuf;
use std::process::ExitCode;

/// Include incoming .debs into a reprepro repository and publish package messages.
#[derive(Parser, Debug)]
#[command(
    name = "dk-reprepro",
    version,
    after_help = concat!(
        "Examples:
  dk-reprepro                                  watch with /etc/deploykit/reprepro.toml
  dk-reprepro --config ./reprepro.toml -v      another config, info logging
  dk-reprepro --once                           include what is complete now, publish, exit (cron)
  dk-reprepro --check                          validate the config, reprepro, the directories
  dk-reprepro --import-legacy /etc/auto-reprepro.yaml > /etc/deploykit/reprepro.toml

Each complete NAME.deb in a [dists.D] incoming directory is included with
`reprepro -b BASE includedeb D FILE`, then moved to archive/ (or, refused, to failed/
with FILE.error beside it). A package message and the event line
`Package FILE / D added to repository.` follow; they wait in spool_dir while the
broker is down.

--import-legacy never copies a secret into the TOML or a comment: the TOML names a file,
written (0600) into --secrets-dir if given, else a note on stderr says where to put it.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT finish the file in progress and exit 0; SIGHUP reloads the config
(a broken new config is logged and the old one kept).

--once exits 1 if a file was refused or could not be included. If the broker is lost
for good (failover maxReconnectAttempts), the daemon exits 3.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/deploykit/reprepro.toml", value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Include every complete .deb once (waiting `settle` to see files are not growing), publish, exit.
    #[arg(long, conflicts_with_all = ["check", "import_legacy"])]
    once: bool,
    /// Validate the config and this machine (reprepro, dpkg-deb, conf/distributions, directories).
    #[arg(long, conflicts_with = "import_legacy")]
    check: bool,
    /// Print the TOML equivalent of an auto-reprepro YAML config and exit.
    #[arg(long, value_name = "YAML")]
    import_legacy: Option<PathBuf>,
    /// With --import-legacy: write the secrets it finds (broker password) into files here (mode 0600).
    #[arg(long, value_name = "DIR", requires = "import_legacy")]
    secrets_dir: Option<PathBuf>,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    if let Some(yaml) = &cli.import_legacy {
        let options = dk_tools::cli::import_options(cli.secrets_dir.as_deref());
        return dk_tools::cli::import_legacy_file("dk-reprepro", yaml, |text| debrepo::legacy_import::import_legacy(text, &options));
    }
    let config = match dk_tools::cli::load_config("dk-reprepro", cli.check, || RepreproConfig::load(&cli.config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        return dk_tools::cli::check_report(&cli.config, &config.check(), &format!("{} distributions", config.dists.len()));
    }
    dk_tools::cli::block_on("dk-reprepro", run(cli, config))
}

async fn run(cli: Cli, config: RepreproConfig) -> Result<ExitCode> {
    let client_config = cli.broker.with_section(&config.broker).client_config()?;
    if cli.once {
        let client = match Client::connect(client_config).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "broker unreachable: including anyway; messages wait in the spool");
                None
            }
        };
        let results = debrepo::run_once(config, client.clone()).await?;
        let mut bad = 0;
        for r in &results {
            match r {
                RepoEvent::Done { package, .. } if package.action == PackageAction::Added => {
                    println!("{}: added to {} ({} {} {})", package.file, package.distro, package.name, package.version, package.arch)
                }
                RepoEvent::Done { package, moved_to } => {
                    bad += 1;
                    println!("{}: REFUSED, moved to {}: {}", package.file, moved_to.display(), deploykit::message::one_line(package.detail.as_deref().unwrap_or("")));
                }
                RepoEvent::Stuck { package, error } => {
                    bad += 1;
                    println!("{}: STUCK: {}", package.file, deploykit::message::one_line(error));
                }
                RepoEvent::Retry { file, error } => {
                    bad += 1;
                    println!("{}: NOT INCLUDED (try again): {}", file.display(), deploykit::message::one_line(error));
                }
            }
        }
        if let Some(c) = client {
            let _ = c.disconnect().await;
        }
        return Ok(if bad > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }

    let signals = Signals::install()?;
    let client = cli.broker.with_section(&config.broker).connect().await?;
    // An incoming directory, the spool or the watcher that cannot be set up: the host's configuration.
    let spool_dir = config.spool_dir.clone();
    // Packages already complete in an incoming directory are taken at start-up, and
    // counted; /healthz and /metrics are served once the daemon runs.
    let health = Health::new("dk-reprepro", Some(client.clone()));
    let events = health.follow(series::reprepro(health.metrics(), spool_dir));
    let daemon = debrepo::spawn(config, Some(client.clone()), events).await.or_exit(Exit::Usage)?;
    cli.health.serve(&health).await?;
    let path = cli.config.clone();
    // A reload stops the watcher after the file in progress and starts one with the new
    // configuration (or the old one again, if the new one does not start).
    let reload = Box::new(move || RepreproConfig::load(&path).map_err(|e| e.to_string()));
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace: std::time::Duration::from_secs(90), client: Some(client) }).await)
}
