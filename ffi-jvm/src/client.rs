//! `org.deploykit.StompClient`'s natives: connect, send, publish, close.

use crate::error::{guard, Failure};
use crate::stats::CLIENTS;
use deploykit::blocking::{BlockingClient, BlockingPublisher};
use deploykit::message::{Build, BuildStatus, Destinations, Wire};
use deploykit::stomp::url::Secret;
use deploykit::stomp::{ClientConfig, Headers, HeartbeatConfig, SendOptions};
use jni::objects::{JByteArray, JClass, JObjectArray, JString};
use jni::sys::{jboolean, jint, jlong, JNI_TRUE};
use jni::JNIEnv;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What a Java `StompClient` holds (as a `long`); counted in [`CLIENTS`] until `nativeClose`.
pub struct ClientHandle {
    /// The connected client.
    pub client: BlockingClient,
    /// Typed publishing with the client's wire and destinations.
    pub publisher: BlockingPublisher,
}

/// A Java string that may be null.
pub fn opt_string(env: &mut JNIEnv, s: &JString) -> Result<Option<String>, Failure> {
    if s.is_null() {
        return Ok(None);
    }
    Ok(Some(env.get_string(s)?.into()))
}

/// A Java string that must not be null.
pub fn string(env: &mut JNIEnv, s: &JString, what: &str) -> Result<String, Failure> {
    opt_string(env, s)?.ok_or_else(|| Failure::new("invalid-argument", format!("{what} is null")))
}

/// The handle behind a Java `long`; a zero handle is refused.
pub fn handle<'a>(h: jlong) -> Result<&'a ClientHandle, Failure> {
    if h == 0 {
        return Err(Failure::new("closed", "client is closed"));
    }
    // SAFETY: non-zero handles come from nativeConnect and Java frees them only
    // once, after which it never passes them again (NativeObject guards this).
    Ok(unsafe { &*(h as *const ClientHandle) })
}

/// Refuses blocking calls on core's I/O thread (inside a subscription callback).
pub fn not_on_io_thread(what: &str) -> Result<(), Failure> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::new("invalid-request", format!("{what} cannot be called inside a subscription callback (the I/O thread); call it from another thread")));
    }
    Ok(())
}

/// What a Java `StompClient.Options` says about publishing: wire, event source and destinations.
pub struct Publishing {
    /// Wire of builds and events (default JSON).
    pub wire: Wire,
    /// The event lines' source (default `jenkins`).
    pub source: String,
    /// Where builds and events go (legacy wire: the `future.*` topics).
    pub destinations: Destinations,
}

/// Reads `Options`' wire, source and builds/buildsFailed/events destinations (each may be null: the default).
pub fn publishing(env: &mut JNIEnv, wire: &JString, source: &JString, builds: &JString, builds_failed: &JString, events: &JString) -> Result<Publishing, Failure> {
    let wire: Wire = match opt_string(env, wire)? {
        Some(w) => w.parse()?,
        None => Wire::Json,
    };
    let mut destinations = if wire == Wire::Legacy { Destinations::legacy() } else { Destinations::default() };
    if let Some(b) = opt_string(env, builds)? {
        destinations.builds = b;
        destinations.builds_failed = None;
    }
    if let Some(b) = opt_string(env, builds_failed)? {
        destinations.builds_failed = Some(b);
    }
    if let Some(e) = opt_string(env, events)? {
        destinations.events = e;
    }
    let source = opt_string(env, source)?.unwrap_or_else(|| "jenkins".into());
    Ok(Publishing { wire, source, destinations })
}

/// A Java `Build`'s fields (as `StompClient.publishBuild` passes them) as core's build; `duration_ms < 0` is none.
#[allow(clippy::too_many_arguments)]
pub fn build_arg(
    env: &mut JNIEnv,
    job: &JString,
    number: jlong,
    status: &JString,
    url: &JString,
    repo: &JString,
    branch: &JString,
    commit: &JString,
    duration_ms: jlong,
    correlation_id: &JString,
) -> Result<Build, Failure> {
    let status_text = string(env, status, "status")?;
    let status = BuildStatus::parse(&status_text).ok_or_else(|| Failure::new("invalid-argument", format!("unknown build status {status_text:?}")))?;
    Ok(Build {
        job: string(env, job, "job")?,
        number: u64::try_from(number).map_err(|_| Failure::new("invalid-argument", format!("build number {number} is negative")))?,
        status,
        url: opt_string(env, url)?,
        repo: opt_string(env, repo)?,
        branch: opt_string(env, branch)?,
        commit: opt_string(env, commit)?,
        duration_ms: u64::try_from(duration_ms).ok(),
        correlation_id: opt_string(env, correlation_id)?,
    })
}

