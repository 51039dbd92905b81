//! The routes and their status codes.
//!
//! | route | answers |
//! |---|---|
//! | `GET /` | sites: servers answering, releases, last deploy |
//! | `GET /sites/{site}` | tags, servers (live commit, newest fetched, "fetched ahead of live"), lock, the deploy form; 404 unknown site |
//! | `POST /sites/{site}/preview` | dry run: plan, commit logs, commits a downgrade removes (its confirm form then asks for the `allow_downgrade` tick); 400 bad form, 403 CSRF |
//! | `POST /sites/{site}/deploy` | 303 to the deploy page; 400 bad form, 403 CSRF or not a deployer; `allow_downgrade=1` (the preview's tick) lets agents deploy a tag older than their live release, which they refuse otherwise |
//! | `POST /sites/{site}/rollback` | the same for a rollback of the given servers |
//! | `GET /deploys/{id}` | progress (live) or the recorded result; 404 unknown |
//! | `GET /deploys/{id}/events` | server-sent events: a snapshot, then changed rows |
//! | `POST /deploys/{id}/stop` | 303 back; 409 when already finished |
//! | `POST /deploys/{id}/approve` | a waiting deploy (site `approvers`): an approver other than the requester starts it (303 back); 403 others, 409 not waiting or a gate |
//! | `POST /deploys/{id}/reject` | a waiting deploy: an approver rejects it, its requester cancels it (303 back); 403 others, 409 not waiting |
//! | `GET /history[?site=]` | every deploy, newest first |
//! | `GET /activity`, `GET /activity/events` | the event line feed (page, SSE) |
//! | `GET /changes[?repo=]`, `GET /changes/events` | every push with builds, fetches and where it is live (page, SSE of every new step) |
//! | `GET /changes/{id}` | one push's journey (correlation id or commit, ≥ 7 hex digits); 404 unknown |
//! | `GET /changes/{id}/events` | SSE: `hello`, then each new step of that push with its summary |
//! | `/api/v1/…` | the JSON API with bearer tokens ([`super::api`], docs/api.md); `GET /api/v1/openapi.json` needs no token |
//! | `GET /assets/*`, `GET /healthz` | no login needed |
//!
//! Every other page needs a login: 401 with a Basic challenge, or 403 when a proxy
//! header is missing or comes from an untrusted address; 429 (with `Retry-After`)
//! once an address had too many failed logins ([`super::throttle`]).
//!
//! Before any handler, every request passes [`guard`]: a `Host` that is not one of
//! dk-web's names gets 421, a POST without an `Origin`/`Referer` of dk-web's own
//! origins 403 ([`super::hosts`]). API paths skip the origin check: they take only
//! `Authorization: Bearer`, which browsers never send by themselves (no CSRF).

// Handlers return a ready `Response` as the error of their checks (axum's idiom; it is
// returned at once, never stored), so the large-error lint does not apply.
#![allow(clippy::result_large_err)]

use super::auth::AuthFailure;
use super::config::SiteConfig;
use super::fleet::Server;
use super::form::DeployForm;
use super::live::{LiveDeploy, Update};
use super::pages::{self, Ctx, FormEcho, SiteSummary};
use super::{approvals, rollout, App};
use crate::deploy::controller::{plan, ControlError, Window};
use crate::message::{DeployAction, Filters};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::Stream;
use maud::Markup;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

type St = AxState<Arc<App>>;
type Peer = ConnectInfo<SocketAddr>;

