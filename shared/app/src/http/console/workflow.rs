//! The console's page of one workflow (definition, triggers, steps, revisions, a dry run
//! of a changed definition) and of a bulk job's progress.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use minijinja::context;
use tripline_core::validate::Format;

use super::{frame, page, views};
use crate::App;
use crate::intake::dry_run::DryRunError;

/// `GET /workflows/{id}`.
pub(super) async fn workflow(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    render(&app, &headers, &id, None, None).await
}

/// `POST /workflows/{id}/dry-run` with `definition`: the page, with what it would do.
pub(super) async fn dry_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = fields!(app, headers, body);
    let text = fields
        .iter()
        .find(|(k, _)| k == "definition")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let format = if text.trim_start().starts_with('{') {
        Format::Json
    } else {
        Format::Yaml
    };
    match app.dry_run(&id, &text, format, 50).await {
        Ok(report) => {
            render(
                &app,
                &headers,
                &id,
                Some(minijinja::Value::from_serialize(&report)),
                None,
            )
            .await
        }
        Err(DryRunError::Invalid(problems)) => {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            render(&app, &headers, &id, None, Some(list)).await
        }
        Err(DryRunError::Store(e)) => crate::http::unavailable(&e),
    }
}

async fn render(
    app: &App,
    headers: &HeaderMap,
    id: &str,
    dry: Option<minijinja::Value>,
    problems: Option<Vec<String>>,
) -> Response {
    let s = session!(app, headers);
    let rec = match app.store.workflow(id, None).await {
        Ok(Some(r)) if !r.removed => r,
        Ok(_) => {
            return crate::http::error_response(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no workflow `{id}`"),
            );
        }
        Err(e) => return crate::http::unavailable(&e),
    };
    let revisions = app.store.revisions(id).await.unwrap_or_default();
    let shown = tripline_core::validate::without_credentials(&rec.definition);
    let definition = serde_json::to_string_pretty(&shown).unwrap_or_default();
    let steps: Vec<_> = shown
        .steps
        .iter()
        .map(|st| {
            let v = serde_json::to_value(st).unwrap_or_default();
            context! { id => st.id, type => v["type"].as_str().unwrap_or("step").to_string() }
        })
        .collect();
    let revisions: Vec<_> = revisions
        .iter()
        .map(|(r, at)| context! { revision => r, deployed_at => at.to_string() })
        .collect();
    let summary = crate::http::control::summary(&rec);
    let ctx = context! {
        title => format!("Workflow {id}"), wf => minijinja::Value::from_serialize(&summary),
        steps => steps, revisions => revisions, definition => definition, dry => dry, problems => problems,
        ..frame(app, &s).await
    };
    page(views::render("workflow.html", ctx))
}

/// `GET /jobs/{id}`: a bulk job's progress; it reloads itself until the job is done.
pub(super) async fn job(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = session!(app, headers);
    let job = match app.job(&id).await {
        Ok(Some(j)) => j,
        Ok(None) => {
            return crate::http::error_response(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no job `{id}`"),
            );
        }
        Err(e) => return crate::http::unavailable(&e),
    };
    let running = job.status != "done";
    let mut shown = serde_json::to_value(&job).unwrap_or_default();
    shown["items"] = serde_json::json!(if job.on_runs() { "runs" } else { "messages" });
    let ctx = context! {
        title => format!("Job {id}"), job => minijinja::Value::from_serialize(&shown), refresh => running,
        ..frame(&app, &s).await
    };
    page(views::render("job.html", ctx))
}
