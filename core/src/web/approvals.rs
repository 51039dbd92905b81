//! Deploys that wait for a second person. A site with `approvers` records a
//! checked deploy as [`AWAITING`] with its choices ([`Planned`], JSON in the
//! history row) and sends nothing; one of the approvers other than the
//! requester approves it in the UI, the gates run again, and only then is the
//! request signed and sent. A waiting deploy can be rejected (an approver),
//! cancelled (its requester), and lapses after the site's `approval_expiry`.
//! The history row flips from waiting exactly once, so two approvals never
//! start two rollouts.

use super::config::SiteConfig;
use super::history::{self, DeployRow, AWAITING};
use super::rollout::{gates, publish_event, run, verb, Launch, Planned, Refusal};
use super::App;
use crate::message::DeployAction;
use axum::http::StatusCode;
use std::sync::Arc;

/// Records a checked deploy that waits for an approval; returns its id.
pub(crate) async fn ask(app: &App, site: &SiteConfig, start: &history::Start<'_>, plan: &Planned) -> Result<i64, Refusal> {
    let request = serde_json::to_string(plan).map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let id = app.history.request(start, &request).map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let what = format!("{} {}{}", start.action, site.name, start.tag.map(|t| format!(" {t}")).unwrap_or_default());
    tracing::info!(id, user = start.user, site = %site.name, "{what} waits for an approval");
    publish_event(app, format!("dk-web: {} asks to {what} (servers: {}); it waits for an approval by {} (deploy #{id})", start.user, start.selection, who(site))).await;
    Ok(id)
}

/// The approvers as a sentence part: `carol or dan`.
pub(crate) fn who(site: &SiteConfig) -> String {
    match site.approvers.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Unix seconds after which waiting deploy `row` of `site` lapses.
pub(crate) fn lapses_at(site: &SiteConfig, row: &DeployRow) -> i64 {
    row.started_at.saturating_add(site.approval_expiry.as_secs().min(i64::MAX as u64) as i64)
}

/// Marks lapsed waiting deploys `expired` (and those of sites no longer configured, or no longer needing an approval).
pub(crate) fn expire(app: &App) {
    let Ok(waiting) = app.history.waiting() else { return };
    let settings = app.settings();
    let now = crate::message::unix_now() as i64;
    for (id, site, at) in waiting {
        let why = match settings.config.site(&site) {
            None => Some(format!("site {site} is no longer configured")),
            Some(s) if s.approvers.is_empty() => Some(format!("site {site} no longer takes approvals: ask again")),
            Some(s) if at.saturating_add(s.approval_expiry.as_secs() as i64) <= now => Some(format!("no approval within {}", humantime::format_duration(s.approval_expiry))),
            Some(_) => None,
        };
        if let Some(why) = why {
            if app.history.close_request(id, "expired", &why).unwrap_or(false) {
                let _ = app.decided.send(id);
                tracing::info!(id, site = %site, "waiting deploy expired: {why}");
            }
        }
    }
}

/// The waiting deploy `id`, or why there is none.
fn waiting(app: &App, id: i64) -> Result<(DeployRow, SiteConfig), Refusal> {
    expire(app);
    let row = app.history.get(id).ok().flatten().ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, format!("No deploy #{id}.")))?;
    if row.result != AWAITING {
        return Err(Refusal::new(StatusCode::CONFLICT, format!("Deploy #{id} is not waiting for an approval ({}).", row.result)));
    }
    let site = app.settings().config.site(&row.site).cloned().ok_or_else(|| Refusal::new(StatusCode::CONFLICT, format!("Site {} is no longer configured.", row.site)))?;
    Ok((row, site))
}

/// `approver` approves waiting deploy `id`: the gates run again, then the rollout starts, signed now.
pub(crate) async fn approve(app: Arc<App>, id: i64, approver: &str) -> Result<(), Refusal> {
    let (row, site) = waiting(&app, id)?;
    if approver == row.user {
        return Err(Refusal::new(StatusCode::FORBIDDEN, format!("{approver} asked for deploy #{id}: a second person must approve it ({}).", who(&site))));
    }
    if !site.may_approve(approver, &row.user) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, format!("{approver} may not approve deploys of site {} (approvers: {}).", site.name, who(&site))));
    }
    if !site.may_deploy(&row.user) {
        return Err(Refusal::new(StatusCode::CONFLICT, format!("{} may no longer deploy site {}.", row.user, site.name)));
    }
    let lost = || Refusal::new(StatusCode::CONFLICT, format!("Deploy #{id} has no request to run (approved or ended meanwhile)."));
    let plan: Planned = request_of(&app, id).ok_or_else(lost)?;
    let spec = plan.spec(&app, &site, DeployAction::Deploy)?;
    gates(&app, &site, &spec, &row.user).await?;
    // The one transition out of waiting: a second approval, or a reject meanwhile, finds nothing.
    if app.history.approve(id, approver).map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e))?.is_none() {
        return Err(lost());
    }
    tracing::info!(id, approver, user = %row.user, site = %site.name, "deploy approved");
    let decided = app.decided.clone();
    run(app, Launch { id, user: row.user, approved_by: Some(approver.to_owned()), plan, spec }).await;
    // Its rollout is registered by now: a waiting page's stream reloads into it.
    let _ = decided.send(id);
    Ok(())
}

/// The waiting request of deploy `id`, parsed.
fn request_of(app: &App, id: i64) -> Option<Planned> {
    app.history.request_of(id).ok().flatten().and_then(|json| serde_json::from_str(&json).ok())
}

/// An approver rejects, or the requester cancels, waiting deploy `id`; nothing was sent, nothing runs.
pub(crate) async fn reject(app: &App, id: i64, user: &str) -> Result<(), Refusal> {
    let (row, site) = waiting(app, id)?;
    let (result, by) = if user == row.user {
        ("cancelled", format!("cancelled by {user}"))
    } else if site.may_approve(user, &row.user) {
        ("rejected", format!("rejected by {user}"))
    } else {
        return Err(Refusal::new(StatusCode::FORBIDDEN, format!("{user} may not reject deploys of site {} (approvers: {}).", site.name, who(&site))));
    };
    if !app.history.close_request(id, result, &by).map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e))? {
        return Err(Refusal::new(StatusCode::CONFLICT, format!("Deploy #{id} is no longer waiting.")));
    }
    let _ = app.decided.send(id);
    tracing::info!(id, user, "waiting deploy {result}");
    let what = format!("{} {}{}", verb(DeployAction::Deploy), site.name, row.tag.as_deref().map(|t| format!(" {t}")).unwrap_or_default());
    publish_event(app, format!("dk-web: {}'s {what} was {by} (deploy #{id})", row.user)).await;
    Ok(())
}
