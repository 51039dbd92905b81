//! Logging set-up shared by every tool: `-v`/`-q`, `--log-format`, colour only on
//! a terminal, and syslog priority prefixes when stderr is the journal.

use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Plain text (colour only when stderr is a terminal; `<N>` priority prefixes under systemd).
    Text,
    /// One JSON object per line.
    Json,
}

/// `-v`, `-q` and `--log-format`: the same in every tool.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// More logging: -v info, -vv debug, -vvv trace (default: warnings and errors; RUST_LOG overrides).
    #[arg(global = true, short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging: -q errors only, -qq nothing.
    #[arg(global = true, short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log line format.
    #[arg(global = true, long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// The level filter these flags ask for.
    pub fn level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (q, _) if q >= 2 => "off",
            (1, _) => "error",
            (_, 0) => "warn",
            (_, 1) => "info",
            (_, 2) => "debug",
            _ => "trace",
        }
    }

    /// Installs the `tracing` subscriber writing to stderr.
    pub fn init(&self) {
        init(self.level(), self.log_format);
    }
}

/// Installs the subscriber: `RUST_LOG` wins over `level`.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Text if stderr_is_journal() => builder.with_ansi(false).without_time().event_format(Prioritised(format::format().without_time().with_target(false))).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// Whether stderr is connected to the journal (systemd sets `JOURNAL_STREAM=dev:inode` of that stream).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The syslog priority of a level, as sd-daemon(3) prefixes read by the journal.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A text format with a `<N>` priority prefix, so `journalctl -p warning` works.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &tracing::Event<'_>) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_levels() {
        let args = |verbose, quiet| LogArgs { verbose, quiet, log_format: LogFormat::Text };
        assert_eq!(args(0, 0).level(), "warn");
        assert_eq!(args(1, 0).level(), "info");
        assert_eq!(args(2, 0).level(), "debug");
        assert_eq!(args(5, 0).level(), "trace");
        assert_eq!(args(0, 1).level(), "error");
        assert_eq!(args(0, 2).level(), "off");
        assert_eq!(priority(&Level::WARN), 4);
    }
}
