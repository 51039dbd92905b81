package org.deploykit.notifier;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import org.deploykit.Build;
import org.deploykit.BuildStatus;
import org.deploykit.DeployKitException;
import org.deploykit.StompClient;
import org.deploykit.Wire;

/**
 * What a CI server's configuration page and pipeline step do, without a CI type: option
 * validation, the drop-down values, the client options from the saved fields, the
 * "test connection" check, and the step's parameters. The Jenkins plugin only adapts
 * these to its form types ({@code FormValidation}, {@code ListBoxModel}).
 */
public final class PluginSupport {
    /** The broker URL a new configuration starts with. */
    public static final String DEFAULT_BROKER_URL = "stomp://localhost:61613";

    private PluginSupport() {}

    /** The result of a check: fine, or what is wrong (never a secret). */
    public static final class Check {
        private final boolean ok;
        private final String message;

        private Check(boolean ok, String message) {
            this.ok = ok;
            this.message = message;
        }

        /** Whether the value is fine (or the connection worked). */
        public boolean ok() { return ok; }

        /** What to show: empty or a confirmation when fine, else what is wrong. */
        public String message() { return message; }

        @Override
        public String toString() {
            return (ok ? "ok" : "error") + (message.isEmpty() ? "" : ": " + message);
        }
    }

    /** The wire drop-down: value ({@code json}, {@code legacy}) to label, in display order. */
    public static Map<String, String> wireChoices() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("json", "JSON (deploykit)");
        m.put("legacy", "Legacy (future-deploykit topics and text)");
        return m;
    }

    /** The wire a saved value names: {@code legacy} (any case) is {@link Wire#LEGACY}, anything else JSON. */
    public static Wire wireOf(String value) {
        return value != null && value.trim().equalsIgnoreCase("legacy") ? Wire.LEGACY : Wire.JSON;
    }

    /** Checks a wire value: {@code json} or {@code legacy}. */
    public static Check checkWire(String value) {
        String v = value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
        return wireChoices().containsKey(v) ? fine("") : problem("wire must be json or legacy, not \"" + value + "\"");
    }

    /** Checks a broker URL with core's parser (stomp://, stomp+ssl://, failover:(…)); nothing is connected. */
    public static Check checkBrokerUrl(String url) {
        if (url == null || url.trim().isEmpty()) {
            return problem("a broker URL is needed, e.g. " + DEFAULT_BROKER_URL);
        }
        try {
            StompClient.checkUrl(url.trim());
            return fine("");
        } catch (DeployKitException e) {
            return problem(e.getMessage());
        }
    }

    /** Checks an optional destination: empty (the default), or one without spaces or line breaks. */
    public static Check checkTopic(String topic) {
        String t = blankToNull(topic);
        if (t == null) {
            return fine("");
        }
        for (int i = 0; i < t.length(); i++) {
            if (Character.isWhitespace(t.charAt(i)) || Character.isISOControl(t.charAt(i))) {
                return problem("a destination has no spaces or control characters, e.g. /topic/ci.builds");
            }
        }
        return fine("");
    }

    /** The value trimmed, or null when blank (a blank topic means the default one). */
    public static String blankToNull(String v) {
        return v == null || v.trim().isEmpty() ? null : v.trim();
    }

    /**
     * The client options the saved fields describe: wire, the three optional topics (blank: the
     * default for the wire), and the credentials (login null: none).
     */
    public static StompClient.Options options(String wire, String buildsTopic, String buildsFailedTopic, String eventsTopic,
            String login, String passcode) {
        StompClient.Options o = new StompClient.Options().wire(wireOf(wire))
                .buildsDestination(blankToNull(buildsTopic))
                .buildsFailedDestination(blankToNull(buildsFailedTopic))
                .eventsDestination(blankToNull(eventsTopic));
        if (login != null) {
            o.login(login).passcode(passcode);
        }
        return o;
    }

    /** "Test connection": connects once (one attempt) with these credentials and disconnects. */
    @SuppressWarnings("try") // the client is only opened and closed
    public static Check testConnection(String url, String login, String passcode) {
        Check u = checkBrokerUrl(url);
        if (!u.ok()) {
            return u;
        }
        StompClient.Options o = new StompClient.Options().connectAttempts(1);
        if (login != null) {
            o.login(login).passcode(passcode);
        }
        try (StompClient c = StompClient.connect(url.trim(), o)) {
            return fine("Connected");
        } catch (DeployKitException e) {
            return problem(e.getKind() + ": " + e.getMessage());
        }
    }

    /**
     * The pipeline step's {@code status} parameter: {@code started}, {@code success}, {@code failure},
     * {@code unstable} or {@code aborted} (any case).
     *
     * @throws IllegalArgumentException naming the valid values
     */
    public static BuildStatus stepStatus(String status) {
        String s = status == null ? "" : status.trim().toUpperCase(Locale.ROOT);
        for (BuildStatus b : BuildStatus.values()) {
            if (b.name().equals(s)) {
                return b;
            }
        }
        throw new IllegalArgumentException("deploykitNotify: status must be started, success, failure, unstable or aborted, not \"" + status + "\"");
    }

    /** The options with the step's {@code destination} (when given) for builds of every status. */
    public static StompClient.Options withDestination(StompClient.Options o, String destination) {
        String d = blankToNull(destination);
        return d == null ? o : o.buildsDestination(d).buildsFailedDestination(d);
    }

    /**
     * Publishes one build now (the pipeline step: synchronously, a connection of its own) and returns
     * the line to print in the build log.
     *
     * @throws DeployKitException when the broker cannot be reached or refuses it
     */
    public static String publishNow(String url, StompClient.Options o, Build b) {
        try (StompClient c = StompClient.connect(url, o)) {
            c.publishBuild(b);
        }
        return "deploykit: published " + b.status().wireName() + " for " + b.job() + " #" + b.number();
    }

    private static Check fine(String message) {
        return new Check(true, message);
    }

    private static Check problem(String message) {
        return new Check(false, message);
    }
}
