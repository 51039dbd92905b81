package org.deploykit.jenkins;

import hudson.EnvVars;
import hudson.Extension;
import hudson.model.Run;
import hudson.model.TaskListener;
import hudson.model.listeners.RunListener;
import java.io.IOException;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.deploykit.BuildStatus;

/** Publishes {@code started} and the final result of every build (unless the job opted out); only enqueues. */
@Extension
public class DeployKitRunListener extends RunListener<Run<?, ?>> {
    private static final Logger LOG = Logger.getLogger(DeployKitRunListener.class.getName());

    @Override
    public void onStarted(Run<?, ?> run, TaskListener listener) {
        enqueue(run, BuildStatus.STARTED, listener);
    }

    @Override
    public void onCompleted(Run<?, ?> run, TaskListener listener) {
        enqueue(run, Builds.status(run.getResult()), listener);
    }

    private static void enqueue(Run<?, ?> run, BuildStatus status, TaskListener listener) {
        DeployKitGlobalConfiguration cfg = DeployKitGlobalConfiguration.get();
        if (cfg == null || !cfg.isEnabled() || DeployKitJobProperty.optedOut(run.getParent())) {
            return;
        }
        try {
            EnvVars env = run.getEnvironment(listener);
            Notifier.offer(Builds.of(run, status, env));
        } catch (IOException e) {
            LOG.log(Level.WARNING, "deploykit: reading the environment of " + run, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
