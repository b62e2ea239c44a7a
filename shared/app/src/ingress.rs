//! Webhook ingress: `/hooks/{token}`. A request is answered 2xx only after its inbox message
//! and its run are durably written.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tracing::Instrument;
use tripline_core::definition::{ResponseMode, WebhookAuth};
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::{Run, RunStatus, engine, template};

use crate::deploy::Hook;
use crate::ports::{Admission, Admitted, InboxMessage, Outcome};
use crate::{App, error_response, unavailable};

/// How long an idempotency key maps to its first run.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/hooks/{token}", any(hook))
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

async fn hook(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    app.refresh_workflows(false).await;
    let hook = match app.deployments.hook(&token) {
        Some(hook) => hook,
        None => {
            app.refresh_workflows(true).await;
            let Some(hook) = app.deployments.hook(&token) else {
                return unknown_token(&app);
            };
            hook
        }
    };
    let span =
        tracing::info_span!("webhook", workflow = %hook.record.id, trigger = %hook.trigger.id);
    handle(app, hook, method, uri, headers, body)
        .instrument(span)
        .await
}

fn unknown_token(app: &App) -> Response {
    if app.config.hide_unknown_tokens {
        (StatusCode::OK, axum::Json(json!({"received": true}))).into_response()
    } else {
        error_response(
            StatusCode::NOT_FOUND,
            "unknown_webhook",
            "no webhook has this token; check the URL",
        )
    }
}

fn authorized(auth: &WebhookAuth, headers: &HeaderMap) -> bool {
    let eq = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
    match auth {
        WebhookAuth::None => true,
        WebhookAuth::ApiKey { header, keys } => {
            let Some(given) = headers.get(header.as_str()) else {
                return false;
            };
            // Check every key so the time taken does not tell which one matched.
            keys.iter()
                .fold(false, |ok, k| eq(given.as_bytes(), k.as_bytes()) | ok)
        }
        WebhookAuth::Basic { username, password } => {
            let Some(value) = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
            else {
                return false;
            };
            let Some(encoded) = value
                .strip_prefix("Basic ")
                .or_else(|| value.strip_prefix("basic "))
            else {
                return false;
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            let expected = format!("{username}:{password}");
            eq(&decoded, expected.as_bytes())
        }
        // Needs the body: checked by `signed` once it is read.
        WebhookAuth::StandardWebhooks { .. } => true,
    }
}

/// A Standard Webhooks signature check: `Err` says what is wrong.
fn signed(
    secrets: &[String],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sigs)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return Err(
            "a signed webhook needs the webhook-id, webhook-timestamp and webhook-signature headers"
                .into(),
        );
    };
    let Ok(ts) = ts.trim().parse::<i64>() else {
        return Err(format!("webhook-timestamp `{ts}` is not Unix seconds"));
    };
    let off = (now_secs - ts).unsigned_abs();
    if off > tolerance.as_secs() {
        return Err(format!(
            "webhook-timestamp is {off} s from now, over the tolerance of {} s (a replay, or a clock that is off)",
            tolerance.as_secs()
        ));
    }
    let given: Vec<&str> = sigs
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .collect();
    let mut ok = false;
    for secret in secrets {
        let Ok(expected) = crate::signing::signature(secret, id, ts, body) else {
            continue;
        };
        for g in &given {
            ok |= bool::from(g.as_bytes().ct_eq(expected.as_bytes()));
        }
    }
    if ok {
        Ok(())
    } else {
        Err("webhook-signature does not match the body under any of the trigger's secrets".into())
    }
}

/// Header names whose values never reach the inbox or the run.
fn is_credential(name: &str, auth: &WebhookAuth) -> bool {
    name == "authorization"
        || name == "cookie"
        || name == "proxy-authorization"
        || matches!(auth, WebhookAuth::ApiKey { header, .. } if header.eq_ignore_ascii_case(name))
}

fn redacted_headers(headers: &HeaderMap, auth: &WebhookAuth) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().to_string();
            let value = if is_credential(&name, auth) {
                "[redacted]".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

/// Why a body was refused: status, code and message.
type BodyError = (StatusCode, &'static str, String);

/// Decodes a body by its content type: JSON, form, or text. An empty body is `null`.
pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, BodyError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mime = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let text = || {
        std::str::from_utf8(bytes)
            .map(|s| Value::String(s.to_string()))
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    "invalid_utf8",
                    format!(
                        "the body is not valid UTF-8 (byte {}); send UTF-8 text",
                        e.valid_up_to()
                    ),
                )
            })
    };
    let json = || {
        serde_json::from_slice::<Value>(bytes).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })
    };
    match mime.as_deref() {
        None => json().or_else(|_| text()),
        Some(m) if m == "application/json" || m.ends_with("+json") => json(),
        Some("application/x-www-form-urlencoded") => {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(bytes).map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        "invalid_form",
                        format!("the body is not a valid form: {e}"),
                    )
                })?;
            let mut map = Map::new();
            for (k, v) in pairs {
                match map.get_mut(&k) {
                    Some(Value::Array(items)) => items.push(Value::String(v)),
                    Some(existing) => {
                        *existing = Value::Array(vec![existing.take(), Value::String(v)])
                    }
                    None => {
                        map.insert(k, Value::String(v));
                    }
                }
            }
            Ok(Value::Object(map))
        }
        Some(m) if m.starts_with("text/") || m == "application/xml" || m.ends_with("+xml") => {
            text()
        }
        Some(m) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!(
                "content type `{m}` is not accepted; send application/json, application/x-www-form-urlencoded or text/*"
            ),
        )),
    }
}

