package org.deploykit;

import java.nio.file.FileSystems;
import java.nio.file.Path;

/**
 * A directory of messages waiting to be sent (deploykit core's spool): builds are
 * written here first, fsynced, and sent later by {@link #drain}, oldest first, each
 * deleted only after the broker's receipt. A broker that is down leaves them for the
 * next drain, in order, even across JVM restarts. Thread-safe; close it when done
 * (the directory and its messages stay).
 *
 * <pre>{@code
 * try (Spool spool = Spool.open(Path.of(jenkinsHome, "deploykit", "spool"))) {
 *     spool.pushBuild(build, options);
 *     try (StompClient c = StompClient.connect(url, options)) {
 *         spool.drain(c, 30_000);
 *     }
 * }
 * }</pre>
 */
public final class Spool extends NativeObject {
    private final Path dir;

    private Spool(long handle, Path dir) {
        super(handle);
        this.dir = dir;
    }

    /**
     * Opens the spool at {@code dir}, creating the directory (mode 0700, parents as needed) if missing.
     *
     * @throws DeployKitException with kind {@link DeployKitException#SPOOL} if it cannot be created or written
     */
    public static Spool open(Path dir) {
        if (dir != null && dir.getFileSystem() != FileSystems.getDefault()) {
            throw new DeployKitException(DeployKitException.INVALID_ARGUMENT, "dir " + dir.toUri() + " is not on the default file system");
        }
        long h = nativeOpen(dir == null ? null : dir.toString());
        return new Spool(h, dir);
    }

    /** The spool directory (as given to {@link #open}; also after {@link #close()}). */
    public Path dir() {
        return dir;
    }

    /**
     * Spools a build and its event line, fsynced, as {@link StompClient#publishBuild} would send them
     * with {@code o}'s wire, source and builds, failed-builds and events destinations (the same defaults).
     *
     * @throws DeployKitException kind {@code invalid-argument} for a null or invalid build or options, {@code spool} on I/O failure
     */
    public void pushBuild(Build b, StompClient.Options o) {
        pushBuild(b, o, null);
    }

    /**
     * Spools a build and its event line as {@link #pushBuild(Build, StompClient.Options)}, with the
     * headers {@code dk-id: ID} and {@code dk-id: ID.event} as {@link StompClient#publishBuild(Build, String)}
     * sends them (none when {@code id} is null); every send from the spool keeps them.
     *
     * @throws DeployKitException kind {@code invalid-argument} for a null or invalid build or options, {@code spool} on I/O failure
     */
    public void pushBuild(Build b, StompClient.Options o, String id) {
        withHandle(h -> {
            if (b == null || o == null) {
                throw new DeployKitException(DeployKitException.INVALID_ARGUMENT, (b == null ? "build" : "options") + " is null");
            }
            nativePushBuild(h, b.job(), b.number(), b.status().wireName(), b.url(), b.repo(), b.branch(), b.commit(),
                    b.durationMillis(), b.correlationId(), id, o.wire.wireName(), o.source, o.buildsDestination, o.buildsFailedDestination,
                    o.eventsDestination);
            return null;
        });
    }

    /** The number of spooled messages (a build and its event line count as two). */
    public int pending() {
        return withHandle(Spool::nativePending);
    }

    /**
     * Sends every spooled message through {@code client}, oldest first, each with a receipt, deleting
     * each once its receipt arrived; returns how many were sent. Gives up after {@code timeoutMillis}
     * (0: no limit). What is not sent stays spooled, in order, for the next drain.
     *
     * @throws DeployKitException with the bus's kind ({@code connect}, {@code timeout}, {@code closed}, …) on a bus failure
     */
    public int drain(StompClient client, long timeoutMillis) {
        return withHandle(h -> {
            if (client == null) {
                throw new DeployKitException(DeployKitException.INVALID_ARGUMENT, "client is null");
            }
            return client.withHandle(c -> nativeDrain(h, c, timeoutMillis));
        });
    }

    @Override
    protected void disposeInternal(long handle) {
        nativeClose(handle);
    }

    private static native long nativeOpen(String dir);

    private static native void nativePushBuild(long handle, String job, long number, String status, String url, String repo,
            String branch, String commit, long durationMillis, String correlationId, String id, String wire, String source, String builds,
            String buildsFailed, String events);

    private static native int nativePending(long handle);

    private static native int nativeDrain(long handle, long clientHandle, long timeoutMillis);

    private static native void nativeClose(long handle);
}
