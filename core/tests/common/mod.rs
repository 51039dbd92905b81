//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fleet;
pub mod phantom;
pub mod proxy;
pub mod targets;
