//! The OpenAPI 3.0 document of the API (`GET /api/v1/openapi.json`, no token
//! needed), written by hand in `openapi.json` beside this file and compiled in.
//! Tests check it against the routes and the answers (core/tests/web_api.rs,
//! tests/api/test_openapi.py with schemathesis).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The document.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Response {
    let mut r = (StatusCode::OK, DOCUMENT).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_with_every_route() {
        let v: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert_eq!(v["openapi"], "3.0.3");
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/sites",
            "/sites/{site}",
            "/sites/{site}/servers",
            "/sites/{site}/tags",
            "/sites/{site}/deploys",
            "/sites/{site}/rollbacks",
            "/deploys/{id}",
            "/deploys/{id}/stop",
            "/changes",
            "/changes/{id}",
            "/history",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        assert_eq!(paths.len(), 12);
        assert!(v["components"]["securitySchemes"]["bearerAuth"].is_object());
    }
}
