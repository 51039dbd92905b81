//! The deploy and rollback pipelines of one site, and crash recovery.
//!
//! Deploy: pre-deploy → checkout into a new release → pre-link → swap the
//! links → post-deploy. Any failure before the swap leaves the old release
//! live and removes the half-made one. A post-deploy failure is reported; the
//! links are put back only with `rollback_on_post_failure`.

use super::config::SiteConfig;
use super::hooks::{self, HookSpec};
use super::lock::{LockError, LockInfo, Phase, SiteLock};
use super::releases::{self, Journal, Release, ReleaseState};
use super::repo;
use super::report::{Reporter, StepResult};
use crate::message::{DeployRequest, StepState};
use crate::nofollow::is_component;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The whole result of a deploy or rollback (the final reply's `data`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployOutcome {
    /// Every step succeeded.
    pub ok: bool,
    /// The tag deployed or rolled back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The release now live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// The release live before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The steps, in order.
    pub steps: Vec<StepResult>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tag was already live: nothing ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    /// Old releases removed by `keep_releases`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The commit of the release now live (from the journal; as a dry run's `commit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Why a request was refused before anything ran.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Bad or unknown tag.
    #[error(transparent)]
    Tag(#[from] repo::RepoError),
    /// Someone else is deploying.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The tag's commit is not a descendant of the live release's: deploying it
    /// would remove commits now live, and the request did not allow a downgrade.
    #[error(
        "{tag} is older than the live release {live}: deploying it would remove {count} now live ({newest}); \
         to deploy it anyway, tick \"allow the downgrade\" on dk-web's preview, or pass --allow-downgrade to dk-deploy"
    )]
    Downgrade {
        /// The tag asked for.
        tag: String,
        /// The live release.
        live: String,
        /// How many commits, in words ("3 commits", "1000 or more commits").
        count: String,
        /// The subjects of the newest of them.
        newest: String,
    },
    /// Anything else that makes the request impossible.
    #[error("{0}")]
    Other(String),
}

/// The most commits a downgrade check counts.
pub const DOWNGRADE_COUNT_MAX: usize = 1000;

/// "1 commit", "3 commits", "1000 or more commits".
pub fn commits_text(n: usize, max: usize) -> String {
    match n {
        1 => "1 commit".into(),
        n if n >= max => format!("{max} or more commits"),
        n => format!("{n} commits"),
    }
}

/// Refuses deploying `resolved` over the live release `live` when that removes
/// commits (the tag's commit is not the live one's or a descendant of it).
/// Nothing is refused when the live release's commit is unknown to the journal
/// or the clone (a release from before the journal, a rewritten history).
async fn refuse_downgrade(site: &SiteConfig, live: Option<&str>, resolved: &repo::Resolved) -> Result<(), Refusal> {
    let Some(live) = live else { return Ok(()) };
    let Ok(journal) = Journal::open(&site.releases) else { return Ok(()) };
    let Some(live_commit) = journal.get(live).map(|r| r.commit.clone()) else { return Ok(()) };
    let (path, tag) = (site.repo.clone(), resolved.commit);
    let removed = match tokio::task::spawn_blocking(move || repo::removed_by(&path, tag, &live_commit, DOWNGRADE_COUNT_MAX)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(Refusal::Other(format!("checking whether {} removes live commits: {e}", resolved.name))),
        Err(e) => return Err(Refusal::Other(format!("checking whether {} removes live commits: {e}", resolved.name))),
    };
    if removed.is_empty() {
        return Ok(());
    }
    let mut newest: Vec<String> =
        removed.iter().take(3).map(|c| format!("{} {}", c.commit.get(..10).unwrap_or(&c.commit), c.subject.chars().take(80).collect::<String>())).collect();
    if removed.len() > 3 {
        newest.push("…".into());
    }
    Err(Refusal::Downgrade { tag: resolved.name.clone(), live: live.to_owned(), count: commits_text(removed.len(), DOWNGRADE_COUNT_MAX), newest: newest.join(", ") })
}

