package org.deploykit.notifier;

import java.nio.file.Path;
import java.time.Duration;
import org.deploykit.Build;
import org.deploykit.BuildStatus;

/** A second JVM for {@link BuildNotifierTest}: offers builds to a dead broker, spools them, exits. */
public final class NotifierChild {
    private NotifierChild() {}

    /** Arguments: spool directory, broker URL (nothing listening), queue, number of builds. */
    public static void main(String[] args) {
        int count = Integer.parseInt(args[3]);
        BuildNotifier n = new BuildNotifier(new BuildNotifier.Settings().spoolDir(Path.of(args[0])).attempts(1)
                .initialBackoff(Duration.ofMillis(20)));
        n.configure(args[1], BuildNotifierTest.options(args[2]));
        for (int i = 1; i <= count; i++) {
            n.offer(Build.builder("child", i, BuildStatus.SUCCESS).build());
        }
        n.close(Duration.ofSeconds(1));
        NotifierStats st = n.stats();
        System.out.println("child: " + st);
        System.exit(st.spooled() == count && st.pendingInSpool() == 2 * count ? 0 : 1);
    }
}
