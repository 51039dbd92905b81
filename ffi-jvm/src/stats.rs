//! Live native objects, so tests can prove nothing leaks (`org.deploykit.NativeStats`).

use jni::objects::JClass;
use jni::sys::jlong;
use jni::JNIEnv;
use std::sync::atomic::{AtomicI64, Ordering};

/// Client handles not yet freed.
pub static CLIENTS: AtomicI64 = AtomicI64::new(0);
/// Subscription handles not yet freed.
pub static SUBSCRIPTIONS: AtomicI64 = AtomicI64::new(0);
/// Spool handles not yet freed.
pub static SPOOLS: AtomicI64 = AtomicI64::new(0);
/// JNI global references held by the binding.
pub static GLOBAL_REFS: AtomicI64 = AtomicI64::new(0);

/// A JNI global reference that is counted while it lives.
pub struct CountedRef(pub jni::objects::GlobalRef);

impl CountedRef {
    /// Counts `r`.
    pub fn new(r: jni::objects::GlobalRef) -> CountedRef {
        GLOBAL_REFS.fetch_add(1, Ordering::SeqCst);
        CountedRef(r)
    }
}

impl Drop for CountedRef {
    fn drop(&mut self) {
        GLOBAL_REFS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `NativeStats.clients()`.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_NativeStats_clients(_env: JNIEnv, _c: JClass) -> jlong {
    CLIENTS.load(Ordering::SeqCst)
}

/// `NativeStats.subscriptions()`.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_NativeStats_subscriptions(_env: JNIEnv, _c: JClass) -> jlong {
    SUBSCRIPTIONS.load(Ordering::SeqCst)
}

/// `NativeStats.spools()`.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_NativeStats_spools(_env: JNIEnv, _c: JClass) -> jlong {
    SPOOLS.load(Ordering::SeqCst)
}

/// `NativeStats.globalRefs()`.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_NativeStats_globalRefs(_env: JNIEnv, _c: JClass) -> jlong {
    GLOBAL_REFS.load(Ordering::SeqCst)
}

/// `NativeStats.panicForTest()`: panics inside the boundary, to prove a panic arrives as
/// `DeployKitException("panic")` and never unwinds into the JVM.
#[no_mangle]
pub extern "system" fn Java_org_deploykit_NativeStats_panicForTest(mut env: JNIEnv, _c: JClass) {
    crate::error::guard(&mut env, (), |_env| -> Result<(), crate::error::Failure> { panic!("deliberate panic from NativeStats.panicForTest") })
}