pub fn query_map(query: &str) -> Value {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut map = Map::new();
    for (k, v) in pairs {
        map.insert(k, Value::String(v));
    }
    Value::Object(map)
}

async fn handle(
    app: Arc<App>,
    hook: Hook,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let trigger = &hook.trigger;
    if !trigger
        .methods
        .iter()
        .any(|m| m.as_str() == method.as_str())
    {
        let allow = trigger
            .methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this webhook accepts {allow}, not {method}"),
        );
        if let Ok(v) = HeaderValue::from_str(&allow) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return r;
    }
    if !authorized(&trigger.auth, &headers) {
        tracing::info!("webhook request refused: wrong or missing credentials");
        let mut r = error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials for this webhook",
        );
        if matches!(trigger.auth, WebhookAuth::Basic { .. }) {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tripline\""),
            );
        }
        return r;
    }

    let now = app.clock.now();
    let message_id = app.new_id();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut message = InboxMessage {
        id: message_id.clone(),
        received_at: now,
        workflow: hook.record.id.clone(),
        trigger: trigger.id.clone(),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: redacted_headers(&headers, &trigger.auth),
        content_type: content_type.clone(),
        body: Vec::new(),
        outcome: Outcome::Rejected {
            reason: String::new(),
        },
        scheduled_at: None,
        kafka: None,
        reprocess_of: None,
    };

    let limit = app.config.max_body_bytes;
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            let reason = format!("the body is larger than the limit of {limit} bytes");
            return reject(
                &app,
                message,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                reason,
            )
            .await;
        }
    };
    if let WebhookAuth::StandardWebhooks { secrets, tolerance } = &trigger.auth
        && let Err(why) = signed(
            secrets,
            tolerance.std(),
            &headers,
            &bytes,
            now.millis().div_euclid(1000),
        )
    {
        tracing::info!(reason = %why, "webhook request refused: bad signature");
        return error_response(StatusCode::UNAUTHORIZED, "unauthorized", why);
    }
    message.body = bytes.to_vec();
    let parsed = match parse_body(content_type.as_deref(), &bytes) {
        Ok(v) => v,
        Err((status, code, reason)) => return reject(&app, message, status, code, reason).await,
    };

    let header_map: Map<String, Value> = message
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let input = json!({
        "body": parsed,
        "headers": header_map,
        "query": query_map(&message.query),
        "method": method.as_str(),
        "path": message.path,
    });

    if let Some(reason) = filtered(&hook, &input) {
        message.outcome = Outcome::Filtered { reason };
        return match app
            .admit(Admission {
                message,
                runs: vec![],
                idempotency: None,
            })
            .await
        {
            Ok(_) => with_message_id(StatusCode::NO_CONTENT.into_response(), &message_id),
            Err(e) => unavailable(&e),
        };
    }

    let run_id = app.new_id();
    let trigger_ref = TriggerRef {
        kind: TriggerKind::Webhook,
        id: trigger.id.clone(),
    };
    let mut run = Run::new(
        run_id.clone(),
        &hook.record.id,
        hook.record.revision,
        trigger_ref,
        input,
        now,
    );
    run.message_id = Some(message_id.clone());

    let sync = trigger.response == ResponseMode::Sync;
    let wf = &hook.record.definition;
    // A sync run that needs no I/O runs here and now, and is written once, finished.
    let idempotency = match app.claim_for(
        &hook.record.id,
        &trigger.id,
        trigger.idempotency_key.as_deref(),
        &run.trigger_input,
        Some(&headers),
    ) {
        // A verified signature's `webhook-id` names the message for good: its sender's
        // retries start nothing new.
        Ok(None) if matches!(trigger.auth, WebhookAuth::StandardWebhooks { .. }) => headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .map(|k| crate::ports::IdempotencyClaim {
                key: format!("{}/{}/{k}", hook.record.id, trigger.id),
                expires_at: now.plus(IDEMPOTENCY_WINDOW),
            }),
        Ok(c) => c,
        Err(why) => {
            return reject(
                &app,
                message,
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_failed",
                why,
            )
            .await;
        }
    };
    // Its end's effects (context-store writes, flow runs) happen before the admission; a
    // repeated idempotency key would make them for a run never recorded, so such a request
    // goes through the executor instead.
    let end_effects = || {
        wf.steps.iter().any(|s| !s.extract_to_context.is_empty()) || app.has_flow_listeners(&wf.id)
    };
    // A workflow with a concurrency limit takes a slot in the executor first, even sync.
    if sync
        && wf.concurrency.is_none()
        && wf.steps.iter().all(|s| s.action.is_pure())
        && !(idempotency.is_some() && end_effects())
    {
        if let Err(e) = app.load_store(wf, &mut run).await {
            return unavailable(&e);
        }
        run = engine::run_pure(wf, run, now);
        // What the executor does before it writes an end: the context-store writes, and
        // the runs that flow triggers start.
        if !run.store_writes.is_empty()
            && let Err(e) = app
                .store
                .patch_context(&run.workflow, &run.store_writes)
                .await
        {
            return unavailable(&e);
        }
        if run.status.is_terminal()
            && let Err(e) = app.start_flows(&mut run).await
        {
            return unavailable(&e);
        }
    }
    message.outcome = Outcome::Started {
        run_ids: vec![run_id.clone()],
    };
    let waiter = (sync && !run.status.is_terminal()).then(|| app.completions.subscribe(&run_id));
    let admission = Admission {
        message,
        runs: vec![run.clone()],
        idempotency,
    };
    let run = match app.admit(admission).await {
        Ok(Admitted::New { .. }) => {
            if let Some(rx) = waiter {
                wait_for(&app, &run_id, rx, budget(&app, &hook)).await
            } else {
                Some(run)
            }
        }
        Ok(Admitted::Duplicate { run_id: first }) => {
            app.completions.forget(&run_id);
            match app.store.run(&first).await {
                Ok(Some(existing)) if sync && !existing.status.is_terminal() => {
                    let rx = app.completions.subscribe(&first);
                    // It may have ended between the read and the subscription.
                    match app.store.run(&first).await {
                        Ok(Some(r)) if r.status.is_terminal() => Some(r),
                        _ => wait_for(&app, &first, rx, budget(&app, &hook)).await,
                    }
                }
                Ok(Some(existing)) => Some(existing),
                Ok(None) => None,
                Err(e) => return unavailable(&e),
            }
        }
        Err(e) => {
            app.completions.forget(&run_id);
            return unavailable(&e);
        }
    };
    let response = match run {
        Some(run) if sync && run.status.is_terminal() => sync_reply(&hook, &run),
        Some(run) if !sync => async_reply(&hook, &run),
        Some(run) => still_running(&run.id, run.status),
        None => still_running(&run_id, RunStatus::Queued),
    };
    with_message_id(response, &message_id)
}