/// Everything a pipeline needs.
pub struct Ctx<'a> {
    /// The site's name.
    pub name: &'a str,
    /// The site.
    pub site: &'a SiteConfig,
    /// The request.
    pub req: &'a DeployRequest,
    /// Where replies go.
    pub reporter: &'a Reporter,
}

impl Ctx<'_> {
    /// The hook invocation (`Ok(None)`: no hooks directory); an error when the
    /// configured `user` cannot be resolved (hooks never fall back to the agent's own user).
    fn hook(&self, name: &'static str, tag: &str, release: &str, previous: Option<&str>) -> Result<Option<HookSpec>, String> {
        let Some(dir) = self.site.hooks.clone() else { return Ok(None) };
        self.spec(name, dir, tag, release, previous).map(Some)
    }

    /// What a hook or health command runs with: `dir` as its working directory, the site's user, `DK_*`.
    fn spec(&self, name: &'static str, dir: PathBuf, tag: &str, release: &str, previous: Option<&str>) -> Result<HookSpec, String> {
        let user = match self.site.user.as_deref() {
            None => None,
            Some(u) => match crate::user::lookup_user(u) {
                Ok(Some(p)) => Some(p),
                Ok(None) => return Err(format!("user {u:?} (the site's `user`) does not exist; hooks never run as the agent's own user instead")),
                Err(e) => return Err(format!("looking up user {u:?}: {e}")),
            },
        };
        let path = |d: &str| self.site.releases.join(d).display().to_string();
        Ok(HookSpec {
            dir,
            name,
            tag: tag.to_owned(),
            env: vec![
                ("DK_SITE".into(), self.name.to_owned()),
                ("DK_TAG".into(), tag.to_owned()),
                ("DK_RELEASE".into(), path(release)),
                ("DK_PREVIOUS".into(), previous.map(path).unwrap_or_default()),
                ("DK_REQUEST_ID".into(), self.req.request_id.clone()),
                ("DK_USER".into(), self.req.user.clone()),
            ],
            timeout: self.site.step_timeout,
            user,
        })
    }

    /// Runs the site's health check, if it has one, as the `health` step; `true` if it passed or there is none.
    async fn run_health(&self, out: &mut DeployOutcome, tag: &str, release: &str, previous: Option<&str>) -> bool {
        let Some(check) = &self.site.health else { return true };
        self.reporter.started("health").await;
        let t0 = Instant::now();
        let spec = match self.spec("health", self.site.releases.join(release), tag, release, previous) {
            Ok(s) => s,
            Err(e) => return self.internal(out, "health", t0, Err(e)).await,
        };
        let run = super::health::check(check, &spec).await;
        let tries = if run.tries == 1 { "1 try".to_owned() } else { format!("{} tries", run.tries) };
        let r = StepResult {
            step: "health".into(),
            state: if run.ok { StepState::Ok } else { StepState::Failed },
            exit_code: run.exit_code,
            duration_ms: run.duration.as_millis() as u64,
            error: (!run.ok).then(|| format!("health check failed after {tries}: {}", run.why.as_deref().unwrap_or("failed"))),
            stdout: run.stdout,
            stderr: run.stderr,
        };
        self.finish(out, r).await
    }

    /// Runs a hook step; `true` if it succeeded or was skipped.
    async fn run_hook(&self, out: &mut DeployOutcome, name: &'static str, tag: &str, release: &str, previous: Option<&str>) -> bool {
        self.reporter.started(name).await;
        let t0 = Instant::now();
        let ran = match self.hook(name, tag, release, previous) {
            Ok(Some(spec)) => hooks::run(&spec).await,
            Ok(None) => None,
            Err(e) => return self.internal(out, name, t0, Err(e)).await,
        };
        let r = match ran {
            None => StepResult { step: name.into(), state: StepState::Skipped, exit_code: None, duration_ms: ms(t0), stdout: String::new(), stderr: String::new(), error: None },
            Some(run) => StepResult {
                step: name.into(),
                state: if run.ok() { StepState::Ok } else { StepState::Failed },
                exit_code: run.exit_code,
                duration_ms: run.duration.as_millis() as u64,
                error: (!run.ok()).then(|| format!("{name} {}", run.why())),
                stdout: run.stdout,
                stderr: run.stderr,
            },
        };
        self.finish(out, r).await
    }

    async fn finish(&self, out: &mut DeployOutcome, r: StepResult) -> bool {
        self.reporter.finished(&r).await;
        let ok = r.state != StepState::Failed;
        if !ok && out.error.is_none() {
            out.error = r.error.clone();
        }
        out.steps.push(r);
        ok
    }

    async fn internal(&self, out: &mut DeployOutcome, step: &str, t0: Instant, res: Result<(), String>) -> bool {
        let r = StepResult {
            step: step.into(),
            state: if res.is_ok() { StepState::Ok } else { StepState::Failed },
            exit_code: None,
            duration_ms: ms(t0),
            stdout: String::new(),
            stderr: String::new(),
            error: res.err().map(|e| format!("{step}: {e}")),
        };
        self.finish(out, r).await
    }

    fn lock_info(&self, action: &str, previous: Option<String>) -> LockInfo {
        let now = releases::now();
        // A bound on the whole pipeline: four hooks or checkouts, plus slack.
        let lease = self.site.step_timeout.saturating_mul(4) + Duration::from_secs(60);
        LockInfo {
            request_id: self.req.request_id.clone(),
            user: self.req.user.clone(),
            action: action.into(),
            pid: std::process::id(),
            acquired_at: now,
            expires_at: now + lease.as_secs(),
            release: None,
            previous,
            phase: Phase::Preparing,
            created: false,
            unreadable: false,
        }
    }
}

