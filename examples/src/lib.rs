//! Runnable examples of the `deploykit` library live beside this crate
//! (`cargo run -p deploykit-examples --example pubsub`); sample configs and hook
//! scripts are added by the issues that need them.
