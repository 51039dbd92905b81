//! JNI binding of `deploykit` (stub).
//!
//! `libdeploykit_jni.so`, the `org.deploykit` Java package and the Jenkins
//! notifier plugin come with the Jenkins issue; nothing is exported yet.
