package org.deploykit;

import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * Base of every object holding a native handle: {@link #close()} frees it exactly
 * once (closing twice is safe), and no call can use it while or after it is freed.
 * No finalizers: close what you open (try-with-resources).
 */
public abstract class NativeObject implements AutoCloseable {
    static {
        NativeLibrary.load();
    }

    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private long handle;

    /** Wraps a handle returned by a native constructor. */
    protected NativeObject(long handle) {
        this.handle = handle;
    }

    /** A native call that needs the handle.  */
    @FunctionalInterface
    protected interface HandleCall<T> {
        /** Runs with the live handle. */
        T call(long handle);
    }

    /**
     * Runs {@code call} with the handle, or throws {@code DeployKitException("closed")}
     * once closed or while closing (never waits for a close: a callback calling in
     * while its subscription is being closed would otherwise deadlock).
     */
    protected final <T> T withHandle(HandleCall<T> call) {
        if (!lock.readLock().tryLock()) {
            throw new DeployKitException(DeployKitException.CLOSED, getClass().getSimpleName() + " is closing");
        }
        try {
            if (handle == 0) {
                throw new DeployKitException(DeployKitException.CLOSED, getClass().getSimpleName() + " is closed");
            }
            return call.call(handle);
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Whether {@link #close()} has completed. */
    public final boolean isClosed() {
        lock.readLock().lock();
        try {
            return handle == 0;
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Frees the native side (idempotent). */
    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            if (handle == 0) {
                return;
            }
            beforeDispose();
            // Throws only before anything is freed (e.g. when called inside a callback): then the object stays open.
            disposeInternal(handle);
            handle = 0;
        } finally {
            lock.writeLock().unlock();
        }
        afterDispose();
    }

    /** Hook run before the handle is freed (e.g. closing children). */
    protected void beforeDispose() {}

    /** Hook run after the handle is freed. */
    protected void afterDispose() {}

    /** Frees the handle. */
    protected abstract void disposeInternal(long handle);
}
