//! Starting a deploy or rollback, for the form and the API alike: the deployer
//! check, the gates (reason, build), the server selection, the history row, and
//! the rollout itself in a task that records, audits and publishes its end.

use super::config::SiteConfig;
use super::form::{DeployForm, Scope};
use super::live::LiveDeploy;
use super::{history, trail, App};
use crate::deploy::controller::{ControlError, Controller, ControllerConfig, NodeState, RolloutSpec, Window};
use crate::deploy::record::{RolloutRecord, Run};
use crate::message::{DeployAction, Filters};
use axum::http::StatusCode;
use std::sync::Arc;

/// Why a rollout was not started: the status to answer with and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The HTTP status (400 bad request, 403 not allowed, 409 a gate, 500, 503 the bus).
    pub status: StatusCode,
    /// What to tell the user.
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`.
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> Refusal {
        Refusal { status, message: message.to_string() }
    }

    /// The servers could not be asked.
    pub fn bus(e: ControlError) -> Refusal {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("The servers could not be asked: {e}"))
    }
}

/// A rollout that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begun {
    /// Running as deploy `id`.
    Started(i64),
    /// Recorded as deploy `id`, waiting for a second person's approval; nothing is sent until then.
    AwaitingApproval(i64),
}

impl Begun {
    /// The deploy's id in the history.
    pub fn id(self) -> i64 {
        match self {
            Begun::Started(id) | Begun::AwaitingApproval(id) => id,
        }
    }
}

/// The servers a form selects: `None` for all of the site's.
pub(crate) async fn selection(app: &App, site: &SiteConfig, scope: &Scope) -> Result<Option<Vec<String>>, Refusal> {
    if *scope == Scope::All {
        return Ok(None);
    }
    let window = app.settings().config.discovery_window;
    let servers = app.fleet.site_servers(&app.query, &site.name, &site.filters, window).await.map_err(Refusal::bus)?;
    let names: Vec<&str> = servers.iter().map(|s| s.announce.identity.as_str()).collect();
    let chosen: Vec<String> = match scope {
        Scope::All => return Ok(None),
        Scope::Pick(nodes) => {
            if let Some(bad) = nodes.iter().find(|n| !names.contains(&n.as_str())) {
                return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("servers: {bad:?} is not a server of site {} (or did not answer)", site.name)));
            }
            let mut v = nodes.clone();
            v.sort();
            v.dedup();
            v
        }
        Scope::Filter(parts) => {
            let f = Filters { identity: parts.clone(), ..Filters::default() };
            let v: Vec<String> = servers.iter().filter(|s| s.selected_by(&f)).map(|s| s.announce.identity.clone()).collect();
            if v.is_empty() {
                return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("filter: no server of site {} matches {:?}", site.name, parts.join(" "))));
            }
            v
        }
    };
    Ok(Some(chosen))
}

/// The filters that address `nodes` (or the whole site).
pub(crate) fn filters_for(site: &SiteConfig, nodes: &Option<Vec<String>>) -> Filters {
    match nodes {
        None => site.filters.clone(),
        Some(n) => Filters { identity: n.clone(), ..Filters::default() },
    }
}

/// Checks and starts a deploy or rollback of `site` for `user`; the rollout runs on in a task.
/// A deploy of a site with `approvers` is only recorded, waiting ([`super::approvals`]).
pub(crate) async fn begin(app: Arc<App>, user: &str, site: SiteConfig, form: DeployForm, action: DeployAction) -> Result<Begun, Refusal> {
    if !site.may_deploy(user) {
        tracing::warn!(user, site = %site.name, "refused: not a deployer of this site");
        return Err(Refusal::new(StatusCode::FORBIDDEN, format!("{user} may not deploy or roll back site {}.", site.name)));
    }
    if action == DeployAction::Deploy && form.tag.as_deref().is_none_or(str::is_empty) {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "tag: give the tag or branch to deploy"));
    }
    if site.require_reason && form.reason.is_none() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("reason: site {} asks why (a ticket or a sentence) for every deploy and rollback.", site.name)));
    }
    let nodes = selection(&app, &site, &form.scope).await?;
    let plan = Planned {
        tag: if action == DeployAction::Deploy { form.tag.clone() } else { None },
        nodes,
        canary: form.canary,
        batch: form.batch.to_string(),
        max_failures: form.max_failures,
        allow_missing: form.allow_missing,
        allow_downgrade: action == DeployAction::Deploy && form.allow_downgrade,
        reason: form.reason.clone(),
        record_id: RolloutRecord::new_id(),
    };
    let spec = plan.spec(&app, &site, action)?;
    gates(&app, &site, &spec, user).await?;
    let start = history::Start {
        site: &site.name,
        action: verb(action),
        tag: spec.tag.as_deref(),
        user,
        selection: &plan.shown(),
        reason: plan.reason.as_deref(),
        record_id: &plan.record_id,
    };
    if action == DeployAction::Deploy && !site.approvers.is_empty() {
        return super::approvals::ask(&app, &site, &start, &plan).await.map(Begun::AwaitingApproval);
    }
    let id = app.history.start(&start).map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    run(app, Launch { id, user: user.to_owned(), approved_by: None, plan, spec }).await;
    Ok(Begun::Started(id))
}

/// The gates a rollout passes when it is asked for, and again when it is approved: `require_build`.
pub(crate) async fn gates(app: &App, site: &SiteConfig, spec: &RolloutSpec, user: &str) -> Result<(), Refusal> {
    if spec.action == DeployAction::Deploy && site.require_build {
        let tag = spec.tag.as_deref().unwrap_or("");
        if let Err(why) = build_gate(app, site, tag, &spec.filters, spec.discovery.expect).await {
            tracing::warn!(user, site = %site.name, tag, "refused by require_build: {why}");
            return Err(Refusal::new(StatusCode::CONFLICT, why));
        }
    }
    Ok(())
}

/// A checked rollout's choices, enough to run it now or once approved (kept as JSON while it waits).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Planned {
    /// The tag (deploys).
    pub tag: Option<String>,
    /// The servers chosen (`None`: all of the site's).
    pub nodes: Option<Vec<String>>,
    /// Servers first and alone.
    pub canary: usize,
    /// Batch size, as written (`2`, `25%`).
    pub batch: String,
    /// Failures tolerated.
    pub max_failures: usize,
    /// Go on when known servers do not answer discovery.
    pub allow_missing: bool,
    /// Agents may deploy a tag older than their live release.
    pub allow_downgrade: bool,
    /// Why.
    pub reason: Option<String>,
    /// The id its rollout record will carry.
    pub record_id: String,
}

impl Planned {
    /// The selection as History shows it.
    pub fn shown(&self) -> String {
        self.nodes.as_ref().map(|n| n.join(", ")).unwrap_or_else(|| "all".into())
    }

    /// The rollout of `site` it asks for, with the windows and servers known now.
    pub fn spec(&self, app: &App, site: &SiteConfig, action: DeployAction) -> Result<RolloutSpec, Refusal> {
        let settings = app.settings();
        let filters = filters_for(site, &self.nodes);
        let expect = match &self.nodes {
            Some(n) => Some(n.len()),
            None => Some(app.fleet.expected(&filters)).filter(|n| *n > 0),
        };
        let batch = self.batch.parse().map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("batch: {e}")))?;
        Ok(RolloutSpec {
            action,
            site: site.name.clone(),
            tag: self.tag.clone(),
            canary: self.canary,
            batch,
            max_failures: self.max_failures,
            timeout: settings.config.server_timeout,
            discovery: Window { timeout: settings.config.discovery_window, expect },
            expected: match &self.nodes {
                Some(n) => n.clone(),
                None => app.fleet.known_servers(&site.name, &filters),
            },
            filters,
            allow_missing: self.allow_missing,
            allow_downgrade: self.allow_downgrade,
        })
    }
}

/// "deploy" or "rollback".
pub(crate) fn verb(action: DeployAction) -> &'static str {
    if action == DeployAction::Deploy {
        "deploy"
    } else {
        "rollback"
    }
}

/// A checked rollout with its history row, ready to run.
pub(crate) struct Launch {
    /// The history row.
    pub id: i64,
    /// Who asked for it.
    pub user: String,
    /// Who approved it, if the site needs an approval.
    pub approved_by: Option<String>,
    /// Its choices.
    pub plan: Planned,
    /// The rollout.
    pub spec: RolloutSpec,
}

/// Announces the rollout, registers it as live and runs it in a task (signed by dk-web's key).
pub(crate) async fn run(app: Arc<App>, l: Launch) {
    let Launch { id, user, approved_by, plan, spec } = l;
    let (reason, record_id, shown) = (plan.reason.clone(), plan.record_id.clone(), plan.shown());
    let verb = verb(spec.action);
    let started_at = crate::message::unix_now() as i64;
    let what = format!("{verb} {}{}", spec.site, spec.tag.as_deref().map(|t| format!(" {t}")).unwrap_or_default());
    let approval = approved_by.as_deref().map(|a| format!(", approved by {a}")).unwrap_or_default();
    publish_event(&app, format!("dk-web: {user} started {what} (servers: {shown}{approval}; deploy #{id})")).await;
    let (live, stop_rx) = LiveDeploy::new(id);
    app.live.insert(live.clone());
    tracing::info!(id, user = %user, site = %spec.site, tag = spec.tag.as_deref().unwrap_or("-"), servers = %shown, "{verb} started");
    let settings = app.settings();
    let audit_log = settings.config.audit_log.clone();
    let deploy_dest = settings.config.deploy_destination.clone();
    let reply_dest = settings.config.reply_destination.clone();
    drop(settings);
    tokio::spawn(async move {
        let mut cc = ControllerConfig::new(user.clone(), app.key.clone());
        cc.destinations.deploy = deploy_dest;
        cc.reply_to = reply_dest;
        cc.trust = app.query.trust().clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let l = live.clone();
        let pump = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                l.apply(&e);
            }
        });
        let outcome = match Controller::new(app.client.clone(), cc).await {
            Ok(c) => c.rollout(&spec, tx, stop_rx).await,
            Err(e) => Err(e),
        };
        let _ = pump.await;
        let (result, detail, report) = match outcome {
            Ok(r) => (r.outcome(), r.stopped.clone(), Some(r)),
            Err(e) => ("error", Some(e.to_string()), None),
        };
        if let Err(e) = app.history.finish(id, result, detail.as_deref(), report.as_ref()) {
            tracing::error!(id, error = %e, "deploy result not recorded");
        }
        if let (Some(path), Some(r)) = (&audit_log, &report) {
            let entry = crate::deploy::audit::AuditEntry::of_report(&user, app.key.as_ref().map(|k| k.public().to_string()), &spec.filters, r, reason.as_deref());
            if let Err(e) = crate::deploy::audit::append(path, &entry) {
                tracing::error!(path = %path.display(), error = %e, "audit log not written");
            }
        }
        let run = Run {
            id: &record_id,
            controller: "dk-web",
            user: &user,
            reason: reason.as_deref(),
            action: spec.action,
            site: &spec.site,
            tag: spec.tag.as_deref(),
            selection: &shown,
            started_at,
        };
        let mut record = RolloutRecord::finished(&run, result, detail.as_deref(), report.as_ref());
        record.approved_by = approved_by;
        trail::publish(&app, &record).await;
        tracing::info!(id, result, "{verb} finished");
        app.rollouts.inc(&[verb, result]);
        app.health.message();
        if result != "ok" {
            app.health.error(format!("{verb} #{id} of {}: {result}", spec.site));
        }
        let counts = report
            .as_ref()
            .map(|r| {
                let unchanged = r.nodes.iter().filter(|n| n.already_live()).count();
                let already = if unchanged > 0 { format!(" ({unchanged} already live)") } else { String::new() };
                format!(", {}/{} servers ok{already}", r.nodes.iter().filter(|n| n.state == NodeState::Ok).count(), r.nodes.len())
            })
            .unwrap_or_default();
        let why = detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        publish_event(&app, format!("dk-web: {user}'s {what}: {result}{counts}{why} (deploy #{id})")).await;
        live.finish(result, if result == "error" { detail } else { None });
        app.live.remove(id);
    });
}
/// `require_build`: the tag's commit on the selected servers (a dry run) must have only green builds.
async fn build_gate(app: &App, site: &SiteConfig, tag: &str, filters: &Filters, expect: Option<usize>) -> Result<(), String> {
    let window = Window { timeout: app.settings().config.discovery_window, expect };
    let replies = app.query.dry_run(&site.name, tag, filters.clone(), window).await.map_err(|e| format!("cannot check the build of {tag}: {e}"))?;
    let mut commits: Vec<String> = replies.iter().filter_map(|r| r.data["commit"].as_str()).map(str::to_owned).collect();
    commits.sort();
    commits.dedup();
    if commits.is_empty() {
        return Err(format!("cannot check the build of {tag}: no server of {} resolved it", site.name));
    }
    let rule = "this site deploys only tags whose build passed (require_build)";
    for commit in commits {
        let short = commit.get(..10).unwrap_or(&commit).to_owned();
        let changes = app.changes.clone();
        let c = commit.clone();
        let verdict = tokio::task::spawn_blocking(move || changes.verdict(&c)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        match verdict {
            super::changes::Verdict::Green(_) => {}
            super::changes::Verdict::Red(b) => return Err(format!("{tag} (commit {short}) is not green: {b}; {rule}.")),
            super::changes::Verdict::Running(b) => return Err(format!("{tag} (commit {short}) is still building: {b}; {rule}.")),
            super::changes::Verdict::Unknown => return Err(format!("{tag} (commit {short}) has no build heard on the bus; {rule}.")),
        }
    }
    Ok(())
}

/// Publishes one of dk-web's own event lines in the configured wire (failures are logged, never fatal).
pub(crate) async fn publish_event(app: &App, text: String) {
    let (dest, wire) = {
        let settings = app.settings();
        (settings.config.event_destination.replace("{source}", "web"), settings.config.wire)
    };
    let ev = crate::message::Event::new("web", text);
    match crate::message::encode(&ev, wire) {
        Ok(out) => {
            let opts = crate::stomp::SendOptions { headers: out.headers, ..Default::default() };
            if let Err(e) = app.client.send_with(&dest, out.body, opts).await {
                tracing::warn!(error = %e, "event line not sent");
            }
        }
        Err(e) => tracing::warn!(error = %e, "event line not encoded"),
    }
}
