package org.deploykit.notifier;

import java.util.Locale;
import java.util.Map;
import org.deploykit.Build;
import org.deploykit.BuildStatus;

/** Maps a CI run's plain facts (as Jenkins gives them) to a {@link Build}; no Jenkins type needed. */
public final class Builds {
    private Builds() {}

    /**
     * The status of a finished run from Jenkins' result name ({@code SUCCESS}, {@code UNSTABLE},
     * {@code FAILURE}, {@code ABORTED}, {@code NOT_BUILT}); a run without a result yet counts as a success,
     * as Jenkins reports it at completion, and an unknown name as a failure.
     */
    public static BuildStatus statusOf(String result) {
        if (result == null) {
            return BuildStatus.SUCCESS;
        }
        switch (result.trim().toUpperCase(Locale.ROOT)) {
            case "SUCCESS":
                return BuildStatus.SUCCESS;
            case "UNSTABLE":
                return BuildStatus.UNSTABLE;
            case "ABORTED":
            case "NOT_BUILT":
                return BuildStatus.ABORTED;
            default:
                return BuildStatus.FAILURE;
        }
    }

    /** The repository's name from its URL ({@code git@host:org/site.git} → {@code site}), or null. */
    public static String repoOf(String gitUrl) {
        if (gitUrl == null || gitUrl.trim().isEmpty()) {
            return null;
        }
        String last = gitUrl.trim().replaceAll("/+$", "");
        last = last.substring(Math.max(last.lastIndexOf('/'), last.lastIndexOf(':')) + 1);
        if (last.endsWith(".git")) {
            last = last.substring(0, last.length() - 4);
        }
        return last.isEmpty() ? null : last;
    }

    /**
     * A build message: {@code job} (full name), {@code number}, {@code status}, the run's {@code url},
     * {@code durationMillis} (ignored for {@code started} and when negative), and the Git plugin's
     * {@code GIT_URL}, {@code GIT_BRANCH} and {@code GIT_COMMIT}; the correlation id is
     * {@code correlationId} when given (DK_CORRELATION_ID), else the commit.
     */
    public static Build of(String job, long number, BuildStatus status, String url, long durationMillis,
            String gitUrl, String branch, String commit, String correlationId) {
        Build.Builder b = Build.builder(job, number, status)
                .url(url)
                .repo(repoOf(gitUrl))
                .branch(blankToNull(branch))
                .commit(blankToNull(commit))
                .correlationId(blankToNull(correlationId) != null ? correlationId : blankToNull(commit));
        if (status != BuildStatus.STARTED && durationMillis >= 0) {
            b.durationMillis(durationMillis);
        }
        return b.build();
    }

    /**
     * A build message from a run's job, number, status, own URL and duration and its environment
     * as Jenkins gives it: {@code BUILD_URL} (else {@code runUrl}), the Git plugin's {@code GIT_URL},
     * {@code GIT_BRANCH}, {@code GIT_COMMIT}, and {@code DK_CORRELATION_ID}.
     */
    public static Build fromEnv(String job, long number, BuildStatus status, String runUrl, long durationMillis, Map<String, String> env) {
        String url = blankToNull(env.get("BUILD_URL")) != null ? env.get("BUILD_URL") : runUrl;
        return of(job, number, status, url, durationMillis, env.get("GIT_URL"), env.get("GIT_BRANCH"), env.get("GIT_COMMIT"), env.get("DK_CORRELATION_ID"));
    }

    private static String blankToNull(String v) {
        return v == null || v.trim().isEmpty() ? null : v;
    }
}
