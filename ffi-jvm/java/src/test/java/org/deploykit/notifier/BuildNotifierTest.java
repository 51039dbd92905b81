package org.deploykit.notifier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.deploykit.Build;
import org.deploykit.BuildStatus;
import org.deploykit.ChildJvm;
import org.deploykit.Spool;
import org.deploykit.StompClient;
import org.deploykit.Subscription;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The notifier against real brokers: {@code DK_JVM_BROKER_URL} (scripts/jvm-suite.sh), and a
 * dk-broker of its own ({@code DK_JVM_BROKER_BIN}) where the test stops and restarts the broker.
 */
@SuppressWarnings("try") // subscriptions held open by try-with-resources, unused in the body
class BuildNotifierTest {
    static final long WAIT_S = 60;

    @TempDir
    Path tmp;

    static String url() {
        String u = System.getenv("DK_JVM_BROKER_URL");
        if (u == null || u.isEmpty()) {
            throw new IllegalStateException("DK_JVM_BROKER_URL is not set (scripts/jvm-suite.sh sets it)");
        }
        return u;
    }

    /** Options sending builds (all statuses) to one fresh queue, events to a topic nobody hears. */
    static StompClient.Options options(String queue) {
        return new StompClient.Options().timeoutMillis(10_000).connectAttempts(1)
                .buildsDestination(queue).buildsFailedDestination(queue)
                .eventsDestination("/topic/dk.jvm.notifier.events." + UUID.randomUUID());
    }

    static String queueName() {
        return "/queue/dk.jvm.notifier." + UUID.randomUUID();
    }

    /** Subscribes to {@code queue}, every build into {@code into}. */
    static Subscription listen(StompClient c, String queue, BlockingQueue<Build> into) {
        return c.subscribe(queue, m -> {
            Build b = m.asBuild();
            if (b != null) {
                into.add(b);
            }
        });
    }

    /** Takes {@code n} builds from {@code q}, failing after WAIT_S without one. */
    static List<Build> take(BlockingQueue<Build> q, int n) throws InterruptedException {
        List<Build> out = new ArrayList<>(n);
        while (out.size() < n) {
            Build b = q.poll(WAIT_S, TimeUnit.SECONDS);
            if (b == null) {
                throw new AssertionError("only " + out.size() + " of " + n + " builds arrived within " + WAIT_S + " s");
            }
            out.add(b);
        }
        return out;
    }

    static String key(Build b) {
        return b.job() + "#" + b.number() + ":" + b.status().wireName();
    }

    // ------------------------------------------------------------------ mapping

    @Test
    void mapsJenkinsFactsToABuild() {
        Build b = Builds.of("web/site", 17, Builds.statusOf("UNSTABLE"), "http://ci/job/site/17/", 1234,
                "git@git.example.org:web/site.git", "origin/main", "abc123", null);
        assertEquals("web/site", b.job());
        assertEquals(BuildStatus.UNSTABLE, b.status());
        assertEquals("site", b.repo());
        assertEquals("origin/main", b.branch());
        assertEquals("abc123", b.correlationId(), "the commit is the correlation id unless one is given");
        assertEquals(1234, b.durationMillis());
        Build started = Builds.of("j", 1, BuildStatus.STARTED, null, 99, "https://h/x/repo/", "", " ", "cid");
        assertEquals("repo", started.repo());
        assertNull(started.branch());
        assertNull(started.commit());
        assertEquals("cid", started.correlationId());
        assertTrue(started.durationMillis() < 0, "no duration for started");
        assertEquals(BuildStatus.SUCCESS, Builds.statusOf(null));
        assertEquals(BuildStatus.ABORTED, Builds.statusOf("NOT_BUILT"));
        assertEquals(BuildStatus.FAILURE, Builds.statusOf("something new"));
        assertNull(Builds.repoOf("  "));
        Build fromEnv = Builds.fromEnv("web/site", 18, BuildStatus.SUCCESS, "http://ci/job/site/18/", 5,
                Map.of("GIT_URL", "https://git/x/site.git", "GIT_BRANCH", "origin/main", "GIT_COMMIT", "abc", "DK_CORRELATION_ID", "c-1"));
        assertEquals("http://ci/job/site/18/", fromEnv.url(), "the run's URL without BUILD_URL");
        assertEquals("site", fromEnv.repo());
        assertEquals("c-1", fromEnv.correlationId());
        assertEquals("http://ci/x/", Builds.fromEnv("j", 1, BuildStatus.STARTED, "http://ci/y/", -1, Map.of("BUILD_URL", "http://ci/x/")).url());
    }

