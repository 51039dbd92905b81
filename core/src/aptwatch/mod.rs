//! dk-apt-watch, the successor of stomp-repo: run `apt-get update` (or any
//! argument vector) when a package this server cares about changes, once per burst.
//!
//! - [`config`]: `apt-watch.toml` (names or globs, distributions, actions, the
//!   command, quiet period and minimum interval).
//! - [`daemon`]: subscription, matching, [`crate::coalesce::Coalescer`], the run and its event line.
//! - [`legacy_import`]: stomp-repo's YAML → `apt-watch.toml` (`--import-legacy`).

pub mod config;
pub mod daemon;
pub mod legacy_import;

pub use config::{AptWatchConfig, PackageMatcher};
pub use daemon::{spawn, start, AptWatchError, AptWatchHandle, RunReport, Stats, WatchEvent};
