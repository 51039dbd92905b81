package org.deploykit;

import java.nio.file.Path;

/** A child JVM for {@link SpoolTest}: spools builds 1..N of job {@code child} and exits without draining. */
public final class SpoolChild {
    private SpoolChild() {}

    /** Arguments: spool directory, N, builds destination, events destination. */
    public static void main(String[] args) {
        int n = Integer.parseInt(args[1]);
        StompClient.Options o = new StompClient.Options().buildsDestination(args[2]).eventsDestination(args[3]);
        try (Spool spool = Spool.open(Path.of(args[0]))) {
            for (int i = 1; i <= n; i++) {
                spool.pushBuild(Build.builder("child", i, BuildStatus.SUCCESS).branch("origin/master").commit("c" + i).build(), o);
            }
            System.out.println("SpoolChild: spooled " + n + " builds, " + spool.pending() + " messages pending, " + NativeStats.clients() + " clients");
        }
        System.exit(0);
    }
}
