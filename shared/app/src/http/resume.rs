//! The routes of parked runs: `POST /resume/{token}` for `wait_for_webhook` steps, and for
//! `approval` steps the review page `GET /review/{token}` with its buttons, which post to
//! `/approve/{token}` and `/reject/{token}` (a GET of those shows the same page, so a link
//! preview in a chat client decides nothing).
//!
//! The handlers parse and answer; finding the wait a token opens and waking its run is
//! the use case in `crate::waits`. Unknown token: 404. Used, or of a wait that ended: 410,
//! and nothing changes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::context;
use serde_json::{Value, json};
use tripline_core::engine::Event;
use tripline_core::run::WaitReason;
use tripline_core::{Run, RunStatus};

use super::pages::render;
use crate::App;
use crate::http::{error_response, unavailable};
use crate::waits::{Purpose, WaitError};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/resume/{token}", post(resume))
        .route("/review/{token}", get(review))
        .route("/approve/{token}", get(confirm_approve).post(approve))
        .route("/reject/{token}", get(confirm_reject).post(reject))
        .layer(axum::middleware::from_fn(super::problems_only))
        .with_state(app)
}

/// The answer to a token that opens nothing now (JSON, or a page for a person).
fn refused(e: WaitError, html: bool) -> Response {
    match e {
        WaitError::NotFound => error_response(
            StatusCode::NOT_FOUND,
            "unknown_url",
            "this URL is not known; check that it was copied whole",
        ),
        WaitError::Gone(run) => gone(&run, html),
        WaitError::Store(e) => unavailable(&e),
        WaitError::Conflict => error_response(
            StatusCode::CONFLICT,
            "conflict",
            "the run kept changing while this request was applied; try again",
        ),
        WaitError::Failed(e) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

fn facts(run: &Run) -> Value {
    json!({"workflow": run.workflow, "id": run.id, "status": run.status.as_str()})
}

fn gone(run: &Run, html: bool) -> Response {
    let why = if run.status.is_terminal() {
        format!("the run has ended ({})", run.status.as_str())
    } else if run.status == RunStatus::Waiting && run.waiting_expires_at.is_some() {
        "it was used already, or its wait expired".to_string()
    } else {
        "it was used already".to_string()
    };
    let message = format!("this URL can no longer be used: {why}");
    if html {
        let page = render(
            "gone.html",
            context! { title => "No longer available", message => message, run => facts(run) },
        );
        return (StatusCode::GONE, Html(page)).into_response();
    }
    let mut r = error_response(StatusCode::GONE, "gone", message);
    if let Ok(v) = format!("/v1/runs/{}", run.id).parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn accepted(run: &Run, what: &str) -> Response {
    let url = format!("/v1/runs/{}", run.id);
    (
        StatusCode::OK,
        Json(json!({
            "run_id": run.id,
            what: true,
            "status": run.status,
            "status_url": url,
        })),
    )
        .into_response()
}

async fn resume(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > app.config.max_body_bytes {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is larger than the limit of {} bytes; nothing was changed",
                app.config.max_body_bytes
            ),
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let payload = match crate::intake::webhook::parse_body(ct, &body) {
        Ok(v) => v,
        Err((status, code, message)) => {
            return error_response(
                status,
                code,
                format!("{message}; the run is still waiting, and this URL can be used again"),
            );
        }
    };
    let resumed = app
        .wake_wait(&token, Purpose::Resume, || Event::Resumed {
            payload: payload.clone(),
        })
        .await;
    match resumed {
        Ok(run) => accepted(&run, "resumed"),
        Err(e) => refused(e, false),
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ct.starts_with("application/x-www-form-urlencoded") || accept.contains("text/html")
}

/// The optional `comment` of a decision: a form field or a JSON member.
fn comment_of(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, String> {
    if body.is_empty() {
        return Ok(None);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let v = crate::intake::webhook::parse_body(ct, body).map_err(|(_, _, message)| message)?;
    let c = match v {
        Value::Object(m) => m.get("comment").cloned(),
        Value::String(s) => Some(Value::String(s)),
        _ => None,
    };
    Ok(c.and_then(|c| match c {
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.chars().take(4000).collect()),
        Value::Null => None,
        other => Some(other.to_string()),
    }))
}

async fn approve(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decision(&app, &token, headers, body, true).await
}

async fn reject(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decision(&app, &token, headers, body, false).await
}

async fn decision(
    app: &App,
    token: &str,
    headers: HeaderMap,
    body: Bytes,
    approved: bool,
) -> Response {
    let html = wants_html(&headers);
    if body.len() > app.config.max_body_bytes {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the comment is larger than the body limit",
        );
    }
    let comment = match comment_of(&headers, &body) {
        Ok(c) => c,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_body", e),
    };
    let purpose = if approved {
        Purpose::Approve
    } else {
        Purpose::Reject
    };
    let result = app
        .wake_wait(token, purpose, || Event::Decided {
            approved,
            comment: comment.clone(),
        })
        .await;
    let word = if approved { "approved" } else { "rejected" };
    match result {
        Ok(run) if html => Html(render(
            "decided.html",
            context! { title => format!("Thank you: {word}"), word => word, run => facts(&run) },
        ))
        .into_response(),
        Ok(run) => accepted(&run, word),
        Err(e) => refused(e, html),
    }
}

async fn review(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    review_page(&app, &token, Purpose::Review).await
}

async fn confirm_approve(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    review_page(&app, &token, Purpose::Approve).await
}

async fn confirm_reject(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    review_page(&app, &token, Purpose::Reject).await
}

/// The page a reviewer sees: what is being approved, and the buttons.
async fn review_page(app: &App, token: &str, purpose: Purpose) -> Response {
    let mut run = match app.locate_wait(token, purpose).await {
        Ok(run) => run,
        Err(e) => return refused(e, true),
    };
    if run.waiting_reason != Some(WaitReason::Approval) {
        return gone(&run, true);
    }
    // The buttons' URLs, derived again (the run keeps their hashes).
    app.reveal_urls(&mut run).await;
    let p = run.waiting_payload.clone().unwrap_or(Value::Null);
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let approve = context! { url => s("approve_url"), class => "approve", label => "Approve" };
    let reject = context! { url => s("reject_url"), class => "reject", label => "Reject" };
    let buttons = match purpose {
        Purpose::Approve => vec![approve],
        Purpose::Reject => vec![reject],
        _ => vec![approve, reject],
    };
    let wait = context! {
        step => s("step"),
        since => s("since"),
        expires_at => s("expires_at"),
        summary => s("summary"),
    };
    let page = render(
        "review.html",
        context! { title => "Approval requested", run => facts(&run), wait => wait, buttons => buttons },
    );
    let mut r = Html(page).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}
