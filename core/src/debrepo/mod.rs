//! dk-reprepro, the successor of auto-reprepro: include every complete `.deb`
//! dropped into a distribution's incoming directory with reprepro, and say so
//! on the bus.
//!
//! - [`config`]: `reprepro.toml` (base, distributions and their incoming,
//!   archive and failed directories, watch mode, topics).
//! - [`incoming`]: which files are complete `.deb`s (closed by their writer,
//!   settled, not open for writing; temporary names ignored).
//! - [`deb`]: name, version and architecture from the control data (`dpkg-deb --field`).
//! - [`include`]: `reprepro includedeb` and the move to `archive/` or `failed/` (+ `FILE.error`).
//! - [`daemon`]: inotify + periodic scans, one file at a time, package
//!   messages and event lines through a spool; `run_once` for cron.
//! - [`legacy_import`]: auto-reprepro's YAML → `reprepro.toml` (`--import-legacy`).

pub mod config;
pub mod daemon;
pub mod deb;
pub mod include;
pub mod incoming;
pub mod legacy_import;

pub use config::{DistConfig, RepreproConfig, WatchMode};
pub use daemon::{run_once, spawn, start, RepoEvent, RepreproError, RepreproHandle, Stats};
