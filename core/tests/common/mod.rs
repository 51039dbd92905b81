//! Helpers shared by the integration tests.
#![allow(dead_code)]

// The deploy fleet helpers need the daemons; the bus tests (client, conformance, faults) run without them.
#[cfg(feature = "daemons")]
pub mod fleet;
#[cfg(feature = "daemons")]
pub mod phantom;
pub mod proxy;
pub mod targets;
#[cfg(feature = "daemons")]
pub mod web;
