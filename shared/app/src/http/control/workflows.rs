//! `/v1/workflows`: deploy, read and remove workflows, and start manual runs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tripline_core::definition::Trigger;
use tripline_core::validate::Format;

use super::{Params, bad_request, not_found, with_message_id};
use crate::App;
use crate::deploy::DeployError;
use crate::http::{error_response, unavailable};
use crate::intake::dry_run::DryRunError;
use crate::intake::manual::ManualRefused;
use crate::ports::WorkflowRecord;
use crate::switches::{Switch, SwitchError};

pub(super) fn hooks_of(rec: &WorkflowRecord) -> Vec<Value> {
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
            Trigger::Once(o) => json!({
                "trigger": o.id,
                "type": "once",
                "at": o.instant().ok(),
                "run_id": o.instant().ok().map(|at| crate::intake::once::once_run_id(&rec.id, &o.id, at)),
            }),
        })
        .collect()
}

pub(crate) fn summary(rec: &WorkflowRecord) -> Value {
    let mut triggers = hooks_of(rec);
    for t in &mut triggers {
        let id = t["trigger"].as_str().unwrap_or_default().to_string();
        t["enabled"] = json!(rec.is_on(&id));
    }
    json!({
        "id": rec.id,
        "revision": rec.revision,
        "description": rec.definition.description,
        "deployed_at": rec.deployed_at,
        "enabled": !rec.switches.disabled,
        "triggers": triggers,
    })
}

/// `POST /v1/workflows/{id}/enable|disable` and `…/triggers/{trigger}/enable|disable`:
/// switches (see [`crate::switches`]); answers the workflow's summary as it is now.
pub(super) async fn switch(app: &App, id: &str, what: Switch<'_>, on: bool) -> Response {
    app.refresh_workflows(true).await;
    match app
        .deployments
        .switch(app.store.as_ref(), id, what, on, app.clock.now())
        .await
    {
        Ok(rec) => {
            app.cron_wake.notify_one();
            Json(summary(&rec)).into_response()
        }
        Err(SwitchError::NotFound(what)) => {
            error_response(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
        }
        Err(SwitchError::Conflict) => error_response(
            StatusCode::CONFLICT,
            "conflict",
            SwitchError::Conflict.to_string(),
        ),
        Err(SwitchError::Store(e)) => unavailable(&e),
    }
}

pub(super) async fn enable_workflow(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    switch(&app, &id, Switch::Workflow, true).await
}

pub(super) async fn disable_workflow(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    switch(&app, &id, Switch::Workflow, false).await
}

pub(super) async fn enable_trigger(
    State(app): State<Arc<App>>,
    Path((id, trigger)): Path<(String, String)>,
) -> Response {
    switch(&app, &id, Switch::Trigger(&trigger), true).await
}

pub(super) async fn disable_trigger(
    State(app): State<Arc<App>>,
    Path((id, trigger)): Path<(String, String)>,
) -> Response {
    switch(&app, &id, Switch::Trigger(&trigger), false).await
}

pub(super) async fn list_workflows(State(app): State<Arc<App>>) -> Response {
    app.refresh_workflows(false).await;
    let items: Vec<Value> = app.deployments.all().iter().map(|r| summary(r)).collect();
    Json(json!({ "items": items })).into_response()
}

/// `GET /v1/workflows/{id}`'s parameters.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevisionParams {
    revision: Option<Revision>,
}

super::param_schema!(Revision, "Revision", {"type": "integer", "minimum": 0, "maximum": 4_294_967_295u64});

/// `revision`: a whole number.
pub(super) struct Revision(u32);

impl<'de> serde::Deserialize<'de> for Revision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(Revision)
            .map_err(|_| serde::de::Error::custom("`revision` must be a whole number"))
    }
}

pub(super) async fn get_workflow(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Params(q): Params<RevisionParams>,
) -> Response {
    let revision = q.revision.map(|r| r.0);
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
    // Never a credential's value: those written inline show as `[redacted]`.
    let shown = tripline_core::validate::without_credentials(&rec.definition);
    body["definition"] = serde_json::to_value(&shown).unwrap_or(Value::Null);
    body["revisions"] = revisions
        .iter()
        .map(|(r, at)| json!({"revision": r, "deployed_at": at}))
        .collect();
    Json(body).into_response()
}

