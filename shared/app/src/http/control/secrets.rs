//! `/v1/secrets`: set, list and remove secrets. A value goes in and never comes out: the
//! listing has names, when each was set, and which deployed workflows read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Params, bad_request, not_found};
use crate::App;
use crate::http::{error_response, unavailable};
use crate::secrets::SetError;

/// Which deployed workflows read each secret.
fn users(app: &App) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rec in app.deployments.all() {
        for name in tripline_core::validate::secret_names(&rec.definition) {
            out.entry(name).or_default().push(rec.id.clone());
        }
    }
    out
}

pub(super) async fn list_secrets(State(app): State<Arc<App>>) -> Response {
    app.refresh_workflows(false).await;
    let used = users(&app);
    match app.secrets.list().await {
        Ok(list) => {
            let items: Vec<_> = list
                .into_iter()
                .map(|s| {
                    let used_by = used.get(&s.name).cloned().unwrap_or_default();
                    json!({"name": s.name, "set_at": s.set_at, "used_by": used_by})
                })
                .collect();
            Json(json!({ "items": items })).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    value: String,
}

/// `PUT /v1/secrets/{name}` with `{"value": "…"}`: creates or replaces it. The next step
/// that renders it uses the new value.
pub(super) async fn put_secret(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let value = match serde_json::from_slice::<SetBody>(&body) {
        Ok(b) => b.value,
        Err(_) => {
            return bad_request(
                "send the value as JSON: {\"value\": \"…\"} (it is stored encrypted and never shown again)",
            );
        }
    };
    let now = app.clock.now();
    match app.secrets.set(&name, &value, now).await {
        Ok(()) => {
            tracing::info!(secret = %name, "secret set");
            let used_by = users(&app).remove(&name).unwrap_or_default();
            Json(json!({"name": name, "set_at": now, "used_by": used_by})).into_response()
        }
        Err(SetError::Store(e)) => unavailable(&e),
        Err(e) => bad_request(e.to_string()),
    }
}

#[derive(serde::Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveParams {
    /// `true`: remove it even while deployed workflows read it.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    force: Option<String>,
}

/// `DELETE /v1/secrets/{name}`: refused while a deployed workflow reads it (their steps
/// would fail), unless `?force=true`.
pub(super) async fn delete_secret(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(q): Params<RemoveParams>,
) -> Response {
    app.refresh_workflows(false).await;
    let force = match q.force.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return bad_request(format!("`force` is true or false, not `{other}`")),
    };
    if let Some(used_by) = users(&app).remove(&name)
        && !force
    {
        return error_response(
            StatusCode::CONFLICT,
            "secret_in_use",
            format!(
                "the secret `{name}` is read by {}; change them first, or remove it anyway with ?force=true (their steps then fail naming it)",
                used_by
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    match app.secrets.remove(&name).await {
        Ok(true) => {
            tracing::info!(secret = %name, "secret removed");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => not_found("secret", &name),
        Err(e) => unavailable(&e),
    }
}
