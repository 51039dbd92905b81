//! dk-deploy: discover servers, list tags, deploy canary-first, roll back, show status
//! (successor of f-checkout, f-taglist and the b-* scripts).
//!
//! A thin `main` over `deploykit::deploy::controller`; output in `dk_tools::deploy_view`.

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use deploykit::config::parse_duration;
use deploykit::deploy::controller::config::{self as controller_config, DeployConfig};
use deploykit::deploy::controller::plan::BatchSize;
use deploykit::deploy::controller::{unanswered_hint, Controller, ControllerConfig, RolloutSpec, Window};
use deploykit::deploy::keys::{PublicKey, SecretKey};
use deploykit::deploy::record::{RolloutRecord, Run};
use deploykit::deploy::trust::{Certificate, TrustConfig, TrustStore};
use deploykit::deploy::{audit, filters};
use deploykit::message::{DeployAction, Filters, StepState};
use dk_tools::cli::BrokerArgs;
use dk_tools::deploy_view::{printable, summary, Progress};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Drive deploy agents: discover, tags, deploy (canary first, then batches), rollback, status.
/// Every request is signed with your Ed25519 key; every deploy is written to the audit log.
#[derive(Parser, Debug)]
#[command(
    name = "dk-deploy",
    version,
    after_help = concat!(
        "Examples:
  dk-deploy keygen                                  make ~/.config/deploykit/deploy.key, print the public key
  dk-deploy keygen --out fleet.key                  a fleet key (keep it offline); put its public half in trust.toml
  dk-deploy enroll --fleet-key fleet.key --identity web01 --agent-key ed25519:... --valid 365d > web01.cert
  dk-deploy discover -C web                         servers of class web
  dk-deploy tags --site www                         tags on the site's servers, with how many hold each
  dk-deploy deploy --site www --tag v1.4.2 --dry-run       the plan and the commit log per server
  dk-deploy deploy --site www --tag v1.4.2 --canary 1 --batch 25% --yes
  dk-deploy deploy --site www --tag v1.4.2 -F sitetype=live -I '/^web0[1-4]/' --max-failures 1
  dk-deploy deploy --site www --tag v1.4.2 --expect 3 --yes    fails, changing nothing, unless 3 servers answer
  dk-deploy deploy --site www --tag v1.4.2 -I web01 -I web02 -I web03 --allow-missing --yes
  dk-deploy deploy --site www --tag v1.4.1 --dry-run              on v1.4.2: lists the commits v1.4.1 removes
  dk-deploy deploy --site www --tag v1.4.1 --allow-downgrade --yes    deploy the older tag anyway
  dk-deploy rollback --site www -I web03 --yes
  dk-deploy status --site www --json
  DK_WEB_TOKEN=dkt_… dk-deploy history --web https://deploy.example.com --site www --limit 20
  dk-deploy history --web https://deploy.example.com --token-file ~/.config/deploykit/web-token --json
  dk-deploy --check                                 validate deploy.toml (and the key and trust files)

Settings: /etc/deploykit/deploy.toml, then ~/.config/deploykit/deploy.toml ($XDG_CONFIG_HOME
honoured; its keys override the system file's), or only --config FILE:
  wire = \"legacy\"                   # the destination defaults of agents with the same wire
  [broker]                          # url, vhost, login, passcode_file
  url = \"failover:(stomp://mq1:61613,stomp://mq2:61613)\"
  [destinations]
  deploy = \"/topic/deploykit.deploy\"   # where requests go (the agents' [destinations] deploy)
  replies = \"/topic/deploykit.reply.ops\"  # default: a private /temp-queue/
Flags (--broker / DK_BROKER_URL, --deploy-topic, --reply-to) override the files.

Trust: replies count only from agents the trust file (--trust, default
~/.config/deploykit/trust.toml, read at every run) believes:
  fleet_keys = [\"ed25519:…\"]      # agents enrolled by `dk-deploy enroll` with this key
  revoked_keys = [\"ed25519:…\"]    # never trusted, even with a certificate
  [agents]                         # or keys pinned by hand
  web01 = \"ed25519:…\"
Others are never planned or counted; `discover` lists them as `untrusted: <reason>`.

Filters: -I/--identity NAME or /regex/ (several: any of them), -C/--class, -F/--fact k=v
(classes and facts must all match).
Missing servers: a deploy or rollback expects every literal -I name and, with --expect N,
N servers; when fewer answer discovery it names the missing ones and stops before any
server changes, unless --allow-missing is given.
Downgrades: agents refuse a tag whose commit is not the live release's or a descendant
of it (deploying it would remove commits now live), naming how many; --dry-run lists them,
--allow-downgrade deploys it anyway. `rollback` is not a downgrade: it needs no flag.
No answer: agents do not answer requests they cannot verify (untrusted key, bad signature,
clock skew); dk-deploy then says so with the key to check.
dk-deploy exits 1 when some selected server failed, refused or did not answer, when
expected servers were missing, or when the rollout stopped.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Validate the settings (deploy.toml, the signing key, the trust file); one line per problem; exit 1 if any.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct Common {
    /// Settings file (TOML: wire, [broker], [destinations]); default /etc/deploykit/deploy.toml
    /// overridden by ~/.config/deploykit/deploy.toml.
    #[arg(long, short = 'c', global = true, env = "DK_DEPLOY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Signing key (PKCS#8 PEM, from `dk-deploy keygen`).
    #[arg(long, global = true, env = "DK_DEPLOY_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Which agents to believe (TOML: fleet_keys, revoked_keys, [agents]; default ~/.config/deploykit/trust.toml).
    #[arg(long, global = true, env = "DK_DEPLOY_TRUST", value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Where replies come: default a private /temp-queue/; a /topic/… for brokers without
    /// subscribable temp queues (RabbitMQ), where bus readers can read (not forge) replies.
    #[arg(long, global = true, value_name = "DEST")]
    reply_to: Option<String>,
    /// Who you are, for the agents' event lines and the audit log (default: $USER).
    #[arg(long, global = true, env = "DK_DEPLOY_USER")]
    user: Option<String>,
    /// Destination of deploy requests (default: deploy.toml's [destinations] deploy, else /topic/deploykit.deploy).
    #[arg(long, global = true, value_name = "DEST")]
    deploy_topic: Option<String>,
    /// How long to wait for servers to answer discovery (e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = duration)]
    discovery_timeout: Duration,
    /// Stop waiting for discovery once this many servers answered.
    #[arg(long, global = true, value_name = "N")]
    expect: Option<usize>,
    /// Machine-readable output (JSON on stdout).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

#[derive(Args, Debug, Clone)]
struct FilterArgs {
    /// Server identity, or /regex/ (repeatable: any of them).
    #[arg(short = 'I', long = "identity", value_name = "NAME")]
    identity: Vec<String>,
    /// Class the server must have (repeatable: all of them).
    #[arg(short = 'C', long = "class", value_name = "CLASS")]
    class: Vec<String>,
    /// Fact key=value the server must have (repeatable: all of them).
    #[arg(short = 'F', long = "fact", value_name = "K=V")]
    fact: Vec<String>,
}

#[derive(Args, Debug, Clone)]
struct RolloutArgs {
    /// Servers deployed first, alone; any canary failure stops the rollout.
    #[arg(long, default_value_t = 1)]
    canary: usize,
    /// Servers per batch after the canary: a number or a percentage (25%).
    #[arg(long, default_value = "1", value_parser = |s: &str| s.parse::<BatchSize>())]
    batch: BatchSize,
    /// Failures tolerated before no further batch starts.
    #[arg(long, default_value_t = 0)]
    max_failures: usize,
    /// How long a server may take before it counts as failed (e.g. 10m).
    #[arg(long, default_value = "10m", value_parser = duration)]
    timeout: Duration,
    /// Deploy to the servers that answered even if expected ones (literal -I names, --expect N) are missing.
    #[arg(long)]
    allow_missing: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Audit log (JSON lines).
    #[arg(long, env = "DK_AUDIT_LOG", value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Why (a ticket or a sentence): kept in the audit log and the rollout record dk-web's History shows.
    #[arg(long, value_name = "TEXT", value_parser = reason)]
    reason: Option<String>,
}

/// A reason: one line of at most 1000 characters.
fn reason(s: &str) -> Result<String, String> {
    let line = deploykit::message::one_line(s).trim().to_owned();
    if line.is_empty() || line.chars().count() > 1000 {
        return Err("a reason is one line of 1 to 1000 characters".into());
    }
    Ok(line)
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a signing key and print its public half for the agents' [trusted_keys].
    Keygen {
        /// Where to write the private key (default ~/.config/deploykit/deploy.key).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sign an enrollment certificate for an agent's key (printed on stdout; install it as the agent's `enrollment`).
    Enroll {
        /// The fleet's signing key (PKCS#8 PEM, from `dk-deploy keygen --out`).
        #[arg(long, value_name = "FILE")]
        fleet_key: PathBuf,
        /// The agent's identity (its agent.toml `identity`).
        #[arg(long)]
        identity: String,
        /// The agent's public key, as `dk-agent --print-key` prints it.
        #[arg(long, value_name = "ed25519:…")]
        agent_key: String,
        /// How long the certificate is valid (e.g. 365d, 12h).
        #[arg(long, default_value = "365d", value_parser = duration)]
        valid: Duration,
    },
    /// List the servers that answer (identity, classes, facts, sites and live releases).
    Discover {
        #[command(flatten)]
        filters: FilterArgs,
    },
    /// Tags and branches of a site, with how many servers hold each.
    Tags {
        /// The site.
        #[arg(long)]
        site: String,
        /// At most this many tags and branches.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        filters: FilterArgs,
    },
    /// Deploy a tag: canary first, then batches.
    Deploy {
        /// The site.
        #[arg(long)]
        site: String,
        /// The tag or branch.
        #[arg(long)]
        tag: String,
        /// Print the plan and each server's commit log up to the tag (and the commits an older tag removes); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Deploy even a tag older than the live release (not its descendant): the commits only the live release has are removed.
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        filters: FilterArgs,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Roll back to the previous good release.
    Rollback {
        /// The site.
        #[arg(long)]
        site: String,
        #[command(flatten)]
        filters: FilterArgs,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Live release, lock holder and releases per server.
    Status {
        /// The site.
        #[arg(long)]
        site: String,
        #[command(flatten)]
        filters: FilterArgs,
    },
    /// Deploys and rollbacks as dk-web's History shows them, from its API (every controller's).
    /// The token (`dk-web token add`) comes from $DK_WEB_TOKEN or --token-file, never the command line.
    History {
        /// dk-web's URL.
        #[arg(long, env = "DK_WEB_URL", value_name = "URL")]
        web: String,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// At most this many rows (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// A file holding the token (instead of $DK_WEB_TOKEN).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
}

/// `dk-deploy history`: dk-web's `/api/v1/history` as its History table (or `--json`).
fn history(web: &str, site: Option<&str>, limit: u16, token_file: Option<&std::path::Path>, json: bool) -> ExitCode {
    use deploykit::web::api::client;
    let token = match token_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t.trim().to_owned(),
            Err(e) => {
                eprintln!("dk-deploy: --token-file {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => std::env::var("DK_WEB_TOKEN").unwrap_or_default().trim().to_owned(),
    };
    if token.is_empty() {
        eprintln!("dk-deploy: history needs an API token: DK_WEB_TOKEN=… or --token-file FILE (dk-web token add)");
        return ExitCode::from(2);
    }
    match client::history(web, &token, site, usize::from(limit), Duration::from_secs(30)) {
        Ok(rows) if json => {
            println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            print!("{}", client::table(&rows));
            ExitCode::SUCCESS
        }
        Err(e @ client::ClientError::Url(_)) => {
            eprintln!("dk-deploy: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("dk-deploy: {e}");
            ExitCode::from(1)
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?}: expected a duration such as 500ms, 30s, 10m"))
}

/// A usage/config error (exit 2) as opposed to a bus error (exit 3).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn default_key() -> PathBuf {
    controller_config::user_dir().join("deploy.key")
}

/// deploy.toml: `--config FILE` alone, else the system file overridden by the user's.
fn load_settings(c: &Common) -> Result<DeployConfig, deploykit::config::ConfigError> {
    match &c.config {
        Some(p) => DeployConfig::load(p),
        None => DeployConfig::load_layered(&DeployConfig::default_paths()),
    }
}

/// `dk-deploy --check`: deploy.toml, the signing key and the trust file; one `FILE: problem` line each.
fn check(c: &Common) -> ExitCode {
    let settings = match load_settings(c) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dk-deploy: {e}");
            return ExitCode::from(1);
        }
    };
    let name = if settings.sources.is_empty() {
        "deploy.toml (none: defaults)".to_owned()
    } else {
        settings.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + ")
    };
    let mut problems: Vec<String> = settings.check().iter().map(|p| format!("{name}: {p}")).collect();
    let key = c.key.clone().unwrap_or_else(default_key);
    if let Err(e) = SecretKey::load(&key) {
        problems.push(format!("{}: {e} (dk-deploy keygen makes one)", key.display()));
    }
    if let Err(e) = load_trust(c) {
        problems.push(dk_tools::cli::error_text(&e));
    }
    for p in &problems {
        println!("{p}");
    }
    if !problems.is_empty() {
        return ExitCode::from(1);
    }
    let broker = settings.broker.as_ref().map(|b| deploykit::stomp::url::redact(&b.url)).unwrap_or_else(|| "(flags / DK_BROKER_URL)".into());
    println!(
        "{name}: ok (broker {broker}, wire {}, requests to {}, replies to {})",
        if settings.wire == deploykit::message::Wire::Legacy { "legacy" } else { "json" },
        settings.deploy_destination,
        settings.reply_destination.as_deref().unwrap_or("a private /temp-queue/")
    );
    ExitCode::SUCCESS
}

fn default_trust() -> PathBuf {
    default_key().with_file_name("trust.toml")
}

/// `dk-deploy enroll`: a certificate on stdout, or exit 2 with why.
fn enroll(fleet_key: &std::path::Path, identity: &str, agent_key: &str, valid: Duration) -> ExitCode {
    let result = (|| -> Result<String, String> {
        let fleet = SecretKey::load(fleet_key).map_err(|e| e.to_string())?;
        let key = PublicKey::parse(agent_key).map_err(|e| e.to_string())?;
        if identity.is_empty() || identity.len() > 255 || identity.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
            return Err(format!("--identity {identity:?}: must be the agent's identity (no spaces or '/')"));
        }
        let not_after = deploykit::deploy::agent::releases::now().saturating_add(valid.as_secs());
        Ok(Certificate::issue(&fleet, identity, &key, not_after))
    })();
    match result {
        Ok(cert) => {
            println!("{cert}");
            eprintln!("certificate for {identity} written to stdout; install it as the agent's `enrollment` file and restart dk-agent");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dk-deploy: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_trust(c: &Common) -> Result<TrustConfig> {
    match &c.trust {
        Some(p) => TrustConfig::load(p).map_err(|e| Usage(e.to_string()).into()),
        None => {
            let p = default_trust();
            if p.exists() {
                TrustConfig::load(&p).map_err(|e| Usage(e.to_string()).into())
            } else {
                eprintln!("dk-deploy: warning: no trust file ({} or --trust): no agent is trusted; `discover` lists them as untrusted", p.display());
                Ok(TrustConfig::default())
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.common.log.init();
    let Some(command) = &cli.command else {
        if cli.check {
            return check(&cli.common);
        }
        let _ = Cli::command().print_help();
        eprintln!("\ndk-deploy: a command is needed (or --check)");
        return ExitCode::from(2);
    };
    if cli.check {
        eprintln!("dk-deploy: --check takes no command");
        return ExitCode::from(2);
    }
    if let Cmd::Enroll { fleet_key, identity, agent_key, valid } = command {
        return enroll(fleet_key, identity, agent_key, *valid);
    }
    if let Cmd::History { web, site, limit, token_file } = command {
        return history(web, site.as_deref(), *limit, token_file.as_deref(), cli.common.json);
    }
    if let Cmd::Keygen { out } = command {
        let path = out.clone().unwrap_or_else(default_key);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        return match SecretKey::generate().and_then(|k| k.save(&path).map(|_| k)) {
            Ok(k) => {
                eprintln!("private key written to {} (mode 0600); add the public key to the agents' [trusted_keys]:", path.display());
                println!("{}", k.public());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dk-deploy: {e}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dk-deploy: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("dk-deploy: {}", dk_tools::cli::error_text(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("dk-deploy: {}", dk_tools::cli::error_text(&e));
            ExitCode::from(3)
        }
    }
}

fn filters_of(f: &FilterArgs) -> Result<Filters> {
    filters::from_args(&f.identity, &f.class, &f.fact).map_err(|e| Usage(e.to_string()).into())
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let c = &cli.common;
    let Some(command) = cli.command.as_ref() else {
        return Err(Usage("a command is needed (or --check)".into()).into());
    };
    let settings = load_settings(c).map_err(|e| Usage(e.to_string()))?;
    let user = c.user.clone().or_else(|| std::env::var("USER").ok()).or_else(|| std::env::var("LOGNAME").ok()).unwrap_or_else(|| "unknown".into());
    let key_path = c.key.clone().unwrap_or_else(default_key);
    let key = match SecretKey::load(&key_path) {
        Ok(k) => Some(k),
        Err(e) => return Err(Usage(format!("{e}\n  (create one with `dk-deploy keygen`, or pass --key / DK_DEPLOY_KEY)")).into()),
    };
    // Validate everything local before touching the bus.
    let trust = load_trust(c)?;
    let (filters, site) = match command {
        Cmd::Keygen { .. } | Cmd::Enroll { .. } | Cmd::History { .. } => unreachable!("handled in main"),
        Cmd::Discover { filters } => (filters_of(filters)?, None),
        Cmd::Tags { site, filters, .. } | Cmd::Status { site, filters } | Cmd::Rollback { site, filters, .. } => (filters_of(filters)?, Some(site.clone())),
        Cmd::Deploy { site, tag, filters, .. } => {
            deploykit::git::refs::validate_tag_name(tag).map_err(|e| Usage(e.to_string()))?;
            (filters_of(filters)?, Some(site.clone()))
        }
    };
    let broker = match &settings.broker {
        Some(section) => c.broker.with_section(section),
        None => c.broker.clone(),
    };
    let client = broker.connect().await?;
    let mut cc = ControllerConfig::new(user.clone(), key);
    cc.destinations.deploy = c.deploy_topic.clone().unwrap_or(settings.deploy_destination);
    cc.reply_to = c.reply_to.clone().or(settings.reply_destination);
    cc.destinations.rollouts = settings.rollouts_destination.clone();
    cc.trust = std::sync::Arc::new(TrustStore::new(trust));
    let controller = Controller::new(client.clone(), cc).await.context("subscribing to replies")?;
    let window = Window { timeout: c.discovery_timeout, expect: c.expect };
    let code = match command {
        Cmd::Keygen { .. } | Cmd::Enroll { .. } | Cmd::History { .. } => unreachable!(),
        Cmd::Discover { .. } => {
            let found = controller.discover(filters, window).await?;
            let trusted = found.iter().filter(|d| d.untrusted.is_none()).count();
            if c.json {
                let list: Vec<serde_json::Value> = found
                    .iter()
                    .map(|d| match &d.untrusted {
                        None => d.reply.data.clone(),
                        Some(why) => serde_json::json!({"identity": d.reply.node, "untrusted": why}),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for d in &found {
                    let r = &d.reply;
                    if let Some(why) = &d.untrusted {
                        println!("{:<24} untrusted: {}", printable(&r.node), printable(why));
                        continue;
                    }
                    match &d.announce {
                        Some(a) => {
                            let sites: Vec<String> = a.sites.iter().map(|s| format!("{}={}", s.name, s.current.as_deref().unwrap_or("-"))).collect();
                            let facts: Vec<String> = a.facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            println!("{:<24} classes [{}] facts [{}] sites [{}] v{}", r.node, a.classes.join(","), facts.join(","), sites.join(","), a.version);
                        }
                        None => println!("{:<24} {}", r.node, r.error.as_deref().unwrap_or("(no description)")),
                    }
                }
                eprintln!("{trusted} servers{}", if found.len() > trusted { format!(", {} untrusted answers", found.len() - trusted) } else { String::new() });
            }
            if trusted == 0 {
                eprintln!("dk-deploy: no trusted server answered within {:?}: {}", window.timeout, unanswered_hint(controller.public_key().as_deref()));
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Tags { limit, .. } => {
            let site = site.unwrap_or_default();
            let replies = controller.tags(&site, filters, *limit, window).await?;
            say_if_unanswered(&controller, &replies, window);
            tags_output(&replies, c.json)?
        }
        Cmd::Status { .. } => {
            let site = site.unwrap_or_default();
            let replies = controller.status(&site, filters, window).await?;
            say_if_unanswered(&controller, &replies, window);
            if c.json {
                println!("{}", serde_json::to_string_pretty(&replies)?);
            } else {
                for r in &replies {
                    let lock = &r.data["lock"];
                    let lock = if lock.is_null() {
                        String::new()
                    } else {
                        format!(
                            "  LOCKED by {} ({}) request {}",
                            lock["user"].as_str().unwrap_or("?"),
                            lock["action"].as_str().unwrap_or("?"),
                            lock["request_id"].as_str().unwrap_or("?")
                        )
                    };
                    match r.state {
                        StepState::Ok => println!("{:<24} live {}{}{lock}", r.node, r.data["current"].as_str().unwrap_or("-"), live_state(&r.data)),
                        _ => println!("{:<24} {}", r.node, r.error.as_deref().unwrap_or("failed")),
                    }
                }
            }
            if replies.is_empty() || replies.iter().any(|r| r.state != StepState::Ok) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Deploy { tag, dry_run: true, .. } => {
            let site = site.unwrap_or_default();
            dry_run(&controller, &site, tag, filters, window, c.json).await?
        }
        Cmd::Deploy { tag, rollout, allow_downgrade, .. } => {
            let site = site.unwrap_or_default();
            rollout_cmd(&controller, DeployAction::Deploy, site, Some(tag.clone()), filters, rollout, *allow_downgrade, window, c.json).await?
        }
        Cmd::Rollback { rollout, .. } => {
            let site = site.unwrap_or_default();
            rollout_cmd(&controller, DeployAction::Rollback, site, None, filters, rollout, false, window, c.json).await?
        }
    };
    drop(controller);
    let _ = client.disconnect().await;
    Ok(code)
}

/// When nobody answered, says why that may be (agents drop what they cannot verify).
fn say_if_unanswered(controller: &Controller, replies: &[deploykit::message::DeployReply], window: Window) {
    if replies.is_empty() {
        eprintln!("dk-deploy: no server answered within {:?}: {}", window.timeout, unanswered_hint(controller.public_key().as_deref()));
    }
}

/// Literal `-I` names: servers a rollout expects to answer.
fn literal_identities(filters: &Filters) -> Vec<String> {
    filters.identity.iter().filter(|i| !(i.len() >= 2 && i.starts_with('/') && i.ends_with('/'))).cloned().collect()
}

fn tags_output(replies: &[deploykit::message::DeployReply], json: bool) -> Result<ExitCode> {
    use std::collections::BTreeMap;
    let mut tags: BTreeMap<String, (i64, usize)> = BTreeMap::new();
    let mut branches: BTreeMap<String, (i64, usize)> = BTreeMap::new();
    for r in replies {
        if let Ok(list) = serde_json::from_value::<deploykit::message::deploy::TagList>(r.data.clone()) {
            for t in list.tags {
                let e = tags.entry(t.name).or_insert((t.date, 0));
                e.1 += 1;
            }
            for b in list.branches {
                let e = branches.entry(b.name).or_insert((b.date, 0));
                e.1 += 1;
            }
        }
    }
    let sorted = |m: BTreeMap<String, (i64, usize)>| {
        let mut v: Vec<(String, i64, usize)> = m.into_iter().map(|(n, (d, c))| (n, d, c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        v
    };
    let (tags, branches) = (sorted(tags), sorted(branches));
    if json {
        let j = |v: &[(String, i64, usize)]| v.iter().map(|(n, d, c)| serde_json::json!({"name": n, "date": d, "servers": c})).collect::<Vec<_>>();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"servers": replies.len(), "tags": j(&tags), "branches": j(&branches)}))?);
    } else {
        println!("{} servers answered", replies.len());
        for (title, list) in [("tags", &tags), ("branches", &branches)] {
            println!("{title}:");
            for (n, d, c) in list.iter() {
                println!("  {n:<32} {c:>4} servers  {}", deploykit::git::push::rfc3339(*d, 0));
            }
        }
        for r in replies.iter().filter(|r| r.state != StepState::Ok) {
            println!("{}: {}", r.node, r.error.as_deref().unwrap_or("failed"));
        }
    }
    Ok(if replies.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn dry_run(controller: &Controller, site: &str, tag: &str, filters: Filters, window: Window, json: bool) -> Result<ExitCode> {
    let replies = controller.dry_run(site, tag, filters, window).await?;
    say_if_unanswered(controller, &replies, window);
    if json {
        println!("{}", serde_json::to_string_pretty(&replies)?);
    } else {
        println!("dry run: deploy {tag} to site {site}: {} servers (nothing changes)", replies.len());
        for r in &replies {
            if r.state != StepState::Ok {
                println!("{}: {}", r.node, r.error.as_deref().unwrap_or("refused"));
                continue;
            }
            let d = &r.data;
            let lock = if d["lock"].is_null() { String::new() } else { format!(" (LOCKED by {})", d["lock"]["user"].as_str().unwrap_or("?")) };
            println!(
                "{}: {} -> {} {}{lock}",
                r.node,
                d["current"].as_str().unwrap_or("(nothing live)"),
                tag,
                &d["commit"].as_str().unwrap_or("")[..12.min(d["commit"].as_str().unwrap_or("").len())]
            );
            let line = |e: &serde_json::Value| {
                let c = e["commit"].as_str().unwrap_or("");
                format!("{} {} ({})", printable(c.get(..10).unwrap_or(c)), printable(e["subject"].as_str().unwrap_or("")), printable(e["author"].as_str().unwrap_or("")))
            };
            if let Some(removed) = d["removed"].as_array().filter(|a| !a.is_empty()) {
                println!(
                    "  WARNING: deploying {tag} removes {} now live on {} (--allow-downgrade to deploy it anyway):",
                    deploykit::deploy::agent::steps::commits_text(removed.len(), 200),
                    printable(&r.node)
                );
                for e in removed {
                    println!("    - {}", line(e));
                }
            }
            for e in d["log"].as_array().into_iter().flatten() {
                println!("    {}", line(e));
            }
        }
    }
    Ok(if !replies.is_empty() && replies.iter().all(|r| r.state == StepState::Ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[allow(clippy::too_many_arguments)]
async fn rollout_cmd(
    controller: &Controller,
    action: DeployAction,
    site: String,
    tag: Option<String>,
    filters: Filters,
    args: &RolloutArgs,
    allow_downgrade: bool,
    window: Window,
    json: bool,
) -> Result<ExitCode> {
    let spec = RolloutSpec {
        action,
        site: site.clone(),
        tag: tag.clone(),
        filters: filters.clone(),
        canary: args.canary,
        batch: args.batch,
        max_failures: args.max_failures,
        timeout: args.timeout,
        discovery: window,
        expected: literal_identities(&filters),
        allow_missing: args.allow_missing,
        allow_downgrade,
    };
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!(Usage("not a terminal: add --yes to confirm the rollout".into()));
        }
        let nodes = controller.select(&site, &filters, window).await?;
        let expected = literal_identities(&filters);
        let missing: Vec<&String> = expected.iter().filter(|e| !nodes.contains(e)).collect();
        if !missing.is_empty() || window.expect.is_some_and(|n| nodes.len() < n) {
            eprintln!("warning: expected servers missing: {} ({} answered)", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "), nodes.len());
        }
        let what = match &tag {
            Some(t) => format!("deploy {t} to"),
            None => "roll back".into(),
        };
        eprint!("{what} site {site} on {} servers ({}), canary {}, batch {:?}? [y/N] ", nodes.len(), nodes.join(", "), args.canary, args.batch);
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            eprintln!("cancelled");
            return Ok(ExitCode::from(1));
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let tty = !json && std::io::stdout().is_terminal();
    let view = tokio::spawn(async move {
        let mut p = Progress::new(tty);
        while let Some(e) = rx.recv().await {
            if !json {
                p.event(&e);
            }
        }
    });
    // Ctrl-C: stop scheduling further batches; the running one finishes.
    let ctrlc = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: no further batch will start (Ctrl-C again to abandon waiting)");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let started_at = deploykit::message::unix_now() as i64;
    let result = controller.rollout(&spec, tx, stop).await;
    ctrlc.abort();
    let _ = view.await;
    let report = match result {
        Ok(r) => r,
        Err(e @ deploykit::deploy::controller::ControlError::NoServers { .. }) => {
            eprintln!("dk-deploy: {e} (or raise --discovery-timeout)");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let entry = audit::AuditEntry::of_report(controller.user(), controller.public_key(), &filters, &report, args.reason.as_deref());
    let (id, selection) = (RolloutRecord::new_id(), filters::shown(&entry.filters));
    let run = Run {
        id: &id,
        controller: "dk-deploy",
        user: controller.user(),
        reason: args.reason.as_deref(),
        action,
        site: &entry.site,
        tag: entry.tag.as_deref(),
        selection: &selection,
        started_at,
    };
    let record = RolloutRecord::finished(&run, report.outcome(), report.stopped.as_deref(), Some(&report));
    if let Err(e) = controller.publish_record(&record).await {
        eprintln!("dk-deploy: WARNING: rollout record not published (dk-web's History will miss this rollout): {e}");
    }
    let audit_path = args.audit_log.clone().unwrap_or_else(audit::default_path);
    if let Err(e) = audit::append(&audit_path, &entry) {
        eprintln!("dk-deploy: WARNING: audit log {} not written: {e}", audit_path.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// " (unverified: …)" when a status reply's journal says the live release is not good.
fn live_state(data: &serde_json::Value) -> String {
    let Some(current) = data["current"].as_str() else { return String::new() };
    let state = data["releases"].as_array().and_then(|rs| rs.iter().find(|r| r["dir"].as_str() == Some(current))).and_then(|r| r["state"].as_str());
    match state {
        Some("good") | None => String::new(),
        Some("unverified") => " (unverified: its post-deploy failed or never finished; deploy the same tag again to finish it)".into(),
        Some(other) => format!(" ({})", other.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect::<String>()),
    }
}
