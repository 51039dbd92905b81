package org.deploykit.notifier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.ServerSocket;
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

    @Test
    void everyBuildArrivesOnceAndInOrderWhileTheBrokerRestartsTwice() throws Exception {
        String bin = System.getenv("DK_JVM_BROKER_BIN");
        Assumptions.assumeTrue(bin != null && !bin.isEmpty(), "DK_JVM_BROKER_BIN not set");
        Assumptions.assumeTrue(!"rabbitmq".equals(System.getenv("DK_JVM_TARGET")), "runs once, on a dk-broker of its own");
        final int threads = 16;
        final int perJob = 625; // 16 × 625 = 10 000 builds
        final int[] phaseEnds = {208, 416, perJob};
        String queue = queueName();
        BlockingQueue<Build> got = new LinkedBlockingQueue<>();
        List<Build> all = new ArrayList<>();
        try (Broker broker = new Broker(bin, freePort());
                BuildNotifier n = new BuildNotifier(new BuildNotifier.Settings().capacity(threads * perJob)
                        .spoolDir(tmp.resolve("spool")).initialBackoff(Duration.ofMillis(20)).maxBackoff(Duration.ofMillis(300)))) {
            broker.start();
            n.configure(broker.url(), options(queue));
            int from = 1;
            for (int phase = 0; phase < phaseEnds.length; phase++) {
                if (phase > 0) {
                    // Everything so far has arrived: stop the broker, offer while it is down,
                    // start it again, and listen anew.
                    broker.stop();
                    offerFromThreads(n, threads, from, phaseEnds[phase]);
                    broker.start();
                } else {
                    offerFromThreads(n, threads, from, phaseEnds[phase]);
                }
                try (StompClient sub = StompClient.connect(broker.url(), options(queue));
                        Subscription s = listen(sub, queue, got)) {
                    all.addAll(take(got, threads * (phaseEnds[phase] - from + 1)));
                }
                from = phaseEnds[phase] + 1;
            }
            // Nothing more arrives: every build exactly once.
            try (StompClient sub = StompClient.connect(broker.url(), options(queue)); Subscription s = listen(sub, queue, got)) {
                assertNull(got.poll(500, TimeUnit.MILLISECONDS), "no build arrives twice");
            }
            NotifierStats st = n.stats();
            // Outages this short are ridden out by the client's own reconnect (the first run here:
            // sent=10000, failures=0); an outage beyond the retry budget goes through the spool
            // (buildsSpooledByOneJvmAreSentByTheNext).
            assertEquals(threads * perJob, st.offered(), st.toString());
            assertEquals(0, st.dropped(), st.toString());
            assertEquals(0, st.pendingInSpool(), st.toString());
        }
        assertEquals(threads * perJob, all.size());
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
