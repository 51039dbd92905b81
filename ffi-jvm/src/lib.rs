//! JNI binding of `deploykit`: `libdeploykit_jni.so` behind the Java package
//! `org.deploykit` (sources in `ffi-jvm/java/`).
//!
//! Thin over [`deploykit::blocking`]: every export converts its arguments,
//! calls core, and converts the result back; no bus or message logic lives
//! here. Conventions (after OpenDAL's Java binding):
//!
//! - Handles (clients, subscriptions, spools) are `Box::into_raw` pointers passed to Java as `long`; Java's
//!   `NativeObject` frees each exactly once (`close()` is idempotent).
//! - Every export runs inside [`error::guard`]: errors become a
//!   `DeployKitException(kind, message)` with core's error kind, and a Rust
//!   panic becomes one of kind `panic`; nothing unwinds into the JVM.
//! - Subscription callbacks run on core's I/O thread, attached to the JVM as a
//!   daemon thread; each delivery runs in its own JNI local frame, so local
//!   references never pile up. Global references are counted ([`stats`]).

mod client;
mod error;
mod spool;
mod stats;
mod subscription;
