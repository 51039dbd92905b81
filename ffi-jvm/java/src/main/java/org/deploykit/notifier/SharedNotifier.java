package org.deploykit.notifier;

import java.nio.file.Path;
import java.util.Objects;
import java.util.function.Consumer;
import java.util.function.Function;
import java.util.function.Supplier;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.deploykit.Build;

/**
 * A CI server's one {@link BuildNotifier}, made on first use: spooling to a directory named then,
 * configured by a callback (then and on every {@link #reconfigure()}; a callback that throws is
 * logged and builds wait for the next). If it cannot be made — the
 * native library does not load (the error names the cause and the workaround) or the spool
 * directory is unusable — notifications are disabled for good with one log line, and
 * {@link #offer} is a no-op: builds go on.
 */
public final class SharedNotifier implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(SharedNotifier.class.getName());

    private final Supplier<Path> spoolDir;
    private final Consumer<BuildNotifier> configure;
    private final Function<BuildNotifier.Settings, BuildNotifier> factory;
    private BuildNotifier instance;
    private String disabledBecause;
    private boolean closed;

    /** {@code spoolDir}: asked once, on first use; {@code configure}: calls {@link BuildNotifier#configure} with the settings in force. */
    public SharedNotifier(Supplier<Path> spoolDir, Consumer<BuildNotifier> configure) {
        this(spoolDir, configure, BuildNotifier::new);
    }

    SharedNotifier(Supplier<Path> spoolDir, Consumer<BuildNotifier> configure, Function<BuildNotifier.Settings, BuildNotifier> factory) {
        this.spoolDir = Objects.requireNonNull(spoolDir, "spoolDir");
        this.configure = Objects.requireNonNull(configure, "configure");
        this.factory = factory;
    }

    /** Queues a build (never blocks); false if dropped, disabled or closed. */
    public boolean offer(Build b) {
        BuildNotifier n = get();
        return n != null && n.offer(b);
    }

    /** Applies the settings in force again (a changed broker URL, credentials, topics, wire), if made. */
    public synchronized void reconfigure() {
        if (instance != null) {
            apply(instance);
        }
    }

    /** Why notifications are disabled, or null while they are not. */
    public synchronized String disabledBecause() {
        return disabledBecause;
    }

    /** The notifier's counters, or null before first use or once disabled. */
    public synchronized NotifierStats stats() {
        return instance == null ? null : instance.stats();
    }

    /** Flushes for the notifier's close timeout and spools the rest (the CI server is stopping); later offers are dropped. */
    @Override
    public void close() {
        BuildNotifier n;
        synchronized (this) {
            closed = true;
            n = instance;
        }
        if (n != null) {
            n.close();
        }
    }

    private synchronized BuildNotifier get() {
        if (instance == null && disabledBecause == null && !closed) {
            try {
                instance = factory.apply(new BuildNotifier.Settings().spoolDir(spoolDir.get()));
            } catch (LinkageError | RuntimeException e) {
                disabledBecause = String.valueOf(e.getMessage());
                LOG.log(Level.SEVERE, "deploykit: notifications disabled: " + disabledBecause, e);
                return null;
            }
            apply(instance);
        }
        return closed ? null : instance;
    }

    /** Configures {@code n}; a failure (e.g. no broker URL yet) is logged, and builds wait (queued, then spooled) until the next. */
    private void apply(BuildNotifier n) {
        try {
            configure.accept(n);
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "deploykit: the notifier is not configured (builds wait until it is): " + e, e);
        }
    }
}
