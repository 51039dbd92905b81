package org.deploykit;

import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A message received by a {@link Subscription}: destination, headers, body, and
 * what deploykit core made of it ({@link #kind()} and its JSON form, or why it
 * is not a deploykit message).
 */
public final class Message {
    private final String destination;
    private final Map<String, String> headers;
    private final byte[] body;
    private final String kind;
    private final String json;
    private final String decodeError;
    private final Object typed;

    /** Called by the native library: headers as {@code [name, value, name, value, …]}; {@code typed} a Commit, Build, Event or null. */
    Message(String destination, String[] headers, byte[] body, String kind, String json, String decodeError, Object typed) {
        this.destination = destination;
        Map<String, String> h = new LinkedHashMap<>();
        for (int i = 0; i + 1 < headers.length; i += 2) {
            h.putIfAbsent(headers[i], headers[i + 1]); // STOMP: the first occurrence wins
        }
        this.headers = Collections.unmodifiableMap(h);
        this.body = body;
        this.kind = kind;
        this.json = json;
        this.decodeError = decodeError;
        this.typed = typed;
    }

    /** Where it was sent. */
    public String destination() { return destination; }
    /** Its headers (first occurrence of each name). */
    public Map<String, String> headers() { return headers; }
    /** One header, or null. */
    public String header(String name) { return headers.get(name); }
    /** The body (a copy). */
    public byte[] body() { return body.clone(); }
    /** The body as UTF-8 text. */
    public String text() { return new String(body, StandardCharsets.UTF_8); }
    /** {@code commit}, {@code build}, {@code package}, {@code event}, … or {@code keepalive}; null if not a deploykit message. */
    public String kind() { return kind; }
    /** The decoded message as JSON (its fields plus {@code "kind"}), JSON or legacy on the wire; null if not decodable. */
    public String json() { return json; }
    /** Why it is not a deploykit message, or null. */
    public String decodeError() { return decodeError; }
    /** The commit, if it is one (JSON or legacy text on the wire), else null. */
    public Commit asCommit() { return typed instanceof Commit ? (Commit) typed : null; }
    /** The build, if it is one, else null. */
    public Build asBuild() { return typed instanceof Build ? (Build) typed : null; }
    /** The event line, if it is one, else null. */
    public Event asEvent() { return typed instanceof Event ? (Event) typed : null; }
    /** Whether it is the original's single-newline keepalive (to be ignored). */
    public boolean isKeepalive() { return "keepalive".equals(kind); }

    @Override
    public String toString() {
        return "Message[" + destination + ", kind=" + kind + ", " + body.length + " bytes]";
    }
}
