//! The control API (`/v1/...`): the router, its key check and the helpers its handlers
//! share; the handlers are by resource (`workflows`, `runs`, `inbox`, `state`, `secrets`).

mod export;
mod inbox;
mod jobs;
mod keys;
mod runs;
mod secrets;
mod state;
mod workflows;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use tripline_core::Timestamp;

use crate::App;
use crate::http::{error_response, unavailable};
use crate::ports::{Page, StoreError};

pub(crate) use inbox::OUTCOMES;
use inbox::{edit_message, get_message, list_inbox, list_ticks, reprocess_message};
pub(crate) use keys::Acted;
use keys::{create_key, delete_key, list_audit, list_keys, require_key};
use runs::{cancel_run, get_run, list_runs, retry_run};
use secrets::{delete_secret, list_secrets, put_secret};
pub(crate) use state::patch_context_of;
use state::{get_context, get_state, patch_context, put_state};
pub(crate) use workflows::summary;
use workflows::{
    delete_workflow, disable_trigger, disable_workflow, dry_run, enable_trigger, enable_workflow,
    get_workflow, list_workflows, put_workflow, start_run,
};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/workflows", get(list_workflows))
        .route(
            "/v1/workflows/{id}",
            get(get_workflow).put(put_workflow).delete(delete_workflow),
        )
        .route("/v1/workflows/{id}/runs", post(start_run))
        .route("/v1/workflows/{id}/dry-run", post(dry_run))
        .route("/v1/workflows/{id}/enable", post(enable_workflow))
        .route("/v1/workflows/{id}/disable", post(disable_workflow))
        .route(
            "/v1/workflows/{id}/triggers/{trigger}/enable",
            post(enable_trigger),
        )
        .route(
            "/v1/workflows/{id}/triggers/{trigger}/disable",
            post(disable_trigger),
        )
        .route("/v1/workflows/{id}/ticks", get(list_ticks))
        .route("/v1/workflows/{id}/state", get(get_state).put(put_state))
        .route(
            "/v1/workflows/{id}/context",
            get(get_context).patch(patch_context),
        )
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/export", get(export::export_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/retry", post(retry_run))
        .route("/v1/inbox", get(list_inbox))
        .route("/v1/inbox/export", get(export::export_inbox))
        .route("/v1/inbox/{id}", get(get_message).put(edit_message))
        .route("/v1/inbox/{id}/reprocess", post(reprocess_message))
        .route("/v1/jobs", post(jobs::create_job))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", put(put_secret).delete(delete_secret))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{name}", axum::routing::delete(delete_key))
        .route("/v1/audit", get(list_audit))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(crate::http::openapi::serve))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_key))
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .layer(middleware::from_fn(crate::http::problems_only))
        .with_state(app)
}

/// `GET /metrics`: the Prometheus text format (see [`crate::metrics`]), with the queue's
/// backlog and the waiting runs measured now. In AWS the functions print EMF lines instead.
async fn metrics(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    if app.metrics.emf() {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "in AWS the functions report metrics as CloudWatch embedded-metric-format lines (namespace `Tripline`); the queue's depth and age are SQS's own metrics",
        );
    }
    let mut gauges: Vec<(&str, &str, f64)> = Vec::new();
    match app.queue.backlog().await {
        Ok(Some(b)) => {
            gauges.push((
                "tripline_queue_depth",
                "Work items receivable now (due timers included, future ones not).",
                b.ready as f64,
            ));
            gauges.push((
                "tripline_queue_oldest_age_seconds",
                "How long the oldest receivable work item has waited.",
                b.oldest_age.as_secs_f64(),
            ));
        }
        Ok(None) => {}
        Err(e) => return unavailable(&e),
    }
    match app
        .store
        .count_runs(tripline_core::RunStatus::Waiting)
        .await
    {
        Ok(Some(n)) => gauges.push((
            "tripline_runs_waiting",
            "Runs waiting for a callback, an approval, a delay or a child run.",
            n as f64,
        )),
        Ok(None) => {}
        Err(e) => return unavailable(&e),
    }
    let mut r = app.metrics.prometheus(&gauges).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The shortest API key accepted.
pub const MIN_API_KEY: usize = 24;

/// Why an API key cannot be used.
pub fn weak_api_key(key: &str) -> Option<String> {
    (key.trim().len() < MIN_API_KEY).then(|| {
        format!("the API key must be at least {MIN_API_KEY} characters (it is {}); make one with `head -c 32 /dev/urandom | base64`", key.trim().len())
    })
}

