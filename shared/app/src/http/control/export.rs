//! `/v1/runs/export` and `/v1/inbox/export`: every run or message the listing's filters
//! select, as CSV or NDJSON, streamed a page at a time (memory does not grow with the
//! export). A store failure after the first bytes aborts the response, so that a cut
//! export never looks complete.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::inbox::{InboxFilters, message_json};
use super::runs::RunFilters;
use super::{Params, bad_request};
use crate::App;
use crate::ports::{InboxMessage, InboxQuery, Outcome, RunQuery, StoreError};
use tripline_core::Run;

/// How many records each read of an export takes.
const EXPORT_PAGE: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ExportFormat {
    Csv,
    Ndjson,
}

const RUN_COLUMNS: &[&str] = &[
    "run_id",
    "workflow",
    "revision",
    "trigger_kind",
    "trigger",
    "status",
    "error_type",
    "error",
    "inserted_at",
    "started_at",
    "finished_at",
    "retry_of",
    "parent",
    "input",
];

const MESSAGE_COLUMNS: &[&str] = &[
    "message_id",
    "received_at",
    "workflow",
    "trigger",
    "method",
    "path",
    "outcome",
    "reason",
    "run_ids",
    "content_type",
    "body",
];

/// What an export reads, a page at a time: its query moves on with each page.
enum Source {
    Runs(RunQuery),
    Inbox(InboxQuery),
}

impl Source {
    /// The next page's lines; `None` once every page was read.
    async fn next(
        &mut self,
        app: &App,
        format: ExportFormat,
    ) -> Result<Option<String>, StoreError> {
        let (text, cursor) = match self {
            Source::Runs(q) if q.limit > 0 => {
                let page = app.store.runs(q).await?;
                let text = page.items.iter().map(|r| run_line(r, format)).collect();
                (text, page.next_cursor)
            }
            Source::Inbox(q) if q.limit > 0 => {
                let page = app.store.messages(q).await?;
                let text = page.items.iter().map(|m| message_line(m, format)).collect();
                (text, page.next_cursor)
            }
            _ => return Ok(None),
        };
        // The last page read: a limit of 0 ends the export.
        let limit = match (&cursor, &self) {
            (None, _) => 0,
            (_, Source::Runs(q)) => q.limit,
            (_, Source::Inbox(q)) => q.limit,
        };
        match self {
            Source::Runs(q) => (q.cursor, q.limit) = (cursor, limit),
            Source::Inbox(q) => (q.cursor, q.limit) = (cursor, limit),
        }
        Ok(Some(text))
    }

    /// Where the next part starts (for an answer that could not carry everything).
    fn cursor(&self) -> Option<&str> {
        match self {
            Source::Runs(q) => q.cursor.as_deref(),
            Source::Inbox(q) => q.cursor.as_deref(),
        }
    }
}

/// `GET /v1/runs/export?format=csv|ndjson&<the filters of /v1/runs>`.
pub(super) async fn export_runs(
    State(app): State<Arc<App>>,
    Params(q): Params<RunFilters>,
) -> Response {
    let Some(format) = q.format else {
        return bad_request("name the format: `?format=csv` or `?format=ndjson`");
    };
    let mut query = q.query();
    query.limit = page_size(&app);
    export(app, "runs", format, RUN_COLUMNS, Source::Runs(query)).await
}

/// `GET /v1/inbox/export?format=csv|ndjson&<the filters of /v1/inbox>`.
pub(super) async fn export_inbox(
    State(app): State<Arc<App>>,
    Params(q): Params<InboxFilters>,
) -> Response {
    let Some(format) = q.format else {
        return bad_request("name the format: `?format=csv` or `?format=ndjson`");
    };
    let mut query = q.query();
    query.limit = page_size(&app);
    export(app, "inbox", format, MESSAGE_COLUMNS, Source::Inbox(query)).await
}

