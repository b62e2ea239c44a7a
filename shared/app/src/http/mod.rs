//! The HTTP surface: webhooks (`ingress`), the routes of parked runs (`resume`), and the
//! control API (`control`). Handlers parse a request, call a use case, and answer.

mod auth;
pub mod console;
pub mod control;
pub mod ingress;
pub mod openapi;
mod pages;
pub mod resume;

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::App;
use crate::ports::StoreError;

/// The whole HTTP surface: webhooks, the routes of parked runs, and the control API; a
/// path it does not have answers a problem too.
pub fn router(app: Arc<App>) -> axum::Router {
    ingress::router(app.clone())
        .merge(resume::router(app.clone()))
        .merge(console::router(app.clone()))
        .merge(control::router(app))
        .fallback(|uri: axum::http::Uri| async move {
            error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "there is no route `{}`; the routes are in /v1/openapi.json",
                    uri.path()
                ),
            )
        })
}

/// Middleware: an error the framework answered itself (a path that does not decode, a
/// method the route does not take, a body over the limit: plain text) is answered in the
/// one error shape instead, with its status and headers (`Allow`) kept.
pub async fn problems_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let answer = next.run(req).await;
    let status = answer.status();
    let plain = answer
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("text/plain"));
    if status.as_u16() < 400 || !plain {
        return answer;
    }
    let (parts, body) = answer.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_lowercase(),
        t => t.to_string(),
    };
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "body_too_large",
        415 => "unsupported_content_type",
        422 => "unprocessable",
        _ => "error",
    };
    let mut r = error_response(status, code, detail);
    for (k, v) in &parts.headers {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
}

impl App {
    /// The whole HTTP surface: webhooks, the routes of parked runs, and the control API.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        router(self.clone())
    }
}

/// An error, in one shape everywhere (RFC 9457 problem details, `application/problem+json`):
/// `type` (`urn:tripline:problem:{code}`), `title` (the status's reason), `status`,
/// `detail` (what went wrong and what to do), and `code` for scripts.
pub fn error_response(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Response {
    problem(status, code, message, serde_json::Map::new())
}

/// An error with more members: `field` (the path of the field at fault, where there is
/// one), `problems` (a definition's, each with its path), or another the route documents.
pub fn problem(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut body = json!({
        "type": format!("urn:tripline:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": message.into(),
        "code": code,
    });
    if let Some(o) = body.as_object_mut() {
        o.extend(extra);
    }
    let mut r = (status, Json(body)).into_response();
    r.extensions_mut().insert(ProblemCode(code));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(PROBLEM_JSON),
    );
    r
}

/// The `code` of an error answer, for what counts answers (`/metrics`).
#[derive(Clone, Copy, Debug)]
pub struct ProblemCode(pub &'static str);

/// The media type of an error.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The store failed: the request was not recorded, so the client must retry.
pub fn unavailable(e: &StoreError) -> Response {
    tracing::error!(error = %e, "store failed");
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the request could not be recorded; nothing was started; retry later",
    );
    r.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    r
}
