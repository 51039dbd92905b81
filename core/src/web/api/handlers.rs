//! The API's handlers: each checks the token's scope, asks the same stores and
//! the same rollout code as the pages, and answers JSON.

use super::model::*;
use super::{begun_status, json, ApiError, Caller};
use crate::message::{DeployAction, Filters};
use crate::web::changes::Verdict;
use crate::web::config::SiteConfig;
use crate::web::form::{DeployForm, Input};
use crate::web::{rollout, App};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use std::collections::BTreeMap;
use std::sync::Arc;

type St = State<Arc<App>>;
type Answer = Result<Response, ApiError>;

/// The default and largest `limit`.
const LIMIT: (usize, usize) = (100, 1000);

/// The query's `name` (empty counts as absent).
fn param(uri: &Uri, name: &str) -> Option<String> {
    uri.query().and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())).filter(|s| !s.is_empty())
}

/// `?limit=`: 1 to 1000, default 100.
fn limit(uri: &Uri) -> Result<usize, ApiError> {
    match param(uri, "limit") {
        None => Ok(LIMIT.0),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=LIMIT.1).contains(n))
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("limit: {s:?} is not a whole number from 1 to {}", LIMIT.1))),
    }
}

/// The configured site `name` within the caller's scope: 404 unknown, 403 out of scope.
fn site_of(app: &App, caller: &Caller, name: &str) -> Result<SiteConfig, ApiError> {
    let site = app.settings().config.site(name).cloned().ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no site called {name:?} is configured")))?;
    caller.may_see(&site.name)?;
    Ok(site)
}

fn bus(e: crate::deploy::controller::ControlError) -> ApiError {
    rollout::Refusal::bus(e).into()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)
}

/// `GET /sites`: the sites in scope, their servers' releases and last deploy.
pub(super) async fn sites(State(app): St, caller: Caller) -> Answer {
    let s = app.settings();
    let servers = app.fleet.discover(&app.query, &Filters::default(), s.config.discovery_window).await.map_err(bus)?;
    let mut out = Vec::new();
    for site in s.config.sites.iter().filter(|x| caller.sites.allows(&x.name)) {
        let mine: Vec<_> = servers.iter().filter(|x| x.trusted() && x.serves(&site.name) && x.selected_by(&site.filters)).collect();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in mine.iter().filter_map(|x| x.release_tag(&site.name)) {
            *counts.entry(r.to_owned()).or_default() += 1;
        }
        let mut releases: Vec<ReleaseCount> = counts.into_iter().map(|(release, servers)| ReleaseCount { release, servers }).collect();
        releases.sort_by(|a, b| b.servers.cmp(&a.servers).then_with(|| a.release.cmp(&b.release)));
        let last_deploy = app.history.list(Some(&site.name), 1).map_err(internal)?.first().map(HistoryEntry::from);
        out.push(SiteSummary { name: site.name.clone(), repo: site.repo.clone(), may_deploy: site.may_deploy(&caller.user), servers: mine.len(), releases, last_deploy });
    }
    Ok(json(StatusCode::OK, &SiteList { sites: out }))
}

/// Each tag's build status (the site page's), off the async workers.
async fn builds(app: &App, state: &crate::web::fleet::SiteState) -> BTreeMap<String, Verdict> {
    let changes = app.changes.clone();
    let commits: Vec<(String, String)> = state.tags.iter().chain(&state.branches).map(|t| (t.name.clone(), t.commit.clone())).collect();
    tokio::task::spawn_blocking(move || commits.into_iter().filter_map(|(name, c)| changes.verdict(&c).ok().map(|v| (name, v))).collect()).await.unwrap_or_default()
}

