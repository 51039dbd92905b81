//! dk-stomp: send to or listen on any STOMP destination from a shell.

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Parser, Subcommand};
use deploykit::stomp::{AckMode, Headers, Message, SendOptions, SubscribeOptions};
use dk_tools::cli::BrokerArgs;
use dk_tools::exit::{Exit, OrExit};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Send to or listen on any STOMP destination (debugging, scripts).
#[derive(Parser, Debug)]
#[command(
    name = "dk-stomp",
    version,
    after_help = concat!(
        "Examples:
  dk-stomp send /topic/deploykit.events 'hello'
  echo '{\"repo\":\"site\"}' | dk-stomp send --receipt -H content-type:application/json /queue/work -
  DK_BROKER_URL='failover:(stomp://mq1:61613,stomp://mq2:61613)' dk-stomp listen /topic/deploykit.git.commits
  dk-stomp listen --count 1 --json --ack client /queue/work

listen --wait: fewer than --count messages before it expired exits 1.

",
    dk_tools::exit_codes!()
))]
struct Cli {
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish one message.
    Send {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Destination, e.g. /topic/deploykit.events or /queue/jobs.
        destination: String,
        /// Body text, or `-` to read the body from stdin.
        body: String,
        /// Extra header `name:value` (repeatable).
        #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// Wait for the broker's RECEIPT (exit 1 if none arrives).
        #[arg(long)]
        receipt: bool,
        /// Ask the broker to persist the message.
        #[arg(long)]
        persistent: bool,
    },
    /// Subscribe and print messages.
    Listen {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Destination to subscribe to.
        destination: String,
        /// Exit after this many messages.
        #[arg(short = 'n', long)]
        count: Option<u64>,
        /// Print one JSON object a line: {"destination","headers","body"} (or "body_base64" when not UTF-8),
        /// plus "decoded" (the deploykit message, JSON or legacy, with its "kind") or "decode_error".
        #[arg(long)]
        json: bool,
        /// Ack mode: auto, client or client-individual (messages are acknowledged after printing).
        #[arg(long, default_value = "auto", value_parser = parse_ack)]
        ack: AckMode,
        /// Most unacknowledged messages in flight (prefetch).
        #[arg(long)]
        prefetch: Option<u32>,
        /// Give up after this many seconds without reaching --count (exit 3).
        #[arg(long, value_name = "SECS")]
        wait: Option<f64>,
        /// Print original-deploykit keepalives (single-newline bodies) too; they are skipped by default.
        #[arg(long)]
        keepalives: bool,
    },
}

/// Parses an ack mode argument.
fn parse_ack(s: &str) -> Result<AckMode, String> {
    AckMode::parse(s).ok_or_else(|| format!("{s:?}: expected auto, client or client-individual"))
}

/// Parses `-H name:value` arguments.
fn parse_headers(raw: &[String]) -> Result<Headers> {
    let mut headers = Headers::new();
    for h in raw {
        let (name, value) = h.split_once(':').with_context(|| format!("header {h:?} must be NAME:VALUE"))?;
        if name.is_empty() {
            bail!("header {h:?} has an empty name");
        }
        headers.push(name, value);
    }
    Ok(headers)
}

/// Writes one message to stdout in the chosen format.
fn print_message(out: &mut impl Write, msg: &Message, json: bool) -> Result<()> {
    if json {
        let mut headers = serde_json::Map::new();
        for (k, v) in msg.headers.iter() {
            headers.entry(k.to_owned()).or_insert_with(|| serde_json::Value::String(v.to_owned()));
        }
        let mut obj = serde_json::Map::new();
        obj.insert("destination".into(), msg.destination().to_string().into());
        obj.insert("headers".into(), headers.into());
        match msg.text() {
            Some(text) => obj.insert("body".into(), text.into()),
            None => obj.insert("body_base64".into(), base64::engine::general_purpose::STANDARD.encode(&msg.body).into()),
        };
        // What deploykit makes of it (JSON v1 or a legacy body), or why it could not.
        match deploykit::message::decode(msg.destination(), &msg.headers, &msg.body) {
            Ok(decoded) => obj.insert("decoded".into(), serde_json::to_value(&decoded)?),
            Err(e) => obj.insert("decode_error".into(), e.to_string().into()),
        };
        serde_json::to_writer(&mut *out, &obj)?;
        writeln!(out)?;
    } else {
        for (k, v) in msg.headers.iter() {
            writeln!(out, "{k}:{v}")?;
        }
        writeln!(out)?;
        out.write_all(&msg.body)?;
        if !msg.body.ends_with(b"\n") {
            writeln!(out)?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// Runs the chosen command; returns the process exit code.
async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Send { broker, destination, body, headers, receipt, persistent } => {
            let headers = parse_headers(&headers)?;
            let body = if body == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).context("reading the body from stdin")?;
                buf
            } else {
                body.into_bytes()
            };
            let client = broker.connect().await?;
            let opts = SendOptions { headers, receipt, persistent, content_type: None };
            client.send_with(&destination, body, opts).await.with_context(|| format!("sending to {destination}"))?;
            client.disconnect().await.context("disconnecting")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Listen { broker, destination, count, json, ack, prefetch, wait, keepalives } => {
            let client = broker.connect().await?;
            let mut sub =
                client.subscribe(&destination, SubscribeOptions { ack, prefetch, ..SubscribeOptions::default() }).await.with_context(|| format!("subscribing to {destination}"))?;
            eprintln!("ready");
            let deadline = wait.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
            let mut seen = 0u64;
            let mut stdout = std::io::stdout().lock();
            while count.is_none_or(|n| seen < n) {
                let next = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, sub.recv()).await {
                        Ok(m) => m,
                        Err(_) => {
                            eprintln!("dk-stomp: {seen} message(s) received before --wait expired");
                            return Ok(ExitCode::from(1));
                        }
                    },
                    None => sub.recv().await,
                };
                let Some(msg) = next else { return Err(anyhow::anyhow!("the connection closed for good")).or_exit(Exit::Broker) };
                if msg.is_keepalive() && !keepalives {
                    if ack != AckMode::Auto {
                        sub.ack(&msg).await?;
                    }
                    continue;
                }
                print_message(&mut stdout, &msg, json)?;
                if ack != AckMode::Auto {
                    sub.ack(&msg).await.context("acknowledging")?;
                }
                seen += 1;
            }
            drop(stdout);
            sub.unsubscribe().await.ok();
            client.disconnect().await.ok();
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    dk_tools::cli::block_on_or("dk-stomp", 1, run(cli))
}
