//! Errors and the panic boundary: every export's body runs in [`guard`].

use deploykit::message::publisher::PublishError;
use deploykit::message::MessageError;
use deploykit::spool::SpoolError;
use deploykit::stomp;
use jni::objects::{JObject, JThrowable, JValue};
use jni::JNIEnv;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A failure to report to Java as `DeployKitException(kind, message)`.
#[derive(Debug)]
pub struct Failure {
    /// Core's error kind (`connect`, `refused`, …), or `spool`, `jni`, `panic`, `invalid-argument`.
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }
}

impl From<stomp::Error> for Failure {
    fn from(e: stomp::Error) -> Failure {
        let message = match &e {
            stomp::Error::Server { details, .. } if !details.trim().is_empty() => format!("{e}: {}", details.trim()),
            _ => e.to_string(),
        };
        Failure::new(e.kind(), message)
    }
}

impl From<MessageError> for Failure {
    fn from(e: MessageError) -> Failure {
        Failure::new(e.kind(), e.to_string())
    }
}

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Failure {
        match e {
            PublishError::Invalid(m) => m.into(),
            PublishError::Bus(b) => b.into(),
        }
    }
}

impl From<SpoolError> for Failure {
    fn from(e: SpoolError) -> Failure {
        match e {
            // The bus's kind, with the spool's counts in the message.
            SpoolError::Bus { ref source, .. } => Failure::new(source.kind(), e.to_string()),
            SpoolError::Message(m) => m.into(),
            SpoolError::Io { .. } => Failure::new("spool", e.to_string()),
            SpoolError::Timeout { .. } => Failure::new("timeout", e.to_string()),
        }
    }
}

impl From<jni::errors::Error> for Failure {
    fn from(e: jni::errors::Error) -> Failure {
        Failure::new("jni", e.to_string())
    }
}

/// Throws `DeployKitException(kind, message)` unless a Java exception is already pending.
pub fn throw(env: &mut JNIEnv, f: Failure) {
    if env.exception_check().unwrap_or(false) {
        return;
    }
    let made = (|| -> jni::errors::Result<JObject> {
        let kind = env.new_string(f.kind)?;
        let message = env.new_string(&f.message)?;
        env.new_object("org/deploykit/DeployKitException", "(Ljava/lang/String;Ljava/lang/String;)V", &[JValue::Object(&kind), JValue::Object(&message)])
    })();
    match made {
        Ok(obj) => {
            let _ = env.throw(JThrowable::from(obj));
        }
        Err(_) => {
            let _ = env.exception_clear();
            let _ = env.throw_new("java/lang/RuntimeException", format!("{}: {}", f.kind, f.message));
        }
    }
}

/// Runs an export's body: `Err` and panics become a Java exception and `fallback` is returned.
pub fn guard<'local, T>(env: &mut JNIEnv<'local>, fallback: T, body: impl FnOnce(&mut JNIEnv<'local>) -> Result<T, Failure>) -> T {
    match catch_unwind(AssertUnwindSafe(|| body(env))) {
        Ok(Ok(v)) => v,
        Ok(Err(f)) => {
            throw(env, f);
            fallback
        }
        Err(panic) => {
            let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown".into());
            throw(env, Failure::new("panic", format!("internal error (a Rust panic, caught): {why}")));
            fallback
        }
    }
}