fn ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

fn state_dir(site: &SiteConfig) -> PathBuf {
    Journal::state_dir(&site.releases)
}

/// Takes the site's lock, first recovering from a crashed owner if there was one.
fn lock(site: &SiteConfig, info: LockInfo) -> Result<SiteLock, Refusal> {
    Journal::open(&site.releases).map_err(|e| Refusal::Other(e.to_string()))?;
    let (lock, stale) = SiteLock::acquire(&state_dir(site), info)?;
    if let Some(stale) = stale {
        tracing::warn!(request = %stale.request_id, "taking over a stale site lock: recovering first");
        recover_from(site, &stale);
    }
    Ok(lock)
}

/// Puts a site back on a complete release after a deploy that died (agent killed,
/// machine rebooted): see the module doc of `lock`. Release names read back
/// from the lock are used only if they are single path components.
pub fn recover_from(site: &SiteConfig, stale: &LockInfo) {
    let Ok(mut journal) = Journal::open(&site.releases) else {
        return;
    };
    if stale.unreadable {
        recover_unknown(site, &mut journal);
        remove_temps(site);
        return;
    }
    let checked = |what: &str, v: &Option<String>| match v {
        Some(d) if !is_component(d) => {
            tracing::error!(field = what, value = ?d, "recovery: lock names a release that is not a single path component; ignored");
            None
        }
        other => other.clone(),
    };
    let (release, previous) = (checked("release", &stale.release), checked("previous", &stale.previous));
    if let Some(rel) = &release {
        if stale.phase < Phase::Linked {
            // Not every link was swapped: put every link back on the previous release.
            let touched = site.links.iter().any(|l| releases::release_of(site, &l.target).as_deref() == Some(rel.as_str()));
            if touched {
                if let Some(prev) = &previous {
                    if let Err(e) = releases::swap(site, prev) {
                        tracing::error!(error = %e, "recovery: could not put the previous release back");
                    }
                }
            }
            if stale.created && releases::live(site).as_deref() != Some(rel.as_str()) {
                if let Err(e) = releases::remove_release(&site.releases, rel) {
                    tracing::error!(error = %e, "recovery: could not remove the half-made release");
                }
                let _ = journal.forget(rel);
            }
        } else if journal.get(rel).is_some_and(|r| r.state == ReleaseState::Building) {
            let _ = journal.set_state(rel, ReleaseState::Unverified);
        }
    }
    remove_temps(site);
}

