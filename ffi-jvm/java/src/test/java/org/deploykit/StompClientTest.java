package org.deploykit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The binding against a real broker: {@code DK_JVM_BROKER_URL} (scripts/jvm-suite.sh
 * runs this once against dk-broker and once against RabbitMQ).
 */
class StompClientTest {
    static final long WAIT_S = 20;

    static String url() {
        String u = System.getenv("DK_JVM_BROKER_URL");
        if (u == null || u.isEmpty()) {
            throw new IllegalStateException("DK_JVM_BROKER_URL is not set (scripts/jvm-suite.sh sets it)");
        }
        return u;
    }

    static String topic() {
        return "/topic/dk.jvm." + UUID.randomUUID();
    }

    static StompClient connect() {
        return StompClient.connect(url(), new StompClient.Options().timeoutMillis(10_000));
    }

    static Message poll(BlockingQueue<Message> q) throws InterruptedException {
        Message m = q.poll(WAIT_S, TimeUnit.SECONDS);
        if (m == null) {
            throw new AssertionError("no message within " + WAIT_S + " s");
        }
        return m;
    }

    @AfterEach
    void nothingLeftOpen() {
        assertEquals(0, NativeStats.clients(), "every client closed");
        assertEquals(0, NativeStats.subscriptions(), "every subscription closed");
        assertEquals(0, NativeStats.spools(), "every spool closed");
        assertEquals(0, NativeStats.globalRefs(), "every global reference released");
    }

    @Test
    void libraryLoadsFromWhereTheSuiteSays() {
        NativeLibrary.load();
        String expected = System.getProperty("deploykit.expectLoadedFrom");
        assertTrue(NativeLibrary.loadedFrom() != null);
        if (expected != null) {
            assertTrue(NativeLibrary.loadedFrom().startsWith(expected), NativeLibrary.loadedFrom());
        }
    }

    @Test
    void sendManyDeliversInOrderConfirmedByOneReceipt() throws Exception {
        BlockingQueue<Message> got = new LinkedBlockingQueue<>();
        String dest = topic();
        try (StompClient c = connect(); Subscription s = c.subscribe(dest, got::add)) {
            assertFalse(s.isClosed());
            List<byte[]> bodies = new java.util.ArrayList<>();
            for (int i = 0; i < 300; i++) {
                bodies.add(("m" + i).getBytes(StandardCharsets.UTF_8));
            }
            bodies.add(new byte[0]);
            c.sendMany(dest, bodies, Map.of("x-batch", "yes"), true);
            for (byte[] want : bodies) {
                Message m = poll(got);
                assertTrue(java.util.Arrays.equals(want, m.body()), new String(want, StandardCharsets.UTF_8));
                assertEquals("yes", m.header("x-batch"));
            }
            c.sendMany(dest, List.of(), Map.of(), true);
            List<byte[]> bad = new java.util.ArrayList<>();
            bad.add("first".getBytes(StandardCharsets.UTF_8));
            bad.add(null);
            assertThrows(IllegalArgumentException.class, () -> c.sendMany(dest, bad, Map.of(), false));
            c.send(dest, "after".getBytes(StandardCharsets.UTF_8), Map.of(), true);
            assertEquals("after", poll(got).text(), "a refused sendMany sent nothing");
        }
    }

    @Test
    void subscriberCallbackRunsOnARustThread() throws Exception {
        BlockingQueue<Message> got = new LinkedBlockingQueue<>();
        List<String> threads = new CopyOnWriteArrayList<>();
        String dest = topic();
        try (StompClient c = connect(); Subscription s = c.subscribe(dest, m -> {
            threads.add(Thread.currentThread().getName());
            got.add(m);
        })) {
            c.send(dest, "héllo".getBytes(StandardCharsets.UTF_8), Map.of("x-dk-test", "1"), true);
            Message m = poll(got);
            assertEquals("héllo", m.text());
            assertEquals(dest, m.destination());
            assertEquals("1", m.header("x-dk-test"));
            assertNull(m.kind(), "plain text is not a deploykit message");
            assertTrue(m.decodeError() != null && m.decodeError().contains(dest), m.decodeError());
            String name = threads.get(0);
            assertNotEquals(Thread.currentThread().getName(), name);
            assertTrue(name.startsWith("deploykit-io"), "core's I/O thread, attached to the JVM: " + name);
            assertTrue(s != null && !s.isClosed());
        }
    }

