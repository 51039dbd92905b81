//! Command-line pieces every tool shares: `--broker` and friends, and logging set-up.

use crate::exit::{Exit, OrExit};
use anyhow::{Context, Result};
use clap::Args;
use deploykit::stomp::{ClientConfig, HeartbeatConfig, TlsConfig, Version};
use std::path::PathBuf;
use std::time::Duration;

/// The default broker when neither `--broker` nor `DK_BROKER_URL` is given.
pub const DEFAULT_BROKER: &str = "stomp://127.0.0.1:61613";

/// Broker connection options shared by every tool.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker URL: stomp://[user[:pass]@]host:port, stomp+ssl://…, or failover:(url,url)?options.
    /// Prefer DK_BROKER_URL for URLs with a password: argv is visible to every local user.
    #[arg(global = true, long, env = "DK_BROKER_URL", default_value = DEFAULT_BROKER, hide_env_values = true)]
    pub broker: String,
    /// Virtual host for the STOMP `host` header (RabbitMQ: `/`).
    #[arg(global = true, long, default_value = "/")]
    pub vhost: String,
    /// Login (overrides the URL's).
    #[arg(global = true, long, env = "DK_BROKER_LOGIN")]
    pub login: Option<String>,
    /// File holding the passcode (first line); never pass secrets on the command line.
    /// Under systemd, a credential: `LoadCredential=broker-passcode:/etc/deploykit/passcode`
    /// with `DK_BROKER_PASSCODE_FILE=%d/broker-passcode`.
    #[arg(global = true, long, env = "DK_BROKER_PASSCODE_FILE", value_name = "FILE")]
    pub passcode_file: Option<PathBuf>,
    /// Heart-beat interval in milliseconds, both ways (0 disables; emulated if the broker offers none).
    #[arg(global = true, long, default_value_t = 10_000, value_name = "MS")]
    pub heartbeat: u64,
    /// Keep idle paths open the original way: SEND a single newline to this destination
    /// instead of writing bare EOL heart-beats (for brokers that reject EOLs).
    #[arg(global = true, long, value_name = "DEST")]
    pub keepalive_destination: Option<String>,
    /// Highest STOMP version to offer (1.0, 1.1 or 1.2).
    #[arg(global = true, long, default_value = "1.2", value_parser = parse_version)]
    pub stomp_version: Version,
    /// PEM file of CA certificates for stomp+ssl:// (default: the system's).
    #[arg(global = true, long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for stomp+ssl://.
    #[arg(global = true, long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(global = true, long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds to wait for CONNECTED and for receipts.
    #[arg(global = true, long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Connection attempts before giving up at start-up (0 = keep trying).
    #[arg(global = true, long, default_value_t = 3, value_name = "N")]
    pub connect_attempts: u32,
}

/// Parses a STOMP version argument.
fn parse_version(s: &str) -> Result<Version, String> {
    Version::parse(s).ok_or_else(|| format!("{s:?} is not a STOMP version (1.0, 1.1 or 1.2)"))
}

impl BrokerArgs {
    /// Whether `--broker` (or DK_BROKER_URL) was given, i.e. overrides a config file's broker.
    pub fn overridden(&self) -> bool {
        std::env::args().any(|a| a == "--broker" || a.starts_with("--broker=")) || std::env::var_os("DK_BROKER_URL").is_some() || self.broker != DEFAULT_BROKER
    }

    /// These options with a config file's `[broker]` section filled in, unless `--broker` / DK_BROKER_URL overrides it.
    pub fn with_section(&self, section: &deploykit::config::BrokerSection) -> BrokerArgs {
        let mut args = self.clone();
        args.apply_config(Some(&section.url), Some(&section.vhost), section.login.as_deref(), section.passcode_file.as_deref());
        args
    }

    /// Takes a config file's broker settings unless `--broker` / DK_BROKER_URL was given.
    pub fn apply_config(&mut self, url: Option<&str>, vhost: Option<&str>, login: Option<&str>, passcode_file: Option<&std::path::Path>) {
        if self.overridden() {
            return;
        }
        if let Some(u) = url {
            self.broker = u.to_owned();
        }
        if let Some(v) = vhost {
            self.vhost = v.to_owned();
        }
        if self.login.is_none() {
            self.login = login.map(str::to_owned);
        }
        if self.passcode_file.is_none() {
            self.passcode_file = passcode_file.map(ToOwned::to_owned);
        }
    }

    /// Connects with these options (exit code 3 if the broker stays unreachable, 2 if the options are wrong).
    pub async fn connect(&self) -> Result<deploykit::stomp::Client> {
        let config = self.client_config()?;
        deploykit::stomp::Client::connect(config).await.context("connecting to the broker").or_exit(Exit::Broker)
    }

    /// Builds the client configuration these options describe (errors end the tool with exit code 2).
    pub fn client_config(&self) -> Result<ClientConfig> {
        self.build_client_config().or_exit(Exit::Usage)
    }

