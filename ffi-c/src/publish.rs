//! Typed publishing from plain C structs: commits, builds and event lines, each
//! sent to its configured destination in the chosen wire form (core's
//! `Publisher`, which also publishes the one-line event of a commit or build).

use crate::client::dk_client;
use crate::error::{dk_error, dk_result};
use crate::ffi::{arg_enum, arg_ref, arg_slice, arg_str, not_in_callback, opt_ref, opt_str, opt_string, str_or_empty, FfiResult, Opaque};
use deploykit::blocking::{BlockingClient, BlockingPublisher};
use deploykit::message::{Build, BuildStatus, Commit, CommitInfo, Destinations, Source, SvnInfo, Wire};
use std::ffi::c_char;

/// The event `source` used when dk_publish_options.source is NULL.
const DEFAULT_SOURCE: &str = "deploykit-c";

/// Which body format to write: one of the `DK_WIRE_*` values.
#[allow(non_camel_case_types)]
pub type dk_wire = u32;
/// JSON v1 bodies with `dk-type` / `dk-version` headers (the default).
pub const DK_WIRE_JSON: dk_wire = 0;
/// The original future-deploykit text bodies, for fleets with old daemons.
pub const DK_WIRE_LEGACY: dk_wire = 1;

/// Which set of default destinations to start from: one of the `DK_DESTINATIONS_*` values.
#[allow(non_camel_case_types)]
pub type dk_destinations = u32;
/// `/topic/deploykit.git.commits`, `/topic/deploykit.builds`, `/topic/deploykit.events`, …
pub const DK_DESTINATIONS_DEFAULT: dk_destinations = 0;
/// The original's names: `/topic/future.git.commits`, `/topic/future.jenkins.success`
/// (failed builds to `/topic/future.jenkins.cake`), `/topic/future.events.SOURCE`, …
pub const DK_DESTINATIONS_LEGACY: dk_destinations = 1;

/// Where a commit message comes from: one of the `DK_SOURCE_*` values.
#[allow(non_camel_case_types)]
pub type dk_source = u32;
/// A git post-receive hook.
pub const DK_SOURCE_GIT: dk_source = 0;
/// A Subversion post-commit hook.
pub const DK_SOURCE_SVN: dk_source = 1;
/// A GitHub webhook.
pub const DK_SOURCE_GITHUB: dk_source = 2;
/// A GitLab webhook.
pub const DK_SOURCE_GITLAB: dk_source = 3;
/// A Gitea or Forgejo webhook.
pub const DK_SOURCE_GITEA: dk_source = 4;

/// A build's state: one of the `DK_BUILD_*` values.
#[allow(non_camel_case_types)]
pub type dk_build_status = u32;
/// The build began.
pub const DK_BUILD_STARTED: dk_build_status = 0;
/// It passed.
pub const DK_BUILD_SUCCESS: dk_build_status = 1;
/// It failed.
pub const DK_BUILD_FAILURE: dk_build_status = 2;
/// It passed with test failures (Jenkins "unstable").
pub const DK_BUILD_UNSTABLE: dk_build_status = 3;
/// It was cancelled.
pub const DK_BUILD_ABORTED: dk_build_status = 4;

/// How and where to publish. Zero-initialise it; NULL pointers and zeros mean
/// the defaults. The whole struct may be NULL (all defaults).
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_publish_options {
    /// The daemon speaking, named in event lines and legacy event topics
    /// (e.g. "git-hook", "jenkins"). NULL: "deploykit-c".
    pub source: *const c_char,
    /// DK_WIRE_JSON (default) or DK_WIRE_LEGACY.
    pub wire: dk_wire,
    /// DK_DESTINATIONS_DEFAULT or DK_DESTINATIONS_LEGACY, the base the overrides below apply to.
    pub destinations: dk_destinations,
    /// Destination of commit messages. NULL: from `destinations`.
    pub commits_destination: *const c_char,
    /// Destination of build messages. NULL: from `destinations`.
    pub builds_destination: *const c_char,
    /// Destination of failed, unstable and aborted builds. NULL: from `destinations`
    /// (the default set sends them with the others).
    pub builds_failed_destination: *const c_char,
    /// Destination of event lines; `{source}` in it is replaced by the source.
    /// NULL: from `destinations`.
    pub events_destination: *const c_char,
}

/// One commit inside a push.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_commit_info {
    /// The commit id (SHA). NULL: empty.
    pub id: *const c_char,
    /// Author as `Name <email>`. NULL: empty.
    pub author: *const c_char,
    /// Author date, RFC 3339. NULL: empty.
    pub timestamp: *const c_char,
    /// The full commit message. NULL: empty.
    pub message: *const c_char,
}

