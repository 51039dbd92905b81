package org.deploykit.jenkins;

import hudson.Extension;
import hudson.model.Job;
import jenkins.model.OptionalJobProperty;
import org.jenkinsci.Symbol;
import org.kohsuke.stapler.DataBoundConstructor;

/** Per-job opt-out: a job with this property publishes no build messages (JCasC/Pipeline: {@code deploykitOptOut}). */
public class DeployKitJobProperty extends OptionalJobProperty<Job<?, ?>> {
    /** Made by the job configuration form. */
    @DataBoundConstructor
    public DeployKitJobProperty() {}

    /** The form's descriptor. */
    @Extension
    @Symbol("deploykitOptOut")
    public static class DescriptorImpl extends OptionalJobPropertyDescriptor {
        @Override public String getDisplayName() { return "Do not publish deploykit build messages"; }
    }
}