/// Recovery when the lock's record is unreadable: the journal's `building`
/// releases are the interrupted ones. One every link points at is kept as
/// unverified; one only some links point at is unlinked (links back on the
/// newest good release); one no link points at is removed.
fn recover_unknown(site: &SiteConfig, journal: &mut Journal) {
    let building: Vec<String> = journal.releases.iter().filter(|r| r.state == ReleaseState::Building).map(|r| r.dir.clone()).collect();
    for dir in building {
        let on: Vec<bool> = site.links.iter().map(|l| releases::release_of(site, &l.target).as_deref() == Some(dir.as_str())).collect();
        if !on.is_empty() && on.iter().all(|b| *b) {
            let _ = journal.set_state(&dir, ReleaseState::Unverified);
            continue;
        }
        if on.iter().any(|b| *b) {
            let Some(prev) = journal.previous_good(Some(&dir)).map(|r| r.dir.clone()) else {
                tracing::error!(release = %dir, "recovery: links are split and there is no good release to put back");
                continue;
            };
            if let Err(e) = releases::swap(site, &prev) {
                tracing::error!(error = %e, "recovery: could not put the previous release back");
                continue;
            }
        }
        if let Err(e) = releases::remove_release(&site.releases, &dir) {
            tracing::error!(error = %e, "recovery: could not remove the half-made release");
        }
        let _ = journal.forget(&dir);
    }
}

/// Removes `.tmp-*` checkouts left in the releases dir (without following symlinks in them).
pub fn remove_temps(site: &SiteConfig) {
    if let Ok(rd) = std::fs::read_dir(&site.releases) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                let _ = crate::nofollow::remove_entry(&site.releases, &name);
            }
        }
    }
}

/// On agent start: recover every site whose lock was left by a dead process.
pub fn recover_site(site: &SiteConfig) {
    let dir = state_dir(site);
    if let Ok(Some(info)) = super::lock::read(&dir) {
        if super::lock::is_stale(&info, releases::now()) || info.pid == std::process::id() {
            tracing::warn!(request = %info.request_id, user = %info.user, "found the lock of an interrupted deploy: recovering");
            recover_from(site, &info);
            let _ = SiteLock::clear_stale(&dir, &info.request_id);
        }
    } else {
        remove_temps(site);
    }
}

/// Checks the tag out into `RELEASES/DIR` through a temp directory; user links
/// are added and the tree checked ([`releases::verify`]) before it gets its name.
fn checkout(site: &SiteConfig, commit: git2::Oid, dir: &str) -> Result<(), String> {
    let repo = git2::Repository::open(&site.repo).map_err(|e| format!("{}: {}", site.repo.display(), e.message()))?;
    let commit = repo.find_commit(commit).map_err(|e| e.message().to_owned())?;
    let tree = commit.tree().map_err(|e| e.message().to_owned())?;
    let tmp_name = format!(".tmp-{dir}-{}", std::process::id());
    let tmp = site.releases.join(&tmp_name);
    let _ = crate::nofollow::remove_entry(&site.releases, &tmp_name);
    let fin = site.releases.join(dir);
    let res = crate::git::checkout::export_tree(&repo, &tree, &tmp)
        .map_err(|e| e.to_string())
        .and_then(|_| releases::add_user_links(site, &tmp).map_err(|e| e.to_string()))
        .and_then(|_| {
            releases::remove_release(&site.releases, dir).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &fin).map_err(|e| format!("{}: {e}", fin.display()))
        })
        .and_then(|_| releases::verify(site, dir).map_err(|e| e.to_string()));
    if res.is_err() {
        let _ = crate::nofollow::remove_entry(&site.releases, &tmp_name);
    }
    res
}

