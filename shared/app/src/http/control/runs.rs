//! `/v1/runs`: read, list and cancel runs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tripline_core::{Run, RunStatus};

use super::{PageParams, bad_request, check_params, not_found, page_response};
use crate::App;
use crate::http::{error_response, unavailable};
use crate::ports::RunQuery;

pub(super) async fn get_run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.run(&id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => not_found("run", &id),
        Err(e) => unavailable(&e),
    }
}

/// `POST /v1/runs/{id}/cancel`: ends a queued, running or waiting run `cancelled`. A step
/// in flight finishes, but its result is dropped (the run's version moved on).
pub(super) async fn cancel_run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    for _ in 0..5 {
        let run = match app.store.run(&id).await {
            Ok(Some(run)) => run,
            Ok(None) => return not_found("run", &id),
            Err(e) => return unavailable(&e),
        };
        if run.status.is_terminal() {
            return error_response(
                StatusCode::CONFLICT,
                "run_ended",
                format!(
                    "run `{id}` has already ended ({}); only a queued, running or waiting run can be cancelled",
                    run.status.as_str()
                ),
            );
        }
        match app
            .apply_from_outside(run, tripline_core::engine::Event::Cancel)
            .await
        {
            Ok(Some(saved)) => return Json(run_summary(&saved)).into_response(),
            Ok(None) => continue,
            Err(crate::executor::ExecError::Store(e)) => return unavailable(&e),
            Err(e) => {
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    e.to_string(),
                );
            }
        }
    }
    error_response(
        StatusCode::CONFLICT,
        "conflict",
        "the run kept changing while it was being cancelled; try again",
    )
}

pub(super) async fn list_runs(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let query = (|| -> Result<RunQuery, String> {
        check_params(
            &q,
            &["workflow", "status", "since", "until", "limit", "cursor"],
        )?;
        let status = match q.get("status") {
            None => None,
            Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
                format!("unknown status `{s}`; use queued, running, waiting, succeeded, failed, cancelled or timed_out")
            })?),
        };
        let p = PageParams::parse(&q)?;
        Ok(RunQuery {
            workflow: q.get("workflow").cloned(),
            status,
            since: p.since,
            until: p.until,
            limit: p.limit,
            cursor: p.cursor,
        })
    })();
    let query = match query {
        Ok(q) => q,
        Err(msg) => return bad_request(msg),
    };
    page_response(app.store.runs(&query).await, run_summary)
}

pub(super) fn run_summary(run: &Run) -> Value {
    let mut v = run.meta();
    v["revision"] = json!(run.revision);
    v["trigger"] = json!(run.trigger);
    v["url"] = json!(format!("/v1/runs/{}", run.id));
    v
}
