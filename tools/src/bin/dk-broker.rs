//! dk-broker: the embedded single-node STOMP broker as a daemon.

use anyhow::{bail, Context, Result};
use clap::Parser;
use deploykit::broker::{self, BrokerConfig};
use deploykit::stomp::Limits;
use dk_tools::daemon::{RunOptions, Signals};
use dk_tools::exit::{Exit, OrExit};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Embedded single-node STOMP broker (STOMP 1.0–1.2) for one machine, demos and tests.
///
/// NOT FOR PRODUCTION: in memory only (nothing survives a restart), no
/// clustering, no TLS, no per-destination permissions. A fleet should use
/// RabbitMQ or ActiveMQ.
#[derive(Debug, Parser)]
#[command(
    name = "dk-broker",
    version,
    after_help = concat!("\
Destinations: /topic/NAME (fan-out, not kept), /queue/NAME (round-robin, kept while
no one listens, at most --max-queue-len), /temp-queue/NAME (private reply queue).

Limits (memory and connections; every one has a flag):
  Before CONNECT is accepted a client may send frames of at most 8 KiB (32 headers of
  at most 4 KiB) and must log in within --login-timeout; after it, --max-frame-size.
  At most --max-connections sockets, --max-pending-connections of them not logged in,
  --max-connections-per-ip from one address (loopback exempt unless
  --per-ip-cap-on-loopback): beyond them a socket gets an ERROR and is closed at once. Retained messages (queued, waiting for credit, unacknowledged, not
  yet written) and open transactions share --max-bytes; one queue (or one topic
  subscription's backlog) holds at most --max-queue-len messages and
  --max-destination-bytes. A full queue nobody listens to drops its oldest messages; a
  full queue with subscribers pauses its publishers, then drops its oldest; when
  --max-bytes is reached the oldest messages of unwatched queues go first, and if that
  is not enough the SEND is refused with ERROR `broker memory budget exhausted`. A
  session may hold --max-open-transactions, each of at most --max-transaction-bytes.
  Sizes take K, M, G (powers of 1024) suffixes: 64M, 512KiB, 1G.

Examples:
  dk-broker                                  # 127.0.0.1:61613, any login accepted
  dk-broker --listen 127.0.0.1:0             # ephemeral port, printed on stderr
  dk-broker --users-file /etc/deploykit/broker-users --heartbeat 5000
  dk-broker --max-bytes 1G --max-connections 4096 --max-connections-per-ip 256
  RUST_LOG=deploykit=debug dk-broker -v      # log every frame (-v info, -vv debug)

The users file has one `login:passcode` a line (# comments allowed); keep it
readable by the broker's user only. On start, `dk-broker listening on ADDR` is
printed on stderr. SIGTERM or SIGINT shut down gracefully (exit 0); SIGHUP is logged
and changes nothing (settings are read at start).

",
    dk_tools::exit_codes!()
))]
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

    /// Most bytes of undelivered messages one queue (or topic subscription backlog) keeps.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    max_destination_bytes: usize,

    /// Most bytes all retained messages and open transactions may hold together.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    max_bytes: usize,

    /// Largest frame a logged-in client may send.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    max_frame_size: usize,

    /// Most open connections.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,

    /// Most connections that have not logged in yet.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_pending_connections: usize,

    /// Most open connections from one IP address (loopback peers exempt unless --per-ip-cap-on-loopback).
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections_per_ip: usize,

    /// Apply --max-connections-per-ip to loopback peers (127.0.0.1, ::1) too.
    #[arg(long)]
    per_ip_cap_on_loopback: bool,

    /// Seconds a new connection has to complete CONNECT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    login_timeout: u64,

    /// Most transactions one session may have open.
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_open_transactions: usize,

    /// Most bytes of frames one transaction may buffer.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    max_transaction_bytes: usize,

    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
}

fn main() -> ExitCode {
    let args = dk_tools::generate::parse::<Args>();
    args.log.init();
    dk_tools::cli::block_on_or("dk-broker", 2, run(args))
}

async fn run(args: Args) -> Result<ExitCode> {
    let users = match &args.users_file {
        None => None,
        Some(path) => Some(read_users(path)?),
    };
    let defaults = BrokerConfig::default();
    let config = BrokerConfig {
        listen: args.listen,
        users,
        heartbeat_ms: (args.heartbeat, args.heartbeat),
        max_queue_len: args.max_queue_len.max(1),
        max_destination_bytes: args.max_destination_bytes,
        max_bytes: args.max_bytes,
        limits: Limits { max_frame_size: args.max_frame_size, ..defaults.limits },
        max_connections: args.max_connections,
        max_pending_connections: args.max_pending_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        per_ip_cap_on_loopback: args.per_ip_cap_on_loopback,
        handshake_timeout: Duration::from_secs(args.login_timeout.max(1)),
        max_open_transactions: args.max_open_transactions,
        max_transaction_bytes: args.max_transaction_bytes,
        ..defaults
    };
    let signals = Signals::install()?;
    let listener = broker::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen)).or_exit(Exit::Listen)?;
    let addr = listener.local_addr()?;
    eprintln!("dk-broker listening on {addr}");
    let daemon = broker::spawn(listener, config);
    // SIGHUP: nothing reloads (settings are read at start); the refusal is logged.
    let reload = Box::new(|| Ok(()));
    Ok(dk_tools::daemon::run(daemon, signals, RunOptions { reload, grace: Duration::from_secs(10), client: None }).await)
}

/// Parses a size: bytes, or a number with a K, M or G suffix (powers of 1024; `KiB`, `MB`… also read so).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 65536, 512K, 64M, 1G)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{s:?} is too large"))
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

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("1T").is_err() && parse_size("M").is_err() && parse_size("99999999999999999999G").is_err());
    }
}