/// What deploying `dir` means while it is already live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlreadyLive {
    /// Live and good at the same commit: nothing to do.
    Done,
    /// Live at the same commit, but its post-deploy failed or never finished
    /// (the agent died after the link swap): run post-deploy again.
    Unverified,
}

/// Whether deploying `dir` while it is live is a no-op, a post-deploy to finish, or refused.
fn already_live(site: &SiteConfig, dir: &str, tag: &str, commit: git2::Oid) -> Result<AlreadyLive, Refusal> {
    let journal = Journal::open(&site.releases).map_err(|e| Refusal::Other(e.to_string()))?;
    match journal.get(dir) {
        Some(r) if r.commit != commit.to_string() => Err(Refusal::Other(format!("{dir} is live but {tag} now points elsewhere; deploy another tag first, or roll back"))),
        Some(r) if r.state == ReleaseState::Good => Ok(AlreadyLive::Done),
        Some(r) if r.state == ReleaseState::Unverified => Ok(AlreadyLive::Unverified),
        Some(r) => Err(Refusal::Other(format!("{dir} is live but its journal state is {:?}; deploy another tag first, or roll back", r.state))),
        None => Err(Refusal::Other(format!("{dir} is live but not in this agent's journal; deploy another tag first, or roll back"))),
    }
}

/// Finishes a live, unverified release of the same commit: its tree checked
/// again, then post-deploy, and the release is good when both pass. The link
/// is not touched.
async fn finish_unverified(ctx: &Ctx<'_>, mut lock: SiteLock, tag: String, dir: String) -> Result<DeployOutcome, Refusal> {
    let site = ctx.site;
    let mut journal = match Journal::open(&site.releases) {
        Ok(j) => j,
        Err(e) => return finish(lock, DeployOutcome { error: Some(format!("post-deploy: {e}")), ..DeployOutcome::default() }),
    };
    let prev = journal.previous_good(Some(&dir)).map(|r| r.dir.clone());
    // Phase Linked and `created: false`: an agent dying now leaves the release live and unverified.
    let _ = lock.update(|i| {
        i.release = Some(dir.clone());
        i.previous = prev.clone();
        i.phase = Phase::Linked;
    });
    let mut out = DeployOutcome { tag: Some(tag.clone()), live: Some(dir.clone()), previous: prev.clone(), ..DeployOutcome::default() };
    if let Err(e) = releases::verify(site, &dir) {
        out.error = Some(format!("{dir} is live but incomplete: {e}; deploy another tag, or roll back"));
        return finish(lock, out);
    }
    if ctx.run_hook(&mut out, "post-deploy", &tag, &dir, prev.as_deref()).await && ctx.run_health(&mut out, &tag, &dir, prev.as_deref()).await {
        verified(site, &mut journal, &mut out, &dir);
    }
    finish(lock, out)
}

/// After a passing post-deploy: `dir` is good, the deploy ok, old releases cleaned up.
fn verified(site: &SiteConfig, journal: &mut Journal, out: &mut DeployOutcome, dir: &str) {
    let _ = journal.set_state(dir, ReleaseState::Good);
    out.ok = true;
    out.removed = journal.cleanup(site.keep_releases, Some(dir)).unwrap_or_default();
}

