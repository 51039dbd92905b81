//! The JSON API (`/api/v1/…`): sites, servers, tags, changes and their
//! journeys, deploys and rollbacks (start, stop, status) and the history.
//!
//! Every route but `GET /api/v1/openapi.json` needs `Authorization: Bearer TOKEN`
//! ([`tokens`]): never a password or cookie, so a browser cannot be made to send
//! one cross-site, and no CSRF token is needed (the origin check of
//! [`super::routes`] skips these paths; the `Host` allowlist still applies).
//! The token's user acts as that user (deploys need the site's `deployers`),
//! limited to the token's sites.
//!
//! | status | when |
//! |---|---|
//! | 401 (`WWW-Authenticate: Bearer`) | no token, or an unknown or revoked one (counted as a failed login) |
//! | 403 | a site outside the token's sites; a user who may not deploy |
//! | 404 | unknown site, deploy, change or path |
//! | 400 / 413 | a bad JSON body or field, a bad parameter / a body over 64 KiB |
//! | 409 | stopping a deploy that is over; a site's `require_build` gate |
//! | 429 | too many failed logins from the address (`Retry-After`) |
//!
//! Errors are always `{"error": "..."}`. The document: [`openapi`], docs/api.md.
//!
//! - [`tokens`] — the tokens file; [`model`] — the bodies; [`handlers`] — the routes;
//!   [`openapi`] — the OpenAPI document; [`client`] — a client of `/api/v1/history` (`dk-deploy history`).

pub mod client;
mod handlers;
pub mod model;
pub mod openapi;
pub mod tokens;

use super::App;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokens::Sites;

/// Where the API is mounted.
pub const PREFIX: &str = "/api/v1";
/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Whether `path` is one of the API's.
pub(crate) fn is_api(path: &str) -> bool {
    path == PREFIX || path.strip_prefix(PREFIX).is_some_and(|rest| rest.starts_with('/'))
}

/// The API's routes (nested under [`PREFIX`] by [`super::routes`]).
pub(crate) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .route("/sites", get(handlers::sites))
        .route("/sites/{site}", get(handlers::site))
        .route("/sites/{site}/servers", get(handlers::servers))
        .route("/sites/{site}/tags", get(handlers::tags))
        .route("/sites/{site}/deploys", post(handlers::deploy))
        .route("/sites/{site}/rollbacks", post(handlers::rollback))
        .route("/deploys/{id}", get(handlers::deploy_status))
        .route("/deploys/{id}/stop", post(handlers::stop))
        .route("/changes", get(handlers::changes))
        .route("/changes/{id}", get(handlers::journey))
        .route("/history", get(handlers::history))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API path (GET /api/v1/openapi.json lists them)") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// An API refusal: its status and `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
        ApiError { status, message: message.to_string(), retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json(self.status, &model::ErrorBody { error: self.message });
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"dk-web API\""));
        }
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<super::rollout::Refusal> for ApiError {
    fn from(r: super::rollout::Refusal) -> ApiError {
        ApiError::new(r.status, r.message)
    }
}

/// `value` as JSON with `status` (never cached).
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{{\"error\":\"encoding: {}\"}}", e.to_string().replace('"', "'"))).into_response(),
    }
}

/// Who is calling: a token's user and sites.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The user the token acts as.
    pub user: String,
    /// The token's name (logged; never the token).
    pub token: String,
    /// The sites it may see and act on.
    pub sites: Sites,
}

impl Caller {
    /// 403 unless `site` is in scope.
    pub fn may_see(&self, site: &str) -> Result<(), ApiError> {
        if self.sites.allows(site) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, format!("token {:?} is not for site {site:?} (its sites: {})", self.token, self.sites)))
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Caller, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let now = std::time::Instant::now();
        if let Some(wait) = app.throttle.blocked(peer, now) {
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            return Err(ApiError {
                retry_after: Some(secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("too many failed logins from your address: try again in {secs} s"))
            });
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "give a token: Authorization: Bearer dkt_… (dk-web token add)"));
        };
        let bearer = value.to_str().ok().and_then(|v| v.trim().split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
        let Some(token) = bearer else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "the API takes only Authorization: Bearer tokens"));
        };
        let settings = app.settings();
        match settings.tokens.verify(token) {
            Some(e) => Ok(Caller { user: e.user.clone(), token: e.name.clone(), sites: e.sites.clone() }),
            None => {
                app.throttle.failed(peer, now);
                tracing::warn!(%peer, "API: unknown or revoked token");
                Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown or revoked token"))
            }
        }
    }
}

/// What a begun rollout's status reads (`running`; a deploy waiting for a second user will read `awaiting_approval`).
pub(crate) fn begun_status(b: super::rollout::Begun) -> &'static str {
    match b {
        super::rollout::Begun::Started(_) => "running",
        super::rollout::Begun::AwaitingApproval(_) => "awaiting_approval",
    }
}
