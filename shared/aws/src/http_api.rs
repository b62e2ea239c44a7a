//! What the HTTP API's Lambda functions (webhook ingress, resume-approval, control API)
//! share: the HTTP API's events (payload format 2.0) handed to an axum Router, and its
//! answers handed back; and the metrics printed as each answer is ready.
//!
//! Read here rather than through `lambda_http`, which decodes every text answer through
//! the charset it names (`encoding_rs`, with every legacy encoding's tables: 155 KB of the
//! control API's binary, whose budget is 8 MiB). An answer's body goes back as text when
//! it is UTF-8 and not content-encoded, base64 otherwise; both are what API Gateway
//! passes on unchanged.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tower::ServiceExt as _;
use tripline_app::http::ingress::ClientAddr;

/// The largest answer Lambda returns (6 MB, the invocation payload's limit).
const MAX_ANSWER: usize = 6 * 1024 * 1024;

/// An HTTP API event (payload format 2.0): what a Router needs of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpApiEvent {
    #[serde(default)]
    pub raw_path: String,
    #[serde(default)]
    pub raw_query_string: String,
    /// The request's cookies, which payload 2.0 keeps apart from its headers.
    #[serde(default)]
    pub cookies: Vec<String>,
    /// Header names lowercased; repeated headers joined with commas.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub is_base64_encoded: bool,
    pub request_context: EventContext,
}

#[derive(Debug, Deserialize)]
pub struct EventContext {
    pub http: EventHttp,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventHttp {
    pub method: String,
    #[serde(default)]
    pub source_ip: Option<String>,
}

/// An HTTP API answer (payload format 2.0).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpApiAnswer {
    pub status_code: u16,
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<String>,
    pub body: String,
    pub is_base64_encoded: bool,
}

/// The request an event describes, with the caller's address (`sourceIp`) as
/// [`ClientAddr`] for `ip_allowlist` and the audit log.
pub fn request_of(event: HttpApiEvent) -> Result<Request, String> {
    let uri = match event.raw_query_string.as_str() {
        "" => event.raw_path.clone(),
        q => format!("{}?{q}", event.raw_path),
    };
    let body = match (event.body, event.is_base64_encoded) {
        (None, _) => Vec::new(),
        (Some(b), false) => b.into_bytes(),
        (Some(b), true) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("the event's body is not base64: {e}"))?,
    };
    let mut req = Request::builder()
        .method(event.request_context.http.method.as_str())
        .uri(&uri)
        .body(Body::from(body))
        .map_err(|e| format!("the event is not a request ({uri}): {e}"))?;
    for (name, value) in &event.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    if !event.cookies.is_empty()
        && let Ok(v) = HeaderValue::try_from(event.cookies.join("; "))
    {
        req.headers_mut().insert(header::COOKIE, v);
    }
    if let Some(ip) = event
        .request_context
        .http
        .source_ip
        .and_then(|s| s.parse().ok())
    {
        req.extensions_mut().insert(ClientAddr(ip));
    }
    Ok(req)
}

/// The answer a response becomes: `Set-Cookie` as `cookies`, other repeated headers
/// joined with commas.
pub async fn answer_of(resp: Response) -> HttpApiAnswer {
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "an answer's body could not be read");
            return HttpApiAnswer {
                status_code: 500,
                headers: BTreeMap::new(),
                cookies: Vec::new(),
                body: "the answer could not be read".into(),
                is_base64_encoded: false,
            };
        }
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else { continue };
        if name == header::SET_COOKIE {
            cookies.push(value.to_string());
        } else {
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_string());
        }
    }
    let encoded = parts.headers.contains_key(header::CONTENT_ENCODING);
    let (body, is_base64_encoded) = match std::str::from_utf8(&bytes) {
        Ok(text) if !encoded => (text.to_string(), false),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            true,
        ),
    };
    HttpApiAnswer {
        status_code: parts.status.as_u16(),
        headers,
        cookies,
        body,
        is_base64_encoded,
    }
}

/// Serves `router` to the HTTP API's events until the runtime stops.
pub async fn run(router: axum::Router) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<HttpApiEvent>| {
            let router = router.clone();
            async move {
                let resp = match request_of(event.payload) {
                    Ok(req) => router.oneshot(req).await.unwrap_or_else(|e| match e {}),
                    Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
                };
                Ok::<_, lambda_runtime::Error>(answer_of(resp).await)
            }
        },
    ))
    .await
}

/// The function's routes, printing what each request counted as CloudWatch EMF lines when
/// its answer is ready (see [`tripline_app::metrics`]): once per invocation, no API call.
pub fn with_metrics(router: axum::Router, app: std::sync::Arc<tripline_app::App>) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: axum::middleware::Next| {
            let app = app.clone();
            async move {
                let answer = next.run(req).await;
                crate::flush_metrics(&app);
                answer
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> HttpApiEvent {
        serde_json::from_value(json).expect("an event")
    }

    #[test]
    fn an_event_becomes_its_request() {
        let e = event(serde_json::json!({
            "rawPath": "/v1/runs", "rawQueryString": "workflow=a%20b&limit=2",
            "cookies": ["a=1", "b=2"], "headers": {"content-type": "application/json"},
            "body": "eyJ4IjoxfQ==", "isBase64Encoded": true,
            "requestContext": {"http": {"method": "POST", "sourceIp": "203.0.113.7"}}
        }));
        let req = request_of(e).expect("request");
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri(), "/v1/runs?workflow=a%20b&limit=2");
        assert_eq!(req.headers()["cookie"], "a=1; b=2");
        assert_eq!(req.headers()["content-type"], "application/json");
        assert_eq!(
            req.extensions()
                .get::<ClientAddr>()
                .map(|a| a.0.to_string()),
            Some("203.0.113.7".into())
        );
        let bad = event(serde_json::json!({
            "rawPath": "/x", "body": "%%%", "isBase64Encoded": true,
            "requestContext": {"http": {"method": "POST"}}
        }));
        assert!(request_of(bad).unwrap_err().contains("base64"));
    }

    #[tokio::test]
    async fn an_answer_keeps_its_cookies_apart_and_its_bytes_whole() {
        let resp = Response::builder()
            .status(201)
            .header("set-cookie", "s=1; HttpOnly")
            .header("set-cookie", "t=2")
            .header("vary", "origin")
            .header("vary", "accept")
            .body(Body::from("{\"ok\":true}"))
            .expect("response");
        let a = answer_of(resp).await;
        assert_eq!(a.status_code, 201);
        assert_eq!(a.cookies, ["s=1; HttpOnly", "t=2"]);
        assert_eq!(a.headers["vary"], "origin, accept");
        assert_eq!(
            (a.body.as_str(), a.is_base64_encoded),
            ("{\"ok\":true}", false)
        );
        let binary = Response::new(Body::from(vec![0xff, 0x00]));
        let a = answer_of(binary).await;
        assert_eq!((a.body.as_str(), a.is_base64_encoded), ("/wA=", true));
        let gzipped = Response::builder()
            .header("content-encoding", "gzip")
            .body(Body::from("text"))
            .expect("response");
        assert!(answer_of(gzipped).await.is_base64_encoded);
    }
}