    @Test
    void publishBuildAndEventInBothWires() throws Exception {
        String builds = topic();
        String failed = topic();
        String events = topic();
        BlockingQueue<Message> got = new LinkedBlockingQueue<>();
        BlockingQueue<Message> lines = new LinkedBlockingQueue<>();
        StompClient.Options json = new StompClient.Options().buildsDestination(builds).eventsDestination(events);
        try (StompClient c = StompClient.connect(url(), json)) {
            c.subscribe(builds, got::add);
            c.subscribe(events, lines::add);
            c.publishBuild(Build.builder("web/site", 17, BuildStatus.SUCCESS).url("http://ci/job/web/job/site/17/")
                    .branch("origin/master").commit("3f2a").correlationId("3f2a").build());
            Message m = poll(got);
            assertEquals("build", m.kind());
            assertEquals("build", m.header("dk-type"));
            assertEquals("3f2a", m.header("dk-correlation-id"));
            assertTrue(m.json().contains("\"job\":\"web/site\"") && m.json().contains("\"status\":\"success\""), m.json());
            Build typed = m.asBuild();
            assertEquals("web/site", typed.job());
            assertEquals(17, typed.number());
            assertEquals(BuildStatus.SUCCESS, typed.status());
            assertEquals("origin/master", typed.branch());
            assertNull(m.asCommit());
            Message e = poll(lines);
            assertEquals("event", e.kind());
            assertEquals("jenkins", e.asEvent().source());
            assertTrue(e.json().contains("Complete job 17 - [web/site] origin/master 3f2a"), e.json());
            c.publishEvent("hello from the JVM");
            assertTrue(poll(lines).json().contains("\"text\":\"hello from the JVM\""));
        }
        StompClient.Options legacy = new StompClient.Options().wire(Wire.LEGACY).buildsDestination(builds)
                .buildsFailedDestination(failed).eventsDestination(events);
        try (StompClient c = StompClient.connect(url(), legacy)) {
            c.subscribe(failed, got::add);
            c.publishBuild(Build.builder("site", 3, BuildStatus.FAILURE).url("http://ci/job/site/3/").branch("origin/master").commit("ab").build());
            Message m = poll(got);
            assertNull(m.header("dk-type"), "legacy: no dk-type");
            assertEquals("Repo: origin\nURL: http://ci/job/site/3/\nStatus: Cake\n", m.text());
            assertEquals("Fail job 3 - [site] origin/master ab", m.header("subject"));
            assertEquals("build", m.kind(), "core reads the legacy body back");
        }
    }

    @Test
    void commitsArriveTypedFromEitherWire() throws Exception {
        BlockingQueue<Message> got = new LinkedBlockingQueue<>();
        String dest = topic();
        String newrev = "2".repeat(40);
        try (StompClient c = connect()) {
            c.subscribe(dest, got::add);
            // The original git hook's text body, no dk-type header.
            c.send(dest, ("repo: site\noldrev: " + "1".repeat(40) + "\nnewrev: " + newrev + "\nrefname: refs/heads/master\n")
                    .getBytes(StandardCharsets.UTF_8), Map.of(), true);
            Commit legacy = poll(got).asCommit();
            assertEquals("site", legacy.repo());
            assertEquals("refs/heads/master", legacy.refname());
            assertEquals(newrev, legacy.newrev());
            assertEquals(-1, legacy.svnRevision());
            // JSON v1 with its headers.
            c.send(dest, "{\"repo\":\"svnrepo\",\"newrev\":\"42\",\"source\":\"svn\",\"svn\":{\"revision\":42,\"project\":\"webapp\"}}"
                    .getBytes(StandardCharsets.UTF_8), Map.of("dk-type", "commit", "dk-version", "1"), true);
            Commit svn = poll(got).asCommit();
            assertEquals("svn", svn.source());
            assertEquals("webapp", svn.svnProject());
            assertEquals(42, svn.svnRevision());
            assertEquals("svn:svnrepo:42", svn.correlationId());
        }
    }

