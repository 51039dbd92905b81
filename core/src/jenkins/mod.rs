//! Jenkins on the bus: `dk-jenkins` (trigger jobs from commit messages, the
//! successor of stomp-jenkins) and `dk-notify` (build messages from a job step,
//! the successor of jenkins-helper).
//!
//! - [`config`]: `jenkins.toml` (repo → jobs, SVN projects, secrets from files or env).
//! - [`legacy_import`]: stomp-jenkins' YAML → `jenkins.toml` (`--import-legacy`; tickets become token files).
//! - [`url`]: job paths (`a/b/c` → `job/a/job/b/job/c`, percent-encoded) and endpoints.
//! - [`route`]: which jobs a commit triggers (`ignore_refs`, `branches`, deletions).
//! - [`quiet`]: the per-job quiet period that turns a burst into one trigger.
//! - [`remote`]: the remote-trigger API (token or basic auth, CSRF crumb, retries).
//! - [`daemon`]: the subscription loop tying them together.
//! - [`notify`]: a build message from the Jenkins environment.

pub mod config;
pub mod daemon;
pub mod legacy_import;
pub mod notify;
pub mod quiet;
pub mod remote;
pub mod route;
pub mod url;

pub use config::JenkinsConfig;
pub use daemon::{DaemonHandle, JenkinsEvent};
pub use remote::{JenkinsRemote, TriggerError, TriggerRequest, Triggered};
