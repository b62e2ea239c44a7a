//! Webhook ingress: `/hooks/{token}`. The handler checks the method and the credentials,
//! reads the body within the limit and checks its signature, hands the request to the
//! webhook use case (`intake::webhook`), and answers: 2xx only after the inbox message and
//! its run are durably written.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tracing::Instrument;
use tripline_core::definition::{ResponseMode, WebhookAuth};
use tripline_core::{Run, RunStatus, engine, template};

use super::auth::{Refusal, check_headers, check_signature, ip_allowed, redacted_headers};
use super::{error_response, unavailable};
use crate::App;
use crate::deploy::Hook;
use crate::intake::webhook::Received;
use crate::ports::InboxMessage;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/hooks/{token}", any(hook))
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// The address of the client that called, as the shape sees it: the Lambda function puts
/// the HTTP API's `sourceIp` here; the local server has the socket's peer.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

/// The client's address as the shape gives it: [`ClientAddr`], or the socket's peer.
pub fn client_of(req: &axum::extract::Request) -> Option<std::net::IpAddr> {
    let ext = req.extensions();
    ext.get::<ClientAddr>().map(|c| c.0).or_else(|| {
        ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

#[allow(clippy::too_many_arguments)]
async fn hook(
    State(app): State<Arc<App>>,
    token: Result<Path<String>, axum::extract::rejection::PathRejection>,
    client: Option<axum::Extension<ClientAddr>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A token that does not even decode (bad percent-encoding) is no token of ours.
    let Ok(Path(token)) = token else {
        return unknown_token(&app);
    };
    let client = client.map(|c| c.0.0).or(peer.map(|p| p.0.0.ip()));
    let client = client_addr(&app, client, &headers);
    let limits = app.config.rate_limits;
    if limits.per_client > 0
        && let Some(ip) = client
        && let Err(wait) = app.limiter.take(&format!("c:{ip}"), limits.per_client)
    {
        return too_many(wait, "this client address");
    }
    if limits.per_token > 0
        && let Err(wait) = app.limiter.take(&format!("t:{token}"), limits.per_token)
    {
        return too_many(wait, "this webhook");
    }
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
    if let Some(why) = hook.record.switched_off(&hook.trigger.id) {
        return switched_off(why);
    }
    let span =
        tracing::info_span!("webhook", workflow = %hook.record.id, trigger = %hook.trigger.id);
    let workflow = hook.record.id.clone();
    // Boxed: the request's whole state machine is large, and this handler's future is
    // moved by value through axum's layers before it is polled (a profile showed those
    // copies at about 1.5% of the server's CPU).
    let answer = Box::pin(handle(
        app.clone(),
        hook,
        client,
        method,
        uri,
        headers,
        body,
    ))
    .instrument(span)
    .await;
    let outcome = match answer.extensions().get::<super::ProblemCode>() {
        Some(code) => code.0,
        None if answer.status() == StatusCode::NO_CONTENT => "filtered",
        None => "accepted",
    };
    app.metrics.webhook(&workflow, outcome);
    answer
}

/// `503` with `Retry-After`: the trigger (or its workflow) is switched off; nothing is
/// recorded, so that the sender keeps the message and delivers it again later.
fn switched_off(why: String) -> Response {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "trigger_disabled",
        format!("{why}; nothing was recorded: deliver the request again later"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

/// `429` with `Retry-After` (whole seconds, at least 1); nothing is recorded.
fn too_many(wait: std::time::Duration, what: &str) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests for {what}; retry after {secs} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The client's address: the connection's, or (only when configured to trust a proxy in
/// front) the last address of `X-Forwarded-For`, which that proxy added.
fn client_addr(
    app: &App,
    connection: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> Option<std::net::IpAddr> {
    if app.config.trust_forwarded_for
        && let Some(forwarded) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|a| a.trim().parse().ok())
    {
        return Some(forwarded);
    }
    connection
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

async fn handle(
    app: Arc<App>,
    hook: Hook,
    client: Option<std::net::IpAddr>,
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
        return method_not_allowed(&hook, &method);
    }
    if !ip_allowed(&trigger.ip_allowlist, client) {
        tracing::info!(client = ?client, "webhook request refused: the client address is not in the trigger's ip_allowlist");
        return error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this client address may not call this webhook (its ip_allowlist)",
        );
    }
    let now = app.clock.now();
    if let Err(refusal) = check_headers(&app, &trigger.auth, &headers, now).await {
        return refused(&trigger.auth, refusal);
    }
    let mut message = InboxMessage::new(
        app.new_id(),
        now,
        &hook.record.id,
        &trigger.id,
        method.as_str(),
    );
    message.path = uri.path().to_string();
    message.query = uri.query().unwrap_or_default().to_string();
    message.headers = redacted_headers(&headers, &trigger.auth);
    message.content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let limit = app.config.max_body_bytes;
    let Ok(bytes): Result<Bytes, _> = axum::body::to_bytes(body, limit).await else {
        let reason = format!("the body is larger than the limit of {limit} bytes");
        let status = StatusCode::PAYLOAD_TOO_LARGE;
        if matches!(
            trigger.auth,
            WebhookAuth::StandardWebhooks { .. } | WebhookAuth::Hmac(_)
        ) {
            // Its signature cannot be checked without the whole body: the sender is not
            // authenticated, so nothing is recorded.
            return error_response(status, "body_too_large", reason);
        }
        let refused = app
            .refuse_webhook(message, status, "body_too_large", reason)
            .await;
        return answer(&hook, refused);
    };
    let delivery = match check_signature(&app, &trigger.auth, &headers, &bytes, now).await {
        Ok(delivery) => delivery,
        Err(refusal) => return refused(&trigger.auth, refusal),
    };
    let received = app
        .receive_webhook(&hook, message, &headers, &bytes, delivery)
        .await;
    answer(&hook, received)
}

/// The answer to a request that was not let in; nothing was recorded.
fn refused(auth: &WebhookAuth, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Credentials => {
            tracing::info!("webhook request refused: wrong or missing credentials");
            unauthorized(auth)
        }
        Refusal::Signature(why) => {
            tracing::info!(reason = %why, "webhook request refused: bad signature");
            error_response(StatusCode::UNAUTHORIZED, "bad_signature", why.to_string())
        }
        Refusal::Unavailable(e) => unavailable(&e),
    }
}

fn method_not_allowed(hook: &Hook, method: &Method) -> Response {
    let allow = hook
        .trigger
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
    r
}

fn unauthorized(auth: &WebhookAuth) -> Response {
    let mut r = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong credentials for this webhook",
    );
    if matches!(auth, WebhookAuth::Basic { .. }) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tripline\""),
        );
    }
    r
}

/// The answer to what the use case did with the request.
fn answer(hook: &Hook, received: Received) -> Response {
    let sync = hook.trigger.response == ResponseMode::Sync;
    match received {
        Received::Refused {
            message_id,
            status,
            code,
            reason,
        } => with_message_id(error_response(status, code, reason), &message_id),
        Received::Filtered { message_id } => {
            with_message_id(StatusCode::NO_CONTENT.into_response(), &message_id)
        }
        Received::Started {
            message_id,
            run_id,
            run,
        } => {
            let response = match run {
                Some(run) if sync && run.status.is_terminal() => sync_reply(hook, &run),
                Some(run) if !sync => async_reply(hook, &run),
                Some(run) => still_running(&run.id, run.status),
                None => still_running(&run_id, RunStatus::Queued),
            };
            with_message_id(response, &message_id)
        }
        Received::Unavailable(e) => unavailable(&e),
    }
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