/// `StompClient.nativeConnect(url, login, passcode, vhost, timeoutMs, connectAttempts, heartbeatMs, wire, source, builds, buildsFailed, events)`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_org_deploykit_StompClient_nativeConnect<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    url: JString<'l>,
    login: JString<'l>,
    passcode: JString<'l>,
    vhost: JString<'l>,
    timeout_ms: jlong,
    connect_attempts: jint,
    heartbeat_ms: jlong,
    wire: JString<'l>,
    source: JString<'l>,
    builds: JString<'l>,
    builds_failed: JString<'l>,
    events: JString<'l>,
) -> jlong {
    guard(&mut env, 0, |env| {
        not_on_io_thread("connect")?;
        let url = string(env, &url, "url")?;
        let mut config = ClientConfig::new(&url)?;
        if let Some(v) = opt_string(env, &vhost)? {
            config.handshake.vhost = v;
        }
        if let Some(l) = opt_string(env, &login)? {
            config.handshake.login = Some(l);
        }
        if let Some(p) = opt_string(env, &passcode)? {
            config.handshake.passcode = Some(Secret::new(p));
        }
        if timeout_ms > 0 {
            config.handshake.timeout = Duration::from_millis(timeout_ms as u64);
            config.receipt_timeout = Duration::from_millis(timeout_ms as u64);
        }
        if connect_attempts > 0 && config.url.options.startup_max_reconnect_attempts.is_none() {
            config.url.options.startup_max_reconnect_attempts = Some(connect_attempts as u32);
        }
        if heartbeat_ms >= 0 {
            config.handshake.heartbeat = if heartbeat_ms == 0 { HeartbeatConfig::off() } else { HeartbeatConfig::every(Duration::from_millis(heartbeat_ms as u64)) };
        }
        let Publishing { wire, source, destinations } = publishing(env, &wire, &source, &builds, &builds_failed, &events)?;
        let client = BlockingClient::connect(config)?;
        let publisher = client.publisher(&source, wire, destinations);
        CLIENTS.fetch_add(1, Ordering::SeqCst);
        Ok(Box::into_raw(Box::new(ClientHandle { client, publisher })) as jlong)
    })
}

/// `StompClient.nativeSend(handle, destination, body, headers as [k, v, k, v…], receipt)`.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_StompClient_nativeSend<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    h: jlong,
    destination: JString<'l>,
    body: JByteArray<'l>,
    headers: JObjectArray<'l>,
    receipt: jboolean,
) {
    guard(&mut env, (), |env| {
        let (handle, destination, opts) = send_args(env, "send", h, &destination, &headers, receipt)?;
        let body = bytes_arg(env, &body)?;
        handle.client.send(&destination, body, opts)?;
        Ok(())
    })
}

/// `StompClient.nativeSendMany(handle, destination, bodies, headers as [k, v, k, v…], receipt)`:
/// every body is copied out of the JVM before anything is sent.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_StompClient_nativeSendMany<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    h: jlong,
    destination: JString<'l>,
    bodies: JObjectArray<'l>,
    headers: JObjectArray<'l>,
    receipt: jboolean,
) {
    guard(&mut env, (), |env| {
        let (handle, destination, opts) = send_args(env, "sendMany", h, &destination, &headers, receipt)?;
        let n = if bodies.is_null() { 0 } else { env.get_array_length(&bodies)? };
        let mut all = Vec::with_capacity(n as usize);
        for i in 0..n {
            let body = JByteArray::from(env.get_object_array_element(&bodies, i)?);
            all.push(bytes_arg(env, &body)?);
            env.delete_local_ref(body)?;
        }
        handle.client.send_many(&destination, all, &opts)?;
        Ok(())
    })
}

