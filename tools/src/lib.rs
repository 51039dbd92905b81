//! Shared edges of the `dk-*` binaries: command-line broker options, logging,
//! the exit-code table and the daemons' runtime loop.
//! Everything else lives in the `deploykit` core crate.

pub mod cli;
pub mod daemon;
pub mod deploy_view;
pub mod exit;
pub mod generate;
pub mod logging;