    // ------------------------------------------------------------------ queue full

    @Test
    void aFullQueueDropsCountsAndLogsOncePerBurst() throws Exception {
        BlockingQueue<LogRecord> warnings = new LinkedBlockingQueue<>();
        Handler h = new Handler() {
            @Override
            public void publish(LogRecord r) {
                if (r.getLevel().intValue() >= Level.WARNING.intValue()) {
                    warnings.add(r);
                }
            }

            @Override
            public void flush() {}

            @Override
            public void close() {}
        };
        Logger log = Logger.getLogger(BuildNotifier.class.getName());
        log.addHandler(h);
        String queue = queueName();
        try (BuildNotifier n = new BuildNotifier(new BuildNotifier.Settings().capacity(4));
                StompClient sub = StompClient.connect(url(), options(queue))) {
            BlockingQueue<Build> got = new LinkedBlockingQueue<>();
            try (Subscription s = listen(sub, queue, got)) {
                // No broker configured yet: nothing leaves the queue (the sender holds at most one).
                // Which ones get in depends on when the sender takes the first: not always 1..5.
                List<Long> acceptedNumbers = new ArrayList<>();
                for (int i = 1; i <= 50; i++) {
                    if (n.offer(Build.builder("burst", i, BuildStatus.SUCCESS).build())) {
                        acceptedNumbers.add((long) i);
                    }
                }
                int accepted = acceptedNumbers.size();
                assertTrue(accepted >= 4 && accepted <= 5, "accepted " + accepted);
                assertEquals(50 - accepted, n.stats().dropped());
                List<LogRecord> full = new ArrayList<>();
                warnings.drainTo(full);
                assertEquals(1, full.size(), "one warning for the burst: " + full);
                assertTrue(full.get(0).getMessage().contains("queue full"), full.get(0).getMessage());

                n.configure(url(), options(queue));
                List<Long> arrived = new ArrayList<>();
                for (Build b : take(got, accepted)) {
                    arrived.add(b.number());
                }
                assertEquals(acceptedNumbers, arrived, "every accepted build, in order");
                // The next build through the queue ends the burst with its count.
                assertTrue(n.offer(Build.builder("burst", 51, BuildStatus.SUCCESS).build()));
                take(got, 1);
                LogRecord drained = warnings.poll(WAIT_S, TimeUnit.SECONDS);
                assertTrue(drained != null && drained.getMessage().contains((50 - accepted) + " build(s) were dropped"),
                        "the burst's total is logged: " + (drained == null ? null : drained.getMessage()));
                n.close(); // joins the sender: its last send is counted
                assertEquals(accepted + 1, n.stats().sent(), n.stats().toString());
            }
        } finally {
            log.removeHandler(h);
        }
    }

    // ------------------------------------------------------------------ restarts

    /** A dk-broker child process on a fixed port, stopped and started by the test. */
    static final class Broker implements AutoCloseable {
        final String bin;
        final int port;
        Process process;

        Broker(String bin, int port) {
            this.bin = bin;
            this.port = port;
        }

        String url() {
            return "stomp://guest:guest@127.0.0.1:" + port;
        }

