//! `org.deploykit.Spool`'s natives: open, pushBuild, pending, drain, close (core's [`deploykit::spool`]).

use crate::client::{self, build_arg, not_on_io_thread, publishing, string, Publishing};
use crate::error::{guard, Failure};
use crate::stats::SPOOLS;
use deploykit::spool::Spool;
use jni::objects::{JClass, JString};
use jni::sys::{jint, jlong};
use jni::JNIEnv;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The spool behind a Java `long`; a zero handle is refused.
fn handle<'a>(h: jlong) -> Result<&'a Spool, Failure> {
    if h == 0 {
        return Err(Failure::new("closed", "spool is closed"));
    }
    // SAFETY: non-zero handles come from nativeOpen and Java frees them only once,
    // after which it never passes them again (NativeObject guards this).
    Ok(unsafe { &*(h as *const Spool) })
}

/// `Spool.nativeOpen(dir)`: opens (creating) the directory; kind `spool` when it cannot be used.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_Spool_nativeOpen<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, dir: JString<'l>) -> jlong {
    guard(&mut env, 0, |env| {
        let dir = string(env, &dir, "dir")?;
        let spool = Spool::open(&dir).map_err(|e| Failure::new("spool", format!("cannot use spool directory {dir}: {e}")))?;
        SPOOLS.fetch_add(1, Ordering::SeqCst);
        Ok(Box::into_raw(Box::new(spool)) as jlong)
    })
}

/// `Spool.nativePushBuild(handle, build fields as publishBuild passes them, id, wire, source, builds, buildsFailed, events)`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_org_deploykit_Spool_nativePushBuild<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    h: jlong,
    job: JString<'l>,
    number: jlong,
    status: JString<'l>,
    url: JString<'l>,
    repo: JString<'l>,
    branch: JString<'l>,
    commit: JString<'l>,
    duration_ms: jlong,
    correlation_id: JString<'l>,
    id: JString<'l>,
    wire: JString<'l>,
    source: JString<'l>,
    builds: JString<'l>,
    builds_failed: JString<'l>,
    events: JString<'l>,
) {
    guard(&mut env, (), |env| {
        let spool = handle(h)?;
        let build = build_arg(env, &job, number, &status, &url, &repo, &branch, &commit, duration_ms, &correlation_id)?;
        let Publishing { wire, source, destinations } = publishing(env, &wire, &source, &builds, &builds_failed, &events)?;
        let id = client::opt_string(env, &id)?;
        spool.push_build_with_id(&build, &source, wire, &destinations, id.as_deref())?;
        Ok(())
    })
}

/// `Spool.nativePending(handle)`: how many messages are spooled.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_Spool_nativePending<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong) -> jint {
    guard(&mut env, 0, |_env| {
        let spool = handle(h)?;
        let n = spool.pending().map_err(|e| Failure::new("spool", format!("cannot list {}: {e}", spool.dir().display())))?.len();
        Ok(jint::try_from(n).unwrap_or(jint::MAX))
    })
}

/// `Spool.nativeDrain(handle, clientHandle, timeoutMillis)`: sends what is spooled (0: no time limit); returns how many were sent.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_Spool_nativeDrain<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong, client_handle: jlong, timeout_ms: jlong) -> jint {
    guard(&mut env, 0, |_env| {
        not_on_io_thread("drain")?;
        let spool = handle(h)?;
        let client = client::handle(client_handle)?;
        let limit = match u64::try_from(timeout_ms) {
            Ok(0) => None,
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => return Err(Failure::new("invalid-argument", format!("timeoutMillis {timeout_ms} is negative"))),
        };
        let sent = client.client.drain_spool(spool, limit)?;
        Ok(jint::try_from(sent).unwrap_or(jint::MAX))
    })
}

/// `Spool.nativeClose(handle)`: frees the handle (the directory and its messages stay).
#[no_mangle]
pub extern "system" fn Java_org_deploykit_Spool_nativeClose<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong) {
    guard(&mut env, (), |_env| {
        if h == 0 {
            return Ok(());
        }
        // SAFETY: see `handle`; Java calls this once per handle.
        drop(unsafe { Box::from_raw(h as *mut Spool) });
        SPOOLS.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    })
}