/// The router.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(sites))
        .route("/sites/{site}", get(site))
        .route("/sites/{site}/preview", post(preview))
        .route("/sites/{site}/deploy", post(deploy))
        .route("/sites/{site}/rollback", post(rollback))
        .route("/deploys/{id}", get(deploy_page))
        .route("/deploys/{id}/events", get(deploy_events))
        .route("/deploys/{id}/stop", post(stop))
        .route("/deploys/{id}/approve", post(approve))
        .route("/deploys/{id}/reject", post(reject))
        .route("/history", get(history))
        .route("/activity", get(activity))
        .route("/activity/events", get(activity_events))
        .route("/changes", get(changes))
        .route("/changes/events", get(changes_events))
        .route("/changes/{id}", get(journey))
        .route("/changes/{id}/events", get(journey_events))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/healthz", get(healthz))
        .nest(super::api::PREFIX, super::api::router())
        .fallback(|| async { page(StatusCode::NOT_FOUND, pages::error(None, 404, "No such page.")) })
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The `Host` allowlist for every request, and the origin check for every state-changing one.
async fn guard(AxState(app): St, req: Request, next: Next) -> Response {
    let hosts = &app.settings().hosts;
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()));
    let api = super::api::is_api(req.uri().path());
    if let Err(e) = hosts.check_host(host) {
        tracing::warn!(host = ?host.map(|h| h.chars().take(100).collect::<String>()), "refused: {e}");
        let status = if e == super::hosts::HostError::NoHost { StatusCode::BAD_REQUEST } else { StatusCode::MISDIRECTED_REQUEST };
        if api {
            return super::api::ApiError::new(status, e).into_response();
        }
        return page(status, pages::error(None, status.as_u16(), &e.to_string()));
    }
    if !api && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let value = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        if let Err(e) = hosts.check_origin(value(header::ORIGIN), value(header::REFERER)) {
            tracing::warn!(path = %req.uri().path(), "refused: {e}");
            return page(StatusCode::FORBIDDEN, pages::error(None, 403, &e.to_string()));
        }
    }
    next.run(req).await
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

fn page(status: StatusCode, m: Markup) -> Response {
    let mut r = (status, Html(m.into_string())).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"));
    r
}

fn fail(ctx: &Ctx, status: StatusCode, msg: impl std::fmt::Display) -> Response {
    page(status, pages::error(Some(ctx), status.as_u16(), &msg.to_string()))
}

/// The logged-in user, or the refusal.
async fn login(app: &App, peer: SocketAddr, headers: &HeaderMap) -> Result<Ctx, Response> {
    let s = app.settings();
    if let Some(wait) = app.throttle.blocked(peer.ip(), std::time::Instant::now()) {
        return Err(too_many(wait));
    }
    match s.auth.user(peer.ip(), headers).await {
        Ok(user) => Ok(Ctx { csrf: app.csrf.token(&user), user }),
        Err(f @ (AuthFailure::Challenge | AuthFailure::Wrong)) => {
            if f == AuthFailure::Wrong {
                app.throttle.failed(peer.ip(), std::time::Instant::now());
            }
            let realm = s.auth.realm().unwrap_or("deploykit").replace('"', "");
            let mut r = page(StatusCode::UNAUTHORIZED, pages::error(None, 401, "Log in to use dk-web."));
            if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            Err(r)
        }
        Err(AuthFailure::Refused(why)) => {
            tracing::warn!(%peer, "refused: {why}");
            Err(page(StatusCode::FORBIDDEN, pages::error(None, 403, &why)))
        }
    }
}

/// 429 with `Retry-After` in whole seconds.
fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = page(StatusCode::TOO_MANY_REQUESTS, pages::error(None, 429, &format!("Too many failed logins from your address: try again in {secs} s.")));
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