/// `GET /sites/{site}`: servers, tags and branches with build status, locks.
pub(super) async fn site(State(app): St, caller: Caller, Path(name): Path<String>) -> Answer {
    let site = site_of(&app, &caller, &name)?;
    let window = app.settings().config.discovery_window;
    let state = app.fleet.site_state(&app.query, &site.name, &site.filters, site.tags, window).await.map_err(bus)?;
    let builds = builds(&app, &state).await;
    let tag = |r: &crate::web::fleet::RefCount| TagInfo::of(r, builds.get(&r.name));
    let detail = SiteDetail {
        name: site.name.clone(),
        repo: site.repo.clone(),
        may_deploy: site.may_deploy(&caller.user),
        defaults: SiteDefaults {
            canary: site.canary,
            batch: site.batch.clone(),
            max_failures: site.max_failures,
            require_reason: site.require_reason,
            require_build: site.require_build,
        },
        servers: state.servers.iter().map(|s| ServerInfo::of(s, &site.name)).collect(),
        tags: state.tags.iter().map(tag).collect(),
        branches: state.branches.iter().map(tag).collect(),
        locks: state.locks.iter().map(LockView::from).collect(),
        problems: state.problems.iter().map(|(server, error)| ServerProblem { server: server.clone(), error: error.clone() }).collect(),
        untrusted: state.untrusted.iter().map(|s| ServerInfo::of(s, &site.name)).collect(),
    };
    Ok(json(StatusCode::OK, &detail))
}

/// `GET /sites/{site}/servers`.
pub(super) async fn servers(State(app): St, caller: Caller, Path(name): Path<String>) -> Answer {
    let site = site_of(&app, &caller, &name)?;
    let window = app.settings().config.discovery_window;
    let servers = app.fleet.site_servers(&app.query, &site.name, &site.filters, window).await.map_err(bus)?;
    Ok(json(StatusCode::OK, &ServerList { servers: servers.iter().map(|s| ServerInfo::of(s, &site.name)).collect() }))
}

/// `GET /sites/{site}/tags`.
pub(super) async fn tags(State(app): St, caller: Caller, Path(name): Path<String>) -> Answer {
    let site = site_of(&app, &caller, &name)?;
    let window = app.settings().config.discovery_window;
    let state = app.fleet.site_state(&app.query, &site.name, &site.filters, site.tags, window).await.map_err(bus)?;
    let builds = builds(&app, &state).await;
    let tag = |r: &crate::web::fleet::RefCount| TagInfo::of(r, builds.get(&r.name));
    Ok(json(StatusCode::OK, &TagList { tags: state.tags.iter().map(tag).collect(), branches: state.branches.iter().map(tag).collect() }))
}

/// A JSON body into the form's input (the same checks follow in [`DeployForm::check`]).
fn input(body: Result<Bytes, BytesRejection>) -> Result<Input, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), format!("body: {}", e.body_text())))?;
    let req: DeployRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DeployRequest::default()
    } else if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "body: a JSON object is expected"));
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body: {e}")))?
    };
    let scope = match (&req.servers, &req.filter) {
        (Some(_), Some(_)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "give servers or filter, not both")),
        (Some(_), None) => "pick",
        (None, Some(_)) => "filter",
        (None, None) => "all",
    };
    Ok(Input {
        tag: req.tag,
        scope: Some(scope.into()),
        filter: req.filter,
        nodes: req.servers.unwrap_or_default(),
        canary: req.canary.map(|n| n.to_string()),
        batch: req.batch.map(|b| match b {
            BatchValue::Count(n) => n.to_string(),
            BatchValue::Text(t) => t,
        }),
        max_failures: req.max_failures.map(|n| n.to_string()),
        allow_missing: req.allow_missing,
        allow_downgrade: req.allow_downgrade,
        reason: req.reason,
    })
}

