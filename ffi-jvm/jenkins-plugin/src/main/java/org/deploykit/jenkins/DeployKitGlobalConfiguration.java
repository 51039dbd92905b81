package org.deploykit.jenkins;

import com.cloudbees.plugins.credentials.CredentialsMatchers;
import com.cloudbees.plugins.credentials.common.StandardListBoxModel;
import com.cloudbees.plugins.credentials.common.StandardUsernamePasswordCredentials;
import hudson.Extension;
import hudson.security.ACL;
import hudson.util.FormValidation;
import hudson.util.ListBoxModel;
import jenkins.model.GlobalConfiguration;
import jenkins.model.Jenkins;
import org.deploykit.DeployKitException;
import org.deploykit.StompClient;
import org.deploykit.Wire;
import org.jenkinsci.Symbol;
import org.kohsuke.stapler.DataBoundSetter;
import org.kohsuke.stapler.QueryParameter;
import org.kohsuke.stapler.verb.POST;

/** Manage Jenkins → System → deploykit: broker, credentials, topics, wire (JCasC: {@code deploykit}). */
@Extension
@Symbol("deploykit")
public class DeployKitGlobalConfiguration extends GlobalConfiguration {
    private boolean enabled;
    private String brokerUrl = "stomp://localhost:61613";
    private String credentialsId;
    private String wire = "json";
    private String buildsTopic;
    private String buildsFailedTopic;
    private String eventsTopic;

    /** Loads the saved configuration. */
    public DeployKitGlobalConfiguration() {
        load();
    }

    /** The configuration in force. */
    public static DeployKitGlobalConfiguration get() {
        return GlobalConfiguration.all().get(DeployKitGlobalConfiguration.class);
    }

    public boolean isEnabled() { return enabled; }
    @DataBoundSetter public void setEnabled(boolean v) { enabled = v; changed(); }
    public String getBrokerUrl() { return brokerUrl; }
    @DataBoundSetter public void setBrokerUrl(String v) { brokerUrl = v; changed(); }
    public String getCredentialsId() { return credentialsId; }
    @DataBoundSetter public void setCredentialsId(String v) { credentialsId = v; changed(); }
    public String getWire() { return wire; }
    @DataBoundSetter public void setWire(String v) { wire = v; changed(); }
    public String getBuildsTopic() { return buildsTopic; }
    @DataBoundSetter public void setBuildsTopic(String v) { buildsTopic = blankToNull(v); changed(); }
    public String getBuildsFailedTopic() { return buildsFailedTopic; }
    @DataBoundSetter public void setBuildsFailedTopic(String v) { buildsFailedTopic = blankToNull(v); changed(); }
    public String getEventsTopic() { return eventsTopic; }
    @DataBoundSetter public void setEventsTopic(String v) { eventsTopic = blankToNull(v); changed(); }

    /** Saves, and points the notifier at the new settings. */
    private void changed() {
        save();
        Notifier.reconfigure();
    }

    private static String blankToNull(String v) {
        return v == null || v.trim().isEmpty() ? null : v.trim();
    }

    /** The client options this configuration describes (credentials looked up now, never logged). */
    StompClient.Options options() {
        StompClient.Options o = new StompClient.Options()
                .wire("legacy".equals(wire) ? Wire.LEGACY : Wire.JSON)
                .buildsDestination(buildsTopic)
                .buildsFailedDestination(buildsFailedTopic)
                .eventsDestination(eventsTopic);
        StandardUsernamePasswordCredentials c = credentials(credentialsId);
        if (c != null) {
            o.login(c.getUsername()).passcode(c.getPassword().getPlainText());
        }
        return o;
    }

    private static StandardUsernamePasswordCredentials credentials(String id) {
        if (id == null || id.isEmpty()) {
            return null;
        }
        return CredentialsMatchers.firstOrNull(
                com.cloudbees.plugins.credentials.CredentialsProvider.lookupCredentialsInItemGroup(
                        StandardUsernamePasswordCredentials.class, Jenkins.get(), ACL.SYSTEM2, java.util.List.of()),
                CredentialsMatchers.withId(id));
    }

    /** The credentials drop-down (administrators only). */
    @POST
    public ListBoxModel doFillCredentialsIdItems(@QueryParameter String credentialsId) {
        if (!Jenkins.get().hasPermission(Jenkins.ADMINISTER)) {
            return new StandardListBoxModel().includeCurrentValue(credentialsId);
        }
        return new StandardListBoxModel().includeEmptyValue()
                .includeAs(ACL.SYSTEM2, Jenkins.get(), StandardUsernamePasswordCredentials.class)
                .includeCurrentValue(credentialsId);
    }

    /** The wire drop-down. */
    public ListBoxModel doFillWireItems() {
        return new ListBoxModel(new ListBoxModel.Option("JSON (deploykit)", "json"),
                new ListBoxModel.Option("Legacy (future-deploykit topics and text)", "legacy"));
    }

    /** "Test connection": connects with the form's values and disconnects (administrators only). */
    @POST
    public FormValidation doTestConnection(@QueryParameter String brokerUrl, @QueryParameter String credentialsId) {
        Jenkins.get().checkPermission(Jenkins.ADMINISTER);
        StompClient.Options o = new StompClient.Options().connectAttempts(1);
        StandardUsernamePasswordCredentials c = credentials(credentialsId);
        if (c != null) {
            o.login(c.getUsername()).passcode(c.getPassword().getPlainText());
        }
        try (StompClient client = StompClient.connect(brokerUrl, o)) {
            return FormValidation.ok("Connected");
        } catch (DeployKitException e) {
            return FormValidation.error(e.getKind() + ": " + e.getMessage());
        }
    }
}
