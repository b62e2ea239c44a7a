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
use tripline_core::run::TriggerRef;
use tripline_core::validate::Format;
use tripline_core::{Run, RunStatus, Timestamp};

use crate::deploy::DeployError;
use crate::ports::{
    Admission, Admitted, InboxMessage, InboxQuery, Outcome, Page, RunQuery, StoreError,
    WorkflowRecord,
};
use crate::{App, error_response, unavailable};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/workflows", get(list_workflows))
        .route("/v1/workflows/{id}", get(get_workflow).put(put_workflow))
        .route("/v1/workflows/{id}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/inbox", get(list_inbox))
        .route("/v1/inbox/{id}", get(get_message))
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

/// `POST /v1/workflows/{id}/runs`: the body (JSON, or empty) is the run's `trigger.body`.
async fn start_run(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.refresh_workflows(false).await;
    let Some(rec) = app.deployments.latest(&id) else {
        return not_found("workflow", &id);
    };
    let Some(trigger) = rec.definition.triggers.iter().find_map(|t| match t {
        Trigger::Manual(m) => Some(m.id.clone()),
        _ => None,
    }) else {
        return error_response(
            StatusCode::CONFLICT,
            "no_manual_trigger",
            format!(
                "workflow `{id}` has no manual trigger; add `- type: manual` to its triggers to start it from the API"
            ),
        );
    };
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
    let run_id = app.new_id();
    let mut run = Run::new(
        run_id.clone(),
        &rec.id,
        rec.revision,
        TriggerRef {
            kind: "manual".into(),
            id: trigger.clone(),
        },
        json!({ "body": input }),
        now,
    );
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
    };
    let idempotency = app.idempotency_claim(&rec.id, &trigger, &headers);
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
            && !["started", "duplicate", "filtered", "rejected"].contains(&o.as_str())
        {
            return Err(format!(
                "unknown outcome `{o}`; use started, duplicate, filtered or rejected"
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
