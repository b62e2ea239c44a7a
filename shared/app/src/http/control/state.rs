//! A workflow's cron state and context store: `/v1/workflows/{id}/state`, `/context`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::not_found;
use crate::App;
use crate::http::{error_response, unavailable};
use crate::ports::SavedState;

pub(super) fn state_json(id: &str, saved: Option<&SavedState>, limit: usize) -> Value {
    match saved {
        Some(s) => json!({
            "workflow": id,
            "state": s.value,
            "bytes": serde_json::to_vec(&s.value).map(|v| v.len()).unwrap_or(0),
            "limit_bytes": limit,
            "saved_at": s.saved_at,
            "saved_by_run": s.run_id,
            "scheduled_time": s.scheduled_at,
        }),
        None => json!({"workflow": id, "state": null, "bytes": 0, "limit_bytes": limit}),
    }
}

/// `GET /v1/workflows/{id}/state`: the state the next cron run gets.
pub(super) async fn get_state(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.workflow(&id, None).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("workflow", &id),
        Err(e) => return unavailable(&e),
    }
    match app.store.state(&id).await {
        Ok(s) => Json(state_json(&id, s.as_ref(), app.config.state_limit_bytes)).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `PUT /v1/workflows/{id}/state`: replaces the state (the body, JSON; `null` clears it).
/// A run scheduled before the reset does not overwrite it when it ends.
pub(super) async fn put_state(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match app.store.workflow(&id, None).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("workflow", &id),
        Err(e) => return unavailable(&e),
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the state must be JSON (`null` clears it): {e}"),
            );
        }
    };
    let limit = app.config.state_limit_bytes;
    if body.len() > limit {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "state_too_large",
            format!(
                "the state is {} bytes, over the limit of {limit}; nothing was changed",
                body.len()
            ),
        );
    }
    match app.put_state(&id, value).await {
        Ok(Some(saved)) => Json(state_json(&id, Some(&saved), limit)).into_response(),
        Ok(None) => error_response(
            StatusCode::CONFLICT,
            "conflict",
            "the state kept changing; try again",
        ),
        Err(e) => unavailable(&e),
    }
}

/// `GET /v1/workflows/{id}/context`: the workflow's context store.
pub(super) async fn get_context(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.workflow(&id, None).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("workflow", &id),
        Err(e) => return unavailable(&e),
    }
    match app.store.context(&id).await {
        Ok(c) => Json(json!({"workflow": id, "context": c})).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `PATCH /v1/workflows/{id}/context`: a JSON object of keys to string values (`null`
/// deletes the key); the keys not named keep their values, whoever writes them meanwhile.
pub(super) async fn patch_context(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let bad = |msg: String| error_response(StatusCode::BAD_REQUEST, "invalid_context", msg);
    let changes: serde_json::Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return bad("the body must be a JSON object of keys to strings (null deletes a key), e.g. {\"cursor\": \"42\", \"old\": null}".into()),
        Err(e) => return bad(format!("the body must be JSON: {e}")),
    };
    match patch_context_of(&app, &id, changes).await {
        Ok(c) => Json(json!({"workflow": id, "context": c})).into_response(),
        Err(r) => r,
    }
}

/// Applies `changes` to workflow `id`'s context store, each key and value checked (the
/// API's and the console's one rule); the store as it is after, or the refusal to answer.
pub(crate) async fn patch_context_of(
    app: &App,
    id: &str,
    changes: serde_json::Map<String, Value>,
) -> Result<std::collections::BTreeMap<String, String>, Response> {
    match app.store.workflow(id, None).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(not_found("workflow", id)),
        Err(e) => return Err(unavailable(&e)),
    }
    let bad = |msg: String| error_response(StatusCode::BAD_REQUEST, "invalid_context", msg);
    let mut patch = std::collections::BTreeMap::new();
    for (k, v) in changes {
        if let Err(why) = tripline_core::validate::valid_context_key(&k) {
            return Err(bad(why.into()));
        }
        let v = match v {
            Value::Null => None,
            Value::String(s) if s.len() <= tripline_core::engine::CONTEXT_VALUE_LIMIT => Some(s),
            Value::String(s) => {
                return Err(error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "context_value_too_large",
                    format!(
                        "the value of `{k}` is {} bytes, over the limit of {}; nothing was changed",
                        s.len(),
                        tripline_core::engine::CONTEXT_VALUE_LIMIT
                    ),
                ));
            }
            other => {
                return Err(bad(format!(
                    "the value of `{k}` is {other}, not a string: the context store keeps strings (write \"{}\" for a number, null to delete)",
                    other.to_string().replace('"', "\\\"")
                )));
            }
        };
        patch.insert(k, v);
    }
    if let Err(e) = app.store.patch_context(id, &patch).await {
        return Err(unavailable(&e));
    }
    app.store.context(id).await.map_err(|e| unavailable(&e))
}
