//! The HTTP side: one POST route per forge, `/healthz`, status codes scripts and forges can trust.
//!
//! | answer | when |
//! |---|---|
//! | 200 `published` | delivered to the broker within `publish_wait` |
//! | 202 `spooled` | accepted and on disk; sent when the broker answers |
//! | 200 `duplicate` | a delivery id already accepted (a redelivery) |
//! | 200 `pong` | GitHub's `ping` |
//! | 202 `ignored` | an event deploykit does not act on |
//! | 400 | malformed body, missing header or field (named) |
//! | 401 | signature or token missing or wrong (nothing published) |
//! | 413 | body over `body_limit` |
//! | 500 | the spool could not be written (the forge should retry) |

use super::config::{Forge, ForgeConfig, WebhookConfig};
use crate::forge::signature::{verify_hmac, verify_token, AuthError};
use crate::forge::{gitea, github, gitlab, payload, ForgeError, Hook};
use crate::health::metrics::CounterVec;
use crate::health::Health;
use crate::message::{encode, Commit, Event, MessageError, Outgoing};
use crate::outbox::Outbox;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// Header added to published commits: the forge's delivery id.
pub const DELIVERY_ID_HEADER: &str = "dk-delivery-id";

/// What every request handler shares.
pub(super) struct App {
    pub config: WebhookConfig,
    /// The forges' secrets and naming, replaced on reload (same paths, same order).
    pub forges: std::sync::RwLock<Arc<Vec<ForgeConfig>>>,
    pub outbox: Outbox,
    pub deliveries: Mutex<crate::message::Dedup>,
    /// `/healthz` and the metrics (served on `--metrics-listen`).
    pub health: Health,
    /// `deploykit_webhook_deliveries_total{forge,result}`.
    pub delivered: CounterVec,
}

/// A delivery's result as the metrics label it (`published`, `spooled`, …), set by [`reply`].
#[derive(Debug, Clone, Copy)]
struct DeliveryResult(&'static str);

/// The results [`reply`] labels; anything else is labelled by its status code.
const RESULTS: [&str; 5] = ["published", "spooled", "duplicate", "pong", "ignored"];

/// The router: the forges' paths, `/healthz`, the body limit.
pub(super) fn router(app: Arc<App>) -> Router {
    let mut r = Router::new().route("/healthz", get(healthz));
    for (i, f) in app.config.forges.iter().enumerate() {
        r = r.route(
            &f.path,
            post(move |axum::extract::State(app): axum::extract::State<Arc<App>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>| hook(app, i, headers, body)),
        );
    }
    r.fallback(|| async { reply(StatusCode::NOT_FOUND, json!({"error": "no such endpoint"})) }).layer(DefaultBodyLimit::max(app.config.body_limit)).with_state(app)
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    let result = body.get("status").and_then(|s| s.as_str()).and_then(|s| RESULTS.into_iter().find(|r| *r == s));
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response();
    if let Some(result) = result {
        r.extensions_mut().insert(DeliveryResult(result));
    }
    r
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    reply(status, json!({ "error": msg.to_string() }))
}

/// The shared `/healthz` shape (`crate::health::healthz`) with `spooled`; 200 while the
/// broker is away too (`degraded`: requests are spooled).
async fn healthz(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    app.health.healthz_response()
}

/// The first of `names` present, as text (non-UTF-8 counts as absent).
fn first_header<'h>(headers: &'h HeaderMap, names: &[&'static str]) -> Option<(&'static str, &'h str)> {
    names.iter().find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()).map(|v| (*n, v)))
}

/// Checks the forge's signature or token, when a secret is configured.
fn authenticate(f: &ForgeConfig, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
    let Some(secret) = &f.secret else {
        return Ok(());
    };
    match f.forge {
        Forge::Github => verify_hmac(secret, body, github::SIGNATURE_HEADER, first_header(headers, &[github::SIGNATURE_HEADER]).map(|h| h.1), "sha256="),
        Forge::Gitea => {
            let (name, value) = match first_header(headers, &gitea::SIGNATURE_HEADERS) {
                Some((n, v)) => (n, Some(v)),
                None => (gitea::SIGNATURE_HEADERS[0], None),
            };
            verify_hmac(secret, body, name, value, "")
        }
        Forge::Gitlab => verify_token(secret, gitlab::TOKEN_HEADER, first_header(headers, &[gitlab::TOKEN_HEADER]).map(|h| h.1)),
    }
}

/// The event name and delivery id headers of a forge.
fn event_and_delivery(forge: Forge, headers: &HeaderMap) -> Result<(String, Option<String>), ForgeError> {
    let (event_names, delivery_names): (&[&'static str], &[&'static str]) = match forge {
        Forge::Github => (&[github::EVENT_HEADER], &[github::DELIVERY_HEADER]),
        Forge::Gitlab => (&[gitlab::EVENT_HEADER], &gitlab::DELIVERY_HEADERS),
        Forge::Gitea => (&gitea::EVENT_HEADERS, &gitea::DELIVERY_HEADERS),
    };
    let (_, event) = first_header(headers, event_names).ok_or(ForgeError::MissingHeader(event_names[0]))?;
    let delivery = match first_header(headers, delivery_names) {
        None => None,
        Some((name, d)) => {
            let d = d.trim();
            if d.is_empty() || d.len() > 200 || !d.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ForgeError::Invalid { field: name.to_owned(), why: "not a delivery id".into() });
            }
            Some(format!("{}:{d}", forge.as_str()))
        }
    };
    Ok((event.trim().to_owned(), delivery))
}

