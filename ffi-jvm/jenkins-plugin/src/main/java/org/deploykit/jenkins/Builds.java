package org.deploykit.jenkins;

import hudson.EnvVars;
import hudson.model.Result;
import hudson.model.Run;
import org.deploykit.Build;
import org.deploykit.BuildStatus;

/** Reads a Jenkins run's facts; the mapping itself is {@link org.deploykit.notifier.Builds} (tested in the jar). */
final class Builds {
    private Builds() {}

    /** The status of a finished run. */
    static BuildStatus status(Result r) {
        return org.deploykit.notifier.Builds.statusOf(r == null ? null : r.toString());
    }

    /** A build message for {@code run} in {@code status}, with the Git plugin's variables from {@code env}. */
    static Build of(Run<?, ?> run, BuildStatus status, EnvVars env) {
        return org.deploykit.notifier.Builds.of(run.getParent().getFullName(), run.getNumber(), status,
                env.get("BUILD_URL", run.getAbsoluteUrl()), run.getDuration(),
                env.get("GIT_URL"), env.get("GIT_BRANCH"), env.get("GIT_COMMIT"), env.get("DK_CORRELATION_ID"));
    }
}
