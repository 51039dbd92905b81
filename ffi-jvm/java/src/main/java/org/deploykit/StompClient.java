package org.deploykit;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;

/**
 * A connected STOMP client (deploykit core's blocking client): send, publish typed
 * build and event messages, subscribe with a callback. Thread-safe; close it when
 * done (closing twice is safe; closing also closes its subscriptions).
 *
 * <pre>{@code
 * try (StompClient c = StompClient.connect("stomp://broker:61613", new StompClient.Options().login("jenkins").passcode(p))) {
 *     c.publishBuild(Build.builder("web/site", 17, BuildStatus.SUCCESS).url(url).build());
 * }
 * }</pre>
 */
public final class StompClient extends NativeObject {
    private final Set<Subscription> subscriptions = ConcurrentHashMap.newKeySet();

    /** Connection and publishing options; every field has a default. */
    public static final class Options {
        String login;
        String passcode;
        String vhost = "/";
        long timeoutMillis = 10_000;
        int connectAttempts = 3;
        long heartbeatMillis = 10_000;
        Wire wire = Wire.JSON;
        String source = "jenkins";
        String buildsDestination;
        String buildsFailedDestination;
        String eventsDestination;

        /** Login (overrides the URL's). */
        public Options login(String v) { login = v; return this; }
        /** Passcode (read it from a file or a credentials store, never hard-code it). */
        public Options passcode(String v) { passcode = v; return this; }
        /** STOMP virtual host (default {@code /}). */
        public Options vhost(String v) { vhost = v; return this; }
        /** Timeout for CONNECTED and receipts (default 10 s). */
        public Options timeoutMillis(long v) { timeoutMillis = v; return this; }
        /** Connection attempts before {@link #connect} gives up (default 3; 0 = the URL's failover options). */
        public Options connectAttempts(int v) { connectAttempts = v; return this; }
        /** Heart-beat interval both ways (default 10 s; 0 = off). */
        public Options heartbeatMillis(long v) { heartbeatMillis = v; return this; }
        /** Wire of published builds and events (default JSON; LEGACY also switches to {@code future.*} topics). */
        public Options wire(Wire v) { wire = v; return this; }
        /** The event lines' source (default {@code jenkins}). */
        public Options source(String v) { source = v; return this; }
        /** Where builds go (all statuses unless {@link #buildsFailedDestination} is set). */
        public Options buildsDestination(String v) { buildsDestination = v; return this; }
        /** Where failed, unstable and aborted builds go. */
        public Options buildsFailedDestination(String v) { buildsFailedDestination = v; return this; }
        /** Where event lines go ({@code {source}} is replaced by the source). */
        public Options eventsDestination(String v) { eventsDestination = v; return this; }
    }

    private StompClient(long handle) {
        super(handle);
    }

    /** Connects with default options. */
    public static StompClient connect(String url) {
        return connect(url, new Options());
    }

    /**
     * Connects (honouring failover URLs) and returns once the session is ready.
     *
     * @throws DeployKitException with kind {@code connect}, {@code refused}, {@code invalid-url}, {@code timeout}, …
     */
    public static StompClient connect(String url, Options o) {
        long h = nativeConnect(url, o.login, o.passcode, o.vhost, o.timeoutMillis, o.connectAttempts, o.heartbeatMillis,
                o.wire.wireName(), o.source, o.buildsDestination, o.buildsFailedDestination, o.eventsDestination);
        return new StompClient(h);
    }

    /** Sends a UTF-8 text body. */
    public void send(String destination, String body) {
        send(destination, body.getBytes(StandardCharsets.UTF_8), Map.of(), false);
    }

    /** Sends a body with extra headers; with {@code receipt}, returns once the broker confirmed it. */
    public void send(String destination, byte[] body, Map<String, String> headers, boolean receipt) {
        String[] flat = flatten(headers);
        withHandle(h -> {
            nativeSend(h, destination, body, flat, receipt);
            return null;
        });
    }

    /**
     * Sends each of {@code bodies} to {@code destination}, in order, with the same extra headers:
     * one call for many messages, far cheaper than a loop of {@link #send}. With {@code receipt},
     * returns once the broker confirmed the last (and so all). An empty list sends nothing; a null
     * body is refused ({@link IllegalArgumentException}) before anything is sent.
     */
    public void sendMany(String destination, List<byte[]> bodies, Map<String, String> headers, boolean receipt) {
        byte[][] all = bodies.toArray(new byte[0][]);
        for (int i = 0; i < all.length; i++) {
            if (all[i] == null) {
                throw new IllegalArgumentException("bodies[" + i + "] is null");
            }
        }
        String[] flat = flatten(headers);
        withHandle(h -> {
            nativeSendMany(h, destination, all, flat, receipt);
            return null;
        });
    }