/// Deploys `tag` (validated by the caller's `resolve`).
pub async fn deploy(ctx: &Ctx<'_>, resolved: repo::Resolved) -> Result<DeployOutcome, Refusal> {
    let site = ctx.site;
    let tag = resolved.name.clone();
    let dir = releases::dir_name(&site.repo_name, &tag).ok_or_else(|| Refusal::Other(format!("tag {tag:?} cannot name a release directory")))?;
    let unchanged = |live: Option<String>| DeployOutcome { ok: true, unchanged: true, tag: Some(tag.clone()), previous: live.clone(), live, ..DeployOutcome::default() };
    let live = releases::live(site);
    if live.as_deref() == Some(dir.as_str()) && already_live(site, &dir, &tag, resolved.commit)? == AlreadyLive::Done {
        return Ok(unchanged(live));
    }
    releases::preflight(site).map_err(|e| Refusal::Other(e.to_string()))?;
    let mut lock = lock(site, ctx.lock_info("deploy", live))?;
    // Read again under the lock: another deploy may have finished in between.
    let live = releases::live(site);
    if live.as_deref() == Some(dir.as_str()) {
        return match already_live(site, &dir, &tag, resolved.commit) {
            Ok(AlreadyLive::Done) => finish(lock, unchanged(live)),
            Ok(AlreadyLive::Unverified) => finish_unverified(ctx, lock, tag, dir).await,
            Err(e) => {
                finish(lock, DeployOutcome::default())?;
                Err(e)
            }
        };
    }
    if !ctx.req.allow_downgrade {
        if let Err(e) = refuse_downgrade(site, live.as_deref(), &resolved).await {
            finish(lock, DeployOutcome::default())?;
            return Err(e);
        }
    }
    let _ = lock.update(|i| i.previous = live.clone());
    let mut out = DeployOutcome { tag: Some(tag.clone()), previous: live.clone(), ..DeployOutcome::default() };
    let prev = live.as_deref();

    if !ctx.run_hook(&mut out, "pre-deploy", &tag, &dir, prev).await {
        return finish(lock, out);
    }

    ctx.reporter.started("checkout").await;
    let t0 = Instant::now();
    let _ = lock.update(|i| {
        i.release = Some(dir.clone());
        i.created = true;
    });
    let mut journal = match Journal::open(&site.releases) {
        Ok(j) => j,
        Err(e) => return finish(lock, DeployOutcome { error: Some(format!("checkout: {e}")), ..out }),
    };
    let _ = journal.put(Release {
        dir: dir.clone(),
        tag: tag.clone(),
        commit: resolved.commit.to_string(),
        state: ReleaseState::Building,
        at: releases::now(),
        request_id: ctx.req.request_id.clone(),
        user: ctx.req.user.clone(),
    });
    let (s, d, c) = (site.clone(), dir.clone(), resolved.commit);
    let res = tokio::time::timeout(site.step_timeout, tokio::task::spawn_blocking(move || checkout(&s, c, &d)))
        .await
        .map_err(|_| format!("timed out after {:?}", site.step_timeout))
        .and_then(|j| j.map_err(|e| e.to_string()))
        .and_then(|r| r);
    if !ctx.internal(&mut out, "checkout", t0, res).await {
        discard(site, &mut journal, &dir);
        return finish(lock, out);
    }

    if !ctx.run_hook(&mut out, "pre-link", &tag, &dir, prev).await {
        discard(site, &mut journal, &dir);
        return finish(lock, out);
    }

    ctx.reporter.started("link").await;
    let t0 = Instant::now();
    let res = releases::verify(site, &dir).map_err(|e| e.to_string());
    let _ = lock.update(|i| i.phase = Phase::Linking);
    let res = res.and_then(|_| releases::swap(site, &dir).map_err(|e| e.to_string()));
    if res.is_err() {
        if let Some(p) = prev {
            let _ = releases::swap(site, p);
        }
    }
    if !ctx.internal(&mut out, "link", t0, res).await {
        discard(site, &mut journal, &dir);
        return finish(lock, out);
    }
    let _ = lock.update(|i| i.phase = Phase::Linked);
    let _ = journal.set_state(&dir, ReleaseState::Unverified);
    out.live = Some(dir.clone());

    if ctx.run_hook(&mut out, "post-deploy", &tag, &dir, prev).await && ctx.run_health(&mut out, &tag, &dir, prev).await {
        verified(site, &mut journal, &mut out, &dir);
    } else if site.rollback_on_post_failure {
        if let Some(p) = prev {
            if releases::swap(site, p).is_ok() {
                out.live = Some(p.to_owned());
                discard(site, &mut journal, &dir);
                out.error = out.error.map(|e| format!("{e}; previous release {p} put back (rollback_on_post_failure)"));
            }
        }
    }
    finish(lock, out)
}

