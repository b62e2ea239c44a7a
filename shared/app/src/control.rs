//! The control API (`/v1/...`): deploy and read workflows, start manual runs, read runs and
//! inbox messages.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tripline_core::definition::Trigger;
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::validate::Format;
use tripline_core::{Run, RunStatus, Timestamp};

use crate::deploy::DeployError;
use crate::ports::{
    Admission, Admitted, InboxMessage, InboxQuery, Outcome, Page, RunQuery, SavedState, StoreError,
    WorkflowRecord,
};
use crate::{App, error_response, unavailable};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/workflows", get(list_workflows))
        .route(
            "/v1/workflows/{id}",
            get(get_workflow).put(put_workflow).delete(delete_workflow),
        )
        .route("/v1/workflows/{id}/runs", post(start_run))
        .route("/v1/workflows/{id}/ticks", get(list_ticks))
        .route("/v1/workflows/{id}/state", get(get_state).put(put_state))
        .route(
            "/v1/workflows/{id}/context",
            get(get_context).patch(patch_context),
        )
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/inbox", get(list_inbox))
        .route("/v1/inbox/{id}", get(get_message))
        .route("/v1/inbox/{id}/reprocess", post(reprocess_message))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_key))
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .with_state(app)
}

async fn require_key(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the control API needs `Authorization: Bearer <api key>`",
            );
        }
    }
    next.run(req).await
}

fn bad_request(message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found(what: &str, id: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what} `{id}`"),
    )
}

fn hooks_of(rec: &WorkflowRecord) -> Vec<Value> {
    rec.definition
        .triggers
        .iter()
        .map(|t| match t {
            Trigger::Webhook(w) => json!({
                "trigger": w.id,
                "type": "webhook",
                "url": format!("/hooks/{}", w.token.as_deref().unwrap_or_default()),
                "methods": w.methods,
                "response": w.response,
            }),
            Trigger::Manual(m) => json!({
                "trigger": m.id,
                "type": "manual",
                "url": format!("/v1/workflows/{}/runs", rec.id),
            }),
            Trigger::Flow(f) => json!({
                "trigger": f.id,
                "type": "flow",
                "workflow": f.workflow,
                "on": f.on,
                "for_each": f.for_each,
            }),
            Trigger::Kafka(k) => json!({
                "trigger": k.id,
                "type": "kafka",
                "topics": k.topics,
                "ordering": k.ordering,
            }),
            Trigger::Cron(c) => json!({
                "trigger": c.id,
                "type": "cron",
                "schedule": c.schedule,
                "timezone": c.timezone.as_deref().unwrap_or("UTC"),
                "overlap": c.overlap,
                "catch_up": c.catch_up,
                "run_now_url": format!("/v1/workflows/{}/runs?trigger={}", rec.id, c.id),
                "ticks_url": format!("/v1/workflows/{}/ticks?trigger={}", rec.id, c.id),
            }),
        })
        .collect()
}

fn summary(rec: &WorkflowRecord) -> Value {
    json!({
        "id": rec.id,
        "revision": rec.revision,
        "description": rec.definition.description,
        "deployed_at": rec.deployed_at,
        "triggers": hooks_of(rec),
    })
}

async fn list_workflows(State(app): State<Arc<App>>) -> Response {
    app.refresh_workflows(false).await;
    let items: Vec<Value> = app.deployments.all().iter().map(|r| summary(r)).collect();
    Json(json!({ "items": items })).into_response()
}

async fn get_workflow(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let revision = match q.get("revision").map(|r| r.parse::<u32>()) {
        Some(Ok(r)) => Some(r),
        Some(Err(_)) => return bad_request("`revision` must be a whole number"),
        None => None,
    };
    let rec = match app.store.workflow(&id, revision).await {
        Ok(Some(r)) if r.removed => {
            return error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "workflow `{id}` was removed (revision {}); its earlier revisions are at ?revision=N, and deploying it again restores it",
                    r.revision
                ),
            );
        }
        Ok(Some(r)) => r,
        Ok(None) => return not_found("workflow", &id),
        Err(e) => return unavailable(&e),
    };
    let revisions = match app.store.revisions(&id).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let mut body = summary(&rec);
    body["definition"] = serde_json::to_value(&rec.definition).unwrap_or(Value::Null);
    body["revisions"] = revisions
        .iter()
        .map(|(r, at)| json!({"revision": r, "deployed_at": at}))
        .collect();
    Json(body).into_response()
}

