//! The console's page of one workflow (definition, triggers, steps, revisions, a dry run
//! of a changed definition) and of a bulk job's progress.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use minijinja::context;
use tripline_core::validate::Format;

use super::{drawing, frame, page, schedules, see_other, views};
use crate::App;
use crate::intake::dry_run::DryRunError;
use crate::ports::RunQuery;

/// `GET /workflows/{id}?diff=N` (N: a revision to compare with the one before it).
pub(super) async fn workflow(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let diff = super::listing_params(q)
        .get("diff")
        .and_then(|d| d.parse().ok());
    render(&app, &headers, &id, diff, None, None).await
}

/// `POST /workflows/{id}/dry-run` with `definition`: the page, with what it would do.
pub(super) async fn dry_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = fields!(app, headers, body);
    let text = super::field(&fields, "definition")
        .unwrap_or_default()
        .to_string();
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
                None,
                Some(minijinja::Value::from_serialize(&report)),
                None,
            )
            .await
        }
        Err(DryRunError::Invalid(problems)) => {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            render(&app, &headers, &id, None, None, Some(list)).await
        }
        Err(DryRunError::Store(e)) => crate::http::unavailable(&e),
    }
}

async fn render(
    app: &App,
    headers: &HeaderMap,
    id: &str,
    diff: Option<u32>,
    dry: Option<minijinja::Value>,
    problems: Option<Vec<String>>,
) -> Response {
    let s = session!(app, headers);
    app.refresh_workflows(false).await;
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
    let shown = tripline_core::validate::without_credentials(&rec.definition);
    let definition = serde_json::to_string_pretty(&shown).unwrap_or_default();
    let (boxes, steps_height) = drawing::steps(&shown.steps);
    let chain = drawing::chain(&app.deployments.all(), id);
    let revisions: Vec<_> = app
        .store
        .revisions(id)
        .await
        .unwrap_or_default()
        .iter()
        .map(|(r, at)| context! { revision => r, deployed_at => at.to_string() })
        .collect();
    let recent = RunQuery {
        workflow: Some(id.to_string()),
        limit: 10,
        ..RunQuery::default()
    };
    let runs: Vec<_> = match app.store.runs(&recent).await {
        Ok(p) => p.items,
        Err(e) => return crate::http::unavailable(&e),
    }
    .iter()
    .map(|r| context! { id => r.id, status => r.status.as_str(), trigger => r.trigger.id, inserted_at => r.inserted_at.to_string() })
    .collect();
    let store = app.store.context(id).await.unwrap_or_default();
    let state = app
        .store
        .state(id)
        .await
        .ok()
        .flatten()
        .map(|st| serde_json::to_string_pretty(&st.value).unwrap_or_default());
    let summary = schedules::described(app, &rec, app.clock.now());
    let ctx = context! {
        title => format!("Workflow {id}"), wf => minijinja::Value::from_serialize(&summary),
        boxes => boxes, steps_height => steps_height, chain => chain, revisions => revisions,
        diff => match diff { Some(n) => revision_diff(app, id, n).await, None => None },
        runs => runs, store => store, state => state,
        definition => definition, dry => dry, problems => problems,
        ..frame(app, &s).await
    };
    page(views::render("workflow.html", ctx))
}

/// Revision `n` against the one before it, as lines marked added or removed.
async fn revision_diff(app: &App, id: &str, n: u32) -> Option<minijinja::Value> {
    let new = app.store.workflow(id, Some(n)).await.ok()??;
    let old = match n.checked_sub(1).filter(|p| *p > 0) {
        Some(p) => app.store.workflow(id, Some(p)).await.ok()?,
        None => None,
    };
    let show = |r: &crate::ports::WorkflowRecord| {
        serde_json::to_value(tripline_core::validate::without_credentials(&r.definition))
            .unwrap_or_default()
    };
    let before = old.as_ref().map(show).unwrap_or(serde_json::Value::Null);
    let text = crate::deploy::definition_diff(
        &before,
        &show(&new),
        &format!("revision {}", n.saturating_sub(1)),
        &format!("revision {n}"),
    );
    let lines: Vec<_> = text
        .lines()
        .map(|l| {
            let class = match l.as_bytes().first() {
                Some(b'+') if !l.starts_with("+++") => "add",
                Some(b'-') if !l.starts_with("---") => "del",
                _ => "",
            };
            context! { text => l, class => class }
        })
        .collect();
    Some(context! { revision => n, lines => lines, same => lines.is_empty() })
}

/// `POST /workflows/{id}/context` with `key` and `value`, or `delete`: one key of the
/// workflow's context store, checked as the API checks it; back to the page.
pub(super) async fn set_context(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = fields!(app, headers, body);
    let field = |name: &str| super::field(&fields, name).map(str::to_string);
    let key = field("key").unwrap_or_default();
    let value = match field("delete") {
        Some(_) => serde_json::Value::Null,
        None => serde_json::Value::String(field("value").unwrap_or_default()),
    };
    let changes = serde_json::Map::from_iter([(key, value)]);
    match crate::http::control::patch_context_of(&app, &id, changes).await {
        Ok(_) => see_other(&format!("/workflows/{id}#context")),
        Err(r) => r,
    }
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
