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
use crate::ports::RunQuery;
use tripline_core::Timestamp;

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

/// `GET /v1/runs`'s parameters.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunsParams {
    workflow: Option<String>,
    status: Option<StatusParam>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<Limit>,
    cursor: Option<String>,
}

/// `status`: one of the run statuses.
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
    Params(q): Params<RunsParams>,
) -> Response {
    let p = PageParams::new(q.since, q.until, q.limit, q.cursor);
    let query = RunQuery {
        workflow: q.workflow,
        status: q.status.map(|s| s.0),
        since: p.since,
        until: p.until,
        limit: p.limit,
        cursor: p.cursor,
    };
    page_response(app.store.runs(&query).await, run_summary)
}

pub(super) fn run_summary(run: &Run) -> Value {
    let mut v = run.meta();
    v["revision"] = json!(run.revision);
    v["trigger"] = json!(run.trigger);
    v["url"] = json!(format!("/v1/runs/{}", run.id));
    if let Some(at) = run.not_before {
        v["not_before"] = json!(at);
    }
    v
}
