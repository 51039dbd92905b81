package org.deploykit;

/** Live native objects, for leak checks: all zero once everything is closed. */
public final class NativeStats {
    static {
        NativeLibrary.load();
    }

    private NativeStats() {}

    /** Client handles not yet closed. */
    public static native long clients();

    /** Subscription handles not yet closed. */
    public static native long subscriptions();

    /** Spool handles not yet closed. */
    public static native long spools();

    /** JNI global references held by the library (five per open subscription: the consumer and four classes). */
    public static native long globalRefs();

    /** Panics inside the native panic boundary (a self-test: throws {@code DeployKitException} of kind {@code panic}). */
    public static native void panicForTest();
}
