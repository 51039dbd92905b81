//! `org.deploykit.Subscription`: a consumer called on core's I/O thread for each message.

use crate::client::{handle, not_on_io_thread, string};
use crate::error::{guard, Failure};
use crate::stats::{CountedRef, SUBSCRIPTIONS};
use deploykit::blocking::CallbackHandle;
use deploykit::message;
use deploykit::stomp::{self, SubscribeOptions};
use jni::objects::{JClass, JObject, JString, JValue};
use jni::sys::jlong;
use jni::{JNIEnv, JavaVM};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

/// What a Java `Subscription` holds (as a `long`).
struct SubHandle {
    callbacks: CallbackHandle,
}

/// Builds an `org.deploykit.Message(destination, headers[], body, kind, json, decodeError)`.
fn message_object<'l>(env: &mut JNIEnv<'l>, class: &JClass, m: &stomp::Message) -> jni::errors::Result<JObject<'l>> {
    let destination = env.new_string(&m.destination)?;
    let headers = env.new_object_array((m.headers.len() * 2) as i32, "java/lang/String", JObject::null())?;
    for (i, (k, v)) in m.headers.iter().enumerate() {
        let (k, v) = (env.new_string(k)?, env.new_string(v)?);
        env.set_object_array_element(&headers, (2 * i) as i32, &k)?;
        env.set_object_array_element(&headers, (2 * i + 1) as i32, &v)?;
        env.delete_local_ref(k)?;
        env.delete_local_ref(v)?;
    }
    let body = env.byte_array_from_slice(&m.body)?;
    let (kind, json, error) = match message::decode(&m.destination, &m.headers, &m.body) {
        Ok(d) => (Some(d.kind().map_or("keepalive", |k| k.as_str())), serde_json::to_string(&d).ok(), None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let jstr = |env: &mut JNIEnv<'l>, s: Option<&str>| -> jni::errors::Result<JObject<'l>> {
        match s {
            Some(s) => Ok(env.new_string(s)?.into()),
            None => Ok(JObject::null()),
        }
    };
    let kind = jstr(env, kind)?;
    let json = jstr(env, json.as_deref())?;
    let error = jstr(env, error.as_deref())?;
    env.new_object(
        class,
        "(Ljava/lang/String;[Ljava/lang/String;[BLjava/lang/String;Ljava/lang/String;Ljava/lang/String;)V",
        &[JValue::Object(&destination), JValue::Object(&headers), JValue::Object(&body), JValue::Object(&kind), JValue::Object(&json), JValue::Object(&error)],
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
fn deliver(vm: &JavaVM, consumer: &CountedRef, class: &CountedRef, m: stomp::Message) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // Attached once as a daemon thread (it stays attached until it exits, and never blocks JVM exit).
        let Ok(mut env) = vm.attach_current_thread_as_daemon() else { return };
        let class: &JClass = class.0.as_obj().into();
        // A local frame per delivery: every local reference made here is freed on return.
        let result = env.with_local_frame(16, |env| -> jni::errors::Result<()> {
            name_java_thread(env)?;
            let obj = message_object(env, class, &m)?;
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

/// `StompClient.nativeSubscribe(handle, destination, consumer)`: returns once the broker confirmed it.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_StompClient_nativeSubscribe<'l>(mut env: JNIEnv<'l>, _c: JClass<'l>, h: jlong, destination: JString<'l>, consumer: JObject<'l>) -> jlong {
    guard(&mut env, 0, |env| {
        not_on_io_thread("subscribe")?;
        let client = handle(h)?;
        let destination = string(env, &destination, "destination")?;
        if consumer.is_null() {
            return Err(Failure::new("invalid-argument", "consumer is null"));
        }
        let vm = env.get_java_vm()?;
        // The class is resolved here, on a Java thread, with the caller's class loader
        // (a native thread's FindClass would only see the system class loader).
        let class_local = env.find_class("org/deploykit/Message")?;
        let class = CountedRef::new(env.new_global_ref(&class_local)?);
        let consumer = CountedRef::new(env.new_global_ref(&consumer)?);
        let sub = client.client.subscribe(&destination, SubscribeOptions::default())?;
        let callbacks = sub.on_message(move |m| deliver(&vm, &consumer, &class, m));
        SUBSCRIPTIONS.fetch_add(1, Ordering::SeqCst);
        Ok(Box::into_raw(Box::new(SubHandle { callbacks })) as jlong)
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
