package org.deploykit;

/** A commit message as received (a push of one ref, or an SVN commit); made by the native library. */
public final class Commit {
    private final String repo;
    private final String oldrev;
    private final String newrev;
    private final String refname;
    private final String source;
    private final String correlationId;
    private final String svnProject;
    private final long svnRevision;

    Commit(String repo, String oldrev, String newrev, String refname, String source, String correlationId, String svnProject, long svnRevision) {
        this.repo = repo;
        this.oldrev = oldrev;
        this.newrev = newrev;
        this.refname = refname;
        this.source = source;
        this.correlationId = correlationId;
        this.svnProject = svnProject;
        this.svnRevision = svnRevision;
    }

    /** Repository name. */
    public String repo() { return repo; }
    /** Old object id (all zeros on creation; empty for SVN). */
    public String oldrev() { return oldrev; }
    /** New object id (all zeros on deletion; the revision for SVN). */
    public String newrev() { return newrev; }
    /** Full ref name, e.g. {@code refs/heads/master} (empty for SVN). */
    public String refname() { return refname; }
    /** Who sent it: {@code git}, {@code svn}, {@code github}, {@code gitlab}, {@code gitea}. */
    public String source() { return source; }
    /** The id that follows this change end to end. */
    public String correlationId() { return correlationId; }
    /** SVN: the project (path before {@code /trunk}), or null. */
    public String svnProject() { return svnProject; }
    /** SVN: the revision, or -1 for git. */
    public long svnRevision() { return svnRevision; }

    @Override
    public String toString() {
        return "Commit[" + repo + " " + refname + " " + newrev + "]";
    }
}
