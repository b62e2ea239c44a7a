//! The HTTP surface: webhooks (`ingress`), the routes of parked runs (`resume`), and the
//! control API (`control`). Handlers parse a request, call a use case, and answer.

mod auth;
pub mod control;
pub mod ingress;
mod pages;
pub mod resume;

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::App;
use crate::ports::StoreError;

/// The whole HTTP surface: webhooks, the routes of parked runs, and the control API.
pub fn router(app: Arc<App>) -> axum::Router {
    ingress::router(app.clone())
        .merge(resume::router(app.clone()))
        .merge(control::router(app))
}

impl App {
    /// The whole HTTP surface: webhooks, the routes of parked runs, and the control API.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        router(self.clone())
    }
}

/// A JSON error: `{"error": {"code": ..., "message": ...}}`.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

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
