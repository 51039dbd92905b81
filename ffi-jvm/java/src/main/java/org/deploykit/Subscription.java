package org.deploykit;

/** A running subscription; {@link #close()} stops the callbacks and waits for a running one to return. */
public final class Subscription extends NativeObject {
    private final StompClient client;

    Subscription(long handle, StompClient client) {
        super(handle);
        this.client = client;
    }

    /**
     * Messages not delivered because their {@code dk-id} was in the de-duplication window
     * ({@link StompClient#subscribe(String, int, java.util.function.Consumer)}); 0 without one.
     *
     * @throws DeployKitException kind {@code closed} once closed
     */
    public long duplicates() {
        return withHandle(Subscription::nativeDuplicates);
    }

    @Override
    protected void disposeInternal(long handle) {
        nativeClose(handle);
    }

    @Override
    protected void afterDispose() {
        client.forget(this);
    }

    private static native long nativeDuplicates(long handle);

    private static native void nativeClose(long handle);
}
