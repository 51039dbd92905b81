//! The API's request and response bodies (JSON), as `openapi.json` describes them.

use crate::web::changes::{Change, Step, Summary, Verdict};
use crate::web::fleet::{HeldLock, RefCount, Server};
use crate::web::history::DeployRow;
use crate::web::live::DeployView;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every error: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// One deploy or rollback in the history (without its report).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its id (`/api/v1/deploys/{id}`).
    pub id: i64,
    /// The site.
    pub site: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// The tag (deploys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Who.
    pub user: String,
    /// The servers chosen, as shown (`all`, or their names).
    pub selection: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// `running`, `ok`, `failed`, `stopped`, `error`, `interrupted`; with approvals also `awaiting approval`, `rejected`, `cancelled`, `expired`.
    pub result: String,
    /// Why it failed or stopped, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The tool that ran it (`dk-web`, `dk-deploy`, …).
    pub controller: String,
    /// Why it was made, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who approved it (sites with `approvers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

impl From<&DeployRow> for HistoryEntry {
    fn from(r: &DeployRow) -> HistoryEntry {
        HistoryEntry {
            id: r.id,
            site: r.site.clone(),
            action: r.action.clone(),
            tag: r.tag.clone(),
            user: r.user.clone(),
            selection: r.selection.clone(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            result: r.result.clone(),
            detail: r.detail.clone(),
            controller: r.controller.clone(),
            reason: r.reason.clone(),
            approved_by: r.approved_by.clone(),
        }
    }
}

/// `GET /api/v1/history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryList {
    /// Newest first.
    pub deploys: Vec<HistoryEntry>,
}

/// How many servers run one release.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReleaseCount {
    /// The release's tag.
    pub release: String,
    /// Servers running it.
    pub servers: usize,
}

/// One site in `GET /api/v1/sites`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteSummary {
    /// Its name.
    pub name: String,
    /// Its repository.
    pub repo: String,
    /// Whether the token's user may deploy and roll it back.
    pub may_deploy: bool,
    /// Servers answering.
    pub servers: usize,
    /// Live releases, most common first.
    pub releases: Vec<ReleaseCount>,
    /// The newest deploy or rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_deploy: Option<HistoryEntry>,
}

/// `GET /api/v1/sites`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteList {
    /// The sites the token may see, by name.
    pub sites: Vec<SiteSummary>,
}

/// One server of a site.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Its identity.
    pub identity: String,
    /// The site's live release here (as its tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Its classes.
    pub classes: Vec<String>,
    /// Its facts.
    pub facts: BTreeMap<String, String>,
    /// The agent's version.
    pub version: String,
    /// Unix seconds when last heard.
    pub last_seen: i64,
    /// Whether its answers are believed (untrusted servers are never deployed to).
    pub trusted: bool,
    /// Why it is not trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untrusted: Option<String>,
}

impl ServerInfo {
    /// `s` as seen for `site`.
    pub fn of(s: &Server, site: &str) -> ServerInfo {
        ServerInfo {
            identity: s.announce.identity.clone(),
            release: s.release_tag(site).map(str::to_owned),
            classes: s.announce.classes.clone(),
            facts: s.announce.facts.clone(),
            version: s.announce.version.clone(),
            last_seen: s.last_seen,
            trusted: s.trusted(),
            untrusted: s.untrusted.clone(),
        }
    }
}

/// `GET /api/v1/sites/{site}/servers`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerList {
    /// The trusted servers answering, by identity.
    pub servers: Vec<ServerInfo>,
}

/// A commit's build status, from the newest build of each job heard on the bus.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BuildStatus {
    /// `green`, `red`, `running` or `unknown`.
    pub status: &'static str,
    /// The job(s) it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl From<&Verdict> for BuildStatus {
    fn from(v: &Verdict) -> BuildStatus {
        match v {
            Verdict::Green(j) => BuildStatus { status: "green", job: Some(j.clone()) },
            Verdict::Red(j) => BuildStatus { status: "red", job: Some(j.clone()) },
            Verdict::Running(j) => BuildStatus { status: "running", job: Some(j.clone()) },
            Verdict::Unknown => BuildStatus { status: "unknown", job: None },
        }
    }
}

/// A tag or branch.
#[derive(Debug, Clone, Serialize)]
pub struct TagInfo {
    /// Its short name.
    pub name: String,
    /// Unix seconds (tagger or commit date).
    pub date: i64,
    /// Servers holding it.
    pub servers: usize,
    /// The commit it names.
    pub commit: String,
    /// The commit's builds.
    pub build: BuildStatus,
}

impl TagInfo {
    /// `r` with its build status.
    pub fn of(r: &RefCount, build: Option<&Verdict>) -> TagInfo {
        TagInfo { name: r.name.clone(), date: r.date, servers: r.servers, commit: r.commit.clone(), build: build.unwrap_or(&Verdict::Unknown).into() }
    }
}

/// `GET /api/v1/sites/{site}/tags`.
#[derive(Debug, Clone, Serialize)]
pub struct TagList {
    /// Tags, newest first.
    pub tags: Vec<TagInfo>,
    /// Branches, newest first.
    pub branches: Vec<TagInfo>,
}

