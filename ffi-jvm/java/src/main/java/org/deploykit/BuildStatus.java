package org.deploykit;

/** A build's state. */
public enum BuildStatus {
    /** The build began. */
    STARTED,
    /** It passed. */
    SUCCESS,
    /** It failed. */
    FAILURE,
    /** It passed with test failures. */
    UNSTABLE,
    /** It was cancelled. */
    ABORTED;

    /** The lowercase name used on the wire. */
    public String wireName() {
        return name().toLowerCase(java.util.Locale.ROOT);
    }
}
