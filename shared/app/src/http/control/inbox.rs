//! `/v1/inbox` and a workflow's ticks: read, list and reprocess inbox messages.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tripline_core::definition::Trigger;

use super::{Limit, PageParams, Params, bad_request, not_found, page_response};
use crate::App;
use crate::http::{error_response, unavailable};
use crate::ports::{InboxMessage, InboxQuery, Outcome};
use tripline_core::Timestamp;

pub(super) fn message_json(m: &InboxMessage) -> Value {
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

/// `GET /v1/inbox`'s parameters: the filters (also those of the export and of bulk
/// reprocessing) and the page.
#[derive(Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboxFilters {
    workflow: Option<String>,
    trigger: Option<String>,
    outcome: Option<OutcomeParam>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<Limit>,
    cursor: Option<String>,
    text: Option<String>,
    run: Option<String>,
    /// Only for `/v1/inbox/export`.
    pub(super) format: Option<super::export::ExportFormat>,
}

impl InboxFilters {
    pub(super) fn has_limit(&self) -> bool {
        self.limit.is_some()
    }

    pub(super) fn has_cursor(&self) -> bool {
        self.cursor.is_some()
    }

    pub(crate) fn query(self) -> InboxQuery {
        let p = PageParams::new(self.since, self.until, self.limit, self.cursor);
        InboxQuery {
            workflow: self.workflow,
            trigger: self.trigger,
            outcome: self.outcome.map(|o| o.0),
            since: p.since,
            until: p.until,
            limit: p.limit,
            cursor: p.cursor,
            text: self.text.filter(|t| !t.is_empty()),
            run: self.run,
        }
    }
}

super::param_schema!(OutcomeParam, "Outcome", {"type": "string", "enum": OUTCOMES});

/// `outcome`: one of the outcomes of inbox messages.
#[derive(Clone)]
pub(super) struct OutcomeParam(String);

impl<'de> serde::Deserialize<'de> for OutcomeParam {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let o = String::deserialize(d)?;
        if OUTCOMES.contains(&o.as_str()) {
            return Ok(OutcomeParam(o));
        }
        Err(serde::de::Error::custom(format!(
            "unknown outcome `{o}`; use {}",
            OUTCOMES.join(", ")
        )))
    }
}

pub(super) async fn list_inbox(
    State(app): State<Arc<App>>,
    Params(q): Params<InboxFilters>,
) -> Response {
    if q.format.is_some() {
        return bad_request("`format` is for /v1/inbox/export");
    }
    page_response(app.store.messages(&q.query()).await, message_json)
}

pub(super) async fn get_message(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.message(&id).await {
        Ok(Some(m)) => {
            let mut v = message_json(&m);
            // Its latest edited copy, when an operator made one.
            if let Ok(Some(edit)) = app.store.link(&edit_link(&id)).await {
                v["edited_as"] = json!(edit);
            }
            Json(v).into_response()
        }
        Ok(None) => not_found("inbox message", &id),
        Err(e) => unavailable(&e),
    }
}

fn edit_link(id: &str) -> String {
    format!("edited/{id}")
}

/// `PUT /v1/inbox/{id}` with a new body (its own content type): an edited copy of the
/// message, kept beside the original (which never changes), outcome `edited`; reprocess
/// the copy to match it. A cron tick has no body to edit.
pub(super) async fn edit_message(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let original = match app.store.message(&id).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found("inbox message", &id),
        Err(e) => return unavailable(&e),
    };
    if original.scheduled_at.is_some() {
        return error_response(
            StatusCode::CONFLICT,
            "not_editable",
            "a cron tick has no body to edit; start the trigger now with POST /v1/workflows/{id}/runs?trigger=…",
        );
    }
    if body.len() > app.config.max_body_bytes {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the edited body is larger than the body limit",
        );
    }
    let mut edited = original.clone();
    edited.id = app.new_id();
    edited.received_at = app.clock.now();
    edited.body = body.to_vec();
    if let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        edited.content_type = Some(ct.to_string());
    }
    edited.reprocess_of = None;
    let edited_id = edited.id.clone();
    let outcome = Outcome::Edited { of: id.clone() };
    if let Err(e) = app.record_message(edited, outcome).await {
        return unavailable(&e);
    }
    if let Err(e) = app.store.set_link(&edit_link(&id), &edited_id).await {
        tracing::warn!(error = %e, "the original does not point at its edit; the edit is recorded");
    }
    let answer = json!({
        "message_id": edited_id,
        "edit_of": id,
        "reprocess_url": format!("/v1/inbox/{edited_id}/reprocess"),
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// The outcomes of inbox messages (the console's filter lists them too).
pub(crate) const OUTCOMES: &[&str] = &[
    "started",
    "duplicate",
    "filtered",
    "rejected",
    "skipped",
    "missed",
    "edited",
];

/// `GET /v1/workflows/{id}/ticks`'s parameters.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicksParams {
    trigger: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<Limit>,
    cursor: Option<String>,
}

/// `GET /v1/workflows/{id}/ticks[?trigger=...]`: the ticks of a cron trigger, newest
/// first: `fired` (with the run), `skipped`, `duplicate`, `missed`, `rejected`.
pub(super) async fn list_ticks(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Params(q): Params<TicksParams>,
) -> Response {
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
    let trigger = match (q.trigger.as_ref(), cron_ids.as_slice()) {
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
    let p = PageParams::new(q.since, q.until, q.limit, q.cursor);
    let query = InboxQuery {
        workflow: Some(id),
        trigger: Some(trigger),
        outcome: None,
        since: p.since,
        until: p.until,
        limit: p.limit,
        cursor: p.cursor,
        ..InboxQuery::default()
    };
    page_response(app.store.messages(&query).await, tick_json)
}

pub(super) fn tick_json(m: &InboxMessage) -> Value {
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
        Outcome::Edited { of } => {
            v["outcome"] = json!("edited");
            v["edit_of"] = json!(of);
        }
    }
    if m.method != "CRON" {
        v["run_now"] = json!(true);
    }
    v
}

/// `POST /v1/inbox/{id}/reprocess`: the message matched again against its workflow's
/// current revision, recorded as a new message with the run it starts.
pub(super) async fn reprocess_message(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
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
        Err(crate::intake::reprocess::ReprocessError::Refused(why)) => {
            error_response(StatusCode::CONFLICT, "not_reprocessable", why)
        }
        Err(crate::intake::reprocess::ReprocessError::Store(e)) => unavailable(&e),
    }
}
