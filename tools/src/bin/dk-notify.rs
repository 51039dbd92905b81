//! dk-notify: publishes a build message and its event line from a Jenkins job
//! step (successor of jenkins-helper). A thin `main` over `deploykit::jenkins::notify`.

use anyhow::{Context, Result};
use clap::Parser;
use deploykit::jenkins::daemon::EVENT_SOURCE;
use deploykit::jenkins::notify::{self, NotifyConfig};
use deploykit::message::{BuildStatus, Publisher, Wire};
use deploykit::stomp::Client;
use dk_tools::cli::BrokerArgs;
use std::path::PathBuf;
use std::process::ExitCode;

/// The default config file, read only if it exists.
const DEFAULT_CONFIG: &str = "/etc/deploykit/notify.toml";

/// Publishes a build's status (from the Jenkins environment) as a build message plus an event line.
#[derive(Parser, Debug)]
#[command(
    name = "dk-notify",
    version,
    after_help = concat!(
        "Examples (in a Jenkins job step):
  dk-notify started                          at the start of the build
  dk-notify success                          or failure, unstable, aborted, at the end
  dk-notify --cake                           the original jenkins-helper's flags: --begin, --profit, --cake
  dk-notify --wire legacy failure            the original's topics (future.jenkins.cake) and text bodies
  DK_BROKER_URL=stomp://mq:61613 dk-notify --destination /topic/ci.builds success

Reads BUILD_NUMBER, JOB_NAME, BUILD_URL (required), GIT_BRANCH, GIT_COMMIT, GIT_URL and
DK_CORRELATION_ID (optional) from the environment Jenkins gives the step.
Config: --config FILE, else /etc/deploykit/notify.toml if it exists (wire, [destinations], [broker]).
Broker passcode: --passcode-file or DK_BROKER_PASSCODE, never the command line.

dk-notify exits 1 when the broker refused or lost the message, 2 when Jenkins variables are missing.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    /// started, success, failure, unstable or aborted.
    #[arg(value_name = "STATUS", required_unless_present_any = ["begin", "profit", "cake"])]
    status: Option<String>,
    /// The original's flag for `started`.
    #[arg(long, conflicts_with_all = ["status", "profit", "cake"])]
    begin: bool,
    /// The original's flag for `success`.
    #[arg(long, conflicts_with_all = ["status", "cake"])]
    profit: bool,
    /// The original's flag for `failure`.
    #[arg(long, conflicts_with = "status")]
    cake: bool,
    /// Body format: json (default) or legacy (the original's topics and text).
    #[arg(long, value_name = "WIRE")]
    wire: Option<String>,
    /// Publish the build message here instead (all statuses).
    #[arg(long, value_name = "DEST")]
    destination: Option<String>,
    /// The configuration file (TOML, optional).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

fn status(cli: &Cli) -> Result<BuildStatus, String> {
    let flag = [(cli.begin, "--begin"), (cli.profit, "--profit"), (cli.cake, "--cake")].into_iter().find(|(on, _)| *on).map(|(_, f)| f);
    match (flag, &cli.status) {
        (Some(f), _) => notify::legacy_flag(f).ok_or_else(|| format!("unknown flag {f}")),
        (None, Some(s)) => BuildStatus::parse(s).ok_or_else(|| format!("unknown status {s:?} (started, success, failure, unstable, aborted)")),
        (None, None) => Err("give a status (started, success, failure, unstable, aborted)".into()),
    }
}

fn load_config(cli: &Cli) -> Result<NotifyConfig, String> {
    let path = match &cli.config {
        Some(p) => p.clone(),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(NotifyConfig::default()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    NotifyConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    let prepared = (|| {
        let status = status(&cli)?;
        let mut config = load_config(&cli)?;
        if let Some(w) = &cli.wire {
            config.wire = w.parse::<Wire>().map_err(|e| e.to_string())?;
        }
        let build = notify::build_from_env(status, |k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
        Ok::<_, String>((config, build))
    })();
    let (config, build) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dk-notify: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dk-notify: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(publish(&cli, &config, &build)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dk-notify: {}", dk_tools::cli::error_text(&e));
            ExitCode::from(2)
        }
    }
}

async fn publish(cli: &Cli, config: &NotifyConfig, build: &deploykit::message::Build) -> Result<ExitCode> {
    let client_config = cli.broker.with_section(&config.broker_section()).client_config()?;
    let client = match Client::connect(client_config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dk-notify: cannot connect to the broker: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    let mut destinations = config.destinations();
    if let Some(d) = &cli.destination {
        destinations.builds = d.clone();
        destinations.builds_failed = None;
    }
    let publisher = Publisher::new(client.clone(), EVENT_SOURCE).wire(config.wire).destinations(destinations.clone());
    let result = publisher.build(build).await.context("publishing the build message");
    let _ = client.disconnect().await;
    match result {
        Ok(()) => {
            tracing::info!(job = %build.job, number = build.number, status = build.status.as_str(), destination = destinations.build_for(build.status), "published");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("dk-notify: {}", dk_tools::cli::error_text(&e));
            Ok(ExitCode::from(1))
        }
    }
}
