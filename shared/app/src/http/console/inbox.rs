//! The console's inbox and approvals pages.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use minijinja::context;
use serde_json::Value;
use tripline_core::RunStatus;
use tripline_core::run::WaitReason;

use super::{frame, page, see_other, views};
use crate::App;
use crate::http::control::OUTCOMES;
use crate::jobs::JobAction;
use crate::ports::{InboxQuery, Outcome, RunQuery};

/// `GET /inbox?workflow=&outcome=&text=&cursor=`.
pub(super) async fn inbox(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let s = session!(app, headers);
    let params = super::listing_params(q);
    let query = InboxQuery {
        workflow: params.get("workflow").cloned(),
        outcome: params
            .get("outcome")
            .filter(|o| OUTCOMES.contains(&o.as_str()))
            .cloned(),
        text: params.get("text").cloned(),
        cursor: params.get("cursor").cloned(),
        limit: 50,
        ..InboxQuery::default()
    };
    let (items, next) = match app.store.messages(&query).await {
        Ok(p) => (p.items, p.next_cursor),
        Err(e) => return crate::http::unavailable(&e),
    };
    let rows: Vec<_> = items
        .iter()
        .map(|m| {
            let (reason, runs) = match &m.outcome {
                Outcome::Started { run_ids } => (None, run_ids.clone()),
                Outcome::Duplicate { run_id } => (None, vec![run_id.clone()]),
                Outcome::Filtered { reason } | Outcome::Rejected { reason } | Outcome::Skipped { reason } | Outcome::Missed { reason } => (Some(reason.clone()), Vec::new()),
                _ => (None, Vec::new()),
            };
            context! {
                id => m.id, workflow => m.workflow, trigger => m.trigger, outcome => m.outcome.kind(),
                reason => reason, runs => runs, received_at => m.received_at.to_string(),
                bytes => m.body.len(), body => String::from_utf8_lossy(&m.body),
            }
        })
        .collect();
    let (q, next) = super::listing_links("/inbox", &params, &["workflow", "outcome", "text"], next);
    let ctx = context! {
        title => "Inbox", messages => rows, next => next, outcomes => OUTCOMES,
        q => q,
        ..frame(&app, &s).await
    };
    page(views::render("inbox.html", ctx))
}

/// `POST /inbox/bulk` with the selected `message`s: a bulk reprocessing job.
pub(super) async fn reprocess(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = fields!(app, headers, body);
    let targets: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "message")
        .map(|(_, v)| v.clone())
        .collect();
    let filter = serde_json::json!({ "messages": targets });
    match app.start_job(JobAction::Reprocess, filter, targets).await {
        Ok(job) => see_other(&format!("/jobs/{}", job.id)),
        Err(e) => crate::http::error_response(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "job_refused",
            e.to_string(),
        ),
    }
}

/// `GET /approvals`: the runs waiting for a decision, with their summaries; a key that may
/// operate sees the approve and reject forms (they post to the run's single-use URLs).
pub(super) async fn approvals(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let s = session!(app, headers);
    let query = RunQuery {
        status: Some(RunStatus::Waiting),
        limit: 200,
        ..RunQuery::default()
    };
    let runs = match app.store.runs(&query).await {
        Ok(p) => p.items,
        Err(e) => return crate::http::unavailable(&e),
    };
    let operate = s.who.scope >= crate::keys::Scope::Operate;
    let mut items = Vec::new();
    for mut run in runs
        .into_iter()
        .filter(|r| r.waiting_reason == Some(WaitReason::Approval))
    {
        if operate {
            app.reveal_urls(&mut run).await;
        }
        let p = run.waiting_payload.clone().unwrap_or(Value::Null);
        let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        let path = |k: &str| {
            text(k).map(|u| url::Url::parse(&u).map_or(u.clone(), |x| x.path().to_string()))
        };
        items.push(context! {
            run => run.id, workflow => run.workflow, step => text("step"), since => text("since"),
            expires_at => text("expires_at"), summary => text("summary"),
            approve_url => path("approve_url"), reject_url => path("reject_url"),
        });
    }
    let ctx = context! { title => "Approvals", approvals => items, ..frame(&app, &s).await };
    page(views::render("approvals.html", ctx))
}