fn discard(site: &SiteConfig, journal: &mut Journal, dir: &str) {
    if releases::live(site).as_deref() != Some(dir) {
        if let Err(e) = releases::remove_release(&site.releases, dir) {
            tracing::error!(error = %e, "could not remove the failed release");
        }
        let _ = journal.forget(dir);
    }
    remove_temps(site);
}

fn finish(lock: SiteLock, out: DeployOutcome) -> Result<DeployOutcome, Refusal> {
    if let Err(e) = lock.release() {
        tracing::error!(error = %e, "site lock not released");
    }
    Ok(out)
}

/// Rolls back to the newest good release other than the live one.
pub async fn rollback(ctx: &Ctx<'_>) -> Result<DeployOutcome, Refusal> {
    let site = ctx.site;
    let live = releases::live(site);
    let journal = Journal::open(&site.releases).map_err(|e| Refusal::Other(e.to_string()))?;
    journal.previous_good(live.as_deref()).ok_or_else(|| Refusal::Other("no previous good release to roll back to".into()))?;
    releases::preflight(site).map_err(|e| Refusal::Other(e.to_string()))?;
    let mut lock = lock(site, ctx.lock_info("rollback", live))?;
    // Live release and target are read again under the lock.
    let live = releases::live(site);
    let target = match Journal::open(&site.releases).map(|j| j.previous_good(live.as_deref()).cloned()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            finish(lock, DeployOutcome::default())?;
            return Err(Refusal::Other("no previous good release to roll back to".into()));
        }
        Err(e) => {
            finish(lock, DeployOutcome::default())?;
            return Err(Refusal::Other(e.to_string()));
        }
    };
    let _ = lock.update(|i| {
        i.release = Some(target.dir.clone());
        i.previous = live.clone();
    });
    let mut journal = match Journal::open(&site.releases) {
        Ok(j) => j,
        Err(e) => {
            finish(lock, DeployOutcome::default())?;
            return Err(Refusal::Other(e.to_string()));
        }
    };
    let prev = live.as_deref();
    let tag = target.tag.clone();
    let mut out = DeployOutcome { tag: Some(tag.clone()), previous: live.clone(), ..DeployOutcome::default() };
    if !ctx.run_hook(&mut out, "pre-deploy", &tag, &target.dir, prev).await || !ctx.run_hook(&mut out, "pre-link", &tag, &target.dir, prev).await {
        return finish(lock, out);
    }
    ctx.reporter.started("link").await;
    let t0 = Instant::now();
    let res = releases::verify(site, &target.dir).map_err(|e| e.to_string());
    let _ = lock.update(|i| i.phase = Phase::Linking);
    let res = res.and_then(|_| releases::swap(site, &target.dir).map_err(|e| e.to_string()));
    if res.is_err() {
        if let Some(p) = prev {
            let _ = releases::swap(site, p);
        }
    }
    if !ctx.internal(&mut out, "link", t0, res).await {
        return finish(lock, out);
    }
    let _ = lock.update(|i| i.phase = Phase::Linked);
    out.live = Some(target.dir.clone());
    if let Some(p) = prev {
        // The release rolled back from no longer counts as good.
        let _ = journal.set_state(p, ReleaseState::RolledBack);
    }
    if ctx.run_hook(&mut out, "post-deploy", &tag, &target.dir, prev).await {
        out.ok = true;
        out.removed = journal.cleanup(site.keep_releases, Some(&target.dir)).unwrap_or_default();
    }
    finish(lock, out)
}