async fn put_workflow(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("the definition is not valid UTF-8");
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format =
        if ct.contains("json") || (!ct.contains("yaml") && text.trim_start().starts_with('{')) {
            Format::Json
        } else {
            Format::Yaml
        };
    app.refresh_workflows(true).await;
    match app.deployments.deploy_text(app.store.as_ref(), text, format, Some(&id), app.clock.now()).await {
        Ok(d) => {
            app.cron_wake.notify_one();
            let status = if d.unchanged { StatusCode::OK } else { StatusCode::CREATED };
            let mut body = summary(&d.record);
            body["unchanged"] = json!(d.unchanged);
            (status, Json(body)).into_response()
        }
        Err(DeployError::Invalid(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {
                "code": "invalid_definition",
                "message": format!("the definition has {} problem(s); nothing was deployed", problems.len()),
                "problems": problems,
            }})),
        )
            .into_response(),
        Err(DeployError::Conflict) => error_response(StatusCode::CONFLICT, "conflict", DeployError::Conflict.to_string()),
        Err(DeployError::Store(e)) => unavailable(&e),
    }
}

/// `DELETE /v1/workflows/{id}`: removes a workflow (see [`crate::deploy::Deployments::remove`]).
async fn delete_workflow(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    app.refresh_workflows(true).await;
    match app
        .deployments
        .remove(app.store.as_ref(), &id, app.clock.now())
        .await
    {
        Ok(Some(rec)) => {
            app.cron_wake.notify_one();
            Json(json!({"id": rec.id, "revision": rec.revision, "removed": true})).into_response()
        }
        Ok(None) => not_found("workflow", &id),
        Err(DeployError::Conflict) => error_response(
            StatusCode::CONFLICT,
            "conflict",
            DeployError::Conflict.to_string(),
        ),
        Err(DeployError::Store(e)) => unavailable(&e),
        Err(DeployError::Invalid(_)) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a removal has no definition to be invalid",
        ),
    }
}