pub(super) async fn put_workflow(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((text, format)) = definition_text(&headers, &body) else {
        return bad_request("the definition is not valid UTF-8");
    };
    app.refresh_workflows(true).await;
    match app
        .deployments
        .deploy_text(app.store.as_ref(), text, format, Some(&id), app.clock.now())
        .await
    {
        Ok(d) => {
            app.cron_wake.notify_one();
            // Its `once` runs (idempotent: a PUT again after a failure here records them).
            if let Err(e) = app.sync_once(&d.record).await {
                return unavailable(&e);
            }
            let status = if d.unchanged {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut body = summary(&d.record);
            body["unchanged"] = json!(d.unchanged);
            body["warnings"] = json!(d.warnings);
            (status, Json(body)).into_response()
        }
        Err(DeployError::Invalid(problems)) => invalid(&problems, "nothing was deployed"),
        Err(DeployError::Conflict) => error_response(
            StatusCode::CONFLICT,
            "conflict",
            DeployError::Conflict.to_string(),
        ),
        Err(DeployError::Store(e)) => unavailable(&e),
    }
}

/// A definition in a request's body: its text, and its format by the content type (or, by
/// default, JSON when it starts with `{`, else YAML).
fn definition_text<'a>(headers: &HeaderMap, body: &'a Bytes) -> Option<(&'a str, Format)> {
    let text = std::str::from_utf8(body).ok()?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json = ct.contains("json") || (!ct.contains("yaml") && text.trim_start().starts_with('{'));
    Some((text, if json { Format::Json } else { Format::Yaml }))
}

/// `422` with every problem of a definition and where it is.
fn invalid(problems: &[tripline_core::validate::Problem], then: &str) -> Response {
    crate::http::problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_definition",
        format!("the definition has {} problem(s); {then}", problems.len()),
        serde_json::Map::from_iter([("problems".to_string(), json!(problems))]),
    )
}

/// `POST /v1/workflows/{id}/dry-run`'s parameters.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DryRunParams {
    limit: Option<super::Limit>,
}

/// `POST /v1/workflows/{id}/dry-run[?limit=N]`: the body is a changed definition; answers
/// what it would do with the workflow's last `limit` (default 50) inbox messages (see
/// [`crate::intake::dry_run`]). Nothing is deployed or recorded.
pub(super) async fn dry_run(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Params(q): Params<DryRunParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((text, format)) = definition_text(&headers, &body) else {
        return bad_request("the definition is not valid UTF-8");
    };
    let limit = q.limit.unwrap_or_default().get();
    match app.dry_run(&id, text, format, limit).await {
        Ok(report) => Json(report).into_response(),
        Err(DryRunError::Invalid(problems)) => invalid(&problems, "nothing was matched"),
        Err(DryRunError::Store(e)) => unavailable(&e),
    }
}

