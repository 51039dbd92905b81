//! `org.deploykit.Subscription`: a consumer called on core's I/O thread for each message.

use crate::client::{handle, not_on_io_thread, string};
use crate::error::{guard, Failure};
use crate::stats::{CountedRef, SUBSCRIPTIONS};
use deploykit::blocking::CallbackHandle;
use deploykit::message::{self, Dedup};
use deploykit::stomp::{self, SubscribeOptions};
use jni::objects::{JClass, JObject, JString, JValue};
use jni::sys::{jint, jlong};
use jni::{JNIEnv, JavaVM};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a Java `Subscription` holds (as a `long`).
struct SubHandle {
    callbacks: CallbackHandle,
    /// Messages not delivered because their `dk-id` was in the window (a publisher's resend).
    duplicates: Arc<AtomicU64>,
}

/// The Java classes a delivery instantiates, resolved once per subscription on a
/// Java thread with the caller's class loader (a native thread's FindClass would
/// only see the system class loader, which is not the one of e.g. a Jenkins plugin).
struct Classes {
    message: CountedRef,
    commit: CountedRef,
    build: CountedRef,
    event: CountedRef,
}

impl Classes {
    fn resolve(env: &mut JNIEnv) -> jni::errors::Result<Classes> {
        let mut global = |name: &str| -> jni::errors::Result<CountedRef> {
            let local = env.find_class(name)?;
            let r = CountedRef::new(env.new_global_ref(&local)?);
            env.delete_local_ref(local)?;
            Ok(r)
        };
        Ok(Classes {
            message: global("org/deploykit/Message")?,
            commit: global("org/deploykit/Commit")?,
            build: global("org/deploykit/Build")?,
            event: global("org/deploykit/Event")?,
        })
    }
}

/// A Java string, or null for `None`.
fn jstr<'l>(env: &mut JNIEnv<'l>, s: Option<&str>) -> jni::errors::Result<JObject<'l>> {
    match s {
        Some(s) => Ok(env.new_string(s)?.into()),
        None => Ok(JObject::null()),
    }
}

/// The typed value (`Commit`, `Build`, `Event`) of a decoded message, or null for other kinds.
fn typed_object<'l>(env: &mut JNIEnv<'l>, classes: &Classes, d: &message::Message) -> jni::errors::Result<JObject<'l>> {
    match d {
        message::Message::Commit(c) => {
            let args = [
                jstr(env, Some(&c.repo))?,
                jstr(env, Some(&c.oldrev))?,
                jstr(env, Some(&c.newrev))?,
                jstr(env, Some(&c.refname))?,
                jstr(env, Some(serde_json::to_value(c.source).ok().and_then(|v| v.as_str().map(str::to_owned)).as_deref().unwrap_or("git")))?,
                jstr(env, Some(&c.effective_correlation_id()))?,
                jstr(env, c.svn.as_ref().and_then(|s| s.project.as_deref()))?,
            ];
            let revision = c.svn.as_ref().map_or(-1, |s| s.revision as i64);
            let class: &JClass = classes.commit.0.as_obj().into();
            env.new_object(
                class,
                "(Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;J)V",
                &[
                    JValue::Object(&args[0]),
                    JValue::Object(&args[1]),
                    JValue::Object(&args[2]),
                    JValue::Object(&args[3]),
                    JValue::Object(&args[4]),
                    JValue::Object(&args[5]),
                    JValue::Object(&args[6]),
                    JValue::Long(revision),
                ],
            )
        }
        message::Message::Build(b) => {
            let args = [
                jstr(env, Some(&b.job))?,
                jstr(env, Some(b.status.as_str()))?,
                jstr(env, b.url.as_deref())?,
                jstr(env, b.repo.as_deref())?,
                jstr(env, b.branch.as_deref())?,
                jstr(env, b.commit.as_deref())?,
                jstr(env, b.correlation_id.as_deref())?,
            ];
            let class: &JClass = classes.build.0.as_obj().into();
            env.new_object(
                class,
                "(Ljava/lang/String;JLjava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;JLjava/lang/String;)V",
                &[
                    JValue::Object(&args[0]),
                    JValue::Long(b.number as i64),
                    JValue::Object(&args[1]),
                    JValue::Object(&args[2]),
                    JValue::Object(&args[3]),
                    JValue::Object(&args[4]),
                    JValue::Object(&args[5]),
                    JValue::Long(b.duration_ms.map_or(-1, |d| d as i64)),
                    JValue::Object(&args[6]),
                ],
            )
        }
        message::Message::Event(e) => {
            let args = [jstr(env, Some(&e.source))?, jstr(env, e.host.as_deref())?, jstr(env, Some(&e.text))?, jstr(env, e.correlation_id.as_deref())?];
            let class: &JClass = classes.event.0.as_obj().into();
            env.new_object(
                class,
                "(Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;)V",
                &[JValue::Object(&args[0]), JValue::Object(&args[1]), JValue::Object(&args[2]), JValue::Object(&args[3])],
            )
        }
        _ => Ok(JObject::null()),
    }
}