fn budget(app: &App, hook: &Hook) -> Duration {
    hook.trigger
        .sync_budget
        .map_or(app.config.sync_budget, |d| d.std())
}

async fn wait_for(
    app: &App,
    run_id: &str,
    mut rx: tokio::sync::oneshot::Receiver<Run>,
    budget: Duration,
) -> Option<Run> {
    if app.config.poll_runs {
        let deadline = tokio::time::Instant::now() + budget;
        let mut every = Duration::from_millis(5);
        let mut woken = true;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let next = (now + every).min(deadline);
            if woken {
                match tokio::time::timeout_at(next, &mut rx).await {
                    Ok(Ok(run)) => return Some(run),
                    Ok(Err(_)) => woken = false,
                    Err(_) => {}
                }
            }
            tokio::time::sleep_until(next).await;
            match app.store.run(run_id).await {
                Ok(Some(run)) if run.status.is_terminal() => {
                    app.completions.forget(run_id);
                    return Some(run);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "polling the run failed"),
            }
            every = (every * 2).min(Duration::from_millis(250));
        }
        app.completions.forget(run_id);
        return app.store.run(run_id).await.ok().flatten();
    }
    match tokio::time::timeout(budget, rx).await {
        Ok(Ok(run)) => Some(run),
        _ => {
            app.completions.forget(run_id);
            app.store.run(run_id).await.ok().flatten()
        }
    }
}

/// `None` when the message matches; else why not.
pub fn filtered(hook: &Hook, input: &Value) -> Option<String> {
    crate::unmet(
        hook.trigger.filter.as_ref(),
        hook.trigger.condition.as_deref(),
        input,
    )
}

async fn reject(
    app: &App,
    mut message: InboxMessage,
    status: StatusCode,
    code: &'static str,
    reason: String,
) -> Response {
    message.outcome = Outcome::Rejected {
        reason: reason.clone(),
    };
    refuse(app, message, status, code, reason).await
}

