//! dk-fetch, the successor of stomp-git: keep each server's clones fresh the
//! moment a commit message names them — or, for a repo with `trigger = "build"`,
//! the moment one of its CI jobs reports a success, checking out exactly the
//! built commit (the original's "the success message is received by all the
//! servers that should have that code, and they git fetch").
//!
//! - [`config`]: `fetch.toml` (broker, topics, `state_dir`, `[repos.NAME]` with
//!   `trigger` and `jobs`) and its checks against the machine.
//! - [`legacy_import`]: stomp-git's YAML → `fetch.toml` (`--import-legacy`).
//! - [`ops`]: one fetch of one repository and the checkout its mode asks for
//!   (normal, trusting, dangerous, branch, atomic, puppetmaster, tags), of the
//!   branch tip or of a verified built commit.
//! - [`locks`]: stale `index.lock` / `shallow.lock` healing.
//! - [`privilege`]: running a repository's git work as its `user` in a child process.
//! - [`daemon`]: subscriptions (commits; builds when needed), coalescing,
//!   reconcile (build-triggered repos: the recorded built commit), signals.
pub mod config;
pub mod daemon;
pub mod legacy_import;
pub mod locks;
pub mod ops;
pub mod privilege;

pub use config::{ConfigError, Credentials, FetchConfig, Mode, Problem, RepoConfig, Trigger};
pub use ops::{FetchError, FetchOutcome};
