package org.deploykit.notifier;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.deploykit.Build;
import org.deploykit.DeployKitException;
import org.deploykit.Spool;
import org.deploykit.StompClient;

/**
 * Build messages from any thread to the broker, without ever blocking the caller.
 *
 * <p>{@link #offer} puts a build in a bounded in-memory queue and returns. One background
 * thread connects (lazily; again after a failure, or when {@link #configure} changes the
 * broker), and publishes the builds in the order they were offered, so the builds of one
 * job arrive in order. A failed send is retried with exponential backoff; after
 * {@link Settings#attempts(int)} failures the build goes to the on-disk {@link Spool} (when one
 * is configured) and every later build follows it there until the spool can be sent again,
 * oldest first. A spool left by an earlier JVM is sent once a broker is configured.
 * {@link #close} stops taking builds and flushes for a bounded time; what is still unsent
 * is spooled (or, without a spool, counted as dropped and logged).
 *
 * <p>A full queue drops the new build: counted in {@link NotifierStats#dropped()} and logged
 * once per burst (the first drop, then the total when the queue has drained).
 * Delivery is at least once (a send whose receipt was lost, e.g. in a broker restart, is sent
 * again), and each build is sent with an id that stays the same on every resend, from memory or
 * from the spool, also by a later JVM: the headers {@code dk-id: ID} on the build message and
 * {@code dk-id: ID.event} on its event line. Consumers with core's de-duplication window (dk-web,
 * dk-fetch, {@link StompClient#subscribe(String, int, java.util.function.Consumer)}) take each
 * build once; older consumers ignore the header.
 */