/// The header a script or the CLI sends with a state-changing request that has no JSON
/// body: a browser cannot send it cross-site without the server's consent.
pub const REQUEST_HEADER: &str = "x-tripline-request";

/// Without an API key (loopback only): what keeps other sites out. A page the operator
/// visits can post a form or a simple `fetch` to `127.0.0.1`, and a DNS-rebinding page can
/// read answers under its own host name; so every `/v1` request must name a loopback host
/// (or the public URL's), may come from no other origin, and a state-changing one must
/// have a JSON or YAML body or the `x-tripline-request` header (neither can be sent
/// cross-site without a CORS preflight, which this server never grants).
fn cross_site(app: &App, req: &Request) -> Option<String> {
    let headers = req.headers();
    let public_host = url::Url::parse(&app.config.public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    let local_host = |host: &str| {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || public_host
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(name))
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !local_host(host) {
        return Some(format!(
            "the Host `{host}` is not this server's (a DNS-rebinding page?); without an API key the control API answers only to localhost"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = url::Url::parse(origin).ok().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        });
        if !origin_host.as_deref().is_some_and(local_host) {
            return Some(format!(
                "requests from the origin `{origin}` are refused; without an API key the control API answers only to this machine's own pages and tools"
            ));
        }
    }
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if changes && !headers.contains_key(REQUEST_HEADER) {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !(ct.contains("json") || ct.contains("yaml")) {
            return Some(format!(
                "a state-changing request needs a JSON (or YAML) body with its content type, or the `{REQUEST_HEADER}: 1` header (what keeps a cross-site form out)"
            ));
        }
    }
    None
}

pub(super) fn bad_request(message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

pub(super) fn not_found(what: &str, id: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what} `{id}`"),
    )
}

/// A route's query parameters, parsed into `T`: its fields are the parameters the route
/// takes, typed; an unknown or bad parameter is a 400 that names it.
pub(super) struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs = form_urlencoded::parse(query.as_bytes());
        serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
            .map(Params)
            .map_err(|e| {
                let field = e.path().to_string();
                let message = e
                    .inner()
                    .to_string()
                    .replace("unknown field", "unknown query parameter")
                    .replace("expected one of", "use");
                let mut extra = serde_json::Map::new();
                if field != "." {
                    extra.insert("field".into(), json!(field));
                }
                crate::http::problem(StatusCode::BAD_REQUEST, "bad_request", message, extra)
            })
    }
}

/// The types of the control API's parameters and bodies, for the OpenAPI document.
pub(crate) mod schema {
    pub(crate) use super::inbox::{InboxFilters, TicksParams};
    pub(crate) use super::jobs::NewJob;
    pub(crate) use super::keys::AuditParams;
    pub(crate) use super::runs::{RetryParams, RunFilters};
    pub(crate) use super::secrets::RemoveParams;
    pub(crate) use super::workflows::{DryRunParams, RevisionParams, StartParams};
}

/// A parameter type's schema, written out: its `Deserialize` is by hand.
macro_rules! param_schema {
    ($t:ty, $name:literal, $schema:tt) => {
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}
pub(crate) use param_schema;

param_schema!(Limit, "Limit", {"type": "integer", "minimum": 1, "maximum": 500, "description": "how many items a page holds (default 50)"});

/// `limit`: how many items a page holds, 1 to 500 (default 50).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limit(usize);

impl Limit {
    pub(super) fn get(self) -> usize {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Limit(50)
    }
}

impl<'de> serde::Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.parse::<usize>() {
            Ok(n) if (1..=500).contains(&n) => Ok(Limit(n)),
            _ => Err(serde::de::Error::custom(
                "`limit` must be a whole number from 1 to 500",
            )),
        }
    }
}

/// The parameters every listing takes: a time range, a page size, and where the page
/// starts (the previous page's `next_cursor`).
pub(super) struct PageParams {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: usize,
    cursor: Option<String>,
}

impl PageParams {
    pub(super) fn new(
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        limit: Option<Limit>,
        cursor: Option<String>,
    ) -> Self {
        Self {
            since,
            until,
            limit: limit.unwrap_or_default().0,
            cursor,
        }
    }
}

pub(super) fn page_response<T>(
    page: Result<Page<T>, StoreError>,
    item: impl Fn(&T) -> Value,
) -> Response {
    match page {
        Ok(page) => {
            let items: Vec<Value> = page.items.iter().map(item).collect();
            Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Names the inbox message an answer is about (`x-tripline-message-id`).
pub(super) fn with_message_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-tripline-message-id", v);
    }
    r
}