/// The commit and its event line, as the spool will send them.
fn commit_messages(config: &WebhookConfig, commit: &Commit, delivery: Option<&str>) -> Result<Vec<(String, Outgoing)>, MessageError> {
    commit.validate()?;
    let mut commit = commit.clone();
    let id = commit.effective_correlation_id();
    commit.correlation_id = Some(id.clone());
    let mut c = encode(&commit, config.wire)?;
    if let Some(d) = delivery {
        c.headers.push(DELIVERY_ID_HEADER, d);
    }
    let event = Event { correlation_id: Some(id), ..Event::new(config.event_source.clone(), commit.event_line()) };
    let e = encode(&event, config.wire)?;
    Ok(vec![(config.destinations.commits.clone(), c), (config.destinations.events_for(&config.event_source), e)])
}

/// One forge delivery, counted by forge and result.
async fn hook(app: Arc<App>, index: usize, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let forge = app.forges.read().unwrap_or_else(|p| p.into_inner()).get(index).map_or("other", |f| f.forge.as_str());
    let r = answer(app.clone(), index, headers, body).await;
    let result = match (r.extensions().get::<DeliveryResult>(), r.status()) {
        (Some(DeliveryResult(s)), _) => s,
        (None, StatusCode::BAD_REQUEST) => "malformed",
        (None, StatusCode::UNAUTHORIZED) => "unauthorized",
        (None, StatusCode::PAYLOAD_TOO_LARGE) => "too_large",
        (None, StatusCode::INTERNAL_SERVER_ERROR) => "spool_error",
        (None, _) => "other",
    };
    app.delivered.inc(&[forge, result]);
    match result {
        "published" | "spooled" | "duplicate" | "pong" | "ignored" => app.health.message(),
        _ => {
            app.health.message();
            app.health.error(format!("{forge} delivery refused: {result}"));
        }
    }
    r
}

/// One forge delivery, start to answer.
async fn answer(app: Arc<App>, index: usize, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let forges = app.forges.read().unwrap_or_else(|p| p.into_inner()).clone();
    let f = &forges[index];
    let forge = f.forge.as_str();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(forge, status = %e.status(), "request body refused: {}", e.body_text());
            return error(e.status(), e.body_text());
        }
    };
    if let Err(e) = authenticate(f, &headers, &body) {
        tracing::warn!(forge, error = %e, "request refused: authentication failed; nothing published");
        return error(StatusCode::UNAUTHORIZED, e);
    }
    let (event, delivery) = match event_and_delivery(f.forge, &headers) {
        Ok(x) => x,
        Err(e) => return bad_request(forge, e),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let hook = payload::parse(content_type, &body).and_then(|v| match f.forge {
        Forge::Github => github::parse(&event, &v, &f.naming),
        Forge::Gitlab => gitlab::parse(&event, &v, &f.naming),
        Forge::Gitea => gitea::parse(&event, &v, &f.naming),
    });
    let hook = match hook {
        Ok(h) => h,
        Err(e) => return bad_request(forge, e),
    };
    let (messages, what) = match hook {
        Hook::Ping => {
            tracing::info!(forge, "ping");
            return reply(StatusCode::OK, json!({"status": "pong"}));
        }
        Hook::Ignored(name) => {
            tracing::info!(forge, event = %name, "event ignored");
            return reply(StatusCode::ACCEPTED, json!({"status": "ignored", "event": name}));
        }
        Hook::Commit(commit) => match commit_messages(&app.config, &commit, delivery.as_deref()) {
            Ok(m) => (m, commit.subject()),
            Err(e) => return bad_request(forge, e),
        },
        Hook::Event(line) => {
            let ev = Event { correlation_id: delivery.clone(), ..Event::new(app.config.event_source.clone(), line.clone()) };
            match encode(&ev, app.config.wire) {
                Ok(out) => (vec![(app.config.destinations.events_for(&app.config.event_source), out)], line),
                Err(e) => return bad_request(forge, e),
            }
        }
    };
    if let Some(d) = &delivery {
        if !app.deliveries.lock().unwrap_or_else(|p| p.into_inner()).first_id(d) {
            tracing::info!(forge, delivery = %d, "redelivery of an accepted delivery: not published again");
            return reply(StatusCode::OK, json!({"status": "duplicate", "delivery": d}));
        }
    }
    let paths = match app.outbox.push(&messages) {
        Ok(p) => p,
        Err(e) => {
            if let Some(d) = &delivery {
                app.deliveries.lock().unwrap_or_else(|p| p.into_inner()).forget(d);
            }
            tracing::error!(forge, error = %e, "cannot write the spool; the forge will have to redeliver");
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot spool the message: {e}"));
        }
    };
    if app.outbox.delivered(&paths, app.config.publish_wait).await {
        tracing::info!(forge, %event, delivery = delivery.as_deref().unwrap_or("-"), "published {what}");
        reply(StatusCode::OK, json!({"status": "published", "subject": what}))
    } else {
        tracing::warn!(forge, %event, delivery = delivery.as_deref().unwrap_or("-"), "broker not answering: {what} spooled, sent when it is back");
        reply(StatusCode::ACCEPTED, json!({"status": "spooled", "subject": what}))
    }
}

fn bad_request(forge: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(forge, error = %e, "request refused");
    error(StatusCode::BAD_REQUEST, e)
}
