//! The routes of parked runs: `POST /resume/{token}` for `wait_for_webhook` steps, and for
//! `approval` steps the review page `GET /review/{token}` with its buttons, which post to
//! `/approve/{token}` and `/reject/{token}` (a GET of those shows the same page, so a link
//! preview in a chat client decides nothing).
//!
//! A token is `{run_id}.{secret}`: the secret has ≥ 128 random bits and is compared in
//! constant time. Unknown: 404. Used, or of a wait that ended: 410, and nothing changes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tripline_core::engine::Event;
use tripline_core::run::WaitReason;
use tripline_core::{Run, RunStatus};

use crate::App;
use crate::http::{error_response, unavailable};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/resume/{token}", post(resume))
        .route("/review/{token}", get(review))
        .route("/approve/{token}", get(confirm_approve).post(approve))
        .route("/reject/{token}", get(confirm_reject).post(reject))
        .with_state(app)
}

/// A token's purpose: which URL it is.
#[derive(Clone, Copy, PartialEq)]
enum Purpose {
    Resume,
    Review,
    Approve,
    Reject,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Resume => "resume",
            Purpose::Review => "review",
            Purpose::Approve => "approve",
            Purpose::Reject => "reject",
        }
    }
}

enum Located {
    Live(Run),
    /// Used, or its wait ended: 410.
    Gone(Run),
}

/// Finds the run a token belongs to; `Err` is the answer to give (404, 503).
async fn locate(app: &App, token: &str, purpose: Purpose) -> Result<Located, Response> {
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            "unknown_url",
            "this URL is not known; check that it was copied whole",
        )
    };
    let Some((run_id, secret)) = token.split_once('.') else {
        return Err(not_found());
    };
    if secret.len() < 16 || run_id.is_empty() {
        return Err(not_found());
    }
    let run = match app.store.run(run_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(unavailable(&e)),
    };
    let eq = |s: &String| bool::from(s.as_bytes().ct_eq(secret.as_bytes()));
    if run.waiting_tokens.get(purpose.name()).is_some_and(eq) {
        if run.waiting_expires_at.is_some_and(|e| app.clock.now() >= e) {
            return Ok(Located::Gone(run));
        }
        return Ok(Located::Live(run));
    }
    if run.used_tokens.iter().any(eq) {
        return Ok(Located::Gone(run));
    }
    Err(not_found())
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
        return (
            StatusCode::GONE,
            Html(page(
                "No longer available",
                &format!("<p>{}</p>{}", escape(&message), run_facts(run)),
            )),
        )
            .into_response();
    }
    let mut r = error_response(StatusCode::GONE, "gone", message);
    if let Ok(v) = format!("/v1/runs/{}", run.id).parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Applies `event` to the run the token belongs to, reading it again when another writer
/// got there first.
async fn decide(
    app: &App,
    token: &str,
    purpose: Purpose,
    html: bool,
    event: impl Fn() -> Event,
) -> Result<Run, Response> {
    for _ in 0..5 {
        let run = match locate(app, token, purpose).await? {
            Located::Live(run) => run,
            Located::Gone(run) => return Err(gone(&run, html)),
        };
        let version = run.version;
        match app.apply_from_outside(run, event()).await {
            // The engine found nothing to do: the wait is not the one this URL was for.
            Ok(Some(same)) if same.version == version => return Err(gone(&same, html)),
            Ok(Some(saved)) => return Ok(saved),
            Ok(None) => continue,
            Err(crate::executor::ExecError::Store(e)) => return Err(unavailable(&e)),
            Err(e) => {
                tracing::error!(error = %e, "applying a decision failed");
                return Err(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    e.to_string(),
                ));
            }
        }
    }
    Err(error_response(
        StatusCode::CONFLICT,
        "conflict",
        "the run kept changing while this request was applied; try again",
    ))
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
    match decide(&app, &token, Purpose::Resume, false, || Event::Resumed {
        payload: payload.clone(),
    })
    .await
    {
        Ok(run) => accepted(&run, "resumed"),
        Err(r) => r,
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
    let result = decide(app, token, purpose, html, || Event::Decided {
        approved,
        comment: comment.clone(),
    })
    .await;
    let word = if approved { "approved" } else { "rejected" };
    match result {
        Ok(run) if html => Html(page(
            &format!("Thank you: {word}"),
            &format!(
                "<p>The step was <strong>{word}</strong>.</p>{}",
                run_facts(&run)
            ),
        ))
        .into_response(),
        Ok(run) => accepted(&run, word),
        Err(r) => r,
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
    let run = match locate(app, token, purpose).await {
        Ok(Located::Live(run)) => run,
        Ok(Located::Gone(run)) => return gone(&run, true),
        Err(r) => return r,
    };
    if run.waiting_reason != Some(WaitReason::Approval) {
        return gone(&run, true);
    }
    let p = run.waiting_payload.clone().unwrap_or(Value::Null);
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let summary = match s("summary") {
        x if x.is_empty() => "<p><em>No summary was given for this step.</em></p>".to_string(),
        x => format!("<div class=summary>{}</div>", escape(&x)),
    };
    let form = |url: &str, label: &str, class: &str| {
        format!(
            "<form method=post action=\"{}\"><textarea name=comment placeholder=\"Comment (optional)\"></textarea><button class={class} type=submit>{label}</button></form>",
            escape(url)
        )
    };
    let buttons = match purpose {
        Purpose::Approve => form(&s("approve_url"), "Approve", "approve"),
        Purpose::Reject => form(&s("reject_url"), "Reject", "reject"),
        _ => format!(
            "{}{}",
            form(&s("approve_url"), "Approve", "approve"),
            form(&s("reject_url"), "Reject", "reject")
        ),
    };
    let body = format!(
        "<dl><dt>Workflow</dt><dd>{}</dd><dt>Step</dt><dd>{}</dd><dt>Run</dt><dd>{}</dd><dt>Waiting since</dt><dd>{}</dd><dt>Expires</dt><dd>{}</dd></dl>{summary}<div class=buttons>{buttons}</div>",
        escape(&run.workflow),
        escape(&s("step")),
        escape(&run.id),
        escape(&s("since")),
        escape(&s("expires_at")),
    );
    let mut r = Html(page("Approval requested", &body)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

fn run_facts(run: &Run) -> String {
    format!(
        "<dl><dt>Workflow</dt><dd>{}</dd><dt>Run</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd></dl>",
        escape(&run.workflow),
        escape(&run.id),
        run.status.as_str()
    )
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><meta name=referrer content=no-referrer><title>{t} · Tripline</title><style>body{{font:16px system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}dt{{font-weight:600}}dd{{margin:0 0 .5rem}}.summary{{white-space:pre-wrap;border-left:4px solid #888;padding:.5rem 1rem;background:#f6f6f6}}form{{display:inline-block;margin:1rem 1rem 0 0}}textarea{{display:block;width:18rem;height:4rem;margin-bottom:.5rem}}button{{font-size:1rem;padding:.5rem 1.5rem}}.approve{{background:#1a7f37;color:#fff}}.reject{{background:#cf222e;color:#fff}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

/// HTML text and attribute escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_in_text_and_attributes() {
        assert_eq!(
            escape(r#"<b a="x">'&'</b>"#),
            "&lt;b a=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }
}
