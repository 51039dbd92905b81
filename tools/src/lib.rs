//! Shared edges of the `dk-*` binaries: command-line broker options and logging.
//! Everything else lives in the `deploykit` core crate.

pub mod cli;
pub mod deploy_view;