/// Builds an `org.deploykit.Message(destination, headers[], body, kind, json, decodeError, typed)`.
fn message_object<'l>(env: &mut JNIEnv<'l>, classes: &Classes, m: &stomp::Message) -> jni::errors::Result<JObject<'l>> {
    let destination = env.new_string(m.destination())?;
    let headers = env.new_object_array((m.headers.len() * 2) as i32, "java/lang/String", JObject::null())?;
    for (i, (k, v)) in m.headers.iter().enumerate() {
        let (k, v) = (env.new_string(k)?, env.new_string(v)?);
        env.set_object_array_element(&headers, (2 * i) as i32, &k)?;
        env.set_object_array_element(&headers, (2 * i + 1) as i32, &v)?;
        env.delete_local_ref(k)?;
        env.delete_local_ref(v)?;
    }
    let body = env.byte_array_from_slice(&m.body)?;
    let (kind, json, error, typed) = match message::decode(m.destination(), &m.headers, &m.body) {
        Ok(d) => {
            let typed = typed_object(env, classes, &d)?;
            (Some(d.kind().map_or("keepalive", |k| k.as_str())), serde_json::to_string(&d).ok(), None, typed)
        }
        Err(e) => (None, None, Some(e.to_string()), JObject::null()),
    };
    let kind = jstr(env, kind)?;
    let json = jstr(env, json.as_deref())?;
    let error = jstr(env, error.as_deref())?;
    let class: &JClass = classes.message.0.as_obj().into();
    env.new_object(
        class,
        "(Ljava/lang/String;[Ljava/lang/String;[BLjava/lang/String;Ljava/lang/String;Ljava/lang/String;Ljava/lang/Object;)V",
        &[
            JValue::Object(&destination),
            JValue::Object(&headers),
            JValue::Object(&body),
            JValue::Object(&kind),
            JValue::Object(&json),
            JValue::Object(&error),
            JValue::Object(&typed),
        ],
    )
}

thread_local! {
    /// Whether this native thread's Java `Thread` was given its native name.
    static NAMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Gives the attached thread its native name (`deploykit-io`) in Java stack dumps.
fn name_java_thread(env: &mut JNIEnv) -> jni::errors::Result<()> {
    if NAMED.with(|n| n.get()) {
        return Ok(());
    }
    let name = std::thread::current().name().unwrap_or("deploykit-io").to_owned();
    let thread = env.call_static_method("java/lang/Thread", "currentThread", "()Ljava/lang/Thread;", &[])?.l()?;
    let jname = env.new_string(name)?;
    env.call_method(&thread, "setName", "(Ljava/lang/String;)V", &[JValue::Object(&jname)])?;
    NAMED.with(|n| n.set(true));
    Ok(())
}

/// Delivers one message to the Java consumer; runs on core's I/O thread.
fn deliver(vm: &JavaVM, consumer: &CountedRef, classes: &Classes, m: stomp::Message) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // Attached once as a daemon thread (it stays attached until it exits, and never blocks JVM exit).
        let Ok(mut env) = vm.attach_current_thread_as_daemon() else { return };
        // A local frame per delivery: every local reference made here is freed on return.
        let result = env.with_local_frame(32, |env| -> jni::errors::Result<()> {
            name_java_thread(env)?;
            let obj = message_object(env, classes, &m)?;
            env.call_method(consumer.0.as_obj(), "accept", "(Ljava/lang/Object;)V", &[JValue::Object(&obj)])?;
            Ok(())
        });
        if result.is_err() && env.exception_check().unwrap_or(false) {
            // The consumer threw: report it like an uncaught exception, keep the subscription alive.
            let _ = env.exception_describe();
            let _ = env.exception_clear();
        }
    }));
}

/// `StompClient.nativeSubscribe(handle, destination, dedupWindow, consumer)`: returns once the broker confirmed it.
/// With `dedup_window > 0`, a message whose `dk-id` is among the last `dedup_window` seen is not delivered (core's [`Dedup`]).
#[no_mangle]
pub extern "system" fn Java_org_deploykit_StompClient_nativeSubscribe<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    h: jlong,
    destination: JString<'l>,
    dedup_window: jint,
    consumer: JObject<'l>,
) -> jlong {
    guard(&mut env, 0, |env| {
        not_on_io_thread("subscribe")?;
        let client = handle(h)?;
        let destination = string(env, &destination, "destination")?;
        if consumer.is_null() {
            return Err(Failure::new("invalid-argument", "consumer is null"));
        }
        let window = usize::try_from(dedup_window).map_err(|_| Failure::new("invalid-argument", format!("dedupWindow {dedup_window} is negative")))?;
        let vm = env.get_java_vm()?;
        let classes = Classes::resolve(env)?;
        let consumer = CountedRef::new(env.new_global_ref(&consumer)?);
        let sub = client.client.subscribe(&destination, SubscribeOptions::default())?;
        let duplicates = Arc::new(AtomicU64::new(0));
        let counted = duplicates.clone();
        let mut seen = Dedup::new(window);
        let callbacks = sub.on_message(move |m| {
            if !seen.first(&m.headers) {
                counted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            deliver(&vm, &consumer, &classes, m)
        });
        SUBSCRIPTIONS.fetch_add(1, Ordering::SeqCst);
        Ok(Box::into_raw(Box::new(SubHandle { callbacks, duplicates })) as jlong)
    })
}

/// `Subscription.nativeDuplicates(handle)`: messages dropped so far as resends.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_Subscription_nativeDuplicates<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong) -> jlong {
    guard(&mut env, 0, |_env| {
        if h == 0 {
            return Err(Failure::new("closed", "subscription is closed"));
        }
        // SAFETY: from nativeSubscribe; Java passes it only while open (NativeObject guards this).
        let sub = unsafe { &*(h as *const SubHandle) };
        Ok(i64::try_from(sub.duplicates.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
    })
}

/// `Subscription.nativeClose(handle)`: stops deliveries, waits for a running callback, frees.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_Subscription_nativeClose<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong) {
    guard(&mut env, (), |_env| {
        not_on_io_thread("Subscription.close")?;
        if h == 0 {
            return Ok(());
        }
        // SAFETY: from nativeSubscribe; Java calls this once per handle.
        let sub = unsafe { Box::from_raw(h as *mut SubHandle) };
        // Stopping drops the callback closure and with it both global references.
        sub.callbacks.stop();
        SUBSCRIPTIONS.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    })
}
