//! dk-jenkins: triggers Jenkins jobs from commit messages (successor of stomp-jenkins).
//!
//! A thin `main` over `deploykit::jenkins` (config, routing, quiet period,
//! remote API, daemon).

use anyhow::Result;
use clap::Parser;
use deploykit::health::{series, Allowed, Health};
use deploykit::jenkins::{daemon, JenkinsConfig};
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use std::path::PathBuf;
use std::process::ExitCode;

/// Triggers the Jenkins job(s) of a repo when a commit message names it.
#[derive(Parser, Debug)]
#[command(
    name = "dk-jenkins",
    version,
    after_help = concat!(
        "Examples:
  dk-jenkins                                 run with /etc/deploykit/jenkins.toml
  dk-jenkins --config ./jenkins.toml -v      another config, info logging
  dk-jenkins --check --config jenkins.toml   validate the config and the secrets it names
  dk-jenkins --import-legacy /etc/stomp-jenkins/stomp-jenkins.yaml --secrets-dir /etc/deploykit/secrets > jenkins.toml

Each [[repos.NAME.jobs]] entry names a job (folders as a/b/c), its build token
(token_file / token_env) and optional ignore_refs, branches and parameters; SVN repos
map projects with [[repos.NAME.projects.PROJECT.jobs]]. See examples/jenkins.toml.
Secrets come only from files or environment variables, never from the command line.
--import-legacy never copies a secret into the TOML or a comment: the TOML names a file,
written (0600) into --secrets-dir if given, else a note on stderr says where to put it.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT trigger the jobs still in their quiet period, then exit 0;
SIGHUP reloads the config (a broken one is logged and the old one kept).

If the broker is lost for good (failover maxReconnectAttempts), dk-jenkins exits 3.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/deploykit/jenkins.toml", value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Validate the config and read every secret it names; one line per problem; exit 1 if any.
    #[arg(long, conflicts_with = "import_legacy")]
    check: bool,
    /// Print the TOML equivalent of a stomp-jenkins YAML config and exit.
    #[arg(long, value_name = "YAML")]
    import_legacy: Option<PathBuf>,
    /// With --import-legacy: write the secrets it finds (build tokens, broker password) into files here (mode 0600).
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
        return dk_tools::cli::import_legacy_file("dk-jenkins", yaml, |text| deploykit::jenkins::legacy_import::import_legacy(text, &options));
    }
    let config = match dk_tools::cli::load_config("dk-jenkins", cli.check, || JenkinsConfig::load(&cli.config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        return dk_tools::cli::check_report(&cli.config, &config.check(), &format!("{} repos", config.repos.len()));
    }
    dk_tools::cli::block_on("dk-jenkins", run(&cli, config))
}

/// Every configured job's name (the metrics' `job` label values).
fn job_names(config: &JenkinsConfig) -> Vec<String> {
    config.repos.values().flat_map(|r| r.jobs.iter().chain(r.projects.values().flatten())).map(|j| j.job.clone()).collect()
}

async fn run(cli: &Cli, config: JenkinsConfig) -> Result<ExitCode> {
    let signals = Signals::install()?;
    let client = cli.broker.with_section(&config.broker).connect().await?;
    let (repos, topic, jenkins) = (config.repos.len(), config.commits_topic.clone(), config.jenkins.url.clone());
    let jobs = Allowed::new(job_names(&config));
    // /healthz and /metrics are served once the daemon runs (subscribed).
    let health = Health::new("dk-jenkins", Some(client.clone()));
    let events = health.follow(series::jenkins(health.metrics(), jobs.clone()));
    let daemon = daemon::spawn(config, client.clone(), events).await?;
    cli.health.serve(&health).await?;
    // Logged once the commit topic is subscribed (tests and operators rely on that order).
    tracing::info!(repos, %topic, %jenkins, "dk-jenkins started");
    let path = cli.config.clone();
    let reload = Box::new(move || {
        let config = JenkinsConfig::load(&path).map_err(|e| e.to_string())?;
        jobs.add(job_names(&config));
        Ok(config)
    });
    // Stopping triggers the jobs still in their quiet period and waits for triggers in flight.
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace: std::time::Duration::from_secs(90), client: Some(client) }).await)
}
