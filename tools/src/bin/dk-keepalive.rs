//! dk-keepalive: keeps idle paths between clients and brokers open, and finds how long they stay open.
//!
//! A thin `main` over `deploykit::keepalive`.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use deploykit::config::parse_duration;
use deploykit::health::{series, Allowed, Health};
use deploykit::keepalive::{self, KeepaliveConfig, ProbeOptions, Target};
use dk_tools::cli::{BrokerArgs, HealthArgs};
use dk_tools::daemon::{RunOptions, Signals};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The configuration read when --config is not given (and exists).
const DEFAULT_CONFIG: &str = "/etc/deploykit/keepalive.toml";

/// Keeps idle STOMP paths through firewalls open: a single-newline SEND to each
/// configured destination (every subscriber's connection sees traffic; receivers
/// ignore it), once (cron) or every --interval; or finds a path's idle limit (probe).
#[derive(Parser, Debug)]
#[command(
    name = "dk-keepalive",
    version,
    after_help = concat!(
        "Examples:
  dk-keepalive --config /etc/deploykit/keepalive.toml        one keepalive per target, then exit (cron)
  dk-keepalive --config keepalive.toml --interval 60s        daemon: every 60 s over held connections
  dk-keepalive --broker stomp://mq:61613 --destination /topic/deploykit.git.commits
  dk-keepalive probe --broker stomp://mq.dmz:61613 --max 30m  how long does an idle connection survive?
  dk-keepalive --check --config keepalive.toml               validate the config and list the targets
  dk-keepalive --import-legacy stomp-keepalive.yaml --secrets-dir /etc/deploykit/keepalive > keepalive.toml

Targets: the config's [[target]] entries (each with its own broker and credentials),
plus one per --destination on --broker / DK_BROKER_URL; with neither, one target
/topic/deploykit.keepalive on --broker.
Signals (daemon): SIGTERM/SIGINT disconnect and exit 0; SIGHUP re-reads the config.
Metrics (daemon): --metrics-listen ADDR serves GET /healthz and GET /metrics
(deploykit_keepalives_total{target,result}, …).

--import-legacy never copies a secret into the TOML or a comment: the TOML names a file,
written (0600) into --secrets-dir if given, else a note on stderr says where to put it.

The daemon's connections keep reconnecting (a keepalive outlives broker outages);
one-shot mode exits 1 if a keepalive failed; probe exits 3 if it cannot connect.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file (TOML); default /etc/deploykit/keepalive.toml when it exists.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run as a daemon, keeping every target alive this often (e.g. 60s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    interval: Option<Duration>,
    /// Run as a daemon at the config's interval (default 60s).
    #[arg(long, conflicts_with = "interval")]
    daemon: bool,
    /// Validate the config and every target; print them; exit 1 on a problem (2 if the config does not parse).
    #[arg(long, conflicts_with_all = ["interval", "daemon", "import_legacy"])]
    check: bool,
    /// Print the TOML equivalent of a stomp-keepalive YAML config and exit.
    #[arg(long, value_name = "YAML", conflicts_with_all = ["interval", "daemon"])]
    import_legacy: Option<PathBuf>,
    /// With --import-legacy: write the secrets it finds (each destination's password) into files here (mode 0600).
    #[arg(long, value_name = "DIR", requires = "import_legacy")]
    secrets_dir: Option<PathBuf>,
    /// Also keep this destination alive on --broker (repeatable).
    #[arg(long, value_name = "DEST")]
    destination: Vec<String>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Find how long an idle connection to the broker survives, and print the interval to configure.
    Probe(ProbeArgs),
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Shortest idle time tried.
    #[arg(long, default_value = "1s", value_parser = duration)]
    min: Duration,
    /// Longest idle time tried (the bound; the probe takes about this long when no limit is found).
    #[arg(long, default_value = "10m", value_parser = duration)]
    max: Duration,
    /// How long a liveness check may take before the connection counts as dropped.
    #[arg(long, default_value = "10s", value_parser = duration)]
    check_timeout: Duration,
    #[command(flatten)]
    broker: BrokerArgs,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).filter(|d| !d.is_zero()).ok_or_else(|| format!("{s:?} is not a duration such as 60s, 500ms or 10m"))
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    if let Some(yaml) = &cli.import_legacy {
        let options = dk_tools::cli::import_options(cli.secrets_dir.as_deref());
        return dk_tools::cli::import_legacy_file("dk-keepalive", yaml, |text| keepalive::legacy_import::import_legacy(text, &options));
    }
    dk_tools::cli::block_on_or("dk-keepalive", 2, run(cli))
}

