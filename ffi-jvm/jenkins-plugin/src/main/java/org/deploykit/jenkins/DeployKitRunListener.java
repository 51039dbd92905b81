package org.deploykit.jenkins;

import hudson.EnvVars;
import hudson.Extension;
import hudson.init.Terminator;
import hudson.model.Run;
import hudson.model.TaskListener;
import hudson.model.listeners.RunListener;
import java.io.File;
import java.io.IOException;
import jenkins.model.Jenkins;
import org.deploykit.Build;
import org.deploykit.BuildStatus;
import org.deploykit.notifier.Builds;
import org.deploykit.notifier.SharedNotifier;

/** Queues {@code started} and the final result of every build (unless the job opted out); never blocks a build. */
@Extension
public class DeployKitRunListener extends RunListener<Run<?, ?>> {
    /** This controller's notifier, spooling to {@code $JENKINS_HOME/deploykit/spool}; disables itself if the native library cannot load. */
    static final SharedNotifier NOTIFIER = new SharedNotifier(() -> new File(Jenkins.get().getRootDir(), "deploykit/spool").toPath(),
            n -> n.configure(DeployKitGlobalConfiguration.get().getBrokerUrl(), DeployKitGlobalConfiguration.get().options()));

    @Override public void onStarted(Run<?, ?> run, TaskListener listener) { enqueue(run, BuildStatus.STARTED, listener); }
    @Override public void onCompleted(Run<?, ?> run, TaskListener listener) { enqueue(run, Builds.statusOf(run.getResult() == null ? null : run.getResult().toString()), listener); }

    /** Jenkins is stopping: flush for a bounded time, spool the rest (sent after the restart). */
    @Terminator
    public static void flush() {
        NOTIFIER.close();
    }

    /** The build message of {@code run} in {@code status}, with the Git plugin's variables from {@code env}. */
    static Build buildOf(Run<?, ?> run, BuildStatus status, EnvVars env) {
        return Builds.fromEnv(run.getParent().getFullName(), run.getNumber(), status, run.getAbsoluteUrl(), run.getDuration(), env);
    }

    private static void enqueue(Run<?, ?> run, BuildStatus status, TaskListener listener) {
        DeployKitGlobalConfiguration cfg = DeployKitGlobalConfiguration.get();
        if (cfg == null || !cfg.isEnabled() || run.getParent().getProperty(DeployKitJobProperty.class) != null) {
            return;
        }
        try {
            NOTIFIER.offer(buildOf(run, status, run.getEnvironment(listener)));
        } catch (IOException e) {
            listener.error("deploykit: no build message: reading the environment failed: " + e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
