package org.deploykit;

/**
 * Every failure of the native library: {@link #getKind()} is the deploykit core
 * error's kind ({@code connect}, {@code refused}, {@code timeout}, …), the message
 * is core's. A Rust panic (a bug) arrives as kind {@code panic}, never as a crash.
 */
public class DeployKitException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The broker URL is malformed. */
    public static final String INVALID_URL = "invalid-url";
    /** No TCP connection could be made (after the configured attempts). */
    public static final String CONNECT = "connect";
    /** The broker refused the session (e.g. a bad login). */
    public static final String REFUSED = "refused";
    /** Nothing answered in time. */
    public static final String TIMEOUT = "timeout";
    /** The client or subscription is closed. */
    public static final String CLOSED = "closed";
    /** The call makes no sense here (e.g. blocking inside a subscription callback). */
    public static final String INVALID_REQUEST = "invalid-request";
    /** A Java argument was null or out of range. */
    public static final String INVALID_ARGUMENT = "invalid-argument";
    /** The spool directory could not be created, written, listed or read. */
    public static final String SPOOL = "spool";

    private final String kind;

    /** An exception of {@code kind} (called by the native library). */
    public DeployKitException(String kind, String message) {
        super(message);
        this.kind = kind;
    }

    /** The core error's kind. */
    public String getKind() {
        return kind;
    }

    @Override
    public String toString() {
        return "DeployKitException[" + kind + "]: " + getMessage();
    }
}
