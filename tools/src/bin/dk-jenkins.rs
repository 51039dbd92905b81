//! dk-jenkins: triggers Jenkins jobs from commit messages (successor of stomp-jenkins).
//!
//! A thin `main` over `deploykit::jenkins` (config, routing, quiet period,
//! remote API, daemon).

use anyhow::{Context, Result};
use clap::Parser;
use deploykit::health::Outcome;
use deploykit::jenkins::daemon::JenkinsEvent;
use deploykit::jenkins::{daemon, JenkinsConfig};
use deploykit::stomp::Client;
use dk_tools::cli::{init_logging, BrokerArgs, HealthArgs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Triggers the Jenkins job(s) of a repo when a commit message names it.
#[derive(Parser, Debug)]
#[command(
    name = "dk-jenkins",
    version,
    after_help = "Examples:
  dk-jenkins                                 run with /etc/deploykit/jenkins.toml
  dk-jenkins --config ./jenkins.toml -v      another config, info logging
  dk-jenkins --check --config jenkins.toml   validate the config and the secrets it names

Each [[repos.NAME.jobs]] entry names a job (folders as a/b/c), its build token
(token_file / token_env) and optional ignore_refs, branches and parameters; SVN repos
map projects with [[repos.NAME.projects.PROJECT.jobs]]. See examples/jenkins.toml.
Secrets come only from files or environment variables, never from the command line.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT trigger the jobs still in their quiet period, then exit 0;
SIGHUP reloads the config (a broken one is logged and the old one kept).

Exit codes: 0 ok; 1 --check found problems; 2 usage or configuration error;
3 broker unreachable at start-up or the connection closed for good."
)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/deploykit/jenkins.toml", value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Validate the config and read every secret it names; one line per problem; exit 1 if any.
    #[arg(long)]
    check: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let config = match dk_tools::cli::load_config("dk-jenkins", cli.check, || JenkinsConfig::load(&cli.config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.check {
        return dk_tools::cli::check_report(&cli.config, &check(&config), &format!("{} repos", config.repos.len()));
    }
    dk_tools::cli::block_on("dk-jenkins", async { run(&cli, config).await.map(|()| ExitCode::SUCCESS) })
}

/// Every secret the config names must be readable now.
fn check(config: &JenkinsConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(t) = &config.jenkins.api_token {
        if let Err(e) = t.read() {
            problems.push(format!("jenkins.api_token: {e}"));
        }
    }
    for (name, repo) in &config.repos {
        let jobs = repo.jobs.iter().map(|j| (format!("repos.{name}.jobs"), j));
        let projects = repo.projects.iter().flat_map(|(p, js)| js.iter().map(move |j| (format!("repos.{name}.projects.{p}.jobs"), j)));
        for (key, job) in jobs.chain(projects) {
            if let Some(Err(e)) = job.token.as_ref().map(|t| t.read()) {
                problems.push(format!("{key} ({}): token: {e}", job.job));
            }
        }
    }
    problems
}

async fn run(cli: &Cli, config: JenkinsConfig) -> Result<()> {
    let client_config = cli.broker.with_section(&config.broker).client_config()?;
    let client = Client::connect(client_config).await.context("connecting to the broker")?;
    let (repos, topic, jenkins) = (config.repos.len(), config.commits_topic.clone(), config.jenkins.url.clone());
    let handle = daemon::start(config, client.clone()).await?;
    let health = cli.health.start("dk-jenkins", &client).await?;
    health.watch(handle.subscribe(), |e| match e {
        JenkinsEvent::Triggered { .. } => Outcome::Message,
        JenkinsEvent::Failed { job, error } => Outcome::Error(format!("{job}: {error}")),
        _ => Outcome::Ignore,
    });
    // Logged once the commit topic is subscribed (tests and operators rely on that order).
    tracing::info!(repos, %topic, %jenkins, "dk-jenkins started");
    let result = wait_for_signals(&handle, &cli.config).await;
    tracing::info!("shutting down: triggering pending jobs");
    handle.shutdown().await;
    let _ = client.disconnect().await;
    result
}

/// Returns on SIGTERM/SIGINT; reloads on SIGHUP; fails if the daemon stopped by itself.
async fn wait_for_signals(handle: &daemon::DaemonHandle, path: &Path) -> Result<()> {
    let (mut stop, mut hup) = dk_tools::cli::signals()?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(()),
            _ = hup.recv() => match JenkinsConfig::load(path) {
                Ok(c) => match handle.reload(c).await {
                    Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
                    Err(e) => tracing::error!(error = %e, "reload failed; the old configuration stays"),
                },
                Err(e) => tracing::error!(error = %e, "new configuration refused; the old one stays"),
            },
            _ = tick.tick() => {}
        }
        if handle.is_finished() {
            anyhow::bail!("the daemon stopped (the broker connection closed for good)");
        }
    }
}