/// Subversion details of a commit.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_svn_info {
    /// The revision number.
    pub revision: u64,
    /// The project (the path component before `/trunk`). NULL: none.
    pub project: *const c_char,
    /// Directories the commit changed (`n_dirs` strings; NULL when `n_dirs` is 0).
    pub dirs: *const *const c_char,
    /// How many entries `dirs` has.
    pub n_dirs: usize,
}

/// A push of one ref, or one Subversion commit.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_commit {
    /// Repository name (required, not empty).
    pub repo: *const c_char,
    /// Old object id (all zeros on branch creation). NULL: empty (SVN).
    pub oldrev: *const c_char,
    /// New object id (all zeros on deletion); for SVN the revision. NULL: empty.
    pub newrev: *const c_char,
    /// Full ref name, e.g. `refs/heads/master` (required for git). NULL: empty (SVN).
    pub refname: *const c_char,
    /// One of the DK_SOURCE_* values.
    pub source: dk_source,
    /// Subversion details (with DK_SOURCE_SVN). NULL: none.
    pub svn: *const dk_svn_info,
    /// The commits of the push, newest first (`n_commits` entries; NULL when 0).
    pub commits: *const dk_commit_info,
    /// How many entries `commits` has.
    pub n_commits: usize,
    /// The id that follows this change end to end (forge delivery id). NULL:
    /// the new revision (`svn:REPO:REV` for SVN).
    pub correlation_id: *const c_char,
}

/// A CI build's progress.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_build {
    /// Job name (required; folders as `a/b/c`).
    pub job: *const c_char,
    /// Build number.
    pub number: u64,
    /// One of the DK_BUILD_* values.
    pub status: dk_build_status,
    /// Link to the build. NULL: none.
    pub url: *const c_char,
    /// Repository name. NULL: none.
    pub repo: *const c_char,
    /// Branch built (e.g. `origin/master`). NULL: none.
    pub branch: *const c_char,
    /// Commit built. NULL: none.
    pub commit: *const c_char,
    /// Duration in milliseconds, once finished. 0: none.
    pub duration_ms: u64,
    /// The id of the change this build belongs to (from the commit message). NULL: none.
    pub correlation_id: *const c_char,
}

fn wire(value: dk_wire) -> Option<Wire> {
    match value {
        DK_WIRE_JSON => Some(Wire::Json),
        DK_WIRE_LEGACY => Some(Wire::Legacy),
        _ => None,
    }
}

fn destinations(value: dk_destinations) -> Option<Destinations> {
    match value {
        DK_DESTINATIONS_DEFAULT => Some(Destinations::default()),
        DK_DESTINATIONS_LEGACY => Some(Destinations::legacy()),
        _ => None,
    }
}

fn source(value: dk_source) -> Option<Source> {
    match value {
        DK_SOURCE_GIT => Some(Source::Git),
        DK_SOURCE_SVN => Some(Source::Svn),
        DK_SOURCE_GITHUB => Some(Source::Github),
        DK_SOURCE_GITLAB => Some(Source::Gitlab),
        DK_SOURCE_GITEA => Some(Source::Gitea),
        _ => None,
    }
}

fn build_status(value: dk_build_status) -> Option<BuildStatus> {
    match value {
        DK_BUILD_STARTED => Some(BuildStatus::Started),
        DK_BUILD_SUCCESS => Some(BuildStatus::Success),
        DK_BUILD_FAILURE => Some(BuildStatus::Failure),
        DK_BUILD_UNSTABLE => Some(BuildStatus::Unstable),
        DK_BUILD_ABORTED => Some(BuildStatus::Aborted),
        _ => None,
    }
}

/// Core's publisher for these options; `source` overrides `opts->source`.
fn publisher(client: &BlockingClient, opts: Option<&dk_publish_options>, source: Option<&str>) -> FfiResult<BlockingPublisher> {
    let Some(o) = opts else {
        return Ok(client.publisher(source.unwrap_or(DEFAULT_SOURCE), Wire::Json, Destinations::default()));
    };
    let source = match source {
        Some(s) => s,
        None => opt_str(o.source, "opts->source")?.unwrap_or(DEFAULT_SOURCE),
    };
    let wire = arg_enum(o.wire, "opts->wire", wire)?;
    let mut dest = arg_enum(o.destinations, "opts->destinations", destinations)?;
    if let Some(d) = opt_str(o.commits_destination, "opts->commits_destination")? {
        d.clone_into(&mut dest.commits);
    }
    if let Some(d) = opt_str(o.builds_destination, "opts->builds_destination")? {
        d.clone_into(&mut dest.builds);
    }
    if let Some(d) = opt_string(o.builds_failed_destination, "opts->builds_failed_destination")? {
        dest.builds_failed = Some(d);
    }
    if let Some(d) = opt_str(o.events_destination, "opts->events_destination")? {
        d.clone_into(&mut dest.events);
    }
    Ok(client.publisher(source, wire, dest))
}