macro_rules! login {
    ($app:expr, $peer:expr, $headers:expr) => {
        match login(&$app, $peer.0, &$headers).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
}

fn site_config(app: &App, ctx: &Ctx, name: &str) -> Result<SiteConfig, Response> {
    app.settings().config.site(name).cloned().ok_or_else(|| fail(ctx, StatusCode::NOT_FOUND, format!("No site called {name:?} is configured.")))
}

fn bus_error(ctx: &Ctx, e: ControlError) -> Response {
    fail(ctx, StatusCode::SERVICE_UNAVAILABLE, format!("The servers could not be asked: {e}"))
}

/// The shared `/healthz` shape (`crate::health::healthz`) with `deploys_running`; 200
/// while the broker is away too (`degraded`: history and pages still work).
async fn healthz(AxState(app): St) -> Response {
    app.health.healthz_response()
}

async fn sites(AxState(app): St, peer: Peer, headers: HeaderMap) -> Response {
    let ctx = login!(app, peer, headers);
    let s = app.settings();
    let (servers, problem) = match app.fleet.discover(&app.query, &Filters::default(), s.config.discovery_window).await {
        Ok(v) => (v, None),
        Err(e) => (Vec::new(), Some(format!("The servers could not be asked: {e}"))),
    };
    let mut rows = Vec::new();
    for site in &s.config.sites {
        let mine: Vec<&Server> = servers.iter().filter(|x| x.serves(&site.name) && x.selected_by(&site.filters)).collect();
        let last = app.history.list(Some(&site.name), 1).ok().and_then(|mut v| v.pop());
        rows.push(SiteSummary { site, servers: mine, last });
    }
    page(StatusCode::OK, pages::sites(&ctx, &rows, problem.as_deref()))
}

async fn site(AxState(app): St, peer: Peer, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let ctx = login!(app, peer, headers);
    let site = match site_config(&app, &ctx, &name) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let window = app.settings().config.discovery_window;
    let state = match app.fleet.site_state(&app.query, &site.name, &site.filters, site.tags, window).await {
        Ok(s) => s,
        Err(e) => return bus_error(&ctx, e),
    };
    let recent = app.history.list(Some(&site.name), 5).unwrap_or_default();
    let problem = state.servers.is_empty().then(|| format!("No server of site {} answered within {:?}.", site.name, window));
    // Each tag's build status, from the builds heard on the bus.
    let changes = app.changes.clone();
    let commits: Vec<(String, String)> = state.tags.iter().map(|t| (t.name.clone(), t.commit.clone())).collect();
    let builds = tokio::task::spawn_blocking(move || commits.into_iter().filter_map(|(name, c)| changes.verdict(&c).ok().map(|v| (name, v))).collect()).await.unwrap_or_default();
    // Per server, the newest commit it fetched of the site's repo beside the one live.
    let changes = app.changes.clone();
    let servers: Vec<(String, Option<String>)> =
        state.servers.iter().map(|s| (s.announce.identity.clone(), s.announce.sites.iter().find(|x| x.name == site.name).and_then(|x| x.commit.clone()))).collect();
    let repo = site.repo.clone();
    let fetched = tokio::task::spawn_blocking(move || changes.fetched_vs_live(&repo, &servers)).await.ok().and_then(Result::ok).unwrap_or_default();
    page(StatusCode::OK, pages::site(&ctx, &site, &state, &builds, &fetched, site.may_deploy(&ctx.user), &recent, problem.as_deref()))
}

/// The checks every state-changing form passes (after [`guard`]'s origin check): CSRF, the site, the form.
fn checked_form(app: &App, ctx: &Ctx, name: &str, body: &[u8], need_tag: bool) -> Result<(SiteConfig, DeployForm), Response> {
    let site = site_config(app, ctx, name)?;
    let form = DeployForm::parse(body, &site, need_tag);
    let token = match &form {
        Ok(f) => f.csrf.clone(),
        Err(_) => super::form::fields(body).into_iter().find(|(k, _)| k == super::csrf::FIELD).map(|(_, v)| v),
    };
    if let Err(why) = app.csrf.check(&ctx.user, token.as_deref()) {
        tracing::warn!(user = %ctx.user, site = name, "refused: {why}");
        return Err(fail(ctx, StatusCode::FORBIDDEN, why));
    }
    let form = form.map_err(|e| fail(ctx, StatusCode::BAD_REQUEST, e))?;
    Ok((site, form))
}

async fn preview(AxState(app): St, peer: Peer, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    let ctx = login!(app, peer, headers);
    let (site, form) = match checked_form(&app, &ctx, &name, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let nodes = match rollout::selection(&app, &site, &form.scope).await {
        Ok(n) => n,
        Err(r) => return refused(&ctx, r),
    };
    let window = app.settings().config.discovery_window;
    let filters = rollout::filters_for(&site, &nodes);
    let tag = form.tag.clone().unwrap_or_default();
    let expect = match &nodes {
        Some(n) => n.len(),
        None => app.fleet.expected(&filters),
    };
    let replies = match app.query.dry_run(&site.name, &tag, filters, Window { timeout: window, expect: (expect > 0).then_some(expect) }).await {
        Ok(r) => r,
        Err(ControlError::Invalid(e)) => return fail(&ctx, StatusCode::BAD_REQUEST, e),
        Err(e) => return bus_error(&ctx, e),
    };
    let replies: Vec<_> = replies.into_iter().filter(|r| r.error.as_deref().is_none_or(|e| !e.contains("is not configured"))).collect();
    let order: Vec<String> = replies.iter().map(|r| r.node.clone()).collect();
    let plan = plan::batches(&order, form.canary, form.batch);
    page(StatusCode::OK, pages::preview(&ctx, &site, &tag, &plan, &replies, &FormEcho { fields: form.echo.clone() }, site.may_deploy(&ctx.user)))
}

async fn deploy(AxState(app): St, peer: Peer, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    let ctx = login!(app, peer, headers);
    start_rollout(app, ctx, name, body, DeployAction::Deploy).await
}

async fn rollback(AxState(app): St, peer: Peer, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    let ctx = login!(app, peer, headers);
    start_rollout(app, ctx, name, body, DeployAction::Rollback).await
}

/// The form's checks, then [`rollout::begin`]; 303 to the deploy's page.
async fn start_rollout(app: Arc<App>, ctx: Ctx, name: String, body: Bytes, action: DeployAction) -> Response {
    let (site, form) = match checked_form(&app, &ctx, &name, &body, action == DeployAction::Deploy) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match rollout::begin(app, &ctx.user, site, form, action).await {
        Ok(begun) => Redirect::to(&format!("/deploys/{}", begun.id())).into_response(),
        Err(r) => refused(&ctx, r),
    }
}

fn refused(ctx: &Ctx, r: rollout::Refusal) -> Response {
    fail(ctx, r.status, r.message)
}

async fn deploy_page(AxState(app): St, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = login!(app, peer, headers);
    approvals::expire(&app);
    let Some((row, view, live)) = id.parse::<i64>().ok().and_then(|id| app.deploy_state(id)) else {
        return fail(&ctx, StatusCode::NOT_FOUND, format!("No deploy #{id}."));
    };
    let site = app.settings().config.site(&row.site).cloned();
    let may = site.as_ref().is_some_and(|s| s.may_deploy(&ctx.user));
    let approval = site.as_ref().filter(|_| row.result == super::history::AWAITING).map(|s| pages::Approval {
        approvers: approvals::who(s),
        lapses_at: approvals::lapses_at(s, &row),
        may_approve: s.may_approve(&ctx.user, &row.user),
        requester: ctx.user == row.user,
    });
    page(StatusCode::OK, pages::deploy(&ctx, &row, &view, live.is_some() && !view.finished, may, approval.as_ref()))
}

/// The CSRF check of a button's form post.
fn checked_button(app: &App, ctx: &Ctx, body: &[u8]) -> Result<(), Response> {
    let token = super::form::fields(body).into_iter().find(|(k, _)| k == super::csrf::FIELD).map(|(_, v)| v);
    app.csrf.check(&ctx.user, token.as_deref()).map_err(|why| fail(ctx, StatusCode::FORBIDDEN, why))
}

async fn approve(st: St, peer: Peer, headers: HeaderMap, id: Path<String>, body: Bytes) -> Response {
    decide(st, peer, headers, id, body, true).await
}

async fn reject(st: St, peer: Peer, headers: HeaderMap, id: Path<String>, body: Bytes) -> Response {
    decide(st, peer, headers, id, body, false).await
}

/// A waiting deploy's approve (`approve`) or reject/cancel button; 303 back to its page.
async fn decide(AxState(app): St, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: Bytes, approve: bool) -> Response {
    let ctx = login!(app, peer, headers);
    if let Err(r) = checked_button(&app, &ctx, &body) {
        return r;
    }
    let Ok(n) = id.parse::<i64>() else {
        return fail(&ctx, StatusCode::NOT_FOUND, format!("No deploy #{id}."));
    };
    let done = if approve { approvals::approve(app, n, &ctx.user).await } else { approvals::reject(&app, n, &ctx.user).await };
    match done {
        Ok(()) => Redirect::to(&format!("/deploys/{n}")).into_response(),
        Err(r) => refused(&ctx, r),
    }
}

fn sse_event(data: &str) -> Event {
    Event::default().data(data)
}

type SseStream = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// A first message, then the broadcast's (a lagging watcher gets `resync` instead of gaps).
fn stream(first: String, rx: Option<broadcast::Receiver<Arc<String>>>, resync: Option<std::sync::Weak<LiveDeploy>>) -> SseStream {
    let head = futures_util::stream::once(async move { Ok(sse_event(&first)) });
    let Some(rx) = rx else {
        return Box::pin(head);
    };
    let tail = futures_util::stream::unfold((rx, resync), |(mut rx, resync)| async move {
        loop {
            match rx.recv().await {
                Ok(s) => return Some((Ok(sse_event(&s)), (rx, resync))),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(l) = resync.as_ref().and_then(std::sync::Weak::upgrade) {
                        let json = serde_json::to_string(&Update::Snapshot { view: l.view() }).unwrap_or_default();
                        return Some((Ok(sse_event(&json)), (rx, resync)));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Box::pin(futures_util::StreamExt::chain(head, tail))
}

fn sse(s: SseStream) -> Response {
    let mut r = Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

async fn deploy_events(AxState(app): St, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = login!(app, peer, headers);
    let Some(id) = id.parse::<i64>().ok() else {
        return fail(&ctx, StatusCode::NOT_FOUND, "No such deploy.");
    };
    // Subscribed before the row is read: an approval in between is not missed.
    let decided = app.decided.subscribe();
    if let Some(l) = app.live.get(id) {
        let (view, rx) = l.subscribe();
        let first = serde_json::to_string(&Update::Snapshot { view }).unwrap_or_default();
        return sse(stream(first, Some(rx), Some(Arc::downgrade(&l))));
    }
    match app.deploy_state(id) {
        Some((row, view, _)) if row.result == super::history::AWAITING => {
            let first = serde_json::to_string(&Update::Snapshot { view }).unwrap_or_default();
            let lapses_at = app.settings().config.site(&row.site).map(|s| approvals::lapses_at(s, &row));
            sse(waiting_stream(first, app.clone(), id, decided, lapses_at))
        }
        Some((_, view, _)) => sse(stream(serde_json::to_string(&Update::Snapshot { view }).unwrap_or_default(), None, None)),
        None => fail(&ctx, StatusCode::NOT_FOUND, format!("No deploy #{id}.")),
    }
}

/// A waiting deploy's stream: its snapshot, then `decided` once it stops waiting (also
/// when it lapses while watched: the lapse is applied then, not at the next page view).
fn waiting_stream(first: String, app: Arc<App>, id: i64, mut decided: broadcast::Receiver<i64>, lapses_at: Option<i64>) -> SseStream {
    let head = futures_util::stream::once(async move { Ok(sse_event(&first)) });
    let still_waiting = move |app: &App| app.history.get(id).ok().flatten().is_some_and(|r| r.result == super::history::AWAITING);
    let tail = futures_util::stream::once(async move {
        // A second late: the lapse is due then (`lapses_at` is whole seconds).
        let mut check = lapses_at.map(|at| tokio::time::Instant::now() + Duration::from_secs(at.saturating_sub(crate::message::unix_now() as i64).max(0) as u64 + 1));
        loop {
            let lapse = async {
                match check {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = decided.recv() => match got {
                    Ok(d) if d == id => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => if !still_waiting(&app) { break },
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
                () = lapse => {
                    approvals::expire(&app);
                    if !still_waiting(&app) { break }
                    check = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
        Ok(sse_event(&serde_json::to_string(&Update::Decided).unwrap_or_default()))
    });
    Box::pin(futures_util::StreamExt::chain(head, tail))
}

async fn stop(AxState(app): St, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let ctx = login!(app, peer, headers);
    if let Err(r) = checked_button(&app, &ctx, &body) {
        return r;
    }
    let Some((row, _, live)) = id.parse::<i64>().ok().and_then(|id| app.deploy_state(id)) else {
        return fail(&ctx, StatusCode::NOT_FOUND, format!("No deploy #{id}."));
    };
    if !app.settings().config.site(&row.site).is_some_and(|s| s.may_deploy(&ctx.user)) {
        return fail(&ctx, StatusCode::FORBIDDEN, format!("{} may not stop deploys of site {}.", ctx.user, row.site));
    }
    match live {
        Some(l) => {
            tracing::warn!(id = row.id, user = %ctx.user, "stop asked: no further batch starts");
            l.stop();
            Redirect::to(&format!("/deploys/{}", row.id)).into_response()
        }
        None => fail(&ctx, StatusCode::CONFLICT, format!("Deploy #{} is already over ({}).", row.id, row.result)),
    }
}

/// Tells every running deploy to start no further batch (shutdown).
pub(crate) fn stop_all(app: &App) {
    for l in app.live.all() {
        l.stop();
    }
}

async fn history(AxState(app): St, peer: Peer, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let ctx = login!(app, peer, headers);
    approvals::expire(&app);
    let site = uri.query().and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "site").map(|(_, v)| v.into_owned())).filter(|s| !s.is_empty());
    match app.history.list(site.as_deref(), 500) {
        Ok(rows) => page(StatusCode::OK, pages::history(&ctx, &rows, site.as_deref())),
        Err(e) => fail(&ctx, StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn activity(AxState(app): St, peer: Peer, headers: HeaderMap) -> Response {
    let ctx = login!(app, peer, headers);
    let (lines, _) = app.activity.subscribe();
    page(StatusCode::OK, pages::activity(&ctx, &lines))
}

async fn activity_events(AxState(app): St, peer: Peer, headers: HeaderMap) -> Response {
    let _ctx = login!(app, peer, headers);
    let (_, rx) = app.activity.subscribe();
    sse(stream("{\"kind\":\"hello\"}".into(), Some(rx), None))
}

/// What `/changes/{id}` says of an id it does not know.
const NO_SUCH_CHANGE: &str = "No such change: give a correlation id or a commit (7 or more hex digits) seen on the bus; /changes lists the pushes kept.";

async fn changes(AxState(app): St, peer: Peer, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let ctx = login!(app, peer, headers);
    let repo = uri.query().and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "repo").map(|(_, v)| v.into_owned())).filter(|s| !s.is_empty());
    let changes = app.changes.clone();
    let listed = tokio::task::spawn_blocking(move || changes.list(repo.as_deref(), 200)).await;
    match listed {
        Ok(Ok(list)) => page(StatusCode::OK, super::journey::list(&ctx, &list, &app.changes.bounds)),
        Ok(Err(e)) => fail(&ctx, StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => fail(&ctx, StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn journey(AxState(app): St, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = login!(app, peer, headers);
    let changes = app.changes.clone();
    let found = tokio::task::spawn_blocking(move || changes.resolve(&id).and_then(|r| r.map_or(Ok(None), |id| changes.journey(&id)))).await;
    match found {
        Ok(Ok(Some((c, steps, summary)))) => page(StatusCode::OK, super::journey::journey(&ctx, &c, &steps, &summary, &app.changes.bounds)),
        Ok(Ok(None)) => fail(&ctx, StatusCode::NOT_FOUND, NO_SUCH_CHANGE),
        Ok(Err(e)) => fail(&ctx, StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => fail(&ctx, StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn changes_events(AxState(app): St, peer: Peer, headers: HeaderMap) -> Response {
    let _ctx = login!(app, peer, headers);
    sse(change_stream(app.changes.subscribe(), None))
}

async fn journey_events(AxState(app): St, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = login!(app, peer, headers);
    // Subscribe first, so no step falls between the page and the stream.
    let rx = app.changes.subscribe();
    let changes = app.changes.clone();
    match tokio::task::spawn_blocking(move || changes.resolve(&id)).await {
        Ok(Ok(Some(id))) => sse(change_stream(rx, Some(id))),
        Ok(Ok(None)) => fail(&ctx, StatusCode::NOT_FOUND, NO_SUCH_CHANGE),
        Ok(Err(e)) => fail(&ctx, StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => fail(&ctx, StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `hello`, then every update (of change `only`, if given); a lagging watcher gets `resync`.
fn change_stream(rx: broadcast::Receiver<Arc<super::changes::Pushed>>, only: Option<String>) -> SseStream {
    let head = futures_util::stream::once(async { Ok(sse_event("{\"kind\":\"hello\"}")) });
    let tail = futures_util::stream::unfold((rx, only), |(mut rx, only)| async move {
        loop {
            match rx.recv().await {
                Ok(p) if only.as_deref().is_none_or(|id| id == p.change) => return Some((Ok(sse_event(&p.json)), (rx, only))),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Some((Ok(sse_event("{\"kind\":\"resync\"}")), (rx, only))),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Box::pin(futures_util::StreamExt::chain(head, tail))
}
