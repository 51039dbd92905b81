package org.deploykit;

import java.util.Objects;

/** A build message (job, number, status and what was built); immutable, made with {@link #builder} or received. */
public final class Build {
    private final String job;
    private final long number;
    private final BuildStatus status;
    private final String url;
    private final String repo;
    private final String branch;
    private final String commit;
    private final long durationMillis;
    private final String correlationId;

    private Build(Builder b) {
        this.job = Objects.requireNonNull(b.job, "job");
        this.number = b.number;
        this.status = Objects.requireNonNull(b.status, "status");
        this.url = b.url;
        this.repo = b.repo;
        this.branch = b.branch;
        this.commit = b.commit;
        this.durationMillis = b.durationMillis;
        this.correlationId = b.correlationId;
    }

    /** Called by the native library for received build messages. */
    Build(String job, long number, String status, String url, String repo, String branch, String commit, long durationMillis, String correlationId) {
        this(builder(job, number, BuildStatus.valueOf(status.toUpperCase(java.util.Locale.ROOT))).url(url).repo(repo).branch(branch)
                .commit(commit).durationMillis(durationMillis).correlationId(correlationId));
    }

    /** A builder for job {@code job}, build {@code number}, in {@code status}. */
    public static Builder builder(String job, long number, BuildStatus status) {
        return new Builder(job, number, status);
    }

    /** Job name (folders as {@code a/b/c}). */
    public String job() { return job; }
    /** Build number. */
    public long number() { return number; }
    /** State. */
    public BuildStatus status() { return status; }
    /** Link to the build, or null. */
    public String url() { return url; }
    /** Repository name, or null. */
    public String repo() { return repo; }
    /** Branch built, or null. */
    public String branch() { return branch; }
    /** Commit built, or null. */
    public String commit() { return commit; }
    /** Duration in milliseconds, or -1 if unknown. */
    public long durationMillis() { return durationMillis; }
    /** The id of the change this build belongs to, or null. */
    public String correlationId() { return correlationId; }

    /** Builds a {@link Build}. */
    public static final class Builder {
        private final String job;
        private final long number;
        private final BuildStatus status;
        private String url;
        private String repo;
        private String branch;
        private String commit;
        private long durationMillis = -1;
        private String correlationId;

        private Builder(String job, long number, BuildStatus status) {
            this.job = job;
            this.number = number;
            this.status = status;
        }

        /** Sets the build's URL. */
        public Builder url(String v) { this.url = v; return this; }
        /** Sets the repository name. */
        public Builder repo(String v) { this.repo = v; return this; }
        /** Sets the branch (e.g. {@code origin/master}). */
        public Builder branch(String v) { this.branch = v; return this; }
        /** Sets the commit id. */
        public Builder commit(String v) { this.commit = v; return this; }
        /** Sets the duration in milliseconds. */
        public Builder durationMillis(long v) { this.durationMillis = v; return this; }
        /** Sets the correlation id. */
        public Builder correlationId(String v) { this.correlationId = v; return this; }
        /** The immutable build. */
        public Build build() { return new Build(this); }
    }
}
