//! dk-broker: the embedded single-node STOMP broker as a daemon.

use anyhow::{bail, Context, Result};
use clap::Parser;
use deploykit::broker::{self, BrokerConfig};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// Embedded single-node STOMP broker (STOMP 1.0–1.2) for one machine, demos and tests.
///
/// NOT FOR PRODUCTION: in memory only (nothing survives a restart), no
/// clustering, no TLS, no per-destination permissions. A fleet should use
/// RabbitMQ or ActiveMQ.
#[derive(Debug, Parser)]
#[command(
    name = "dk-broker",
    version,
    after_help = "\
Destinations: /topic/NAME (fan-out, not kept), /queue/NAME (round-robin, kept while
no one listens, at most --max-queue-len), /temp-queue/NAME (private reply queue).

Examples:
  dk-broker                                  # 127.0.0.1:61613, any login accepted
  dk-broker --listen 127.0.0.1:0             # ephemeral port, printed on stderr
  dk-broker --users-file /etc/deploykit/broker-users --heartbeat 5000
  RUST_LOG=deploykit=debug dk-broker -v      # log every frame

The users file has one `login:passcode` a line (# comments allowed); keep it
readable by the broker's user only. On start, `dk-broker listening on ADDR` is
printed on stderr. SIGTERM or SIGINT shut down gracefully (exit 0)."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:61613", env = "DK_BROKER_LISTEN")]
    listen: SocketAddr,

    /// File of `login:passcode` lines; without it any login is accepted.
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,

    /// Heart-beat the broker offers both ways, in milliseconds (0 disables).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    heartbeat: u32,

    /// Most undelivered messages a queue keeps; the oldest are dropped beyond it.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_queue_len: usize,

    /// More logging: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();

    let users = match &args.users_file {
        None => None,
        Some(path) => Some(read_users(path)?),
    };
    let config = BrokerConfig { listen: args.listen, users, heartbeat_ms: (args.heartbeat, args.heartbeat), max_queue_len: args.max_queue_len.max(1), ..BrokerConfig::default() };
    let listener = broker::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    eprintln!("dk-broker listening on {addr}");
    broker::serve(listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Reads and parses the users file, warning when others can read it.
fn read_users(path: &PathBuf) -> Result<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read users file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "users file is readable by group or others; chmod 600 it");
            }
        }
    }
    match broker::parse_users(&text) {
        Ok(users) if users.is_empty() => {
            bail!("users file {} has no `login:passcode` line", path.display())
        }
        Ok(users) => Ok(users),
        Err(line) => bail!("users file {}: line {line} is not `login:passcode`", path.display()),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("signal received; shutting down");
}