public final class BuildNotifier implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(BuildNotifier.class.getName());

    /** Settings fixed when the notifier is created. */
    public static final class Settings {
        int capacity = 1000;
        int attempts = 3;
        long initialBackoffMillis = 200;
        long maxBackoffMillis = 10_000;
        long drainTimeoutMillis = 30_000;
        long closeTimeoutMillis = 10_000;
        Path spoolDir;
        String threadName = "deploykit-notifier";

        /** The in-memory queue's capacity (default 1000). */
        public Settings capacity(int v) {
            if (v < 1) {
                throw new IllegalArgumentException("capacity must be at least 1, not " + v);
            }
            capacity = v;
            return this;
        }

        /** Failed sends of one build before it goes to the spool (default 3). */
        public Settings attempts(int v) {
            if (v < 1) {
                throw new IllegalArgumentException("attempts must be at least 1, not " + v);
            }
            attempts = v;
            return this;
        }

        /** The first wait after a failure (default 200 ms); it doubles up to {@link #maxBackoff(Duration)}. */
        public Settings initialBackoff(Duration v) {
            initialBackoffMillis = positiveMillis(v, "initialBackoff");
            return this;
        }

        /** The longest wait between attempts (default 10 s). */
        public Settings maxBackoff(Duration v) {
            maxBackoffMillis = positiveMillis(v, "maxBackoff");
            return this;
        }

        /** How long one pass over the spool may take (default 30 s). */
        public Settings drainTimeout(Duration v) {
            drainTimeoutMillis = positiveMillis(v, "drainTimeout");
            return this;
        }

        /** How long {@link BuildNotifier#close()} flushes before spooling the rest (default 10 s). */
        public Settings closeTimeout(Duration v) {
            closeTimeoutMillis = positiveMillis(v, "closeTimeout");
            return this;
        }

        /** The spool directory (created if missing); without one, unsendable builds wait in memory. */
        public Settings spoolDir(Path v) {
            spoolDir = v;
            return this;
        }

        /** The sender thread's name (default {@code deploykit-notifier}). */
        public Settings threadName(String v) {
            threadName = Objects.requireNonNull(v, "threadName");
            return this;
        }

        private static long positiveMillis(Duration v, String what) {
            if (v == null || v.isNegative() || v.isZero()) {
                throw new IllegalArgumentException(what + " must be a positive duration, not " + v);
            }
            return v.toMillis();
        }
    }

    /** A build taken from the queue, with the id it keeps on every resend. */
    private static final class Pending {
        final Build build;
        final String id;

        Pending(Build build, String id) {
            this.build = build;
            this.id = id;
        }

        @Override
        public String toString() {
            return build.job() + " #" + build.number() + " " + build.status().wireName();
        }
    }

    /** Where builds go; a new generation means a new connection. */
    private static final class Target {
        final String url;
        final StompClient.Options options;
        final long generation;

        Target(String url, StompClient.Options options, long generation) {
            this.url = url;
            this.options = options;
            this.generation = generation;
        }
    }

    private final Settings settings;
    private final BlockingQueue<Build> queue;
    private final Spool spool;
    private final Thread sender;
    private final Object wake = new Object();
    private final AtomicLong generations = new AtomicLong();
    private final AtomicLong offered = new AtomicLong();
    private final AtomicLong sent = new AtomicLong();
    private final AtomicLong spooled = new AtomicLong();
    private final AtomicLong drained = new AtomicLong();
    private final AtomicLong dropped = new AtomicLong();
    private final AtomicLong failures = new AtomicLong();
    private final AtomicBoolean dropBurst = new AtomicBoolean();
    /** Ids are this notifier's random prefix and a sequence number: unique across JVMs without a lookup. */
    private final String idPrefix = UUID.randomUUID().toString();
    private long nextId;
    private final AtomicLong burstDropped = new AtomicLong();
    private volatile Target target;
    private volatile boolean closing;
    private volatile long deadlineNanos;
    private volatile int spoolPending;

    // The sender thread's own.
    private StompClient client;
    private long clientGeneration = -1;
    private long backoffMillis;
    private long retryAtNanos = System.nanoTime();
    private long consecutiveFailures;

    /**
     * Starts the sender thread; nothing is sent before {@link #configure}.
     *
     * @throws DeployKitException if the spool directory cannot be used (kind {@code spool})
     */
    public BuildNotifier(Settings settings) {
        this.settings = Objects.requireNonNull(settings, "settings");
        this.queue = new ArrayBlockingQueue<>(settings.capacity);
        this.spool = settings.spoolDir == null ? null : Spool.open(settings.spoolDir);
        this.spoolPending = spool == null ? 0 : spool.pending();
        if (spoolPending > 0) {
            LOG.info("deploykit: " + spoolPending + " spooled message(s) in " + settings.spoolDir + " will be sent once a broker is reachable");
        }
        this.sender = new Thread(this::run, settings.threadName);
        sender.setDaemon(true);
        sender.start();
    }

    /** Sends to {@code url} from now on (connecting anew if it or the options changed). */
    public void configure(String url, StompClient.Options options) {
        Objects.requireNonNull(url, "url");
        Objects.requireNonNull(options, "options");
        target = new Target(url, options, generations.incrementAndGet());
        wakeUp();
    }

    /**
     * Queues a build for sending; never blocks.
     *
     * @return false if it was dropped (queue full, or the notifier is closed)
     */
    public boolean offer(Build b) {
        Objects.requireNonNull(b, "build");
        if (!closing && queue.offer(b)) {
            offered.incrementAndGet();
            return true;
        }
        dropped.incrementAndGet();
        burstDropped.incrementAndGet();
        if (dropBurst.compareAndSet(false, true)) {
            LOG.warning("deploykit: " + (closing ? "notifier closed" : "queue full (" + settings.capacity + " builds)")
                    + ": dropping builds until it drains; first dropped: " + b.job() + " #" + b.number() + " " + b.status().wireName());
        }
        return false;
    }

    /** The counters now. */
    public NotifierStats stats() {
        return new NotifierStats(offered.get(), sent.get(), spooled.get(), drained.get(), dropped.get(), failures.get(), queue.size(), spoolPending);
    }

    /** Stops taking builds, flushes for up to the close timeout, spools the rest. */
    @Override
    public void close() {
        close(Duration.ofMillis(settings.closeTimeoutMillis));
    }

    /** Stops taking builds, flushes for up to {@code flush}, spools (or drops and logs) the rest. */
    public void close(Duration flush) {
        if (!closing) {
            deadlineNanos = System.nanoTime() + Math.max(0, flush.toNanos());
            closing = true;
        }
        wakeUp();
        try {
            sender.join(flush.toMillis() + 5_000);
            if (sender.isAlive()) {
                sender.interrupt();
                sender.join(5_000);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // ------------------------------------------------------------------ the sender thread

    private void run() {
        Pending head = null;
        int attempts = 0;
        try {
            while (true) {
                long now = System.nanoTime();
                if (closing && now - deadlineNanos >= 0) {
                    break;
                }
                if (head == null) {
                    long waitMillis = spoolPending > 0 && target != null ? Math.max(10, Math.min(200, untilRetry(now))) : 200;
                    head = pending(queue.poll(waitMillis, TimeUnit.MILLISECONDS));
                    if (head == null) {
                        if (closing && spoolPending == 0) {
                            break;
                        }
                        if (spoolPending > 0 && target != null && untilRetry(System.nanoTime()) == 0) {
                            sendSpool();
                        }
                        continue;
                    }
                    endDropBurstIfDrained();
                    now = System.nanoTime();
                }
                Target t = target;
                if (t == null) {
                    if (closing) {
                        break;
                    }
                    pause(200);
                    continue;
                }
                if (spoolPending > 0) {
                    // Older builds wait in the spool: send them first, or put this one behind them.
                    if (untilRetry(now) > 0 || !sendSpool()) {
                        toSpool(head);
                        head = null;
                        attempts = 0;
                        continue;
                    }
                }
                long wait = untilRetry(now);
                if (wait > 0) {
                    pause(wait);
                    continue;
                }
                if (publish(t, head)) {
                    head = null;
                    attempts = 0;
                } else if (++attempts >= settings.attempts && spool != null) {
                    toSpool(head);
                    head = null;
                    attempts = 0;
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            shutdown(head);
        }
    }

    /** Milliseconds until the next attempt after a failure may be made (0: now). */
    private long untilRetry(long now) {
        return Math.max(0, TimeUnit.NANOSECONDS.toMillis(retryAtNanos - now));
    }

    /** A queued build with its id (null for null). */
    private Pending pending(Build b) {
        return b == null ? null : new Pending(b, idPrefix + "-" + (++nextId));
    }

    /** One attempt to send {@code p}; false (counted, logged, backoff set) if it failed. */
    private boolean publish(Target t, Pending p) {
        try {
            connected(t).publishBuild(p.build, p.id);
            sent.incrementAndGet();
            recovered();
            return true;
        } catch (DeployKitException e) {
            failed("publishing " + p, e);
            return false;
        }
    }

    /** Sends the spool, oldest first; true when it is empty. */
    private boolean sendSpool() {
        Target t = target;
        if (t == null) {
            return false;
        }
        try {
            int n = spool.drain(connected(t), settings.drainTimeoutMillis);
            drained.addAndGet(n);
            spoolPending = spool.pending();
            recovered();
            return spoolPending == 0;
        } catch (DeployKitException e) {
            spoolPending = spool.pending();
            failed("sending the spool (" + spoolPending + " message(s) left)", e);
            return false;
        }
    }

    private void toSpool(Pending p) {
        try {
            spool.pushBuild(p.build, target != null ? target.options : new StompClient.Options(), p.id);
            spooled.incrementAndGet();
            spoolPending += 2; // the build and its event line; counting the directory each time would be quadratic
        } catch (DeployKitException e) {
            dropped.incrementAndGet();
            LOG.log(Level.SEVERE, "deploykit: could not spool " + p + " to " + settings.spoolDir + ": dropped", e);
        }
    }

    private StompClient connected(Target t) {
        if (client == null || client.isClosed() || clientGeneration != t.generation) {
            closeClient();
            client = StompClient.connect(t.url, t.options);
            clientGeneration = t.generation;
        }
        return client;
    }

    /** Counts and logs a failure (the first of an outage as a warning) and sets the backoff. */
    private void failed(String what, DeployKitException e) {
        failures.incrementAndGet();
        closeClient();
        if (consecutiveFailures++ == 0) {
            LOG.log(Level.WARNING, "deploykit: " + what + " failed (" + e.getKind() + "): " + e.getMessage() + "; retrying with backoff");
        } else {
            LOG.log(Level.FINE, "deploykit: " + what + " failed again (" + e.getKind() + ")", e);
        }
        backoffMillis = backoffMillis == 0 ? settings.initialBackoffMillis : Math.min(settings.maxBackoffMillis, backoffMillis * 2);
        retryAtNanos = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(backoffMillis);
    }

    private void recovered() {
        if (consecutiveFailures > 0) {
            LOG.info("deploykit: the broker takes builds again, after " + consecutiveFailures + " failed attempt(s)");
            consecutiveFailures = 0;
        }
        backoffMillis = 0;
        retryAtNanos = System.nanoTime();
    }

    /** Waits up to {@code millis}, less if configure() or close() wakes the thread. */
    private void pause(long millis) throws InterruptedException {
        synchronized (wake) {
            wake.wait(closing ? Math.min(millis, 50) : millis);
        }
    }

    private void wakeUp() {
        synchronized (wake) {
            wake.notifyAll();
        }
    }

    private void endDropBurstIfDrained() {
        if (dropBurst.get() && queue.remainingCapacity() > settings.capacity / 2 && dropBurst.compareAndSet(true, false)) {
            LOG.warning("deploykit: the queue has room again; " + burstDropped.getAndSet(0) + " build(s) were dropped while it was full");
        }
    }

    /** What is left when the thread ends: spooled, or counted and logged as dropped. */
    private void shutdown(Pending head) {
        List<Build> rest = new ArrayList<>();
        queue.drainTo(rest);
        List<Pending> left = new ArrayList<>();
        if (head != null) {
            left.add(head);
        }
        for (Build b : rest) {
            left.add(pending(b));
        }
        closeClient();
        if (!left.isEmpty()) {
            if (spool != null) {
                for (Pending p : left) {
                    toSpool(p);
                }
                LOG.warning("deploykit: " + left.size() + " build(s) not sent before shutdown were spooled to " + settings.spoolDir);
            } else {
                dropped.addAndGet(left.size());
                LOG.warning("deploykit: " + left.size() + " build(s) not sent before shutdown were dropped (no spool directory)");
            }
        }
        if (spool != null) {
            spoolPending = spool.pending();
            spool.close();
        }
    }

    private void closeClient() {
        if (client != null) {
            client.close();
            client = null;
        }
    }
}
