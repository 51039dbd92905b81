//! dk-fetch, the successor of stomp-git: keep each server's clones fresh the
//! moment a commit message names them.
//!
//! - [`config`]: `fetch.toml` (broker, topics, `[repos.NAME]`) and its checks
//!   against the machine.
//! - [`legacy_import`]: stomp-git's YAML → `fetch.toml` (`--import-legacy`).
//! - [`ops`]: one fetch of one repository and the checkout its mode asks for
//!   (normal, trusting, dangerous, branch, atomic, puppetmaster, tags).
//! - [`locks`]: stale `index.lock` / `shallow.lock` healing.
//! - [`privilege`]: running a repository's git work as its `user` in a child process.
//! - [`daemon`]: subscription, coalescing, reconcile, signals.
pub mod config;
pub mod daemon;
pub mod legacy_import;
pub mod locks;
pub mod ops;
pub mod privilege;

pub use config::{ConfigError, Credentials, FetchConfig, Mode, Problem, RepoConfig};
pub use ops::{FetchError, FetchOutcome};