        void start() throws IOException, InterruptedException {
            process = new ProcessBuilder(bin, "--listen", "127.0.0.1:" + port).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
            CompletableFuture<Boolean> ready = new CompletableFuture<>();
            Thread reader = new Thread(() -> {
                try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getErrorStream(), StandardCharsets.UTF_8))) {
                    String line;
                    while ((line = r.readLine()) != null) {
                        if (line.contains("listening on")) {
                            ready.complete(true);
                        }
                    }
                } catch (IOException e) {
                    ready.completeExceptionally(e);
                }
                ready.complete(false);
            }, "dk-broker-stderr");
            reader.setDaemon(true);
            reader.start();
            try {
                assertTrue(ready.get(WAIT_S, TimeUnit.SECONDS), "dk-broker exited before listening");
            } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
                throw new AssertionError("dk-broker did not start: " + e, e);
            }
        }

        void stop() throws InterruptedException {
            process.destroy();
            assertTrue(process.waitFor(WAIT_S, TimeUnit.SECONDS), "dk-broker stopped");
        }

        @Override
        public void close() {
            if (process != null && process.isAlive()) {
                process.destroyForcibly();
                try {
                    process.waitFor(WAIT_S, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    /** Offers builds {@code from..to} (inclusive) of job-0 … job-{threads-1}, one thread per job. */
    static void offerFromThreads(BuildNotifier n, int threads, int from, int to) throws InterruptedException {
        List<Thread> ts = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            String job = "job-" + t;
            Thread th = new Thread(() -> {
                for (int i = from; i <= to; i++) {
                    assertTrue(n.offer(Build.builder(job, i, BuildStatus.SUCCESS).build()), "queued");
                }
            });
            ts.add(th);
            th.start();
        }
        for (Thread th : ts) {
            th.join();
        }
    }

    /** Waits until {@code cond} holds, failing after WAIT_S with {@code what}. */
    static void await(java.util.function.BooleanSupplier cond, String what) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_S);
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() - deadline > 0) {
                throw new AssertionError("not within " + WAIT_S + " s: " + what);
            }
            Thread.sleep(5);
        }
    }

    @Test
    void aResentBuildIsTakenOnceBySubscribersWithAWindow() throws Exception {
        String queue = queueName();
        BlockingQueue<Build> windowed = new LinkedBlockingQueue<>();
        Build b = Build.builder("dedup", 1, BuildStatus.SUCCESS).build();
        Build noId = Build.builder("dedup", 2, BuildStatus.SUCCESS).build();
        try (StompClient c = StompClient.connect(url(), options(queue)); Spool spool = Spool.open(tmp.resolve("spool"));
                Subscription s = listen(c, queue, 100, windowed)) {
            c.publishBuild(b, "test-id-1");
            c.publishBuild(b, "test-id-1"); // a resend after a lost receipt
            spool.pushBuild(b, options(queue), "test-id-1"); // and once more from the spool
            assertEquals(2, spool.drain(c, 10_000));
            c.publishBuild(noId);
            c.publishBuild(noId); // no id: two builds as far as anyone can tell
            List<Build> got = take(windowed, 3);
            assertEquals(List.of(1L, 2L, 2L), List.of(got.get(0).number(), got.get(1).number(), got.get(2).number()));
            assertNull(windowed.poll(300, TimeUnit.MILLISECONDS), "nothing more");
            assertEquals(2, s.duplicates(), "the resend and the spooled copy were dropped");
        }
    }

    /** Subscribes to {@code queue} with a de-duplication window, every build into {@code into}. */
    static Subscription listen(StompClient c, String queue, int window, BlockingQueue<Build> into) {
        return c.subscribe(queue, window, m -> {
            Build b = m.asBuild();
            if (b != null) {
                into.add(b);
            }
        });
    }

    /**
     * A TCP relay between the notifier and the broker that can hold back the broker's replies and
     * cut every connection: what a restart does to a send whose receipt has not reached the client
     * yet. (dk-broker's own graceful stop writes every receipt before closing, so without the relay
     * a restart never loses one; a broker killed, or a network dropping, between routing a message
     * and the receipt reaching the client does.)
     */
    static final class Relay implements AutoCloseable {
        final ServerSocket server;
        final int target;
        final Set<Socket> open = java.util.concurrent.ConcurrentHashMap.newKeySet();
        volatile boolean holding;

        Relay(int target) throws IOException {
            this.target = target;
            server = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
            daemon(this::accept, "relay-accept");
        }

        int port() {
            return server.getLocalPort();
        }

        private void accept() {
            while (!server.isClosed()) {
                Socket c;
                try {
                    c = server.accept();
                } catch (IOException e) {
                    return;
                }
                try {
                    Socket b = new Socket(InetAddress.getLoopbackAddress(), target);
                    open.add(c);
                    open.add(b);
                    daemon(() -> pump(c, b, false), "relay-to-broker");
                    daemon(() -> pump(b, c, true), "relay-from-broker");
                } catch (IOException e) {
                    quietly(c); // the broker is down: so is the connection
                }
            }
        }

        private void pump(Socket from, Socket to, boolean fromBroker) {
            byte[] buf = new byte[65536];
            try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                int n;
                while ((n = in.read(buf)) >= 0) {
                    while (fromBroker && holding && !to.isClosed()) {
                        Thread.sleep(1);
                    }
                    out.write(buf, 0, n);
                    out.flush();
                }
            } catch (IOException | InterruptedException e) {
                // cut, or an end closed: close both
            } finally {
                quietly(from);
                quietly(to);
            }
        }

        /** Closes every relayed connection; replies held back are lost with them. */
        void cutAll() {
            for (Socket s : open) {
                quietly(s);
            }
            open.clear();
        }

        @Override
        public void close() throws IOException {
            server.close();
            cutAll();
        }

        private static void daemon(Runnable r, String name) {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            t.start();
        }

        private static void quietly(Socket s) {
            try {
                s.close();
            } catch (IOException e) {
                // closing anyway
            }
        }
    }

    /**
     * 10 000 builds from 16 threads while the broker is restarted twice, each time at whatever point
     * the sender is at (mid-send: builds still queued, one on the wire), and each time with the
     * receipt of the send in flight lost: the relay holds the broker's replies back, the broker
     * routes the send and is stopped (SIGTERM, as a service manager restarts it), the connection is
     * cut. The notifier sends that build again with the same {@code dk-id}; the subscriber,
     * connected to the broker throughout (its client reconnects and re-subscribes by itself), takes
     * it once through core's window, and the window's count shows the resends it dropped.
     */
    @Test
    void everyBuildArrivesExactlyOnceAndInOrderWhileTheBrokerRestartsTwiceMidSend() throws Exception {
        String bin = System.getenv("DK_JVM_BROKER_BIN");
        Assumptions.assumeTrue(bin != null && !bin.isEmpty(), "DK_JVM_BROKER_BIN not set");
        Assumptions.assumeTrue(!"rabbitmq".equals(System.getenv("DK_JVM_TARGET")), "runs once, on a dk-broker of its own");
        final int threads = 16;
        final int perJob = 625; // 16 × 625 = 10 000 builds
        final int total = threads * perJob;
        String queue = queueName();
        BlockingQueue<Build> got = new LinkedBlockingQueue<>();
        java.util.concurrent.atomic.AtomicInteger arrived = new java.util.concurrent.atomic.AtomicInteger();
        java.util.Random random = new java.util.Random();
        List<String> restarts = new ArrayList<>();
        long duplicates;
        NotifierStats st;
        try (Broker broker = new Broker(bin, freePort());
                Relay relay = new Relay(broker.port);
                BuildNotifier n = new BuildNotifier(new BuildNotifier.Settings().capacity(total)
                        .spoolDir(tmp.resolve("spool")).initialBackoff(Duration.ofMillis(20)).maxBackoff(Duration.ofMillis(300)))) {
            broker.start();
            try (StompClient sub = StompClient.connect(broker.url(), new StompClient.Options().timeoutMillis(10_000));
                    Subscription s = sub.subscribe(queue, 20_000, m -> {
                        Build b = m.asBuild();
                        if (b != null) {
                            got.add(b);
                            arrived.incrementAndGet();
                        }
                    })) {
                n.configure("stomp://guest:guest@127.0.0.1:" + relay.port(), options(queue));
                Thread offering = new Thread(() -> {
                    try {
                        offerFromThreads(n, threads, 1, perJob);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }, "offering");
                offering.start();
                // Two restarts at arbitrary points of the stream: after a random number of arrivals
                // in the first and in the second half, with a random delay on top.
                int[] at = {1000 + random.nextInt(3000), 5500 + random.nextInt(3000)};
                for (int point : at) {
                    await(() -> arrived.get() >= point, point + " builds arrived (" + arrived.get() + " so far, " + n.stats() + ")");
                    Thread.sleep(random.nextInt(20));
                    relay.holding = true;
                    Thread.sleep(50); // the send in flight reaches the broker and is routed; its receipt is held
                    NotifierStats before = n.stats();
                    broker.stop();
                    relay.cutAll();
                    relay.holding = false;
                    restarts.add("stopped at " + arrived.get() + " arrived, " + before);
                    assertTrue(before.sent() + before.spooled() < total, "the restart is mid-stream: " + before);
                    Thread.sleep(100 + random.nextInt(400));
                    broker.start();
                }
                offering.join();
                await(() -> arrived.get() >= total, "all " + total + " builds arrived (" + arrived.get() + " so far, " + n.stats() + ", " + restarts + ")");
                // Anything sent twice would arrive right behind its first copy: give it time to show.
                Thread.sleep(500);
                duplicates = s.duplicates();
            }
            st = n.stats();
        }
        List<Build> all = new ArrayList<>();
        got.drainTo(all);
        System.out.println("restart test: " + restarts + "; " + st + "; resent builds dropped by the window: " + duplicates);
        assertEquals(total, st.offered(), st.toString());
        assertEquals(0, st.dropped(), st.toString());
        assertEquals(0, st.pendingInSpool(), st.toString());
        assertTrue(st.failures() >= 2, "each restart failed the send in flight: " + st);
        assertTrue(duplicates >= 2, "each restart made the notifier send a routed build again (" + duplicates + " dropped)");
        assertEquals(total, all.size(), "every build exactly once");
        Set<String> seen = new HashSet<>();
        Map<String, Long> last = new HashMap<>();
        for (Build b : all) {
            assertTrue(seen.add(key(b)), "twice: " + key(b));
            long prev = last.getOrDefault(b.job(), 0L);
            assertEquals(prev + 1, b.number(), "in order within " + b.job());
            last.put(b.job(), b.number());
        }
    }

    // ------------------------------------------------------------------ across JVMs

    @Test
    void buildsSpooledByOneJvmAreSentByTheNext() throws Exception {
        String queue = queueName();
        Path spool = tmp.resolve("spool");
        int dead = freePort(); // nothing listens there
        List<String> cmd = ChildJvm.command(NotifierChild.class, spool.toString(), "stomp://127.0.0.1:" + dead, queue, "25");
        Process child = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(child.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(child.waitFor(WAIT_S, TimeUnit.SECONDS), "child JVM ended");
        assertEquals(0, child.exitValue(), "child JVM: " + out);
        assertTrue(Files.isDirectory(spool), "spool directory made");

        BlockingQueue<Build> got = new LinkedBlockingQueue<>();
        try (StompClient sub = StompClient.connect(url(), options(queue));
                Subscription s = listen(sub, queue, got);
                BuildNotifier n = new BuildNotifier(new BuildNotifier.Settings().spoolDir(spool))) {
            assertEquals(50, n.stats().pendingInSpool(), "25 builds and their event lines wait in the spool");
            n.configure(url(), options(queue));
            List<Build> arrived = take(got, 25);
            for (int i = 0; i < 25; i++) {
                assertEquals("child", arrived.get(i).job());
                assertEquals(i + 1, arrived.get(i).number(), "oldest first");
            }
            assertNull(got.poll(300, TimeUnit.MILLISECONDS), "nothing twice");
        }
    }
}