/// Converts a C commit into core's.
fn commit(c: &dk_commit) -> FfiResult<Commit> {
    let svn = match opt_ref(c.svn) {
        None => None,
        Some(s) => Some(SvnInfo {
            revision: s.revision,
            project: opt_string(s.project, "commit->svn->project")?,
            dirs: arg_slice(s.dirs, s.n_dirs, "commit->svn->dirs")?
                .iter()
                .enumerate()
                .map(|(i, &d)| arg_str(d, &format!("commit->svn->dirs[{i}]")).map(str::to_owned))
                .collect::<FfiResult<_>>()?,
        }),
    };
    let commits = arg_slice(c.commits, c.n_commits, "commit->commits")?
        .iter()
        .enumerate()
        .map(|(i, ci)| {
            Ok(CommitInfo {
                id: str_or_empty(ci.id, &format!("commit->commits[{i}].id"))?,
                author: str_or_empty(ci.author, &format!("commit->commits[{i}].author"))?,
                timestamp: str_or_empty(ci.timestamp, &format!("commit->commits[{i}].timestamp"))?,
                message: str_or_empty(ci.message, &format!("commit->commits[{i}].message"))?,
            })
        })
        .collect::<FfiResult<_>>()?;
    Ok(Commit {
        repo: arg_str(c.repo, "commit->repo")?.to_owned(),
        oldrev: str_or_empty(c.oldrev, "commit->oldrev")?,
        newrev: str_or_empty(c.newrev, "commit->newrev")?,
        refname: str_or_empty(c.refname, "commit->refname")?,
        source: arg_enum(c.source, "commit->source", source)?,
        svn,
        commits,
        correlation_id: opt_string(c.correlation_id, "commit->correlation_id")?,
    })
}

/// Converts a C build into core's.
fn build(b: &dk_build) -> FfiResult<Build> {
    Ok(Build {
        job: arg_str(b.job, "build->job")?.to_owned(),
        number: b.number,
        status: arg_enum(b.status, "build->status", build_status)?,
        url: opt_string(b.url, "build->url")?,
        repo: opt_string(b.repo, "build->repo")?,
        branch: opt_string(b.branch, "build->branch")?,
        commit: opt_string(b.commit, "build->commit")?,
        duration_ms: (b.duration_ms != 0).then_some(b.duration_ms),
        correlation_id: opt_string(b.correlation_id, "build->correlation_id")?,
    })
}

/// Publishes a commit message to the commits destination, then its event
/// line, each confirmed by a broker receipt. The correlation id defaults to the
/// new revision. `opts` may be NULL.
///
/// Errors: DK_ERR_NULL_ARGUMENT / DK_ERR_NOT_UTF8 / DK_ERR_INVALID_ARGUMENT
/// naming the field, DK_ERR_MESSAGE_INVALID (e.g. empty repo, git commit
/// without refname), and the connection errors of dk_client_send().
#[no_mangle]
pub extern "C" fn dk_publish_commit(client: *const dk_client, commit: *const dk_commit, opts: *const dk_publish_options, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, {
        let c = dk_client::try_ref(client, "client")?;
        let commit = self::commit(arg_ref(commit, "commit")?)?;
        let p = publisher(c, opt_ref(opts), None)?;
        not_in_callback("dk_publish_commit")?;
        Ok(p.commit(&commit)?)
    })
}

/// Publishes a build message (failed builds to `builds_failed_destination`
/// when one is set), then its event line, each confirmed by a broker receipt.
/// `opts` may be NULL. Errors as dk_publish_commit().
#[no_mangle]
pub extern "C" fn dk_publish_build(client: *const dk_client, build: *const dk_build, opts: *const dk_publish_options, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, {
        let c = dk_client::try_ref(client, "client")?;
        let build = self::build(arg_ref(build, "build")?)?;
        let p = publisher(c, opt_ref(opts), None)?;
        not_in_callback("dk_publish_build")?;
        Ok(p.build(&build)?)
    })
}

/// Publishes a one-line event `text` from daemon `source` (NULL:
/// `opts->source`, else "deploykit-c") to the events destination, confirmed by
/// a broker receipt. `correlation_id` (NULL: none) ties it to a change. `opts`
/// may be NULL. Errors as dk_publish_commit().
#[no_mangle]
pub extern "C" fn dk_publish_event(
    client: *const dk_client,
    source: *const c_char,
    text: *const c_char,
    correlation_id: *const c_char,
    opts: *const dk_publish_options,
    err: *mut *mut dk_error,
) -> dk_result {
    ffi_result!(err, {
        let c = dk_client::try_ref(client, "client")?;
        let source = opt_str(source, "source")?;
        let text = arg_str(text, "text")?;
        let correlation_id = opt_string(correlation_id, "correlation_id")?;
        let p = publisher(c, opt_ref(opts), source)?;
        not_in_callback("dk_publish_event")?;
        Ok(p.event(text, correlation_id)?)
    })
}
