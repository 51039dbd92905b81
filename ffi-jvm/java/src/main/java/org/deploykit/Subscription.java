package org.deploykit;

/** A running subscription; {@link #close()} stops the callbacks and waits for a running one to return. */
public final class Subscription extends NativeObject {
    private final StompClient client;

    Subscription(long handle, StompClient client) {
        super(handle);
        this.client = client;
    }

    @Override
    protected void disposeInternal(long handle) {
        nativeClose(handle);
    }

    @Override
    protected void afterDispose() {
        client.forget(this);
    }

    private static native void nativeClose(long handle);
}