/// The targets: config entries plus `--destination`s (or the default one).
fn targets(cli: &Cli) -> Result<(Vec<Target>, Duration)> {
    let path = dk_tools::cli::config_path(cli.config.as_deref(), DEFAULT_CONFIG);
    let config = match path {
        Some(p) => KeepaliveConfig::load(&p)?,
        None => KeepaliveConfig { interval: Duration::from_secs(60), targets: Vec::new() },
    };
    let mut targets = config.targets;
    let mut extra = cli.destination.clone();
    if targets.is_empty() && extra.is_empty() {
        extra.push(keepalive::DEFAULT_DESTINATION.to_owned());
    }
    for d in extra {
        if !d.starts_with('/') || d.contains(['\n', '\r', '\0']) {
            anyhow::bail!("--destination {d:?} is not a destination such as /topic/NAME");
        }
        targets.push(Target::new(cli.broker.client_config()?, d));
    }
    Ok((targets, cli.interval.unwrap_or(config.interval)))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(Command::Probe(p)) = &cli.command {
        return probe(p).await;
    }
    let (targets, interval) = targets(&cli)?;
    if cli.check {
        for t in &targets {
            println!("target {}: {} ({:?})", t.name, t.destination, t.mode);
        }
        println!("ok: {} target(s), interval {interval:?}", targets.len());
        return Ok(ExitCode::SUCCESS);
    }
    if cli.interval.is_none() && !cli.daemon {
        let mut failed = 0;
        for t in &targets {
            match keepalive::send_once(t).await {
                Ok(took) => println!("{}: ok ({} ms)", t.name, took.as_millis()),
                Err(e) => {
                    failed += 1;
                    println!("{}: FAILED {e}", t.name);
                }
            }
        }
        return Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    daemon(cli, targets, interval).await
}

/// The `--interval` daemon; SIGHUP restarts it with the re-read configuration.
async fn daemon(cli: Cli, targets: Vec<Target>, interval: Duration) -> Result<ExitCode> {
    let signals = Signals::install()?;
    eprintln!("dk-keepalive: keeping {} target(s) alive every {interval:?}", targets.len());
    let names = Allowed::new(targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>());
    // No one broker connection of its own: /healthz counts keepalives (a failed one is an error).
    let health = Health::new("dk-keepalive", None);
    // Followed before the daemon starts: a target's first connection is reported at once.
    let events = health.follow(series::keepalive(health.metrics(), names.clone()));
    let daemon = keepalive::spawn(targets, interval, events);
    cli.health.serve(&health).await?;
    let reload = Box::new(move || {
        let (targets, interval) = self::targets(&cli).map_err(|e| format!("{e:#}"))?;
        names.add(targets.iter().map(|t| t.name.clone()));
        Ok((targets, interval))
    });
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace: Duration::from_secs(10), client: None }).await)
}

async fn probe(p: &ProbeArgs) -> Result<ExitCode> {
    let config = p.broker.client_config()?;
    let opts = ProbeOptions { min: p.min, max: p.max, check_timeout: p.check_timeout, ..ProbeOptions::default() };
    eprintln!("dk-keepalive: probing idle connections to {} for up to {:?}…", deploykit::stomp::url::redact(&p.broker.broker), p.max);
    let report = match keepalive::probe(config, opts).await {
        Ok(r) => r,
        Err(keepalive::probe::ProbeError::Connect(e)) => {
            eprintln!("dk-keepalive: {e}");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    let rec = report.recommended_interval();
    match report.dropped_after {
        Some(d) => {
            let how = if report.exact { "closed by the path" } else { "silently dropped; bisected" };
            println!("idle connections are dropped after about {:.2} s ({how}, {} trials)", d.as_secs_f64(), report.trials.len());
            if let Some(s) = report.survived {
                println!("longest idle time survived: {:.2} s", s.as_secs_f64());
            }
        }
        None => println!("idle connections survived {:.2} s (the bound, --max): no idle limit found", report.max.as_secs_f64()),
    }
    println!("configure: --heartbeat {ms} on dk-* tools (heart-beats every {ms} ms), or dk-keepalive --interval {ms}ms", ms = rec.as_millis());
    println!("result: dropped_after_ms={} recommended_ms={}", report.dropped_after.map(|d| d.as_millis().to_string()).unwrap_or_else(|| "none".into()), rec.as_millis());
    Ok(ExitCode::SUCCESS)
}
