import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.deploykit.Build;
import org.deploykit.BuildStatus;
import org.deploykit.StompClient;
import org.deploykit.notifier.BuildNotifier;
import org.deploykit.notifier.Builds;
import org.deploykit.notifier.NotifierStats;

/**
 * The notifier's cost to a CI server (bench/jvm-notifier.sh): time on the calling thread per build
 * event (mapping a run's facts to a Build, then offer: what the Jenkins listener does after reading
 * the run's environment), p50/p99/max, for 16 threads at once and for one thread; then heap (after GC)
 * and RSS once 10 000 builds have been sent.
 *
 *   java -cp deploykit.jar:. NotifierBench BROKER_URL [BUILDS] [THREADS]
 */
public final class NotifierBench {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        int builds = args.length > 1 ? Integer.parseInt(args[1]) : 10_000;
        int threads = args.length > 2 ? Integer.parseInt(args[2]) : 16;
        Path spool = Files.createTempDirectory("dk-bench-spool");
        StompClient.Options options = new StompClient.Options().buildsDestination("/topic/dk.bench.builds").eventsDestination("/topic/dk.bench.events");
        Map<String, String> env = Map.of("BUILD_URL", "http://ci.example.org/job/web/job/site/17/", "GIT_URL", "git@git.example.org:web/site.git",
                "GIT_BRANCH", "origin/master", "GIT_COMMIT", "3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b");
        long[] base = memory();
        try (BuildNotifier n = new BuildNotifier(new BuildNotifier.Settings().capacity(builds + 1000).spoolDir(spool))) {
            n.configure(url, options);
            // Warm-up (JIT, connection): not measured.
            long[] warm = offer(n, env, "warm", 1, 2000);
            waitSent(n, warm.length);
            long[] many = run(n, env, threads, builds);
            waitSent(n, warm.length + builds);
            long[] one = run(n, env, 1, builds);
            waitSent(n, warm.length + 2L * builds);
            long[] after = memory();
            NotifierStats st = n.stats();
            System.out.println("| " + threads + " threads at once | " + builds + " | " + pct(many, 50) + " | " + pct(many, 99) + " | " + max(many) + " |");
            System.out.println("| 1 thread | " + builds + " | " + pct(one, 50) + " | " + pct(one, 99) + " | " + max(one) + " |");
            System.out.printf("memory: heap after GC %.1f MiB (%.1f MiB before the notifier), RSS %.1f MiB (%.1f MiB before), peak RSS %.1f MiB%n",
                    after[0] / 1048576.0, base[0] / 1048576.0, after[1] / 1048576.0, base[1] / 1048576.0, after[2] / 1048576.0);
            System.out.println("stats: " + st);
        }
    }

    /** Offers {@code builds} from {@code threads} threads at once; each offer's cost in ns. */
    static long[] run(BuildNotifier n, Map<String, String> env, int threads, int builds) throws InterruptedException {
        long[][] parts = new long[threads][];
        CountDownLatch start = new CountDownLatch(1);
        Thread[] ts = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            int i = t;
            ts[t] = new Thread(() -> {
                try {
                    start.await();
                } catch (InterruptedException e) {
                    return;
                }
                parts[i] = offer(n, env, "job-" + threads + "-" + i, 1, builds / threads);
            });
            ts[t].start();
        }
        start.countDown();
        for (Thread t : ts) {
            t.join();
        }
        return Arrays.stream(parts).flatMapToLong(Arrays::stream).sorted().toArray();
    }

    static long[] offer(BuildNotifier n, Map<String, String> env, String job, int from, int count) {
        long[] ns = new long[count];
        for (int i = 0; i < count; i++) {
            long t0 = System.nanoTime();
            Build b = Builds.fromEnv(job, from + i, i % 2 == 0 ? BuildStatus.STARTED : BuildStatus.SUCCESS, "http://ci/", 1234, env);
            if (!n.offer(b)) {
                throw new IllegalStateException("dropped: " + n.stats());
            }
            ns[i] = System.nanoTime() - t0;
        }
        return ns;
    }

    static void waitSent(BuildNotifier n, long sent) throws InterruptedException {
        long deadline = System.nanoTime() + 600_000_000_000L;
        while (n.stats().sent() + n.stats().spooled() < sent) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("not sent within 600 s: " + n.stats());
            }
            Thread.sleep(20);
        }
    }

    static String pct(long[] sorted, int p) {
        return micros(sorted[Math.min(sorted.length - 1, (int) Math.ceil(p / 100.0 * sorted.length) - 1)]);
    }

    static String max(long[] sorted) {
        return micros(sorted[sorted.length - 1]);
    }

    static String micros(long ns) {
        return String.format("%.1f µs", ns / 1000.0);
    }

    /** Heap used after GC, RSS and peak RSS (bytes). */
    static long[] memory() throws Exception {
        for (int i = 0; i < 3; i++) {
            System.gc();
            Thread.sleep(100);
        }
        Runtime r = Runtime.getRuntime();
        long rss = 0;
        long hwm = 0;
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                rss = Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            } else if (line.startsWith("VmHWM:")) {
                hwm = Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        return new long[] {r.totalMemory() - r.freeMemory(), rss, hwm};
    }
}
