package org.deploykit.jenkins;

import java.io.File;
import java.util.logging.Level;
import java.util.logging.Logger;
import jenkins.model.Jenkins;
import org.deploykit.Build;
import org.deploykit.notifier.BuildNotifier;

/** The one {@link BuildNotifier} of this controller, spooling to {@code $JENKINS_HOME/deploykit/spool}. */
final class Notifier {
    private static final Logger LOG = Logger.getLogger(Notifier.class.getName());
    private static BuildNotifier instance;
    private static boolean disabled;

    private Notifier() {}

    /** Queues a build (never blocks); a no-op once the native library failed to load. */
    static void offer(Build b) {
        BuildNotifier n = get();
        if (n != null) {
            n.offer(b);
        }
    }

    /** Applies the saved configuration (broker URL, credentials, topics, wire). */
    static synchronized void reconfigure() {
        if (instance != null) {
            DeployKitGlobalConfiguration cfg = DeployKitGlobalConfiguration.get();
            instance.configure(cfg.getBrokerUrl(), cfg.options());
        }
    }

    private static synchronized BuildNotifier get() {
        if (instance == null && !disabled) {
            try {
                File spool = new File(Jenkins.get().getRootDir(), "deploykit/spool");
                instance = new BuildNotifier(new BuildNotifier.Settings().spoolDir(spool.toPath()));
                reconfigure();
            } catch (LinkageError | RuntimeException e) {
                // The native library did not load (its message names the cause and the workaround):
                // builds go on, without notifications.
                disabled = true;
                LOG.log(Level.SEVERE, "deploykit: notifications disabled: " + e.getMessage(), e);
            }
        }
        return instance;
    }
}
