#![warn(missing_docs)]
//! deploykit core: everything the `dk-*` tools and the C, Python and JVM
//! bindings share.
//!
//! # Layout
//!
//! - [`stomp`]: the STOMP 1.0–1.2 bus.
//!   - [`stomp::frame`]: `Frame`, `Command`, `Headers`.
//!   - [`stomp::codec`]: the tokio-util codec (escaping per version, limits,
//!     heart-beat EOLs, incremental parsing).
//!   - [`stomp::url`]: broker URLs, including the Ruby gem / ActiveMQ failover form.
//!   - [`stomp::tls`]: rustls set-up for `stomp+ssl://`.
//!   - [`stomp::heartbeat`]: heart-beat negotiation and emulation policy.
//!   - [`stomp::connection`]: one framed transport (TCP or TLS) and the STOMP handshake.
//!   - [`stomp::client`]: the async client: failover, reconnect, subscriptions,
//!     receipts, transactions, connection events.
//! - [`broker`]: the embedded single-node broker behind `dk-broker`, demos and tests.
//! - [`message`]: the typed messages (commit, build, package, event, deploy),
//!   JSON v1 and legacy text on the wire, and the `Publisher`.
//!
//! - [`blocking`]: the blocking facade (own runtime, polling or callback
//!   subscriptions) that the C, Python and JVM bindings call.
//! - [`git`]: reading pushes (commits of a ref, newest first) and `deploykit.*`
//!   settings from git repositories with libgit2.
//! - [`fetch`]: dk-fetch: config, fetching and the checkout modes, the daemon.
//! - [`deploy`]: dk-agent and dk-deploy: signed requests, canary-first rollouts,
//!   release directories with atomic link swaps, hooks, locks, audit.
//! - [`jenkins`]: dk-jenkins (commit → Jenkins trigger: config, routing, quiet
//!   period, remote API, daemon) and dk-notify (build message from a job's environment).
//! - [`svn`]: reading a Subversion commit through `svnlook` (argument vectors only).
//! - [`forge`]: GitHub, GitLab and Gitea webhook payloads read into commit messages, signatures.
//! - [`webhook`]: dk-webhook's HTTP receiver (axum), delivery dedup, spool-backed publishing.
//! - [`web`]: dk-web, the browser UI over the deploy controller (axum, maud, SQLite history, SSE).
//! - [`keepalive`]: dk-keepalive: keeping idle paths open, and probing how long they stay open.
//! - [`durable`]: durable state files (temp file, fsync, rename, directory fsync).
//! - [`nofollow`]: file operations inside a trusted directory that never follow a symlink.
//! - [`outbox`]: spool-first publishing with one drainer task (dk-webhook, dk-reprepro).
//! - [`spool`]: the on-disk spool of messages not sent yet (hooks, webhooks),
//!   drained oldest first with receipts.
//! - [`debrepo`]: dk-reprepro: complete `.deb`s from incoming directories into reprepro, package messages.
//! - [`aptwatch`]: dk-apt-watch: package messages in, one `apt-get update` per burst out.
//! - [`coalesce`]: a burst of triggers → one run (quiet period, minimum interval).
//! - [`config`]: what every daemon's TOML config shares (errors with line/column or key, `[broker]`, durations).
//! - [`legacy`]: what every `--import-legacy` shares (the original's YAML, `rserver` → `[broker]`, secrets kept out of the TOML).
//! - [`health`]: every daemon's `/healthz` (one JSON shape) and Prometheus `/metrics` (`prometheus-client`: connected, reconnects, process, per-daemon labelled series).
//! - [`user`]: password-database users and switching a child to one (supplementary groups included).
//! - [`command`]: external programs by argument vector, with a time limit.
//!
//! Tools are thin `main.rs` files over these modules; bindings call the same
//! code through the blocking facade.
//!
//! # Features
//!
//! Without any: `stomp`, `message`, `blocking`, `spool`, `durable`, `svn` (what
//! the C and JVM bindings link). `git`: [`git`] (libgit2, no network transport;
//! the Python binding adds it). `fetch-transports`: libgit2's ssh and https
//! (OpenSSL). `broker`: [`broker`]. `daemons`: all of those and every daemon's
//! module. `web`: `daemons` and [`web`]. Default: `daemons` and `web`.

#[cfg(feature = "daemons")]
pub mod aptwatch;
pub mod blocking;
#[cfg(feature = "broker")]
pub mod broker;
#[cfg(feature = "daemons")]
pub mod coalesce;
#[cfg(feature = "daemons")]
pub mod command;
#[cfg(feature = "daemons")]
pub mod config;
// The one lifecycle: the broker and every daemon run on it.
#[cfg(feature = "broker")]
pub mod daemon;
#[cfg(feature = "daemons")]
pub mod debrepo;
#[cfg(feature = "daemons")]
pub mod deploy;
pub mod durable;
#[cfg(feature = "daemons")]
pub mod fetch;
#[cfg(feature = "daemons")]
pub mod forge;
#[cfg(feature = "git")]
pub mod git;
#[cfg(feature = "daemons")]
pub mod health;
#[cfg(feature = "daemons")]
pub mod jenkins;
#[cfg(feature = "daemons")]
pub mod keepalive;
#[cfg(feature = "daemons")]
pub mod legacy;
pub mod message;
pub mod names;
#[cfg(feature = "daemons")]
pub mod nofollow;
#[cfg(feature = "daemons")]
pub mod outbox;
pub mod spool;
pub mod stomp;
pub mod svn;
#[cfg(feature = "daemons")]
pub mod sys;
#[cfg(feature = "daemons")]
pub mod user;
#[cfg(feature = "web")]
pub mod web;
#[cfg(feature = "daemons")]
pub mod webhook;

/// The crate version, as reported by tools and bindings.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
