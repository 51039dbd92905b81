//! Deploys: the agent on each server, the controller that drives a rollout,
//! and what both share (keys and signatures, filters, the replay cache, the audit log).
//!
//! - [`keys`]: Ed25519 keys (PKCS#8 PEM files) and request signatures.
//! - [`identity`]: an agent's own key, certificate and the signing of its replies.
//! - [`trust`]: enrollment certificates and the controllers' trust in agents.
//! - [`filters`]: MCollective-style selection (identity, class, fact).
//! - [`replay`]: the agents' bounded, persisted replay cache.
//! - [`agent`]: dk-agent (config, import of the original agent's files, hooks, releases, locks, pipelines).
//! - [`controller`]: dk-deploy's and dk-web's library (discover, tags, rollouts) and dk-deploy's `deploy.toml`.
//! - [`audit`]: the operator-side audit log.
//! - [`record`]: the signed rollout records every controller publishes (the one audit trail).

pub mod agent;
pub mod audit;
pub mod controller;
pub mod filters;
pub mod identity;
pub mod keys;
pub mod record;
pub mod replay;
pub mod trust;