/// A deploy lock held on a server.
#[derive(Debug, Clone, Serialize)]
pub struct LockView {
    /// The server.
    pub server: String,
    /// Who holds it.
    pub user: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// Unix seconds when taken.
    pub acquired_at: u64,
    /// Unix seconds when the lease ends.
    pub expires_at: u64,
    /// The release being made or switched to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

impl From<&HeldLock> for LockView {
    fn from(l: &HeldLock) -> LockView {
        LockView {
            server: l.node.clone(),
            user: l.lock.user.clone(),
            action: l.lock.action.clone(),
            acquired_at: l.lock.acquired_at,
            expires_at: l.lock.expires_at,
            release: l.lock.release.clone(),
        }
    }
}

/// A server and what went wrong there.
#[derive(Debug, Clone, Serialize)]
pub struct ServerProblem {
    /// The server.
    pub server: String,
    /// What went wrong.
    pub error: String,
}

/// The deploy form's defaults and the site's gates.
#[derive(Debug, Clone, Serialize)]
pub struct SiteDefaults {
    /// Servers deployed first and alone.
    pub canary: usize,
    /// Batch size (`2`, `25%`).
    pub batch: String,
    /// Failures tolerated.
    pub max_failures: usize,
    /// Deploys and rollbacks must give a reason.
    pub require_reason: bool,
    /// Only tags whose builds all passed may be deployed.
    pub require_build: bool,
}

/// `GET /api/v1/sites/{site}`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteDetail {
    /// Its name.
    pub name: String,
    /// Its repository.
    pub repo: String,
    /// Whether the token's user may deploy and roll it back.
    pub may_deploy: bool,
    /// Defaults and gates.
    pub defaults: SiteDefaults,
    /// Servers answering, by identity.
    pub servers: Vec<ServerInfo>,
    /// Tags, newest first, with build status.
    pub tags: Vec<TagInfo>,
    /// Branches, newest first, with build status.
    pub branches: Vec<TagInfo>,
    /// Locks in force.
    pub locks: Vec<LockView>,
    /// Servers whose answers failed.
    pub problems: Vec<ServerProblem>,
    /// Servers claiming the site whose answers failed the trust check.
    pub untrusted: Vec<ServerInfo>,
}

/// One job's newest build of a change.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRef {
    /// The job.
    pub job: String,
    /// The build number.
    pub number: u64,
    /// Its status (`started`, `success`, `failure`, …).
    pub status: String,
}

/// The slowest successful fetch.
#[derive(Debug, Clone, Serialize)]
pub struct Slowest {
    /// The server.
    pub server: String,
    /// Milliseconds.
    pub ms: u64,
}

/// A change's journey at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeSummary {
    /// Per job, its newest build.
    pub builds: Vec<BuildRef>,
    /// Servers that fetched it.
    pub fetched: usize,
    /// Servers known to carry the repository.
    pub servers: usize,
    /// Servers whose newest fetch failed.
    pub failures: Vec<ServerProblem>,
    /// The slowest successful fetch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest: Option<Slowest>,
    /// Not fetched everywhere in time.
    pub flagged: bool,
}

impl From<&Summary> for ChangeSummary {
    fn from(s: &Summary) -> ChangeSummary {
        ChangeSummary {
            builds: s.builds.iter().map(|(job, number, status)| BuildRef { job: job.clone(), number: *number, status: status.clone() }).collect(),
            fetched: s.fetched,
            servers: s.servers,
            failures: s.failures.iter().map(|(server, error)| ServerProblem { server: server.clone(), error: error.clone() }).collect(),
            slowest: s.slowest.as_ref().map(|(server, ms)| Slowest { server: server.clone(), ms: *ms }),
            flagged: s.flagged,
        }
    }
}

/// One change in `GET /api/v1/changes`.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeItem {
    /// The push.
    pub change: Change,
    /// Its journey at a glance.
    pub summary: ChangeSummary,
}

/// `GET /api/v1/changes`.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeList {
    /// Newest first.
    pub changes: Vec<ChangeItem>,
}

/// `GET /api/v1/changes/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct Journey {
    /// The push.
    pub change: Change,
    /// Every step, in order of arrival.
    pub steps: Vec<Step>,
    /// At a glance.
    pub summary: ChangeSummary,
}

/// A batch size: a count or a text such as `25%`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BatchValue {
    /// Servers per batch.
    Count(u64),
    /// `2` or `25%`.
    Text(String),
}

/// The body of `POST /api/v1/sites/{site}/deploys` and `…/rollbacks`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The tag or branch (deploys).
    #[serde(default)]
    pub tag: Option<String>,
    /// Exactly these servers (not with `filter`).
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    /// Server names or `/regex/`es (not with `servers`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Servers first and alone (default: the site's).
    #[serde(default)]
    pub canary: Option<u64>,
    /// Batch size (default: the site's).
    #[serde(default)]
    pub batch: Option<BatchValue>,
    /// Failures tolerated (default: the site's).
    #[serde(default)]
    pub max_failures: Option<u64>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Deploy even when known servers do not answer.
    #[serde(default)]
    pub allow_missing: bool,
    /// Deploy a tag older than the live release.
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// `202` to a deploy, rollback or stop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    /// The deploy's id.
    pub id: i64,
    /// `running` (or `stopping`).
    pub status: String,
    /// Where to follow it.
    pub url: String,
}

/// `GET /api/v1/deploys/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct DeployStatus {
    /// Its history row.
    pub deploy: HistoryEntry,
    /// Each server's row and steps.
    pub view: DeployView,
    /// Whether it is still running in this dk-web.
    pub live: bool,
}
