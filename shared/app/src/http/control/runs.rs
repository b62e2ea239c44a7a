//! `/v1/runs`: read, list and cancel runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tripline_core::{Run, RunStatus};

use super::{Limit, PageParams, Params, not_found, page_response};
use crate::App;
use crate::executor::CancelError;
use crate::http::{error_response, unavailable};
use crate::intake::retry::{RetryError, RetryRequest, RetryRevision};
use crate::ports::RunQuery;
use axum::http::HeaderMap;
use tripline_core::Timestamp;
use tripline_core::retry::RetryFrom;

pub(super) async fn get_run(
    State(app): State<Arc<App>>,
    who: Option<axum::Extension<crate::keys::Principal>>,
    Path(id): Path<String>,
) -> Response {
    match app.store.run(&id).await {
        Ok(Some(mut run)) => {
            // A waiting run's URLs, for a key that may act on the run (they resume and
            // approve it: `operate`); the hashes the run keeps of them are no one's
            // business.
            if who.is_none_or(|w| w.scope >= crate::keys::Scope::Operate) {
                app.reveal_urls(&mut run).await;
            }
            let mut v = serde_json::to_value(&run).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                for k in ["waiting_tokens", "waiting_salt", "used_tokens"] {
                    o.remove(k);
                }
            }
            Json(v).into_response()
        }
        Ok(None) => not_found("run", &id),
        Err(e) => unavailable(&e),
    }
}

/// `POST /v1/runs/{id}/cancel`: ends a queued, running or waiting run `cancelled`. A step
/// in flight finishes, but its result is dropped (the run's version moved on).
pub(super) async fn cancel_run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.cancel_run(&id).await {
        Ok(saved) => Json(run_summary(&saved)).into_response(),
        Err(CancelError::NotFound) => not_found("run", &id),
        Err(CancelError::Ended(status)) => error_response(
            StatusCode::CONFLICT,
            "run_ended",
            format!(
                "run `{id}` has already ended ({}); only a queued, running or waiting run can be cancelled",
                status.as_str()
            ),
        ),
        Err(CancelError::Store(e)) => unavailable(&e),
        Err(CancelError::Conflict) => error_response(
            StatusCode::CONFLICT,
            "conflict",
            "the run kept changing while it was being cancelled; try again",
        ),
        Err(CancelError::Failed(e)) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

/// `POST /v1/runs/{id}/retry`'s parameters.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryParams {
    #[serde(default)]
    from: RetryFrom,
    #[serde(default)]
    revision: RetryRevision,
}

/// `POST /v1/runs/{id}/retry[?from=start|failed_step][&revision=current|own]`: a new run
/// with the original's trigger input (see [`crate::intake::retry`]); `Idempotency-Key`
/// makes it happen once.
pub(super) async fn retry_run(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Params(q): Params<RetryParams>,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_string);
    let req = RetryRequest {
        from: q.from,
        revision: q.revision,
        key,
    };
    match app.retry(&id, &req).await {
        Ok(r) => {
            let status = if r.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let body = json!({
                "run_id": r.run_id,
                "retry_of": id,
                "from": q.from,
                "revision": r.revision,
                "duplicate": r.duplicate,
                "status_url": format!("/v1/runs/{}", r.run_id),
            });
            (status, Json(body)).into_response()
        }
        Err(RetryError::NotFound(_)) => not_found("run", &id),
        Err(RetryError::Refused(why)) => error_response(StatusCode::CONFLICT, "not_retryable", why),
        Err(RetryError::Store(e)) => unavailable(&e),
    }
}

/// `GET /v1/runs`'s parameters: the filters (also those of the export and of bulk jobs)
/// and the page.
#[derive(Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunFilters {
    workflow: Option<String>,
    status: Option<StatusParam>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<Limit>,
    cursor: Option<String>,
    trigger: Option<String>,
    error_type: Option<ErrorTypeParam>,
    text: Option<String>,
    parent: Option<String>,
    /// Only for `/v1/runs/export`.
    pub(super) format: Option<super::export::ExportFormat>,
}

impl RunFilters {
    pub(super) fn has_limit(&self) -> bool {
        self.limit.is_some()
    }

    pub(super) fn has_cursor(&self) -> bool {
        self.cursor.is_some()
    }

    pub(crate) fn query(self) -> RunQuery {
        let p = PageParams::new(self.since, self.until, self.limit, self.cursor);
        RunQuery {
            workflow: self.workflow,
            status: self.status.map(|s| s.0),
            since: p.since,
            until: p.until,
            limit: p.limit,
            cursor: p.cursor,
            trigger: self.trigger,
            error_type: self.error_type.map(|e| e.0),
            text: self.text.filter(|t| !t.is_empty()),
            parent: self.parent,
        }
    }
}

/// `error_type`: one of the run error types.
#[derive(Clone)]
pub(super) struct ErrorTypeParam(String);

const ERROR_TYPES: &[&str] = &[
    "step_failed",
    "template_error",
    "template_limit",
    "fail_step",
    "rejected",
    "wait_timed_out",
    "timed_out",
    "cancelled",
];

impl<'de> serde::Deserialize<'de> for ErrorTypeParam {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let e = String::deserialize(d)?;
        if ERROR_TYPES.contains(&e.as_str()) {
            return Ok(ErrorTypeParam(e));
        }
        Err(serde::de::Error::custom(format!(
            "unknown error type `{e}`; use {}",
            ERROR_TYPES.join(", ")
        )))
    }
}

super::param_schema!(ErrorTypeParam, "ErrorType", {"type": "string", "enum": ERROR_TYPES});
super::param_schema!(StatusParam, "RunStatusParam", {"type": "string", "enum": ["queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out"]});

/// `status`: one of the run statuses.
#[derive(Clone, Copy)]
pub(super) struct StatusParam(RunStatus);

impl<'de> serde::Deserialize<'de> for StatusParam {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RunStatus::parse(&s).map(StatusParam).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown status `{s}`; use queued, running, waiting, succeeded, failed, cancelled or timed_out"
            ))
        })
    }
}

pub(super) async fn list_runs(
    State(app): State<Arc<App>>,
    Params(q): Params<RunFilters>,
) -> Response {
    if q.format.is_some() {
        return super::bad_request("`format` is for /v1/runs/export");
    }
    page_response(app.store.runs(&q.query()).await, run_summary)
}

pub(super) fn run_summary(run: &Run) -> Value {
    let mut v = run.meta();
    v["revision"] = json!(run.revision);
    v["trigger"] = json!(run.trigger);
    v["url"] = json!(format!("/v1/runs/{}", run.id));
    if let Some(r) = &run.retry_of {
        v["retry_of"] = json!(r.run_id);
    }
    if let Some(at) = run.not_before {
        v["not_before"] = json!(at);
    }
    v
}
