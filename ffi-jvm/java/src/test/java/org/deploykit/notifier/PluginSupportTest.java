package org.deploykit.notifier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.atomic.AtomicInteger;
import org.deploykit.Build;
import org.deploykit.BuildStatus;
import org.deploykit.StompClient;
import org.deploykit.Subscription;
import org.deploykit.Wire;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What the Jenkins plugin's configuration page, pipeline step and listener call (the plugin itself cannot be built here). */
@SuppressWarnings("try") // subscriptions held open by try-with-resources, unused in the body
class PluginSupportTest {
    @TempDir
    Path tmp;

    @Test
    void validatesTheConfigurationFields() {
        assertTrue(PluginSupport.checkBrokerUrl("stomp://mq:61613").ok());
        assertTrue(PluginSupport.checkBrokerUrl("failover:(stomp://a:61613,stomp+ssl://b:61614)?randomize=false").ok());
        PluginSupport.Check bad = PluginSupport.checkBrokerUrl("http://mq:61613");
        assertFalse(bad.ok());
        assertTrue(bad.message().contains("scheme"), bad.message());
        PluginSupport.Check secret = PluginSupport.checkBrokerUrl("ftp://jenkins:s3cret@mq:61613");
        assertFalse(secret.ok());
        assertFalse(secret.message().contains("s3cret"), "no passcode in the message: " + secret.message());
        assertFalse(PluginSupport.checkBrokerUrl("  ").ok());
        assertTrue(PluginSupport.checkTopic("").ok() && PluginSupport.checkTopic(null).ok() && PluginSupport.checkTopic("/topic/ci.builds").ok());
        assertFalse(PluginSupport.checkTopic("/topic/ci builds").ok());
        assertFalse(PluginSupport.checkTopic("/topic/ci\nbuilds").ok());
        assertTrue(PluginSupport.checkWire("json").ok() && PluginSupport.checkWire("LEGACY").ok());
        assertFalse(PluginSupport.checkWire("xml").ok());
        assertEquals(List.of("json", "legacy"), List.copyOf(PluginSupport.wireChoices().keySet()));
        assertEquals(Wire.LEGACY, PluginSupport.wireOf(" legacy "));
        assertEquals(Wire.JSON, PluginSupport.wireOf(null));
        assertNull(PluginSupport.blankToNull(" "));
    }

    @Test
    void mapsTheStepsParameters() {
        assertEquals(BuildStatus.UNSTABLE, PluginSupport.stepStatus(" Unstable "));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PluginSupport.stepStatus("green"));
        assertTrue(e.getMessage().contains("started, success, failure, unstable or aborted"), e.getMessage());
    }

    @Test
    void testConnectionSaysWhatFailed() throws Exception {
        assertEquals("ok: Connected", PluginSupport.testConnection(BuildNotifierTest.url(), null, null).toString());
        int dead = BuildNotifierTest.freePort();
        PluginSupport.Check down = PluginSupport.testConnection("stomp://127.0.0.1:" + dead, "jenkins", "s3cret");
        assertFalse(down.ok());
        assertTrue(down.message().startsWith("connect: "), down.message());
        assertFalse(down.message().contains("s3cret"), down.message());
        assertFalse(PluginSupport.testConnection("nonsense", null, null).ok());
    }

    @Test
    void publishNowSendsToTheStepsDestination() throws Exception {
        String queue = BuildNotifierTest.queueName();
        BlockingQueue<Build> got = new LinkedBlockingQueue<>();
        try (StompClient sub = StompClient.connect(BuildNotifierTest.url()); Subscription s = BuildNotifierTest.listen(sub, queue, got)) {
            StompClient.Options o = PluginSupport.options("json", null, " ", "/topic/dk.jvm.plugin.events", null, null);
            String line = PluginSupport.publishNow(BuildNotifierTest.url(), PluginSupport.withDestination(o, queue),
                    Build.builder("step", 3, PluginSupport.stepStatus("failure")).build());
            assertEquals("deploykit: published failure for step #3", line);
            Build b = BuildNotifierTest.take(got, 1).get(0);
            assertEquals("step", b.job());
            assertEquals(BuildStatus.FAILURE, b.status(), "failures go to the step's destination too");
        }
    }

    @Test
    void aNotifierThatCannotBeMadeDisablesItselfOnce() {
        AtomicInteger made = new AtomicInteger();
        try (SharedNotifier n = new SharedNotifier(() -> tmp.resolve("spool"), x -> {}, s -> {
            made.incrementAndGet();
            throw new UnsatisfiedLinkError("libdeploykit_jni.so: cannot open shared object file (noexec); set -Ddeploykit.native.dir");
        })) {
            assertFalse(n.offer(Build.builder("j", 1, BuildStatus.STARTED).build()));
            assertFalse(n.offer(Build.builder("j", 1, BuildStatus.SUCCESS).build()));
            assertEquals(1, made.get(), "tried once");
            assertTrue(n.disabledBecause().contains("noexec"), n.disabledBecause());
            assertNull(n.stats());
        }
    }

    @Test
    void theSharedNotifierIsMadeOnFirstUseConfiguredAndFlushedOnClose() throws Exception {
        String queue = BuildNotifierTest.queueName();
        BlockingQueue<Build> got = new LinkedBlockingQueue<>();
        AtomicInteger configured = new AtomicInteger();
        try (StompClient sub = StompClient.connect(BuildNotifierTest.url()); Subscription s = BuildNotifierTest.listen(sub, queue, got)) {
            SharedNotifier n = new SharedNotifier(() -> tmp.resolve("spool"), x -> {
                configured.incrementAndGet();
                x.configure(BuildNotifierTest.url(), BuildNotifierTest.options(queue));
            });
            assertNull(n.stats(), "nothing made before first use");
            n.reconfigure();
            assertEquals(0, configured.get());
            assertTrue(n.offer(Build.builder("shared", 1, BuildStatus.SUCCESS).build()));
            n.reconfigure();
            assertEquals(2, configured.get());
            n.close();
            assertEquals(1, n.stats().sent(), n.stats().toString());
            assertFalse(n.offer(Build.builder("shared", 2, BuildStatus.SUCCESS).build()), "closed");
            assertEquals("shared", BuildNotifierTest.take(got, 1).get(0).job());
            assertNull(n.disabledBecause());
        }
    }
}
