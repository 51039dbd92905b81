package org.deploykit.jenkins;

import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.deploykit.Build;
import org.deploykit.DeployKitException;
import org.deploykit.StompClient;

/**
 * The one background sender: listeners and steps only {@link #offer} builds to a
 * bounded queue; this thread connects (lazily, again after a failure) and
 * publishes them, so a slow or absent broker never blocks a build.
 */
final class BuildPublisher implements Runnable {
    private static final Logger LOG = Logger.getLogger(BuildPublisher.class.getName());
    private static final BuildPublisher INSTANCE = new BuildPublisher();

    private final BlockingQueue<Build> queue = new ArrayBlockingQueue<>(1000);
    private StompClient client;
    private String clientUrl;

    private BuildPublisher() {
        Thread t = new Thread(this, "deploykit-notifier");
        t.setDaemon(true);
        t.start();
    }

    /** Queues a build message; drops it (with a warning) if the queue is full. */
    static void offer(Build b) {
        if (!INSTANCE.queue.offer(b)) {
            LOG.warning("deploykit: queue full, dropped " + b.job() + " #" + b.number() + " " + b.status());
        }
    }

    @Override
    public void run() {
        while (true) {
            Build b;
            try {
                b = queue.take();
            } catch (InterruptedException e) {
                return;
            }
            publish(b);
        }
    }

    private void publish(Build b) {
        DeployKitGlobalConfiguration cfg = DeployKitGlobalConfiguration.get();
        if (cfg == null || !cfg.isEnabled()) {
            return;
        }
        for (int attempt = 1; attempt <= 3; attempt++) {
            try {
                if (client == null || client.isClosed() || !cfg.getBrokerUrl().equals(clientUrl)) {
                    close();
                    client = StompClient.connect(cfg.getBrokerUrl(), cfg.options());
                    clientUrl = cfg.getBrokerUrl();
                }
                client.publishBuild(b);
                return;
            } catch (DeployKitException e) {
                LOG.log(Level.WARNING, "deploykit: publishing " + b.job() + " #" + b.number() + " failed (" + e.getKind() + ", attempt " + attempt + ")", e);
                close();
            }
        }
    }

    private void close() {
        if (client != null) {
            client.close();
            client = null;
        }
    }
}