    /** Headers as [k, v, k, v…] for the natives. */
    private static String[] flatten(Map<String, String> headers) {
        String[] flat = new String[headers.size() * 2];
        int i = 0;
        for (Map.Entry<String, String> e : headers.entrySet()) {
            flat[i++] = e.getKey();
            flat[i++] = e.getValue();
        }
        return flat;
    }

    /** Publishes a build message (to the builds or failed-builds destination) and its event line. */
    public void publishBuild(Build b) {
        publishBuild(b, null);
    }

    /**
     * Publishes a build message and its event line with the headers {@code dk-id: ID} and
     * {@code dk-id: ID.event} (none when {@code id} is null). Give the same id when sending the
     * same build again after a failure: a subscriber with a de-duplication window
     * ({@link #subscribe(String, int, Consumer)}, dk-web, dk-fetch) takes it once.
     */
    public void publishBuild(Build b, String id) {
        withHandle(h -> {
            nativePublishBuild(h, b.job(), b.number(), b.status().wireName(), b.url(), b.repo(), b.branch(), b.commit(),
                    b.durationMillis(), b.correlationId(), id);
            return null;
        });
    }

    /** Publishes an event line. */
    public void publishEvent(String text) {
        publishEvent(text, null);
    }

    /** Publishes an event line that belongs to a change. */
    public void publishEvent(String text, String correlationId) {
        withHandle(h -> {
            nativePublishEvent(h, text, correlationId);
            return null;
        });
    }

    /**
     * Subscribes; returns once the broker confirmed it. {@code consumer} runs on
     * deploykit's I/O thread (a native thread attached to the JVM), one message at
     * a time: keep it short, and do not call blocking client methods from it.
     * An exception it throws is printed and the subscription goes on.
     */
    public Subscription subscribe(String destination, Consumer<Message> consumer) {
        return subscribe(destination, 0, consumer);
    }

    /**
     * Subscribes as {@link #subscribe(String, Consumer)}, taking each message once: a message whose
     * {@code dk-id} header is among the last {@code dedupWindow} ids seen (a publisher's resend after a
     * lost receipt) is not delivered, and counted in {@link Subscription#duplicates()}. Messages without
     * the header are always delivered; 0 turns the window off.
     */
    public Subscription subscribe(String destination, int dedupWindow, Consumer<Message> consumer) {
        Subscription s = withHandle(h -> new Subscription(nativeSubscribe(h, destination, dedupWindow, consumer), this));
        subscriptions.add(s);
        return s;
    }

    void forget(Subscription s) {
        subscriptions.remove(s);
    }

    @Override
    protected void beforeDispose() {
        for (Subscription s : subscriptions.toArray(new Subscription[0])) {
            s.close();
        }
    }

    @Override
    protected void disposeInternal(long handle) {
        nativeClose(handle);
    }

    /**
     * Checks a broker URL as {@link #connect(String, Options)} reads it, without connecting.
     *
     * @throws DeployKitException kind {@code invalid-url} saying what is wrong, {@code invalid-argument} for null
     */
    public static void checkUrl(String url) {
        nativeCheckUrl(url);
    }

    private static native void nativeCheckUrl(String url);

    private static native long nativeConnect(String url, String login, String passcode, String vhost, long timeoutMillis,
            int connectAttempts, long heartbeatMillis, String wire, String source, String builds, String buildsFailed, String events);

    private static native void nativeSend(long handle, String destination, byte[] body, String[] headers, boolean receipt);

    private static native void nativeSendMany(long handle, String destination, byte[][] bodies, String[] headers, boolean receipt);

    private static native void nativePublishBuild(long handle, String job, long number, String status, String url, String repo,
            String branch, String commit, long durationMillis, String correlationId, String id);

    private static native void nativePublishEvent(long handle, String text, String correlationId);

    private static native long nativeSubscribe(long handle, String destination, int dedupWindow, Consumer<Message> consumer);

    private static native void nativeClose(long handle);
}