    fn build_client_config(&self) -> Result<ClientConfig> {
        let mut config = ClientConfig::new(&self.broker).context("bad --broker / DK_BROKER_URL")?;
        config.handshake.vhost = self.vhost.clone();
        if let Some(login) = &self.login {
            config.handshake.login = Some(login.clone());
        }
        if let Some(file) = &self.passcode_file {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading passcode file {}", file.display()))?;
            let pass = text.lines().next().unwrap_or_default().to_owned();
            config.handshake.passcode = Some(deploykit::stomp::url::Secret::new(pass));
        } else if let Ok(pass) = std::env::var("DK_BROKER_PASSCODE") {
            config.handshake.passcode = Some(deploykit::stomp::url::Secret::new(pass));
        }
        config.handshake.heartbeat = if self.heartbeat == 0 { HeartbeatConfig::off() } else { HeartbeatConfig::every(Duration::from_millis(self.heartbeat)) };
        if let Some(dest) = &self.keepalive_destination {
            config.handshake.heartbeat.wire = deploykit::stomp::KeepaliveWire::SendTo(dest.clone());
        }
        config.handshake.versions = Version::ALL.iter().copied().filter(|v| *v <= self.stomp_version).collect();
        config.handshake.tls = TlsConfig { ca_file: self.tls_ca.clone(), client_cert: self.tls_cert.clone(), client_key: self.tls_key.clone(), ..TlsConfig::default() };
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0) {
            anyhow::bail!("--connect-timeout must be a positive number of seconds");
        }
        let timeout = Duration::from_secs_f64(self.connect_timeout);
        config.handshake.timeout = timeout;
        config.receipt_timeout = timeout;
        if config.url.options.startup_max_reconnect_attempts.is_none() && self.connect_attempts > 0 {
            config.url.options.startup_max_reconnect_attempts = Some(self.connect_attempts);
        }
        Ok(config)
    }
}

/// `--metrics-listen`: where a daemon serves `/healthz` and Prometheus `/metrics`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Serve GET /healthz (JSON; 503 while disconnected) and GET /metrics (Prometheus) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "DK_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl HealthArgs {
    /// Serves `health` on `--metrics-listen`, if given (exit code 4 if the address cannot be bound).
    /// Daemons call it once they run, after their metrics follow the daemon's events
    /// ([`deploykit::health::Health::follow`]), so that `/healthz` answers only for a working daemon.
    pub async fn serve(&self, health: &deploykit::health::Health) -> Result<()> {
        if let Some(addr) = self.metrics_listen {
            let (local, _task) = health.serve(addr).await.with_context(|| format!("--metrics-listen {addr}")).or_exit(Exit::Listen)?;
            tracing::info!("serving /healthz and /metrics on http://{local}");
        }
        Ok(())
    }
}

/// Loads a tool's configuration; a broken one is printed as `NAME: error` and
/// gives the exit code every daemon documents: 1 under `--check`, else 2.
pub fn load_config<T, E: std::fmt::Display>(name: &str, check: bool, load: impl FnOnce() -> Result<T, E>) -> Result<T, std::process::ExitCode> {
    load().map_err(|e| {
        eprintln!("{name}: {e}");
        std::process::ExitCode::from(if check { 1 } else { 2 })
    })
}

/// `--check`'s output: one `FILE: problem` line each, or `FILE: ok (SUMMARY)`; exit 1 if any problem.
pub fn check_report(file: &std::path::Path, problems: &[impl std::fmt::Display], summary: &str) -> std::process::ExitCode {
    for p in problems {
        println!("{}: {p}", file.display());
    }
    if problems.is_empty() {
        println!("{}: ok ({summary})", file.display());
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// The config file to read: the one given, else `default` when it exists, else none (defaults in code).
pub fn config_path(given: Option<&std::path::Path>, default: &str) -> Option<std::path::PathBuf> {
    given.map(ToOwned::to_owned).or_else(|| std::path::Path::new(default).exists().then(|| std::path::PathBuf::from(default)))
}

/// Runs a tool's async body on a multi-thread runtime and turns its result into
/// the exit code: the body's own, or 3 after printing `NAME: error` (what every
/// daemon documents for "broker unreachable at start-up" and other bus errors).
pub fn block_on(name: &str, body: impl std::future::Future<Output = Result<std::process::ExitCode>>) -> std::process::ExitCode {
    block_on_or(name, 3, body)
}

/// [`block_on`] for tools whose documented code for an error is `on_error`.
pub fn block_on_or(name: &str, on_error: u8, body: impl std::future::Future<Output = Result<std::process::ExitCode>>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: {}", error_text(&e));
            match e.chain().find_map(|c| c.downcast_ref::<crate::exit::ExitError>()) {
                Some(tagged) => tagged.code.into(),
                None => std::process::ExitCode::from(on_error),
            }
        }
    }
}

/// An error with its causes, `outer: cause: …`, leaving out a cause whose text the
/// message already carries (core's errors often print their source themselves).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

/// `--import-legacy`: reads `file` and imports it with `import`, then [`import_report`].
pub fn import_legacy_file(
    name: &str,
    file: &std::path::Path,
    import: impl FnOnce(&str) -> Result<deploykit::legacy::Imported, deploykit::config::ConfigError>,
) -> std::process::ExitCode {
    let result = deploykit::legacy::read(file).and_then(|text| import(&text)).map_err(|e| match e {
        deploykit::config::ConfigError::Read { .. } => e.to_string(),
        other => format!("{}: {other}", file.display()),
    });
    import_report(name, result)
}

/// An import's outcome: the secret files written (with `--secrets-dir`), the TOML on
/// stdout and each note on stderr (`NAME: note: …`); exit 0. An error: `NAME: error`, exit 2.
/// Secrets appear only in the files, never on stdout or stderr.
pub fn import_report(name: &str, result: Result<deploykit::legacy::Imported, String>) -> std::process::ExitCode {
    let imported = match result {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{name}: {e}");
            return Exit::Usage.into();
        }
    };
    if let Err(e) = imported.write_secrets() {
        eprintln!("{name}: writing a secret file: {e}");
        return Exit::Usage.into();
    }
    print!("{}", imported.toml);
    for n in &imported.notes {
        eprintln!("{name}: note: {n}");
    }
    std::process::ExitCode::SUCCESS
}

/// The import options of `--secrets-dir`.
pub fn import_options(secrets_dir: Option<&std::path::Path>) -> deploykit::legacy::ImportOptions {
    deploykit::legacy::ImportOptions { secrets_dir: secrets_dir.map(ToOwned::to_owned) }
}
