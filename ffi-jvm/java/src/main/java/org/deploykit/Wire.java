package org.deploykit;

/** Body format of published messages. */
public enum Wire {
    /** JSON v1 with {@code dk-type}/{@code dk-version} headers (the default). */
    JSON,
    /** The original future-deploykit text bodies and {@code future.*} topics. */
    LEGACY;

    /** The name the native library takes. */
    String wireName() {
        return name().toLowerCase(java.util.Locale.ROOT);
    }
}