/// The answer: a CSV header line first, then the pages. Streamed as they are read; where
/// the shape limits an answer's size ([`crate::Config::answer_limit`]: AWS Lambda), in
/// parts: each answer holds whole pages up to the limit and names where the next part
/// starts (`x-tripline-next-cursor`: ask again with `&cursor=` it).
async fn export(
    app: Arc<App>,
    name: &str,
    format: ExportFormat,
    columns: &[&str],
    source: Source,
) -> Response {
    let (content_type, ext, head) = match format {
        ExportFormat::Csv => (
            "text/csv; charset=utf-8",
            "csv",
            csv_row(columns.iter().map(|c| c.to_string())),
        ),
        ExportFormat::Ndjson => ("application/x-ndjson", "ndjson", String::new()),
    };
    let mut r = match app.config.answer_limit {
        None => streamed(app, format, head, source),
        Some(limit) => match in_parts(&app, format, head, source, limit).await {
            Ok(r) => r,
            Err(e) => return crate::http::unavailable(&e),
        },
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

fn streamed(app: Arc<App>, format: ExportFormat, head: String, source: Source) -> Response {
    use futures::StreamExt as _;
    let pages = futures::stream::unfold(Some(source), move |state| {
        let app = app.clone();
        async move {
            let mut source = state?;
            match source.next(&app, format).await {
                Ok(Some(text)) => Some((Ok(Bytes::from(text)), Some(source))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    Body::from_stream(head.chain(pages)).into_response()
}

/// Whole pages while the answer stays under `limit`.
async fn in_parts(
    app: &App,
    format: ExportFormat,
    head: String,
    mut source: Source,
    limit: usize,
) -> Result<Response, StoreError> {
    let mut out = head;
    while out.len() + PAGE_BYTES_GUESS < limit {
        match source.next(app, format).await? {
            Some(text) => out.push_str(&text),
            None => break,
        }
    }
    let mut r = out.into_response();
    if let Some(cursor) = source.cursor()
        && let Ok(v) = HeaderValue::from_str(cursor)
    {
        r.headers_mut().insert("x-tripline-next-cursor", v);
    }
    Ok(r)
}

/// What one page of an export may take, for answers of limited size: room left for it is
/// kept before another page is read ([`PART_PAGE`] records of up to ~50 KB each; a part
/// of records larger still can pass the limit, and the shape then fails the answer).
const PAGE_BYTES_GUESS: usize = 1024 * 1024;

/// The page size of an export in parts.
const PART_PAGE: usize = 20;

fn page_size(app: &App) -> usize {
    if app.config.answer_limit.is_some() {
        PART_PAGE
    } else {
        EXPORT_PAGE
    }
}

fn run_line(run: &Run, format: ExportFormat) -> String {
    match format {
        ExportFormat::Ndjson => {
            let mut v = serde_json::to_value(run).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                for k in ["waiting_tokens", "waiting_salt", "used_tokens", "version"] {
                    o.remove(k);
                }
            }
            format!("{v}\n")
        }
        ExportFormat::Csv => {
            let time =
                |t: Option<tripline_core::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
            csv_row([
                run.id.clone(),
                run.workflow.clone(),
                run.revision.to_string(),
                run.trigger.kind.as_str().to_string(),
                run.trigger.id.clone(),
                run.status.as_str().to_string(),
                run.error_type
                    .map(|e| e.as_str().to_string())
                    .unwrap_or_default(),
                run.error.clone().unwrap_or_default(),
                run.inserted_at.to_string(),
                time(run.started_at),
                time(run.finished_at),
                run.retry_of
                    .as_ref()
                    .map(|r| r.run_id.clone())
                    .unwrap_or_default(),
                run.parent
                    .as_ref()
                    .map(|p| p.run_id.clone())
                    .unwrap_or_default(),
                run.trigger_input.to_string(),
            ])
        }
    }
}

fn message_line(m: &InboxMessage, format: ExportFormat) -> String {
    match format {
        ExportFormat::Ndjson => format!("{}\n", message_json(m)),
        ExportFormat::Csv => {
            let (reason, runs) = match &m.outcome {
                Outcome::Started { run_ids } => (String::new(), run_ids.join(" ")),
                Outcome::Duplicate { run_id } => (String::new(), run_id.clone()),
                Outcome::Filtered { reason }
                | Outcome::Rejected { reason }
                | Outcome::Skipped { reason }
                | Outcome::Missed { reason } => (reason.clone(), String::new()),
                Outcome::DuplicateTick { tick } => (String::new(), tick.clone()),
                Outcome::Edited { of } => (format!("edited copy of {of}"), String::new()),
            };
            let body = match std::str::from_utf8(&m.body) {
                Ok(s) => s.to_string(),
                Err(_) => {
                    use base64::Engine as _;
                    format!(
                        "base64:{}",
                        base64::engine::general_purpose::STANDARD.encode(&m.body)
                    )
                }
            };
            csv_row([
                m.id.clone(),
                m.received_at.to_string(),
                m.workflow.clone(),
                m.trigger.clone(),
                m.method.clone(),
                m.path.clone(),
                m.outcome.kind().to_string(),
                reason,
                runs,
                m.content_type.clone().unwrap_or_default(),
                body,
            ])
        }
    }
}

/// One CSV line (RFC 4180): a field with a comma, quote or line break is quoted, its
/// quotes doubled; a field a spreadsheet would take for a formula (`=`, `+`, `-`, `@` first)
/// is prefixed with `'` (CSV injection).
fn csv_row(fields: impl IntoIterator<Item = String>) -> String {
    let cells: Vec<String> = fields
        .into_iter()
        .map(|f| {
            let f = if f.starts_with(['=', '+', '-', '@']) {
                format!("'{f}")
            } else {
                f
            };
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect();
    format!("{}\r\n", cells.join(","))
}

#[cfg(test)]
mod tests {
    use super::csv_row;

    #[test]
    fn a_csv_field_is_quoted_when_it_must_be_and_never_read_as_a_formula() {
        let row = csv_row([
            "a".into(),
            "b,c".into(),
            "say \"hi\"".into(),
            "=SUM(A1)".into(),
            "x\ny".into(),
        ]);
        assert_eq!(row, "a,\"b,c\",\"say \"\"hi\"\"\",'=SUM(A1),\"x\ny\"\r\n");
    }
}
