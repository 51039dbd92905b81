package org.deploykit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** {@link Spool} against the real broker of {@code DK_JVM_BROKER_URL}: spooled builds survive no client, a dead broker and a JVM exit. */
class SpoolTest {
    private final List<Path> dirs = new ArrayList<>();

    Path tempDir() throws IOException {
        Path d = Files.createTempDirectory("dk-jvm-spool-");
        dirs.add(d);
        return d;
    }

    static Build build(String job, long number) {
        return Build.builder(job, number, BuildStatus.SUCCESS).url("http://ci/job/" + job + "/" + number + "/").branch("origin/master")
                .commit("c" + number).correlationId("id-" + number).build();
    }

    static StompClient.Options options(String builds, String events) {
        return new StompClient.Options().timeoutMillis(10_000).buildsDestination(builds).eventsDestination(events);
    }

    @BeforeEach
    void nothingOpenBefore() {
        assertEquals(0, NativeStats.spools(), "no spool left open by an earlier test");
    }

    @AfterEach
    void nothingLeftOpen() throws IOException {
        assertEquals(0, NativeStats.clients(), "every client closed");
        assertEquals(0, NativeStats.subscriptions(), "every subscription closed");
        assertEquals(0, NativeStats.spools(), "every spool closed");
        assertEquals(0, NativeStats.globalRefs(), "every global reference released");
        for (Path d : dirs) {
            try (Stream<Path> walk = Files.walk(d)) {
                for (Path p : (Iterable<Path>) walk.sorted(Comparator.reverseOrder())::iterator) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    /** Subscribes to builds and events, drains, and checks builds {@code first..last} of {@code job} arrived in order. */
    static void drainAndExpect(Spool spool, StompClient.Options o, String builds, String events, String job, int first, int last) throws Exception {
        int n = last - first + 1;
        BlockingQueue<Message> got = new LinkedBlockingQueue<>();
        BlockingQueue<Message> lines = new LinkedBlockingQueue<>();
        try (StompClient c = StompClient.connect(StompClientTest.url(), o)) {
            c.subscribe(builds, got::add);
            c.subscribe(events, lines::add);
            assertEquals(2 * n, spool.pending());
            assertEquals(2 * n, spool.drain(c, 20_000), "a build and its event line each");
            assertEquals(0, spool.pending());
            for (int i = first; i <= last; i++) {
                Build b = StompClientTest.poll(got).asBuild();
                assertEquals(job, b.job());
                assertEquals(i, b.number(), "oldest first");
                Message e = StompClientTest.poll(lines);
                assertEquals("event", e.kind());
                assertTrue(e.asEvent().text().startsWith("Complete job " + i + " - [" + job + "]"), e.json());
            }
            assertEquals(0, spool.drain(c, 0), "nothing left to send");
        }
    }

    @Test
    void buildsSpooledWithoutAClientArriveInOrderOnceDrained() throws Exception {
        String builds = StompClientTest.topic();
        String events = StompClientTest.topic();
        StompClient.Options o = options(builds, events);
        try (Spool spool = Spool.open(tempDir().resolve("a/spool"))) {
            assertTrue(Files.isDirectory(spool.dir()), "open creates the directory");
            assertEquals(0, spool.pending());
            for (int i = 1; i <= 3; i++) {
                spool.pushBuild(build("web/site", i), o);
            }
            assertEquals(0, NativeStats.clients(), "spooled while no client exists");
            assertEquals(1, NativeStats.spools());
            assertEquals(6, spool.pending(), "a build and its event line each");
            drainAndExpect(spool, o, builds, events, "web/site", 1, 3);
        }
    }

    @Test
    void aSpoolSurvivesTheJvmThatWroteIt() throws Exception {
        String builds = StompClientTest.topic();
        String events = StompClientTest.topic();
        Path dir = tempDir().resolve("spool");
        List<String> cmd = ChildJvm.command(SpoolChild.class, dir.toString(), "3", builds, events);
        Process child = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(child.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(child.waitFor(60, TimeUnit.SECONDS), "child JVM finished");
        System.out.println("SpoolTest child JVM output:\n" + out);
        assertEquals(0, child.exitValue(), out);
        assertTrue(out.contains("spooled 3 builds, 6 messages pending, 0 clients"), out);
        try (Spool spool = Spool.open(dir)) {
            assertEquals(6, spool.pending(), "the child's messages are on disk");
            drainAndExpect(spool, options(builds, events), builds, events, "child", 1, 3);
        }
    }

    @Test
    void aDeadBrokerLeavesEverythingSpooled() throws Exception {
        StompClient.Options o = options(StompClientTest.topic(), StompClientTest.topic()).connectAttempts(1);
        int closedPort;
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            closedPort = s.getLocalPort();
        }
        try (Spool spool = Spool.open(tempDir())) {
            spool.pushBuild(build("dead", 1), o);
            spool.pushBuild(build("dead", 2), o);
            DeployKitException e = assertThrows(DeployKitException.class, () -> {
                try (StompClient c = StompClient.connect("stomp://127.0.0.1:" + closedPort, o)) {
                    spool.drain(c, 10_000);
                }
            });
            assertEquals(DeployKitException.CONNECT, e.getKind(), e.toString());
            assertEquals(4, spool.pending(), "nothing sent, nothing lost");
        }
    }

    @Test
    void aBrokerLostBeforeDrainingThrowsTheBusKindAndKeepsTheRest() throws Exception {
        String builds = StompClientTest.topic();
        String events = StompClientTest.topic();
        StompClient.Options o = options(builds, events).connectAttempts(1);
        URI broker = URI.create(StompClientTest.url());
        try (Spool spool = Spool.open(tempDir())) {
            spool.pushBuild(build("lost", 1), o);
            spool.pushBuild(build("lost", 2), o);
            try (Proxy proxy = new Proxy(broker.getHost(), broker.getPort());
                    StompClient c = StompClient.connect("stomp://" + broker.getRawUserInfo() + "@127.0.0.1:" + proxy.port()
                            + "?maxReconnectAttempts=1", o)) {
                proxy.shutDown(); // the broker is gone, and its port closed: one reconnect attempt fails
                DeployKitException e = assertThrows(DeployKitException.class, () -> spool.drain(c, 10_000));
                System.out.println("SpoolTest: drain after the broker went away: " + e);
                assertTrue(Set.of(DeployKitException.CLOSED, DeployKitException.CONNECT, DeployKitException.TIMEOUT, "receipt-lost").contains(e.getKind()),
                        e.toString());
                assertEquals(4, spool.pending(), "what was not sent stays spooled");
            }
            drainAndExpect(spool, options(builds, events), builds, events, "lost", 1, 2);
        }
    }

    @Test
    void badInputsAndUseAfterClose() throws Exception {
        Path file = Files.createFile(tempDir().resolve("not-a-directory"));
        DeployKitException e = assertThrows(DeployKitException.class, () -> Spool.open(file));
        assertEquals(DeployKitException.SPOOL, e.getKind(), e.toString());
        assertTrue(e.getMessage().contains(file.toString()), e.getMessage());
        e = assertThrows(DeployKitException.class, () -> Spool.open(null));
        assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind(), e.toString());
        Spool spool = Spool.open(tempDir());
        StompClient.Options o = new StompClient.Options();
        e = assertThrows(DeployKitException.class, () -> spool.pushBuild(null, o));
        assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind(), e.toString());
        e = assertThrows(DeployKitException.class, () -> spool.pushBuild(build("j", 1), null));
        assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind(), e.toString());
        e = assertThrows(DeployKitException.class, () -> spool.pushBuild(Build.builder("j", -1, BuildStatus.STARTED).build(), o));
        assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind(), e.toString());
        e = assertThrows(DeployKitException.class, () -> spool.drain(null, 0));
        assertEquals(DeployKitException.INVALID_ARGUMENT, e.getKind(), e.toString());
        assertEquals(0, spool.pending(), "nothing spooled by the refused calls");
        spool.close();
        spool.close();
        assertTrue(spool.isClosed());
        e = assertThrows(DeployKitException.class, spool::pending);
        assertEquals(DeployKitException.CLOSED, e.getKind(), e.toString());
        e = assertThrows(DeployKitException.class, () -> spool.pushBuild(build("j", 1), o));
        assertEquals(DeployKitException.CLOSED, e.getKind(), e.toString());
        try (StompClient c = StompClient.connect(StompClientTest.url(), o)) {
            e = assertThrows(DeployKitException.class, () -> spool.drain(c, 0));
            assertEquals(DeployKitException.CLOSED, e.getKind(), e.toString());
        }
    }

    /** A TCP proxy to the broker that can be shut down, ports and connections closed: a broker that went away. */
    static final class Proxy implements AutoCloseable {
        private final ServerSocket server = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        private final List<Socket> sockets = new CopyOnWriteArrayList<>();

        Proxy(String host, int port) throws IOException {
            Thread t = new Thread(() -> {
                try {
                    while (true) {
                        Socket in = server.accept();
                        Socket out = new Socket(host, port);
                        sockets.add(in);
                        sockets.add(out);
                        pump(in.getInputStream(), out.getOutputStream());
                        pump(out.getInputStream(), in.getOutputStream());
                    }
                } catch (IOException e) {
                    // closed
                }
            }, "spool-test-proxy");
            t.setDaemon(true);
            t.start();
        }

        static void pump(InputStream from, OutputStream to) {
            Thread t = new Thread(() -> {
                try {
                    from.transferTo(to);
                } catch (IOException e) {
                    // closed
                }
            }, "spool-test-proxy-pump");
            t.setDaemon(true);
            t.start();
        }

        int port() {
            return server.getLocalPort();
        }

        @Override
        public void close() throws IOException {
            shutDown();
        }

        /** Closes the listening port and every connection through it. */
        void shutDown() throws IOException {
            server.close();
            for (Socket s : sockets) {
                s.close();
            }
        }
    }
}
