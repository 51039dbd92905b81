//! dk-keepalive: keeping idle paths through firewalls open, and measuring how long they stay open.
//!
//! - [`config`]: `keepalive.toml`: targets (broker, credentials, destination, mode) and the interval.
//! - [`legacy_import`]: stomp-keepalive's YAML → `keepalive.toml` (`--import-legacy`).
//! - [`run`]: one-shot sends (cron, as stomp-keepalive did) and the `--interval` daemon.
//! - [`probe`]: how long an idle connection survives on a path (parallel idle
//!   trials, bisected), and the interval to configure.
//!
//! A keepalive is the original's: a SEND whose body is a single newline, which
//! every receiver ignores, so every subscriber of that destination sees traffic.

pub mod config;
pub mod legacy_import;
pub mod probe;
pub mod run;

pub use config::{KeepaliveConfig, Mode, Target};
pub use probe::{probe, ProbeOptions, ProbeReport};
pub use run::{run, run_with_events, send_once, spawn, KeepaliveEvent, Plan};

/// The keepalive body: a single newline (the original's "bodge-beat").
pub const BODY: &[u8] = b"\n";

/// The destination keepalives go to when none is configured.
pub const DEFAULT_DESTINATION: &str = "/topic/deploykit.keepalive";