/// `POST /v1/workflows/{id}/runs`: the body (JSON, or empty) is the run's `trigger.body`.
/// With `?trigger=<id>` of a cron trigger: "run now", a run of that trigger outside its
/// schedule, with the current state.
async fn start_run(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(msg) = check_params(&q, &["trigger"]) {
        return bad_request(msg);
    }
    app.refresh_workflows(false).await;
    let Some(rec) = app.deployments.latest(&id) else {
        return not_found("workflow", &id);
    };
    let wanted = q.get("trigger");
    let found = rec.definition.triggers.iter().find(|t| match wanted {
        Some(w) => t.id() == w.as_str(),
        None => matches!(t, Trigger::Manual(_)),
    });
    let cron = match found {
        Some(Trigger::Manual(_)) => None,
        Some(Trigger::Cron(c)) => Some(c.clone()),
        Some(other) => {
            return error_response(
                StatusCode::CONFLICT,
                "not_startable",
                format!(
                    "trigger `{}` of workflow `{id}` is a webhook; call its URL, or name a manual or cron trigger",
                    other.id()
                ),
            );
        }
        None => {
            let cron_ids: Vec<&str> = rec
                .definition
                .triggers
                .iter()
                .filter(|t| matches!(t, Trigger::Cron(_)))
                .map(|t| t.id())
                .collect();
            let message = match wanted {
                Some(w) => format!("workflow `{id}` has no trigger `{w}`"),
                None if !cron_ids.is_empty() => format!(
                    "workflow `{id}` has no manual trigger; to run a cron trigger now, add `?trigger={}`",
                    cron_ids[0]
                ),
                None => format!(
                    "workflow `{id}` has no manual trigger; add `- type: manual` to its triggers to start it from the API"
                ),
            };
            let code = if wanted.is_some() {
                "unknown_trigger"
            } else {
                "no_manual_trigger"
            };
            let status = if wanted.is_some() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            return error_response(status, code, message);
        }
    };
    let trigger = found.map(|t| t.id().to_string()).unwrap_or_default();
    if body.len() > app.config.max_body_bytes {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the input is larger than the body limit",
        );
    }
    let input = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the run input must be JSON: {e}"),
                );
            }
        }
    };
    let now = app.clock.now();
    let message_id = app.new_id();
    let mut run = match &cron {
        Some(c) => app.run_now(&rec, c, input),
        None => Run::new(
            app.new_id(),
            &rec.id,
            rec.revision,
            TriggerRef {
                kind: TriggerKind::Manual,
                id: trigger.clone(),
            },
            json!({ "body": input }),
            now,
        ),
    };
    let run_id = run.id.clone();
    run.message_id = Some(message_id.clone());
    let message = InboxMessage {
        id: message_id,
        received_at: now,
        workflow: rec.id.clone(),
        trigger: trigger.clone(),
        method: "POST".into(),
        path: format!("/v1/workflows/{id}/runs"),
        query: String::new(),
        headers: vec![],
        content_type: Some("application/json".into()),
        body: body.to_vec(),
        outcome: Outcome::Started {
            run_ids: vec![run_id.clone()],
        },
        scheduled_at: None,
        kafka: None,
        reprocess_of: None,
    };
    let mut message = message;
    let manual = match found {
        Some(Trigger::Manual(m)) => Some(m),
        _ => None,
    };
    if let Some(m) = manual
        && let Some(why) = crate::unmet(
            m.filter.as_ref(),
            m.condition.as_deref(),
            &run.trigger_input,
        )
    {
        message.outcome = Outcome::Filtered {
            reason: why.clone(),
        };
        return crate::ingress::refuse(
            &app,
            message,
            StatusCode::UNPROCESSABLE_ENTITY,
            "condition_not_met",
            format!("the input does not start a run of `{id}`: {why}"),
        )
        .await;
    }
    let key_template = manual.and_then(|m| m.idempotency_key.as_deref());
    let idempotency = match app.claim_for(
        &rec.id,
        &trigger,
        key_template,
        &run.trigger_input,
        Some(&headers),
    ) {
        Ok(c) => c,
        Err(why) => {
            message.outcome = Outcome::Rejected {
                reason: why.clone(),
            };
            return crate::ingress::refuse(
                &app,
                message,
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_failed",
                why,
            )
            .await;
        }
    };
    let run_id = match app
        .admit(Admission {
            message,
            runs: vec![run],
            idempotency,
        })
        .await
    {
        Ok(Admitted::New { .. }) => run_id,
        Ok(Admitted::Duplicate { run_id }) => run_id,
        Err(e) => return unavailable(&e),
    };
    let url = format!("/v1/runs/{run_id}");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({"run_id": run_id, "status_url": url})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn get_run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.run(&id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => not_found("run", &id),
        Err(e) => unavailable(&e),
    }
}

/// `POST /v1/runs/{id}/cancel`: ends a queued, running or waiting run `cancelled`. A step
/// in flight finishes, but its result is dropped (the run's version moved on).
async fn cancel_run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
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

fn time_param(q: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>, String> {
    q.get(name)
        .map(|s| Timestamp::parse_rfc3339(s).map_err(|e| format!("`{name}`: {e}")))
        .transpose()
}

fn limit_param(q: &HashMap<String, String>) -> Result<usize, String> {
    match q.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(50),
        Some(Ok(n)) if (1..=500).contains(&n) => Ok(n),
        _ => Err("`limit` must be a whole number from 1 to 500".into()),
    }
}

fn check_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), String> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown query parameter `{k}`; use {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// The query parameters every listing shares.
struct PageParams {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: usize,
    cursor: Option<String>,
}

impl PageParams {
    fn parse(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            since: time_param(q, "since")?,
            until: time_param(q, "until")?,
            limit: limit_param(q)?,
            cursor: q.get("cursor").cloned(),
        })
    }
}