/// `DELETE /v1/workflows/{id}`: removes a workflow (see [`crate::deploy::Deployments::remove`]).
pub(super) async fn delete_workflow(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    app.refresh_workflows(true).await;
    match app
        .deployments
        .remove(app.store.as_ref(), &id, app.clock.now())
        .await
    {
        Ok(Some(rec)) => {
            app.cron_wake.notify_one();
            if let Err(e) = app.sync_once(&rec).await {
                tracing::warn!(error = %e, "the removed workflow's once runs could not be cancelled");
            }
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

/// `POST /v1/workflows/{id}/runs`'s parameters.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartParams {
    /// A cron trigger to run now, or the manual trigger to start (default: the manual one).
    trigger: Option<String>,
    /// A one-time run: when to start it (RFC 3339, or a local time with `timezone`).
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"))]
    at: Option<String>,
    /// The IANA zone of a local `at`.
    timezone: Option<String>,
}

/// The longest a one-time run may be scheduled ahead.
const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// When a one-time run starts (`?at=`, `&timezone=`): `None` for now; a time in the past
/// (more than a minute) or more than a year ahead is refused with why.
fn start_time(app: &App, q: &StartParams) -> Result<Option<tripline_core::Timestamp>, String> {
    let Some(at) = &q.at else {
        if q.timezone.is_some() {
            return Err("`timezone` goes with `at` (a local start time)".into());
        }
        return Ok(None);
    };
    let at = tripline_core::Timestamp::parse_in_zone(at, q.timezone.as_deref())
        .map_err(|e| format!("`at`: {e}"))?;
    let now = app.clock.now();
    if at < now.minus(std::time::Duration::from_secs(60)) {
        return Err(format!(
            "`at` ({at}) is in the past; leave it out to start the run now"
        ));
    }
    if at > now.plus(MAX_AHEAD) {
        return Err(format!("`at` ({at}) is more than a year ahead"));
    }
    Ok(Some(at))
}

/// `POST /v1/workflows/{id}/runs`: the body (JSON, or empty) is the run's `trigger.body`.
/// With `?trigger=<id>` of a cron trigger: "run now", a run of that trigger outside its
/// schedule, with the current state.
pub(super) async fn start_run(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Params(q): Params<StartParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.refresh_workflows(false).await;
    let Some(rec) = app.deployments.latest(&id) else {
        return not_found("workflow", &id);
    };
    let trigger = match startable_trigger(&rec, &id, q.trigger.as_ref()) {
        Ok(t) => t,
        Err((status, code, message)) => return error_response(status, code, message),
    };
    let not_before = match start_time(&app, &q) {
        Ok(at) => at,
        Err(why) => return error_response(StatusCode::BAD_REQUEST, "bad_time", why),
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
    let started = app
        .start_manual(&rec, trigger, &body, input, &headers, not_before)
        .await;
    let (run_id, message_id) = match started {
        Ok(started) => started,
        Err(ManualRefused::Condition { message_id, reason }) => {
            let r = error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "condition_not_met",
                format!("the input does not start a run of `{id}`: {reason}"),
            );
            return with_message_id(r, &message_id);
        }
        Err(ManualRefused::KeyFailed { message_id, reason }) => {
            let r = error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_failed",
                reason,
            );
            return with_message_id(r, &message_id);
        }
        Err(ManualRefused::Store(e)) => return unavailable(&e),
    };
    let url = format!("/v1/runs/{run_id}");
    let mut answer = json!({"run_id": run_id, "status_url": url});
    if let Some(at) = not_before {
        answer["not_before"] = json!(at);
    }
    let mut r = (StatusCode::ACCEPTED, Json(answer)).into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    with_message_id(r, &message_id)
}

/// The trigger a manual start names: `?trigger=<id>` (a manual or cron trigger), else the
/// workflow's manual trigger; an answer that says what to do instead when there is none.
fn startable_trigger<'a>(
    rec: &'a WorkflowRecord,
    id: &str,
    wanted: Option<&String>,
) -> Result<&'a Trigger, Refusal> {
    let found = rec.definition.triggers.iter().find(|t| match wanted {
        Some(w) => t.id() == w.as_str(),
        None => matches!(t, Trigger::Manual(_)),
    });
    match found {
        Some(t @ (Trigger::Manual(_) | Trigger::Cron(_))) => match rec.switched_off(t.id()) {
            Some(why) => Err((StatusCode::CONFLICT, "trigger_disabled", why)),
            None => Ok(t),
        },
        Some(other) => Err((
            StatusCode::CONFLICT,
            "not_startable",
            format!(
                "trigger `{}` of workflow `{id}` is a webhook; call its URL, or name a manual or cron trigger",
                other.id()
            ),
        )),
        None => Err(no_such_trigger(rec, id, wanted)),
    }
}

/// Why a request is refused: its status, code and message.
type Refusal = (StatusCode, &'static str, String);

fn no_such_trigger(rec: &WorkflowRecord, id: &str, wanted: Option<&String>) -> Refusal {
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
    let (status, code) = if wanted.is_some() {
        (StatusCode::NOT_FOUND, "unknown_trigger")
    } else {
        (StatusCode::CONFLICT, "no_manual_trigger")
    };
    (status, code, message)
}
