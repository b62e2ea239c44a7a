//! The console's pages and the actions their forms post.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use minijinja::context;
use serde_json::Value;
use tripline_core::{Run, Timestamp};

use super::{form, frame, page, see_other, views};
use crate::App;
use crate::jobs::JobAction;
use crate::ports::{RunBrief, RunQuery};
use crate::switches::Switch;

const STATUSES: &[&str] = &[
    "queued",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
];

/// `GET /`: runs per hour by status over the last day (the newest 5,000, read as
/// [`crate::ports::Store::recent_runs`] briefs, not whole records), the workflows
/// failing most, waiting runs and the queue.
pub(super) async fn overview(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let s = session!(app, headers);
    let now = app.clock.now();
    let since = now.minus(std::time::Duration::from_secs(86_400));
    let runs = app
        .store
        .recent_runs(since, 5_000)
        .await
        .unwrap_or_default();
    let hour = |r: &RunBrief| {
        ((r.inserted_at.millis() - since.millis()) / 3_600_000).clamp(0, 23) as usize
    };
    let mut by_hour = [[0usize; 2]; 24];
    let mut failing: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        let failed = matches!(r.status.as_str(), "failed" | "timed_out");
        by_hour[hour(r)][usize::from(failed)] += 1;
        if failed {
            *failing.entry(r.workflow.clone()).or_default() += 1;
        }
    }
    let peak = by_hour
        .iter()
        .map(|h| h[0] + h[1])
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut bars = Vec::new();
    for (i, [ok, bad]) in by_hour.iter().enumerate() {
        let (h_ok, h_bad) = (*ok as f64 / peak * 110.0, *bad as f64 / peak * 110.0);
        let x = i * 20;
        bars.push(context! { class => "", x => x, y => 115.0 - h_ok - h_bad, h => h_ok, label => format!("{} h ago: {ok} other", 23 - i) });
        bars.push(context! { class => "failed", x => x, y => 115.0 - h_bad, h => h_bad, label => format!("{} h ago: {bad} failed", 23 - i) });
    }
    let mut failing: Vec<(String, usize)> = failing.into_iter().collect();
    failing.sort_by_key(|f| std::cmp::Reverse(f.1));
    let failing: Vec<_> = failing
        .into_iter()
        .take(5)
        .map(|(w, c)| context! { workflow => w, count => c })
        .collect();
    let count = |st: &[&str]| {
        runs.iter()
            .filter(|r| st.contains(&r.status.as_str()))
            .count()
    };
    let backlog = app.queue.backlog().await.ok().flatten();
    let waiting = app
        .store
        .count_runs(tripline_core::RunStatus::Waiting)
        .await
        .ok()
        .flatten();
    let ctx = context! {
        title => "Overview", bars => bars, peak => peak as u64, failing => failing, total => runs.len(),
        succeeded => count(&["succeeded"]), failed => count(&["failed", "timed_out"]),
        active => count(&["queued", "running", "waiting"]),
        waiting => waiting.map_or_else(|| "?".to_string(), |n| n.to_string()),
        queue => backlog.map(|b| b.ready), oldest => backlog.map(|b| b.oldest_age.as_secs()),
        fires => super::schedules::next_fires(&app, now, 5),
        ..frame(&app, &s).await
    };
    page(views::render("overview.html", ctx))
}

/// `GET /runs?workflow=&status=&text=&cursor=`: the listing's own filters.
pub(super) async fn runs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let s = session!(app, headers);
    let params = super::listing_params(q);
    let mut problem = None;
    let mut time = |name: &str| {
        let v = params.get(name)?;
        Timestamp::parse_in_zone(v, None)
            .map_err(|e| problem = Some(format!("{name}: {e}")))
            .ok()
    };
    let (since, until) = (time("since"), time("until"));
    let query = RunQuery {
        workflow: params.get("workflow").cloned(),
        trigger: params.get("trigger").cloned(),
        status: params
            .get("status")
            .and_then(|s| tripline_core::RunStatus::parse(s)),
        text: params.get("text").cloned(),
        since,
        until,
        cursor: params.get("cursor").cloned(),
        limit: 50,
        ..RunQuery::default()
    };
    let page_of = app.store.runs(&query).await;
    let (items, next) = match page_of {
        Ok(p) => (p.items, p.next_cursor),
        Err(e) => return crate::http::unavailable(&e),
    };
    let rows: Vec<_> = items
        .iter()
        .map(|r| context! { id => r.id, workflow => r.workflow, trigger => r.trigger.id, status => r.status.as_str(), inserted_at => r.inserted_at.to_string(), error => r.error })
        .collect();
    let fields = ["workflow", "trigger", "status", "text", "since", "until"];
    let (q, next) = super::listing_links("/runs", &params, &fields, next);
    let ctx = context! {
        title => "Runs", runs => rows, next => next, statuses => STATUSES,
        q => q, problem => problem,
        ..frame(&app, &s).await
    };
    page(views::render("runs.html", ctx))
}

/// `GET /runs/{id}`: the run and a timeline of its attempts, to scale; it reloads itself
/// while the run goes on.
pub(super) async fn run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = session!(app, headers);
    let run = match app.store.run(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return crate::http::error_response(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no run `{id}`"),
            );
        }
        Err(e) => return crate::http::unavailable(&e),
    };
    let ended = run.status.is_terminal();
    let bars = timeline(&run);
    let height = bars.len() * 18 + 4;
    let mut shown = serde_json::to_value(&run).unwrap_or(Value::Null);
    if let Some(o) = shown.as_object_mut() {
        for k in ["waiting_tokens", "waiting_salt", "used_tokens"] {
            o.remove(k);
        }
    }
    let ctx = context! {
        title => format!("Run {id}"), run => minijinja::Value::from_serialize(&shown), bars => bars,
        height => height, ended => ended, refresh => !ended,
        ..frame(&app, &s).await
    };
    page(views::render("run.html", ctx))
}