    @Test
    void refusedConnectionThrowsWithTheCoreErrorKind() {
        DeployKitException e = assertThrows(DeployKitException.class,
                () -> StompClient.connect("stomp://127.0.0.1:1", new StompClient.Options().connectAttempts(1)));
        assertEquals(DeployKitException.CONNECT, e.getKind(), e.toString());
        assertTrue(e.getMessage().contains("127.0.0.1:1"), e.getMessage());
        DeployKitException bad = assertThrows(DeployKitException.class, () -> StompClient.connect("http://nope"));
        assertEquals(DeployKitException.INVALID_URL, bad.getKind(), bad.toString());
        // The suite's brokers require guest/guest: a wrong passcode is refused by the broker.
        String wrong = url().replaceFirst("//[^@/]*@", "//");
        DeployKitException refused = assertThrows(DeployKitException.class, () -> StompClient.connect(wrong,
                new StompClient.Options().login("guest").passcode("not-the-passcode").connectAttempts(1)));
        assertEquals(DeployKitException.REFUSED, refused.getKind(), refused.toString());
        assertFalse(refused.getMessage().contains("not-the-passcode"), "the passcode never appears");
    }

    @Test
    void aRustPanicArrivesAsAnExceptionNotACrash() {
        DeployKitException e = assertThrows(DeployKitException.class, NativeStats::panicForTest);
        assertEquals("panic", e.getKind());
        assertTrue(e.getMessage().contains("deliberate panic"), e.getMessage());
    }

    @Test
    void badArgumentsAreExceptionsNamingTheArgument() {
        try (StompClient c = connect()) {
            DeployKitException e = assertThrows(DeployKitException.class, () -> c.publishBuild(Build.builder("j", -1, BuildStatus.STARTED).build()));
            assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind());
            assertTrue(e.getMessage().contains("-1"), e.getMessage());
            e = assertThrows(DeployKitException.class, () -> c.send(null, new byte[0], Map.of(), false));
            assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind());
            assertTrue(e.getMessage().contains("destination"), e.getMessage());
            e = assertThrows(DeployKitException.class, () -> c.subscribe(topic(), null));
            assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind());
            c.send(topic(), "still usable");
        }
    }

    @Test
    void closingTwiceIsSafeAndUseAfterCloseThrows() {
        StompClient c = connect();
        Subscription s = c.subscribe(topic(), m -> {});
        s.close();
        s.close();
        c.close();
        c.close();
        assertTrue(c.isClosed() && s.isClosed());
        DeployKitException e = assertThrows(DeployKitException.class, () -> c.send("/topic/x", "y"));
        assertEquals(DeployKitException.CLOSED, e.getKind());
        // Closing the client closes its open subscriptions.
        StompClient c2 = connect();
        Subscription s2 = c2.subscribe(topic(), m -> {});
        c2.close();
        assertTrue(s2.isClosed());
    }

    @Test
    void aThrowingConsumerDoesNotStopTheSubscription() throws Exception {
        BlockingQueue<Message> got = new LinkedBlockingQueue<>();
        String dest = topic();
        try (StompClient c = connect()) {
            c.subscribe(dest, m -> {
                if (m.text().equals("boom")) {
                    throw new IllegalStateException("consumer failure (expected by the test)");
                }
                got.add(m);
            });
            c.send(dest, "boom");
            c.send(dest, "after".getBytes(StandardCharsets.UTF_8), Map.of(), true);
            assertEquals("after", poll(got).text());
        }
    }

    @Test
    void blockingCallsInsideTheCallbackAreRefusedNotDeadlocked() throws Exception {
        BlockingQueue<Object> got = new LinkedBlockingQueue<>();
        String dest = topic();
        try (StompClient c = connect()) {
            Subscription[] self = new Subscription[1];
            self[0] = c.subscribe(dest, m -> {
                try {
                    c.send("/topic/elsewhere", "x");
                    got.add("send did not throw");
                } catch (DeployKitException e) {
                    got.add(e.getKind());
                }
                try {
                    self[0].close();
                    got.add("close did not throw");
                } catch (DeployKitException e) {
                    got.add(e.getKind());
                }
            });
            c.send(dest, "go".getBytes(StandardCharsets.UTF_8), Map.of(), true);
            assertEquals(DeployKitException.INVALID_REQUEST, got.poll(WAIT_S, TimeUnit.SECONDS));
            assertEquals(DeployKitException.INVALID_REQUEST, got.poll(WAIT_S, TimeUnit.SECONDS));
            assertFalse(self[0].isClosed(), "a refused close leaves it open (and closable later)");
        }
    }
}