/// A `byte[]` argument copied out of the JVM; `null` is an empty body.
fn bytes_arg(env: &mut JNIEnv<'_>, bytes: &JByteArray<'_>) -> Result<Vec<u8>, Failure> {
    Ok(if bytes.is_null() { Vec::new() } else { env.convert_byte_array(bytes)? })
}

/// What `nativeSend` and `nativeSendMany` check alike (not on the I/O thread, a live
/// handle, the destination, the headers) and the options they make.
fn send_args<'h>(
    env: &mut JNIEnv<'_>,
    call: &str,
    h: jlong,
    destination: &JString<'_>,
    headers: &JObjectArray<'_>,
    receipt: jboolean,
) -> Result<(&'h ClientHandle, String, SendOptions), Failure> {
    not_on_io_thread(call)?;
    let handle = handle(h)?;
    let destination = string(env, destination, "destination")?;
    let opts = SendOptions { receipt: receipt == JNI_TRUE, headers: headers_arg(env, headers)?, ..SendOptions::default() };
    Ok((handle, destination, opts))
}

/// Headers passed as `[k, v, k, v…]` (null: none; an odd last name is ignored).
fn headers_arg(env: &mut JNIEnv<'_>, headers: &JObjectArray<'_>) -> Result<Headers, Failure> {
    if headers.is_null() {
        return Ok(Headers::new());
    }
    let n = env.get_array_length(headers)?;
    let mut h = Headers::with_capacity(n as usize / 2);
    for i in (0..n - n % 2).step_by(2) {
        let k = JString::from(env.get_object_array_element(headers, i)?);
        let v = JString::from(env.get_object_array_element(headers, i + 1)?);
        let (ks, vs) = (string(env, &k, "header name")?, string(env, &v, "header value")?);
        env.delete_local_ref(k)?;
        env.delete_local_ref(v)?;
        h.push(ks, vs);
    }
    Ok(h)
}

/// `StompClient.nativePublishBuild(handle, job, number, status, url, repo, branch, commit, durationMs (<0: none), correlationId, id)`:
/// with an `id` (may be null), the build and its event line carry `dk-id: ID` and `dk-id: ID.event`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_org_deploykit_StompClient_nativePublishBuild<'l>(
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
) {
    guard(&mut env, (), |env| {
        not_on_io_thread("publishBuild")?;
        let handle = handle(h)?;
        let build = build_arg(env, &job, number, &status, &url, &repo, &branch, &commit, duration_ms, &correlation_id)?;
        let id = opt_string(env, &id)?;
        handle.publisher.build_with_id(&build, id.as_deref())?;
        Ok(())
    })
}

/// `StompClient.nativePublishEvent(handle, text, correlationId)`.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_StompClient_nativePublishEvent<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong, text: JString<'l>, correlation_id: JString<'l>) {
    guard(&mut env, (), |env| {
        not_on_io_thread("publishEvent")?;
        let handle = handle(h)?;
        let text = string(env, &text, "text")?;
        handle.publisher.event(&text, opt_string(env, &correlation_id)?)?;
        Ok(())
    })
}

/// `StompClient.nativeClose(handle)`: DISCONNECT (best effort) and free; fails only before freeing.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_StompClient_nativeClose<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong) {
    guard(&mut env, (), |_env| {
        not_on_io_thread("close")?;
        if h == 0 {
            return Ok(());
        }
        // SAFETY: see `handle`; Java calls this once per handle.
        let ClientHandle { client, publisher } = *unsafe { Box::from_raw(h as *mut ClientHandle) };
        CLIENTS.fetch_sub(1, Ordering::SeqCst);
        drop(publisher);
        // The handle is gone now, so nothing may be reported as a failure of close
        // (Java would let it be closed again): a DISCONNECT that fails changes nothing.
        let _ = client.disconnect();
        Ok(())
    })
}

/// `StompClient.nativeCheckUrl(url)`: throws kind `invalid-url` naming what core's parser refuses (nothing is connected).
#[no_mangle]
pub extern "system" fn Java_org_deploykit_StompClient_nativeCheckUrl<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, url: JString<'l>) {
    guard(&mut env, (), |env| {
        let url = string(env, &url, "url")?;
        ClientConfig::new(&url)?;
        Ok(())
    })
}