/// A bar per attempt: where it starts and how long it took, on one scale from the run's
/// first attempt to its last end.
fn timeline(run: &Run) -> Vec<minijinja::Value> {
    let execs = &run.step_executions;
    let (Some(first), Some(last)) = (
        execs.iter().map(|e| e.started_at.millis()).min(),
        execs.iter().map(|e| e.finished_at.millis()).max(),
    ) else {
        return Vec::new();
    };
    let span = (last - first).max(1) as f64;
    execs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let x = 120.0 + (e.started_at.millis() - first) as f64 / span * 470.0;
            let w = ((e.duration_ms.max(0) as f64) / span * 470.0).max(2.0);
            let class = match e.status {
                tripline_core::run::StepStatus::Failed => "failed",
                tripline_core::run::StepStatus::Skipped => "skipped",
                tripline_core::run::StepStatus::Succeeded => "",
            };
            context! { x => x, y => i * 18 + 2, w => w, class => class, step => format!("{} #{}", e.step_id, e.attempt), label => format!("{} attempt {}: {} ms", e.step_id, e.attempt, e.duration_ms) }
        })
        .collect()
}

/// `POST /runs/{id}/retry` (`from=failed_step` for from the failed step): to the new run.
pub(super) async fn retry(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = fields!(app, headers, body);
    let from = if fields
        .iter()
        .any(|(k, v)| k == "from" && v == "failed_step")
    {
        tripline_core::retry::RetryFrom::FailedStep
    } else {
        tripline_core::retry::RetryFrom::Start
    };
    let req = crate::intake::retry::RetryRequest {
        from,
        ..Default::default()
    };
    match app.retry(&id, &req).await {
        Ok(r) => see_other(&format!("/runs/{}", r.run_id)),
        Err(e) => crate::http::error_response(
            axum::http::StatusCode::CONFLICT,
            "not_retryable",
            e.to_string(),
        ),
    }
}

/// `POST /runs/{id}/cancel`: back to the run.
pub(super) async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = form(&app, &headers, &body).await {
        return r;
    }
    match app.cancel_run(&id).await {
        Ok(_) => see_other(&format!("/runs/{id}")),
        Err(e) => crate::http::error_response(
            axum::http::StatusCode::CONFLICT,
            "run_ended",
            e.to_string(),
        ),
    }
}

/// `POST /runs/bulk` with the selected `run`s and `action` (retry, cancel): a bulk job.
pub(super) async fn bulk(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = fields!(app, headers, body);
    let targets: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "run")
        .map(|(_, v)| v.clone())
        .collect();
    let action = match super::field(&fields, "action") {
        Some("cancel") => JobAction::Cancel,
        _ => JobAction::Retry {
            from: Default::default(),
            revision: Default::default(),
        },
    };
    let filter = serde_json::json!({ "runs": targets });
    match app.start_job(action, filter, targets).await {
        Ok(job) => see_other(&format!("/jobs/{}", job.id)),
        Err(e) => crate::http::error_response(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "job_refused",
            e.to_string(),
        ),
    }
}

/// `GET /workflows`: each with its triggers and switches.
pub(super) async fn workflows(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let s = session!(app, headers);
    app.refresh_workflows(false).await;
    let now = app.clock.now();
    let mut items: Vec<Value> = Vec::new();
    for rec in app.deployments.all() {
        let mut w = super::schedules::described(&app, &rec, now);
        let last = RunQuery {
            workflow: Some(rec.id.clone()),
            limit: 1,
            ..RunQuery::default()
        };
        if let Some(r) = app
            .store
            .runs(&last)
            .await
            .ok()
            .and_then(|p| p.items.into_iter().next())
        {
            w["last_run"] = serde_json::json!({"id": r.id, "status": r.status.as_str(), "at": r.inserted_at.to_string()});
        }
        items.push(w);
    }
    let ctx = context! { title => "Workflows", workflows => minijinja::Value::from_serialize(&items), ..frame(&app, &s).await };
    page(views::render("workflows.html", ctx))
}

pub(super) async fn switch_workflow(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    switch(&app, &headers, &body, &id, Switch::Workflow, &verb).await
}

pub(super) async fn switch_trigger(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, trigger, verb)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    switch(&app, &headers, &body, &id, Switch::Trigger(&trigger), &verb).await
}

async fn switch(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
    id: &str,
    what: Switch<'_>,
    verb: &str,
) -> Response {
    if let Err(r) = form(app, headers, body).await {
        return r;
    }
    let on = match verb {
        "enable" => true,
        "disable" => false,
        _ => {
            return crate::http::error_response(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "enable or disable",
            );
        }
    };
    match app
        .deployments
        .switch(app.store.as_ref(), id, what, on, app.clock.now())
        .await
    {
        Ok(_) => {
            app.cron_wake.notify_one();
            see_other("/workflows")
        }
        Err(e) => {
            crate::http::error_response(axum::http::StatusCode::CONFLICT, "conflict", e.to_string())
        }
    }
}
