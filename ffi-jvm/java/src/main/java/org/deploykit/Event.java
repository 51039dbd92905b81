package org.deploykit;

/** An event line as received; made by the native library (publish with {@link StompClient#publishEvent}). */
public final class Event {
    private final String source;
    private final String host;
    private final String text;
    private final String correlationId;

    Event(String source, String host, String text, String correlationId) {
        this.source = source;
        this.host = host;
        this.text = text;
        this.correlationId = correlationId;
    }

    /** The daemon that spoke ({@code jenkins}, {@code fetch}, …). */
    public String source() { return source; }
    /** The host it ran on, or null. */
    public String host() { return host; }
    /** The line. */
    public String text() { return text; }
    /** The id of the change it belongs to, or null. */
    public String correlationId() { return correlationId; }

    @Override
    public String toString() {
        return "Event[" + source + ": " + text + "]";
    }
}