/// Records a message that starts nothing (with the outcome it carries) and answers the
/// error; the answer names the message.
pub(crate) async fn refuse(
    app: &App,
    message: InboxMessage,
    status: StatusCode,
    code: &'static str,
    reason: String,
) -> Response {
    let id = message.id.clone();
    if let Err(e) = app
        .admit(Admission {
            message,
            runs: vec![],
            idempotency: None,
        })
        .await
    {
        return unavailable(&e);
    }
    with_message_id(error_response(status, code, reason), &id)
}

fn with_message_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-tripline-message-id", v);
    }
    r
}

fn status_url(run_id: &str) -> String {
    format!("/v1/runs/{run_id}")
}

fn still_running(run_id: &str, status: RunStatus) -> Response {
    let body = json!({"run_id": run_id, "status": status, "status_url": status_url(run_id)});
    located(StatusCode::ACCEPTED, body, run_id)
}

fn located(status: StatusCode, body: Value, run_id: &str) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&status_url(run_id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn async_reply(hook: &Hook, run: &Run) -> Response {
    match &hook.trigger.reply {
        Some(custom) => custom_reply(custom, StatusCode::ACCEPTED, run, Value::Null),
        None => still_running(&run.id, run.status),
    }
}

fn sync_reply(hook: &Hook, run: &Run) -> Response {
    if run.status == RunStatus::Succeeded {
        if let Some(custom) = &hook.trigger.reply {
            let output = run.final_output.clone().unwrap_or(Value::Null);
            return custom_reply(custom, StatusCode::OK, run, output);
        }
        return located(StatusCode::OK, engine::envelope(run), &run.id);
    }
    located(
        StatusCode::INTERNAL_SERVER_ERROR,
        engine::envelope(run),
        &run.id,
    )
}

fn custom_reply(
    custom: &tripline_core::definition::CustomReply,
    default: StatusCode,
    run: &Run,
    output: Value,
) -> Response {
    let ctx = json!({
        "trigger": run.trigger_input,
        "run": {"id": run.id, "workflow": run.workflow, "revision": run.revision, "status_url": status_url(&run.id)},
        "output": output,
        "status": run.status,
    });
    let status = custom
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(default);
    let body = match custom
        .body
        .as_ref()
        .map(|b| template::render_value(b, &ctx))
        .transpose()
    {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reply_template_failed",
                format!(
                    "the run {} was recorded, but the workflow's reply template failed: {e}",
                    run.id
                ),
            );
        }
    };
    let mut r = match body {
        Some(Value::String(s)) => (status, s).into_response(),
        Some(v) => (status, axum::Json(v)).into_response(),
        None => status.into_response(),
    };
    for (k, v) in &custom.headers {
        let rendered = template::render_string(v, &ctx).unwrap_or_default();
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&rendered),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_and_text_bodies_decode() {
        assert_eq!(
            parse_body(Some("application/json"), b"{\"a\":1}").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            parse_body(Some("application/x-www-form-urlencoded"), b"a=1&b=x+y&a=2").unwrap(),
            json!({"a": ["1", "2"], "b": "x y"})
        );
        assert_eq!(
            parse_body(Some("text/plain; charset=utf-8"), b"hi").unwrap(),
            json!("hi")
        );
        assert_eq!(parse_body(None, b"{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_body(None, b"plain").unwrap(), json!("plain"));
        assert_eq!(
            parse_body(Some("application/json"), b"").unwrap(),
            Value::Null
        );
    }

    #[test]
    fn bad_bodies_get_a_clear_4xx() {
        assert_eq!(
            parse_body(Some("application/json"), b"{\"a\":")
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_body(Some("text/plain"), b"\xff\xfe").unwrap_err().1,
            "invalid_utf8"
        );
        assert_eq!(
            parse_body(Some("image/png"), b"\x89PNG").unwrap_err().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn api_keys_and_basic_auth_are_checked() {
        let auth = WebhookAuth::ApiKey {
            header: "x-api-key".into(),
            keys: vec!["k1k1k1k1k1k1k1k1".into(), "k2k2k2k2k2k2k2k2".into()],
        };
        let mut h = HeaderMap::new();
        assert!(!authorized(&auth, &h));
        h.insert("x-api-key", HeaderValue::from_static("k2k2k2k2k2k2k2k2"));
        assert!(authorized(&auth, &h));
        h.insert("x-api-key", HeaderValue::from_static("k2k2k2k2k2k2k2k3"));
        assert!(!authorized(&auth, &h));

        let basic = WebhookAuth::Basic {
            username: "u".into(),
            password: "password1".into(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpwYXNzd29yZDE="),
        );
        assert!(authorized(&basic, &h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTp3cm9uZw=="),
        );
        assert!(!authorized(&basic, &h));
    }
}
