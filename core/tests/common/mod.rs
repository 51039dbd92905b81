pub mod proxy;
pub mod targets;
