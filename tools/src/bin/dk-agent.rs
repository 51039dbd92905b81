//! dk-agent: the deploy agent on each server (successor of MCollective's gitagent/bloatagent).
//!
//! A thin `main` over `deploykit::deploy::agent`.

use anyhow::Result;
use clap::Parser;
use deploykit::deploy::agent::legacy_import::{self, LegacyFile};
use deploykit::deploy::agent::{self, AgentConfig};
use deploykit::health::{series, Allowed, Health};
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use dk_tools::exit::{Exit, OrExit};
use std::path::PathBuf;
use std::process::ExitCode;

/// Deploy agent: answers signed discover/tags/deploy/rollback/status requests for this
/// server's sites, with hooks, atomic link swaps and one deploy per site at a time.
#[derive(Parser, Debug)]
#[command(
    name = "dk-agent",
    version,
    after_help = concat!(
        "Examples:
  dk-agent                                   serve with /etc/deploykit/agent.toml
  dk-agent --config ./agent.toml -v          another config, info logging
  dk-agent --check                           validate the config and print the sites
  dk-agent --import-legacy /etc/git-agent/git-agent.yaml --import-legacy /etc/facts.d/www.yaml > agent.toml
      the original agent's files (git-agent.yaml; gitagent's facts.yaml or a bloatagent site file)
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

--import-legacy never copies the broker password into the TOML: it names a passcode_file,
written (0600) into --secrets-dir if given, else a note on stderr says where to put it.

Broker: the config's [broker] section, unless --broker / DK_BROKER_URL is given.
Signals: SIGTERM/SIGINT stop taking requests, let running deploys finish, exit 0;
SIGHUP reloads keys, policies and sites (a broken config is logged; the old one stays).

If the broker is lost for good (failover maxReconnectAttempts), dk-agent exits 3 after
letting running deploys finish, so systemd restarts it.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', default_value = "/etc/deploykit/agent.toml", value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    /// Validate the config, print identity and sites, and exit.
    #[arg(long, conflicts_with = "import_legacy")]
    check: bool,
    /// Print the agent.toml equivalent of the original agent's files and exit (repeatable:
    /// git-agent.yaml, gitagent's facts.yaml, bloatagent's SITE.yaml).
    #[arg(long, value_name = "YAML", conflicts_with = "print_key")]
    import_legacy: Vec<PathBuf>,
    /// With --import-legacy: write the broker password into a file here (mode 0600).
    #[arg(long, value_name = "DIR", requires = "import_legacy")]
    secrets_dir: Option<PathBuf>,
    /// Print this agent's identity public key (`ed25519:…`; the key is made in state_dir if missing) and exit.
    #[arg(long)]
    print_key: bool,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    if !cli.import_legacy.is_empty() {
        let options = dk_tools::cli::import_options(cli.secrets_dir.as_deref());
        let files = cli.import_legacy.iter().map(|p| LegacyFile::read(p).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>();
        return dk_tools::cli::import_report("dk-agent", files.and_then(|f| legacy_import::import_legacy(&f, &options).map_err(|e| e.to_string())));
    }
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
        let problems = config.check();
        for p in &problems {
            eprintln!("dk-agent: {p}");
        }
        if !problems.is_empty() {
            return ExitCode::from(1);
        }
        println!("{}: ok: identity {}, {} trusted keys", cli.config.display(), config.identity, config.trusted_keys.len());
        match &config.enrollment {
            Some(p) if !deploykit::deploy::identity::key_path(&config.state_dir).exists() => {
                println!("  enrollment {}: no identity key yet (dk-agent --print-key makes it; enroll that key)", p.display())
            }
            Some(p) => {
                if let Ok(i) = deploykit::deploy::identity::AgentIdentity::load(&config.identity, &config.state_dir, Some(p)) {
                    println!("  enrolled: key {} certificate {}", i.public(), p.display())
                }
            }
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
    dk_tools::cli::block_on("dk-agent", run(cli, config))
}

async fn run(cli: Cli, config: AgentConfig) -> Result<ExitCode> {
    let signals = Signals::install()?;
    let client = cli.broker.with_section(&config.broker).connect().await?;
    if config.allow_unsigned {
        tracing::warn!("allow_unsigned = true: unsigned requests are accepted");
    }
    let (identity, sites, topic) = (config.identity.clone(), config.sites.len(), config.destinations.deploy.clone());
    let site_names = Allowed::new(config.sites.keys());
    // /healthz and /metrics are served once the daemon runs (subscribed).
    let health = Health::new("dk-agent", Some(client.clone()));
    let events = health.follow(series::agent(health.metrics(), site_names.clone()));
    let daemon = match agent::spawn(config, client.clone(), events).await {
        Ok(d) => d,
        Err(e @ agent::AgentError::Subscribe { .. }) => return Err(e).or_exit(Exit::Broker),
        // The state directory or the identity key: the host's configuration.
        Err(e) => return Err(e).or_exit(Exit::Usage),
    };
    cli.health.serve(&health).await?;
    tracing::info!(%identity, sites, %topic, "dk-agent started");
    let path = cli.config.clone();
    let reload = Box::new(move || {
        let config = AgentConfig::load(&path).map_err(|e| e.to_string())?;
        site_names.add(config.sites.keys());
        Ok(config)
    });
    // Running deploys finish before the agent exits (a deploy is never left half-done).
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace: std::time::Duration::from_secs(600), client: Some(client) }).await)
}
