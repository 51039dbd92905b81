package org.deploykit.notifier;

/** A snapshot of a {@link BuildNotifier}'s counters (all since it was created). */
public final class NotifierStats {
    private final long offered;
    private final long sent;
    private final long spooled;
    private final long drained;
    private final long dropped;
    private final long failures;
    private final int queued;
    private final int pendingInSpool;

    NotifierStats(long offered, long sent, long spooled, long drained, long dropped, long failures, int queued, int pendingInSpool) {
        this.offered = offered;
        this.sent = sent;
        this.spooled = spooled;
        this.drained = drained;
        this.dropped = dropped;
        this.failures = failures;
        this.queued = queued;
        this.pendingInSpool = pendingInSpool;
    }

    /** Builds handed to {@link BuildNotifier#offer(org.deploykit.Build)} and accepted. */
    public long offered() { return offered; }

    /** Builds the broker confirmed when first sent (spooled ones count in {@link #drained()}). */
    public long sent() { return sent; }

    /** Builds written to the on-disk spool because the broker could not take them. */
    public long spooled() { return spooled; }

    /** Messages sent from the spool (a build and its event line count as two). */
    public long drained() { return drained; }

    /** Builds refused because the queue was full (or the notifier closed), and builds lost at shutdown without a spool. */
    public long dropped() { return dropped; }

    /** Failed attempts to connect or send. */
    public long failures() { return failures; }

    /** Builds waiting in the in-memory queue. */
    public int queued() { return queued; }

    /** Messages waiting in the spool (a build and its event line count as two), or 0 without one. */
    public int pendingInSpool() { return pendingInSpool; }

    @Override
    public String toString() {
        return "NotifierStats[offered=" + offered + ", sent=" + sent + ", spooled=" + spooled + ", drained=" + drained + ", dropped=" + dropped
                + ", failures=" + failures + ", queued=" + queued + ", pendingInSpool=" + pendingInSpool + "]";
    }
}
