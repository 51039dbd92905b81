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
//! - [`jenkins`]: dk-jenkins (commit → Jenkins trigger: config, routing, quiet
//!   period, remote API, daemon) and dk-notify (build message from a job's environment).
//! - [`svn`]: reading a Subversion commit through `svnlook` (argument vectors only).
//! - [`spool`]: the on-disk spool of messages not sent yet (hooks, webhooks),
//!   drained oldest first with receipts.
//!
//! Tools are thin `main.rs` files over these modules; bindings call the same
//! code through the blocking facade.

pub mod blocking;
pub mod broker;
pub mod fetch;
pub mod git;
pub mod jenkins;
pub mod message;
pub mod spool;
pub mod stomp;
pub mod svn;

/// The crate version, as reported by tools and bindings.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
