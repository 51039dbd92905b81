//! The one audit trail: signed rollout records from the bus into the history
//! (dk-deploy's rollouts, other dk-webs'), and this dk-web's own records out.
//!
//! A record counts only when signed by a key in `[controllers]` or by this
//! dk-web's own key; others are dropped with a rate-limited warning and
//! counted in `deploykit_web_rollout_records_total{result="rejected"}`.
//!
//! Each trusted record (stored now, or this dk-web's own coming back) also
//! tells the changes where commits went live ([`super::changes::live`]).

use super::changes::WentLive;
use super::App;
use crate::deploy::controller::NodeState;
use crate::deploy::keys::PublicKey;
use crate::deploy::record::{self, RolloutRecord};
use crate::message::DeployAction;
use crate::stomp::SubscribeOptions;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// At most one warning per this interval about rejected records.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The name this dk-web's own key goes by among the trusted controllers.
pub const OWN_KEY_NAME: &str = "this dk-web";

/// The keys whose records are stored: `[controllers]` and this dk-web's own.
fn trusted(app: &App) -> BTreeMap<String, PublicKey> {
    let mut keys = app.settings().config.controllers.clone();
    if let Some(k) = &app.key {
        if !keys.values().any(|v| *v == k.public()) {
            keys.insert(OWN_KEY_NAME.into(), k.public());
        }
    }
    keys
}

/// Subscribes to the rollout records and stores each trusted one (once).
pub(crate) async fn follow(app: &Arc<App>) -> Result<JoinHandle<()>, crate::stomp::Error> {
    let destination = app.settings().config.rollouts_destination.clone();
    let mut sub = app.client.subscribe(&destination, SubscribeOptions::default()).await?;
    let weak = Arc::downgrade(app);
    Ok(tokio::spawn(async move {
        let mut warned: Option<Instant> = None;
        let mut dropped = 0u64;
        while let Some(m) = sub.recv().await {
            let Some(app) = weak.upgrade() else { break };
            let outcome = match record::verify(&m.headers, &m.body, &trusted(&app)) {
                Ok(v) => {
                    let outcome = match app.history.record(&v.record) {
                        Ok(true) => {
                            tracing::info!(id = %v.record.id, controller = %v.record.controller, key = %v.key_name, site = %v.record.site, "rollout recorded");
                            "stored"
                        }
                        Ok(false) => "duplicate",
                        Err(e) => {
                            tracing::error!(id = %v.record.id, error = %e, "rollout record not stored");
                            "error"
                        }
                    };
                    went_live(&app, v.record).await;
                    outcome
                }
                Err(e) => {
                    dropped += 1;
                    if warned.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                        tracing::warn!(error = %e, dropped, "rollout record rejected (further ones logged at most once a minute)");
                        warned = Some(Instant::now());
                        dropped = 0;
                    }
                    "rejected"
                }
            };
            app.records.inc(&[outcome]);
        }
    }))
}

/// The servers a trusted record says ended `ok` with a commit, for the changes of the site's repo.
fn live_servers(app: &App, r: &RolloutRecord) -> Vec<WentLive> {
    let settings = app.settings();
    let Some(site) = settings.config.site(&r.site) else { return Vec::new() };
    let Some(report) = &r.report else { return Vec::new() };
    let deploy = app.history.row_of(&r.id).ok().flatten();
    let action = if r.action == DeployAction::Rollback { "rollback" } else { "deploy" };
    report
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Ok)
        .filter_map(|n| {
            let commit = n.commit.clone()?;
            let release = n.live.as_deref().map(|d| d.strip_prefix(&format!("{}_", site.repo)).unwrap_or(d).to_owned());
            Some(WentLive {
                record: r.id.clone(),
                deploy,
                action: action.into(),
                site: r.site.clone(),
                repo: site.repo.clone(),
                node: n.node.clone(),
                commit,
                tag: r.tag.clone().or(release).unwrap_or_else(|| "?".into()),
                user: r.user.clone(),
                controller: r.controller.clone(),
                at: r.finished_at,
            })
        })
        .collect()
}

/// Adds the `live` steps of a trusted record (off the async threads: the chain walks read SQLite).
async fn went_live(app: &Arc<App>, r: RolloutRecord) {
    let servers = live_servers(app, &r);
    if servers.is_empty() {
        return;
    }
    let changes = app.changes.clone();
    let done = tokio::task::spawn_blocking(move || servers.iter().try_for_each(|w| changes.went_live(w).map(drop))).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(id = %r.id, error = %e, "live steps not recorded"),
        Err(e) => tracing::error!(id = %r.id, error = %e, "live steps not recorded"),
    }
}

/// Publishes the record of a rollout this dk-web ran (a warning if the bus refuses it;
/// the history row is written already).
pub(crate) async fn publish(app: &App, record: &RolloutRecord) {
    let Some(key) = &app.key else { return };
    let destination = app.settings().config.rollouts_destination.clone();
    if let Err(e) = record.publish(&app.client, &destination, key).await {
        tracing::warn!(id = %record.id, error = %e, "rollout record not published");
    }
}