async fn list_runs(
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

/// `{"items": [...], "next_cursor": ...}`, or 503 when the store failed.
fn page_response<T>(page: Result<Page<T>, StoreError>, item: impl Fn(&T) -> Value) -> Response {
    match page {
        Ok(page) => {
            let items: Vec<Value> = page.items.iter().map(item).collect();
            Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

fn run_summary(run: &Run) -> Value {
    let mut v = run.meta();
    v["revision"] = json!(run.revision);
    v["trigger"] = json!(run.trigger);
    v["url"] = json!(format!("/v1/runs/{}", run.id));
    v
}

fn message_json(m: &InboxMessage) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    match std::str::from_utf8(&m.body) {
        Ok(s) => v["body"] = json!(s),
        Err(_) => {
            v["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&m.body));
        }
    }
    v["body_bytes"] = json!(m.body.len());
    v
}

async fn list_inbox(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let query = (|| -> Result<InboxQuery, String> {
        check_params(
            &q,
            &[
                "workflow", "trigger", "outcome", "since", "until", "limit", "cursor",
            ],
        )?;
        if let Some(o) = q.get("outcome")
            && !OUTCOMES.contains(&o.as_str())
        {
            return Err(format!(
                "unknown outcome `{o}`; use {}",
                OUTCOMES.join(", ")
            ));
        }
        let p = PageParams::parse(&q)?;
        Ok(InboxQuery {
            workflow: q.get("workflow").cloned(),
            trigger: q.get("trigger").cloned(),
            outcome: q.get("outcome").cloned(),
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
    page_response(app.store.messages(&query).await, message_json)
}

async fn get_message(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.message(&id).await {
        Ok(Some(m)) => Json(message_json(&m)).into_response(),
        Ok(None) => not_found("inbox message", &id),
        Err(e) => unavailable(&e),
    }
}

const OUTCOMES: &[&str] = &[
    "started",
    "duplicate",
    "filtered",
    "rejected",
    "skipped",
    "missed",
];

/// `GET /v1/workflows/{id}/ticks[?trigger=...]`: the ticks of a cron trigger, newest
/// first: `fired` (with the run), `skipped`, `duplicate`, `missed`, `rejected`.
async fn list_ticks(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(msg) = check_params(&q, &["trigger", "since", "until", "limit", "cursor"]) {
        return bad_request(msg);
    }
    app.refresh_workflows(false).await;
    let rec = match app.store.workflow(&id, None).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found("workflow", &id),
        Err(e) => return unavailable(&e),
    };
    let cron_ids: Vec<&str> = rec
        .definition
        .triggers
        .iter()
        .filter(|t| matches!(t, Trigger::Cron(_)))
        .map(|t| t.id())
        .collect();
    let trigger = match (q.get("trigger"), cron_ids.as_slice()) {
        (Some(t), _) => t.clone(),
        (None, [only]) => only.to_string(),
        (None, []) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "no_cron_trigger",
                format!("workflow `{id}` has no cron trigger; name a removed one with `?trigger=`"),
            );
        }
        (None, many) => {
            return bad_request(format!(
                "workflow `{id}` has {} cron triggers; name one with `?trigger=` ({})",
                many.len(),
                many.join(", ")
            ));
        }
    };
    let p = match PageParams::parse(&q) {
        Ok(p) => p,
        Err(msg) => return bad_request(msg),
    };
    let query = InboxQuery {
        workflow: Some(id),
        trigger: Some(trigger),
        outcome: None,
        since: p.since,
        until: p.until,
        limit: p.limit,
        cursor: p.cursor,
    };
    page_response(app.store.messages(&query).await, tick_json)
}

fn tick_json(m: &InboxMessage) -> Value {
    let mut v = json!({
        "tick": m.id,
        "trigger": m.trigger,
        "scheduled_time": m.scheduled_at,
        "recorded_at": m.received_at,
    });
    match &m.outcome {
        Outcome::Started { run_ids } => {
            v["outcome"] = json!(if m.scheduled_at.is_some() {
                "fired"
            } else {
                "started"
            });
            if let Some(r) = run_ids.first() {
                v["run_id"] = json!(r);
                v["run_url"] = json!(format!("/v1/runs/{r}"));
            }
        }
        Outcome::DuplicateTick { tick } => {
            v["outcome"] = json!("duplicate");
            v["duplicate_of"] = json!(tick);
        }
        Outcome::Duplicate { run_id } => {
            v["outcome"] = json!("duplicate");
            v["run_id"] = json!(run_id);
        }
        Outcome::Skipped { reason } => {
            v["outcome"] = json!("skipped");
            v["reason"] = json!(reason);
        }
        Outcome::Missed { reason } => {
            v["outcome"] = json!("missed");
            v["reason"] = json!(reason);
        }
        Outcome::Filtered { reason } | Outcome::Rejected { reason } => {
            v["outcome"] = json!(m.outcome.kind());
            v["reason"] = json!(reason);
        }
    }
    if m.method != "CRON" {
        v["run_now"] = json!(true);
    }
    v
}

fn state_json(id: &str, saved: Option<&SavedState>, limit: usize) -> Value {
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
async fn get_state(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
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
async fn put_state(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> Response {
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
    for _ in 0..5 {
        let current = match app.store.state(&id).await {
            Ok(c) => c,
            Err(e) => return unavailable(&e),
        };
        let now = app.clock.now();
        let next = SavedState {
            value: value.clone(),
            saved_at: now,
            scheduled_at: now,
            run_id: None,
            version: current.map_or(0, |c| c.version),
        };
        match app.store.save_state(&id, &next).await {
            Ok(saved) => return Json(state_json(&id, Some(&saved), limit)).into_response(),
            Err(StoreError::Conflict) => continue,
            Err(e) => return unavailable(&e),
        }
    }
    error_response(
        StatusCode::CONFLICT,
        "conflict",
        "the state kept changing; try again",
    )
}

/// `GET /v1/workflows/{id}/context`: the workflow's context store.
async fn get_context(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
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
async fn patch_context(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match app.store.workflow(&id, None).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("workflow", &id),
        Err(e) => return unavailable(&e),
    }
    let bad = |msg: String| error_response(StatusCode::BAD_REQUEST, "invalid_context", msg);
    let changes: serde_json::Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return bad("the body must be a JSON object of keys to strings (null deletes a key), e.g. {\"cursor\": \"42\", \"old\": null}".into()),
        Err(e) => return bad(format!("the body must be JSON: {e}")),
    };
    let mut patch = std::collections::BTreeMap::new();
    for (k, v) in changes {
        if let Err(why) = tripline_core::validate::valid_context_key(&k) {
            return bad(why);
        }
        let v = match v {
            Value::Null => None,
            Value::String(s) if s.len() <= tripline_core::engine::CONTEXT_VALUE_LIMIT => Some(s),
            Value::String(s) => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "context_value_too_large",
                    format!(
                        "the value of `{k}` is {} bytes, over the limit of {}; nothing was changed",
                        s.len(),
                        tripline_core::engine::CONTEXT_VALUE_LIMIT
                    ),
                );
            }
            other => {
                return bad(format!(
                    "the value of `{k}` is {other}, not a string: the context store keeps strings (write \"{}\" for a number, null to delete)",
                    other.to_string().replace('"', "\\\"")
                ));
            }
        };
        patch.insert(k, v);
    }
    if let Err(e) = app.store.patch_context(&id, &patch).await {
        return unavailable(&e);
    }
    match app.store.context(&id).await {
        Ok(c) => Json(json!({"workflow": id, "context": c})).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `POST /v1/inbox/{id}/reprocess`: the message matched again against its workflow's
/// current revision, recorded as a new message with the run it starts.
async fn reprocess_message(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let original = match app.store.message(&id).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found("inbox message", &id),
        Err(e) => return unavailable(&e),
    };
    match app.reprocess(&original).await {
        Ok(done) => {
            let mut body = json!({
                "message_id": done.message_id,
                "reprocess_of": id,
                "outcome": done.outcome,
            });
            if let Outcome::Started { run_ids } = &done.outcome
                && let Some(run) = run_ids.first()
            {
                body["run_id"] = json!(run);
                body["status_url"] = json!(format!("/v1/runs/{run}"));
            }
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(crate::reprocess::ReprocessError::Refused(why)) => {
            error_response(StatusCode::CONFLICT, "not_reprocessable", why)
        }
        Err(crate::reprocess::ReprocessError::Store(e)) => unavailable(&e),
    }
}
