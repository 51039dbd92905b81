package org.deploykit.jenkins;

import hudson.EnvVars;
import hudson.Extension;
import hudson.model.Run;
import hudson.model.TaskListener;
import java.util.Set;
import org.deploykit.Build;
import org.deploykit.notifier.PluginSupport;
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
            Build b = DeployKitRunListener.buildOf(getContext().get(Run.class), PluginSupport.stepStatus(step.status), getContext().get(EnvVars.class));
            DeployKitGlobalConfiguration cfg = DeployKitGlobalConfiguration.get();
            String line = PluginSupport.publishNow(cfg.getBrokerUrl(), PluginSupport.withDestination(cfg.options(), step.destination), b);
            getContext().get(TaskListener.class).getLogger().println(line);
            return null;
        }
    }

    /** The step's descriptor. */
    @Extension
    public static class DescriptorImpl extends StepDescriptor {
        @Override public Set<? extends Class<?>> getRequiredContext() { return Set.of(Run.class, EnvVars.class, TaskListener.class); }
        @Override public String getFunctionName() { return "deploykitNotify"; }
        @Override public String getDisplayName() { return "Publish a deploykit build message"; }
    }
}
