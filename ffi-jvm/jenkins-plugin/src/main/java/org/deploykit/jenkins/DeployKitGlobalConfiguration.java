package org.deploykit.jenkins;

import com.cloudbees.plugins.credentials.CredentialsMatchers;
import com.cloudbees.plugins.credentials.CredentialsProvider;
import com.cloudbees.plugins.credentials.common.StandardListBoxModel;
import com.cloudbees.plugins.credentials.common.StandardUsernamePasswordCredentials;
import hudson.Extension;
import hudson.security.ACL;
import hudson.util.FormValidation;
import hudson.util.ListBoxModel;
import java.util.List;
import jenkins.model.GlobalConfiguration;
import jenkins.model.Jenkins;
import org.deploykit.StompClient;
import org.deploykit.notifier.PluginSupport;
import org.jenkinsci.Symbol;
import org.kohsuke.stapler.DataBoundSetter;
import org.kohsuke.stapler.QueryParameter;
import org.kohsuke.stapler.verb.POST;

/** Manage Jenkins → System → deploykit (JCasC: {@code deploykit}); the checks are {@link PluginSupport}'s. */
@Extension
@Symbol("deploykit")
public class DeployKitGlobalConfiguration extends GlobalConfiguration {
    private boolean enabled;
    private String brokerUrl = PluginSupport.DEFAULT_BROKER_URL;
    private String credentialsId;
    private String wire = "json";
    private String buildsTopic;
    private String buildsFailedTopic;
    private String eventsTopic;

    public DeployKitGlobalConfiguration() { load(); }
    public static DeployKitGlobalConfiguration get() { return GlobalConfiguration.all().get(DeployKitGlobalConfiguration.class); }

    public boolean isEnabled() { return enabled; }
    @DataBoundSetter public void setEnabled(boolean v) { enabled = v; changed(); }
    public String getBrokerUrl() { return brokerUrl; }
    @DataBoundSetter public void setBrokerUrl(String v) { brokerUrl = v; changed(); }
    public String getCredentialsId() { return credentialsId; }
    @DataBoundSetter public void setCredentialsId(String v) { credentialsId = PluginSupport.blankToNull(v); changed(); }
    public String getWire() { return wire; }
    @DataBoundSetter public void setWire(String v) { wire = v; changed(); }
    public String getBuildsTopic() { return buildsTopic; }
    @DataBoundSetter public void setBuildsTopic(String v) { buildsTopic = PluginSupport.blankToNull(v); changed(); }
    public String getBuildsFailedTopic() { return buildsFailedTopic; }
    @DataBoundSetter public void setBuildsFailedTopic(String v) { buildsFailedTopic = PluginSupport.blankToNull(v); changed(); }
    public String getEventsTopic() { return eventsTopic; }
    @DataBoundSetter public void setEventsTopic(String v) { eventsTopic = PluginSupport.blankToNull(v); changed(); }

    /** Saves, and points the notifier at the new settings. */
    private void changed() { save(); DeployKitRunListener.NOTIFIER.reconfigure(); }

    /** The client options these fields describe (credentials looked up now, never logged). */
    StompClient.Options options() {
        String[] c = login(credentialsId);
        return PluginSupport.options(wire, buildsTopic, buildsFailedTopic, eventsTopic, c[0], c[1]);
    }

    /** The credentials' username and password, or two nulls. */
    private static String[] login(String id) {
        StandardUsernamePasswordCredentials c = id == null || id.isEmpty() ? null : CredentialsMatchers.firstOrNull(CredentialsProvider.lookupCredentialsInItemGroup(
                StandardUsernamePasswordCredentials.class, Jenkins.get(), ACL.SYSTEM2, List.of()), CredentialsMatchers.withId(id));
        return c == null ? new String[2] : new String[] {c.getUsername(), c.getPassword().getPlainText()};
    }

    private static FormValidation form(PluginSupport.Check c) {
        return c.ok() ? FormValidation.ok(c.message()) : FormValidation.error(c.message());
    }

    public FormValidation doCheckBrokerUrl(@QueryParameter String value) { return form(PluginSupport.checkBrokerUrl(value)); }
    public FormValidation doCheckBuildsTopic(@QueryParameter String value) { return form(PluginSupport.checkTopic(value)); }
    public FormValidation doCheckBuildsFailedTopic(@QueryParameter String value) { return form(PluginSupport.checkTopic(value)); }
    public FormValidation doCheckEventsTopic(@QueryParameter String value) { return form(PluginSupport.checkTopic(value)); }

    public ListBoxModel doFillWireItems() {
        ListBoxModel m = new ListBoxModel();
        PluginSupport.wireChoices().forEach((value, label) -> m.add(label, value)); // value → label, in order
        return m;
    }

    /** The credentials drop-down (administrators only). */
    @POST
    public ListBoxModel doFillCredentialsIdItems(@QueryParameter String credentialsId) {
        if (!Jenkins.get().hasPermission(Jenkins.ADMINISTER)) {
            return new StandardListBoxModel().includeCurrentValue(credentialsId);
        }
        return new StandardListBoxModel().includeEmptyValue()
                .includeAs(ACL.SYSTEM2, Jenkins.get(), StandardUsernamePasswordCredentials.class).includeCurrentValue(credentialsId);
    }

    /** "Test connection" with the form's values (administrators only). */
    @POST
    public FormValidation doTestConnection(@QueryParameter String brokerUrl, @QueryParameter String credentialsId) {
        Jenkins.get().checkPermission(Jenkins.ADMINISTER);
        String[] c = login(credentialsId);
        return form(PluginSupport.testConnection(brokerUrl, c[0], c[1]));
    }
}
