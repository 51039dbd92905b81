//! dk-agent: the deploy agent on each server (successor of MCollective's gitagent/bloatagent).
//!
//! A thin `main` over `deploykit::deploy::agent`.

use anyhow::{Context, Result};
use clap::Parser;
use deploykit::deploy::agent::{Agent, AgentConfig, AgentEvent, AgentHandle};
use deploykit::health::Outcome;
use deploykit::stomp::Client;
use dk_tools::cli::{init_logging, BrokerArgs, HealthArgs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Deploy agent: answers signed discover/tags/deploy/rollback/status requests for this
/// server's sites, with hooks, atomic link swaps and one deploy per site at a time.
#[derive(Parser, Debug)]
#[command(
    name = "dk-agent",
    version,
    after_help = "Examples:
  dk-agent                                   serve with /etc/deploykit/agent.toml
  dk-agent --config ./agent.toml -v          another config, info logging
  dk-agent --check                           validate the config and print the sites
  dk-agent --print-key                       this agent's identity key (made on first use), for enrollment:
      dk-deploy enroll --fleet-key fleet.key --identity web01 --agent-key \"$(dk-agent --print-key)\" > agent.cert

A minimal agent.toml (see examples/agent.toml for every key):
  [trusted_keys]
  ops = \"ed25519:…\"                       # from `dk-deploy keygen`
  [sites.www]
  repo = \"/srv/git/www\"                    # kept fresh by dk-fetch
  releases = \"/srv/releases/www\"
  current = \"/srv/www/current\"
  hooks = \"/etc/deploykit/hooks/www\"       # pre-deploy, pre-link, post-deploy (-t TAG)
  deploy = [\"ops\"]                         # keys that may deploy (default: none)

Identity: replies and announcements are signed with state_dir/identity.key (Ed25519,
0600, made on first start) and carry the certificate `enrollment = FILE` names; the
controllers (dk-deploy --trust, dk-web [trust]) believe it when its fleet key signed it.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT stop taking requests, let running deploys finish, exit 0;
SIGHUP reloads keys, policies and sites (a broken config is logged; the old one stays).

Exit codes: 0 ok; 1 --check found a problem; 2 usage or configuration error;
3 broker unreachable at start-up."
)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/deploykit/agent.toml", value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Validate the config, print identity and sites, and exit.
    #[arg(long)]
    check: bool,
    /// Print this agent's identity public key (`ed25519:…`; the key is made in state_dir if missing) and exit.
    #[arg(long)]
    print_key: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let config = match dk_tools::cli::load_config("dk-agent", cli.check, || AgentConfig::load(&cli.config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.print_key {
        return match deploykit::deploy::identity::load_or_create(&config.state_dir) {
            Ok(k) => {
                println!("{}", k.public());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dk-agent: {e} (run as the agent's user; state_dir must be writable)");
                ExitCode::from(2)
            }
        };
    }
    if cli.check {
        println!("{}: ok: identity {}, {} trusted keys", cli.config.display(), config.identity, config.trusted_keys.len());
        match &config.enrollment {
            Some(p) if !deploykit::deploy::identity::key_path(&config.state_dir).exists() => {
                println!("  enrollment {}: no identity key yet (dk-agent --print-key makes it; enroll that key)", p.display())
            }
            Some(p) => match deploykit::deploy::identity::AgentIdentity::load(&config.identity, &config.state_dir, Some(p)) {
                Ok(i) => println!("  enrolled: key {} certificate {}", i.public(), p.display()),
                Err(e) => {
                    eprintln!("dk-agent: {e}");
                    return ExitCode::from(1);
                }
            },
            None => println!("  not enrolled: controllers trust this agent only if its key is listed in their [agents] (dk-agent --print-key)"),
        }
        for (name, s) in &config.sites {
            let live = deploykit::deploy::agent::releases::live(s).unwrap_or_else(|| "-".into());
            println!("  site {name}: repo {} live {live} deploy by {:?}", s.repo.display(), s.deploy);
        }
        if config.allow_unsigned {
            println!("  WARNING: allow_unsigned = true: unsigned requests are accepted");
        }
        return ExitCode::SUCCESS;
    }
    dk_tools::cli::block_on("dk-agent", async { run(cli, config).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(cli: Cli, config: AgentConfig) -> Result<()> {
    let args = cli.broker.with_section(&config.broker);
    let client = Client::connect(args.client_config()?).await.context("connecting to the broker")?;
    if config.allow_unsigned {
        tracing::warn!("allow_unsigned = true: unsigned requests are accepted");
    }
    let (identity, sites, topic) = (config.identity.clone(), config.sites.len(), config.destinations.deploy.clone());
    let handle = Agent::start(config, client.clone()).await?;
    let health = cli.health.start("dk-agent", &client).await?;
    health.watch(handle.subscribe(), |e| match e {
        AgentEvent::Ignored { .. } => Outcome::Ignore,
        AgentEvent::Done { ok: true, .. } => Outcome::Message,
        AgentEvent::Done { request_id, action, .. } => Outcome::Error(format!("{action:?} {request_id} failed")),
        AgentEvent::Refused { request_id, reason } => Outcome::Error(format!("refused {request_id}: {reason}")),
        AgentEvent::Unverified { reason, .. } => Outcome::Error(format!("unverified request dropped: {reason}")),
    });
    tracing::info!(%identity, sites, %topic, "dk-agent started");
    wait_for_signals(&handle, &cli.config).await?;
    tracing::info!("shutting down: letting running deploys finish");
    handle.shutdown().await;
    let _ = client.disconnect().await;
    Ok(())
}

/// Returns on SIGTERM/SIGINT; reloads on SIGHUP.
async fn wait_for_signals(handle: &AgentHandle, path: &Path) -> Result<()> {
    let (mut stop, mut hup) = dk_tools::cli::signals()?;
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(()),
            _ = hup.recv() => match AgentConfig::load(path) {
                Ok(c) => {
                    handle.reload(c);
                    tracing::info!(file = %path.display(), "configuration reloaded");
                }
                Err(e) => tracing::error!(error = %e, "new configuration refused; the old one stays"),
            },
        }
        if handle.is_finished() {
            anyhow::bail!("the agent stopped (the broker connection closed for good)");
        }
    }
}
