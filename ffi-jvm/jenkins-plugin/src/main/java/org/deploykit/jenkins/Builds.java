package org.deploykit.jenkins;

import hudson.EnvVars;
import hudson.model.Result;
import hudson.model.Run;
import org.deploykit.Build;
import org.deploykit.BuildStatus;

/** Maps a Jenkins run and its SCM environment to an org.deploykit {@link Build}; nothing more. */
final class Builds {
    private Builds() {}

    /** The status of a finished run. */
    static BuildStatus status(Result r) {
        if (r == null || r == Result.SUCCESS) {
            return BuildStatus.SUCCESS;
        }
        if (r == Result.UNSTABLE) {
            return BuildStatus.UNSTABLE;
        }
        if (r == Result.ABORTED || r == Result.NOT_BUILT) {
            return BuildStatus.ABORTED;
        }
        return BuildStatus.FAILURE;
    }

    /** A build message for {@code run} in {@code status}; branch, commit and repo from the Git plugin's variables. */
    static Build of(Run<?, ?> run, BuildStatus status, EnvVars env) {
        String gitUrl = env.get("GIT_URL");
        String repo = null;
        if (gitUrl != null && !gitUrl.isEmpty()) {
            String last = gitUrl.replaceAll("/+$", "");
            last = last.substring(Math.max(last.lastIndexOf('/'), last.lastIndexOf(':')) + 1);
            repo = last.endsWith(".git") ? last.substring(0, last.length() - 4) : last;
        }
        String commit = env.get("GIT_COMMIT");
        Build.Builder b = Build.builder(run.getParent().getFullName(), run.getNumber(), status)
                .url(env.get("BUILD_URL", run.getAbsoluteUrl()))
                .repo(repo)
                .branch(env.get("GIT_BRANCH"))
                .commit(commit)
                .correlationId(env.get("DK_CORRELATION_ID", commit));
        if (status != BuildStatus.STARTED) {
            b.durationMillis(run.getDuration());
        }
        return b.build();
    }
}
