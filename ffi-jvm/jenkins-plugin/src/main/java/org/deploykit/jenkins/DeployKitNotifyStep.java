package org.deploykit.jenkins;

import hudson.EnvVars;
import hudson.Extension;
import hudson.model.Run;
import hudson.model.TaskListener;
import java.util.Locale;
import java.util.Set;
import org.deploykit.Build;
import org.deploykit.BuildStatus;
import org.deploykit.StompClient;
import org.jenkinsci.plugins.workflow.steps.Step;
import org.jenkinsci.plugins.workflow.steps.StepContext;
import org.jenkinsci.plugins.workflow.steps.StepDescriptor;
import org.jenkinsci.plugins.workflow.steps.StepExecution;
import org.jenkinsci.plugins.workflow.steps.SynchronousNonBlockingStepExecution;
import org.kohsuke.stapler.DataBoundConstructor;
import org.kohsuke.stapler.DataBoundSetter;

/**
 * Pipeline step {@code deploykitNotify(status: 'success', destination: '/topic/…')}:
 * publishes one build message now (synchronously, off the CPS thread).
 */
public class DeployKitNotifyStep extends Step {
    private final String status;
    private String destination;

    /** {@code status}: started, success, failure, unstable or aborted. */
    @DataBoundConstructor
    public DeployKitNotifyStep(String status) {
        this.status = status;
    }

    public String getStatus() { return status; }
    public String getDestination() { return destination; }
    /** Publishes the build message here instead of the configured builds topic. */
    @DataBoundSetter public void setDestination(String v) { destination = v; }

    @Override
    public StepExecution start(StepContext context) {
        return new Execution(this, context);
    }

    private static final class Execution extends SynchronousNonBlockingStepExecution<Void> {
        private static final long serialVersionUID = 1L;
        private final transient DeployKitNotifyStep step;

        Execution(DeployKitNotifyStep step, StepContext context) {
            super(context);
            this.step = step;
        }

        @Override
        protected Void run() throws Exception {
            BuildStatus s = BuildStatus.valueOf(step.status.trim().toUpperCase(Locale.ROOT));
            Run<?, ?> run = getContext().get(Run.class);
            EnvVars env = getContext().get(EnvVars.class);
            Build b = Builds.of(run, s, env);
            DeployKitGlobalConfiguration cfg = DeployKitGlobalConfiguration.get();
            StompClient.Options o = cfg.options();
            if (step.destination != null && !step.destination.isEmpty()) {
                o.buildsDestination(step.destination).buildsFailedDestination(step.destination);
            }
            try (StompClient c = StompClient.connect(cfg.getBrokerUrl(), o)) {
                c.publishBuild(b);
            }
            getContext().get(TaskListener.class).getLogger().println("deploykit: published " + s.wireName() + " for " + b.job() + " #" + b.number());
            return null;
        }
    }

    /** The step's descriptor. */
    @Extension
    public static class DescriptorImpl extends StepDescriptor {
        @Override
        public Set<? extends Class<?>> getRequiredContext() {
            return Set.of(Run.class, EnvVars.class, TaskListener.class);
        }

        @Override
        public String getFunctionName() {
            return "deploykitNotify";
        }

        @Override
        public String getDisplayName() {
            return "Publish a deploykit build message";
        }
    }
}