/// The form's checks on a JSON body, then [`rollout::begin`]: 202 with the deploy's id.
async fn start(app: Arc<App>, caller: Caller, name: String, body: Result<Bytes, BytesRejection>, action: DeployAction) -> Answer {
    let site = site_of(&app, &caller, &name)?;
    let input = input(body)?;
    let form = DeployForm::check(&input, &site, action == DeployAction::Deploy).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    tracing::info!(user = %caller.user, token = %caller.token, site = %site.name, "API: {} asked", rollout::verb(action));
    let begun = rollout::begin(app, &caller.user, site, form, action).await?;
    let id = begun.id();
    let url = format!("{}/deploys/{id}", super::PREFIX);
    let mut r = json(StatusCode::ACCEPTED, &Accepted { id, status: begun_status(begun).into(), url: url.clone() });
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// `POST /sites/{site}/deploys`.
pub(super) async fn deploy(State(app): St, caller: Caller, Path(name): Path<String>, body: Result<Bytes, BytesRejection>) -> Answer {
    start(app, caller, name, body, DeployAction::Deploy).await
}

/// `POST /sites/{site}/rollbacks`.
pub(super) async fn rollback(State(app): St, caller: Caller, Path(name): Path<String>, body: Result<Bytes, BytesRejection>) -> Answer {
    start(app, caller, name, body, DeployAction::Rollback).await
}

/// Deploy `id` (404 unknown or not a number; 403 of a site out of scope).
fn deploy_of(app: &App, caller: &Caller, id: &str) -> Result<(crate::web::history::DeployRow, crate::web::live::DeployView, Option<Arc<crate::web::live::LiveDeploy>>), ApiError> {
    let found = id.parse::<i64>().ok().and_then(|n| app.deploy_state(n)).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no deploy {id:?}")))?;
    caller.may_see(&found.0.site)?;
    Ok(found)
}

/// `GET /deploys/{id}`: its row and each server's progress.
pub(super) async fn deploy_status(State(app): St, caller: Caller, Path(id): Path<String>) -> Answer {
    crate::web::approvals::expire(&app);
    let (row, view, live) = deploy_of(&app, &caller, &id)?;
    Ok(json(StatusCode::OK, &DeployStatus { deploy: HistoryEntry::from(&row), live: live.is_some() && !view.finished, view }))
}

/// `POST /deploys/{id}/stop`: no further batch starts; 409 when it is over.
pub(super) async fn stop(State(app): St, caller: Caller, Path(id): Path<String>) -> Answer {
    let (row, view, live) = deploy_of(&app, &caller, &id)?;
    if !app.settings().config.site(&row.site).is_some_and(|s| s.may_deploy(&caller.user)) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("{} may not stop deploys of site {}", caller.user, row.site)));
    }
    match live.filter(|_| !view.finished) {
        Some(l) => {
            tracing::warn!(id = row.id, user = %caller.user, token = %caller.token, "API: stop asked: no further batch starts");
            l.stop();
            Ok(json(StatusCode::ACCEPTED, &Accepted { id: row.id, status: "stopping".into(), url: format!("{}/deploys/{}", super::PREFIX, row.id) }))
        }
        None => Err(ApiError::new(StatusCode::CONFLICT, format!("deploy {} is already over ({})", row.id, row.result))),
    }
}

/// `GET /changes[?repo=&limit=]`.
pub(super) async fn changes(State(app): St, _caller: Caller, uri: Uri) -> Answer {
    let repo = param(&uri, "repo");
    let limit = limit(&uri)?;
    let changes = app.changes.clone();
    let list = tokio::task::spawn_blocking(move || changes.list(repo.as_deref(), limit)).await.map_err(internal)?.map_err(internal)?;
    Ok(json(StatusCode::OK, &ChangeList { changes: list.iter().map(|(c, s)| ChangeItem { change: c.clone(), summary: s.into() }).collect() }))
}

/// `GET /changes/{id}`: a push's journey (correlation id or commit of 7+ hex digits).
pub(super) async fn journey(State(app): St, _caller: Caller, Path(id): Path<String>) -> Answer {
    let changes = app.changes.clone();
    let found = tokio::task::spawn_blocking(move || changes.resolve(&id).and_then(|r| r.map_or(Ok(None), |id| changes.journey(&id)))).await.map_err(internal)?.map_err(internal)?;
    let (change, steps, summary) =
        found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such change: give a correlation id or a commit (7 or more hex digits) seen on the bus"))?;
    Ok(json(StatusCode::OK, &Journey { change, steps, summary: (&summary).into() }))
}

/// `GET /history[?site=&limit=]`: newest first, only sites in scope.
pub(super) async fn history(State(app): St, caller: Caller, uri: Uri) -> Answer {
    crate::web::approvals::expire(&app);
    let site = param(&uri, "site");
    let limit = limit(&uri)?;
    let rows = match (&site, &caller.sites) {
        (Some(s), _) => {
            caller.may_see(s)?;
            app.history.list(Some(s), limit).map_err(internal)?
        }
        (None, tokens::Sites::All) => app.history.list(None, limit).map_err(internal)?,
        (None, tokens::Sites::Only(list)) => {
            let mut rows = Vec::new();
            for s in list {
                rows.extend(app.history.list(Some(s), limit).map_err(internal)?);
            }
            rows.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
            rows.truncate(limit);
            rows
        }
    };
    Ok(json(StatusCode::OK, &HistoryList { deploys: rows.iter().map(HistoryEntry::from).collect() }))
}

use super::tokens;
