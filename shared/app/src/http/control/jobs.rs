//! `/v1/jobs`: bulk retries, cancels and reprocessings by a listing's filters (see
//! [`crate::jobs`]), and their progress.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::inbox::InboxFilters;
use super::runs::RunFilters;
use super::{bad_request, not_found};
use crate::App;
use crate::http::{error_response, problem, unavailable};
use crate::jobs::{Job, JobAction, JobError, Selection};

/// `POST /v1/jobs`'s body.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "if" = {"properties": {"action": {"const": "retry"}}},
    "else" = {"properties": {"from": {"type": "null"}, "revision": {"type": "null"}}}
))]
pub(crate) struct NewJob {
    action: ActionName,
    /// A retry's: `start` or `failed_step`.
    from: Option<tripline_core::retry::RetryFrom>,
    /// A retry's: `current` or `own`.
    revision: Option<crate::intake::retry::RetryRevision>,
    /// The listing's filters: `/v1/runs`'s for retry and cancel, `/v1/inbox`'s for
    /// reprocess.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    filter: Value,
    /// Only count what the job would touch.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Clone, Copy, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ActionName {
    Retry,
    Cancel,
    Reprocess,
}

impl NewJob {
    fn action(&self) -> Result<JobAction, Box<Response>> {
        match self.action {
            ActionName::Retry => Ok(JobAction::Retry {
                from: self.from.unwrap_or_default(),
                revision: self.revision.unwrap_or_default(),
            }),
            _ if self.from.is_some() || self.revision.is_some() => Err(Box::new(bad_request(
                "`from` and `revision` go with the `retry` action",
            ))),
            ActionName::Cancel => Ok(JobAction::Cancel),
            ActionName::Reprocess => Ok(JobAction::Reprocess),
        }
    }
}

/// `POST /v1/jobs` `{"action": "retry"|"cancel"|"reprocess", "filter": {...}, "dry_run"}`
/// (retry also takes `from` and `revision`): `202` with the job, or with `dry_run`, `200`
/// with how many items it would touch.
pub(super) async fn create_job(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let mut de = serde_json::Deserializer::from_slice(&body);
    let new: NewJob = match serde_path_to_error::deserialize(&mut de) {
        Ok(n) => n,
        Err(e) => {
            let field = e.path().to_string();
            let mut extra = serde_json::Map::new();
            if field != "." {
                extra.insert("field".into(), json!(field));
            }
            return problem(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "the job: {}; send {{\"action\": \"retry\"|\"cancel\"|\"reprocess\", \"filter\": {{...}}}}",
                    e.inner()
                ),
                extra,
            );
        }
    };
    let action = match new.action() {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let selection = match selection(&new) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let targets = match app.select(selection).await {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    if new.dry_run {
        return Json(json!({"dry_run": true, "action": action, "total": targets.len()}))
            .into_response();
    }
    match app.start_job(action, new.filter, targets).await {
        Ok(job) => (StatusCode::ACCEPTED, Json(job_json(&job))).into_response(),
        Err(e) => refused(e),
    }
}

/// The filter, read as the listing of the job's items reads its query.
fn selection(new: &NewJob) -> Result<Selection, Box<Response>> {
    let filter = if new.filter.is_null() {
        json!({})
    } else {
        new.filter.clone()
    };
    let bad = |e: serde_path_to_error::Error<serde_json::Error>| {
        let extra = serde_json::Map::from_iter([(
            "field".to_string(),
            json!(format!("filter.{}", e.path())),
        )]);
        problem(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the filter: {}", e.inner()),
            extra,
        )
    };
    let paged = |limit: bool, cursor: bool, format: bool| {
        (limit || cursor || format).then(|| bad_request("a job's filter takes no `limit`, `cursor` or `format`: it acts on everything the filter selects"))
    };
    if new.action == ActionName::Reprocess {
        let f: InboxFilters =
            serde_path_to_error::deserialize(filter).map_err(|e| Box::new(bad(e)))?;
        if let Some(r) = paged(f.has_limit(), f.has_cursor(), f.format.is_some()) {
            return Err(Box::new(r));
        }
        Ok(Selection::Messages(f.query()))
    } else {
        let f: RunFilters =
            serde_path_to_error::deserialize(filter).map_err(|e| Box::new(bad(e)))?;
        if let Some(r) = paged(f.has_limit(), f.has_cursor(), f.format.is_some()) {
            return Err(Box::new(r));
        }
        Ok(Selection::Runs(f.query()))
    }
}

fn refused(e: JobError) -> Response {
    match e {
        JobError::Refused(why) => {
            error_response(StatusCode::UNPROCESSABLE_ENTITY, "job_refused", why)
        }
        JobError::Store(e) => unavailable(&e),
    }
}

/// `GET /v1/jobs/{id}`: the job's progress and each done item's result.
pub(super) async fn get_job(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.job(&id).await {
        Ok(Some(job)) => Json(job_json(&job)).into_response(),
        Ok(None) => not_found("job", &id),
        Err(e) => unavailable(&e),
    }
}

fn job_json(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("targets");
        o.insert(
            "items".into(),
            json!(if job.on_runs() { "runs" } else { "messages" }),
        );
        o.insert("url".into(), json!(format!("/v1/jobs/{}", job.id)));
    }
    v
}
