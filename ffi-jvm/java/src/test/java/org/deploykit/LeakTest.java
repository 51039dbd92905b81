package org.deploykit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/**
 * 10 000 messages through a callback subscription without leaking: Java heap,
 * native memory (RSS) and JNI global references are measured before and after,
 * with bounds a per-message leak would exceed (each body is 8 KiB, so leaking
 * the bodies would cost ~80 MiB; the bounds are 24 MiB heap and 48 MiB RSS).
 * Local references are checked by running the suite under -Xcheck:jni
 * (scripts/jvm-suite.sh fails on its warnings).
 */
class LeakTest {
    static final int BODY = 8 * 1024;
    static final int WARMUP = 1_000;
    static final int COUNT = 10_000;
    static final int BATCH = 250;

    static long rssKiB() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        throw new IllegalStateException("no VmRSS in /proc/self/status");
    }

    static long heapUsed() throws InterruptedException {
        MemoryMXBean mem = ManagementFactory.getMemoryMXBean();
        for (int i = 0; i < 3; i++) {
            System.gc();
            Thread.sleep(50); // let the collector settle between explicit collections (measurement, not synchronisation)
        }
        return mem.getHeapMemoryUsage().getUsed();
    }

    /** Sends {@code n} messages in batches, each closed by a receipted send, and waits until all arrived. */
    static void pump(StompClient c, String dest, AtomicLong received, int n) throws InterruptedException {
        byte[] body = new byte[BODY];
        Arrays.fill(body, (byte) 'x');
        long start = received.get();
        for (int sent = 0; sent < n; ) {
            int batch = Math.min(BATCH, n - sent);
            for (int i = 0; i < batch; i++) {
                c.send(dest, body, Map.of(), i == batch - 1);
            }
            sent += batch;
            long deadline = System.nanoTime() + 30_000_000_000L;
            while (received.get() - start < sent) {
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("only " + (received.get() - start) + " of " + sent + " messages arrived within 30 s");
                }
                synchronized (received) {
                    received.wait(100);
                }
            }
        }
    }

    @Test
    void tenThousandMessagesWithoutLeaking() throws Exception {
        String dest = "/topic/dk.jvm.leak." + UUID.randomUUID();
        AtomicLong received = new AtomicLong();
        AtomicLong bytes = new AtomicLong();
        try (StompClient c = StompClient.connect(StompClientTest.url())) {
            Subscription warm = c.subscribe(dest, m -> {
                bytes.addAndGet(m.body().length);
                received.incrementAndGet();
                synchronized (received) {
                    received.notifyAll();
                }
            });
            pump(c, dest, received, WARMUP);
            warm.close();
            long heap0 = heapUsed();
            long rss0 = rssKiB();
            assertEquals(0, NativeStats.subscriptions());
            assertEquals(0, NativeStats.globalRefs());

            Subscription s = c.subscribe(dest, m -> {
                bytes.addAndGet(m.body().length);
                received.incrementAndGet();
                synchronized (received) {
                    received.notifyAll();
                }
            });
            assertEquals(5, NativeStats.globalRefs(), "the consumer and the Message, Commit, Build and Event classes");
            pump(c, dest, received, COUNT);
            s.close();
            assertEquals(0, NativeStats.globalRefs(), "released on close");
            long heap1 = heapUsed();
            long rss1 = rssKiB();
            long heapGrowth = (heap1 - heap0) / 1024 / 1024;
            long rssGrowth = (rss1 - rss0) / 1024;
            System.out.printf("leak check: %d messages, %d MiB of bodies; heap %+d MiB, RSS %+d MiB%n",
                    COUNT, (long) COUNT * BODY / 1024 / 1024, heapGrowth, rssGrowth);
            assertEquals((long) (WARMUP + COUNT) * BODY, bytes.get(), "every body arrived whole");
            assertTrue(heapGrowth < 24, "heap grew by " + heapGrowth + " MiB over " + COUNT + " messages");
            assertTrue(rssGrowth < 48, "RSS grew by " + rssGrowth + " MiB over " + COUNT + " messages");
        }
    }
}
