//! What the HTTP API's Lambda functions (webhook ingress, control API) share.

use axum::extract::Request;
use lambda_http::RequestExt as _;
use lambda_http::request::RequestContext;
use tripline_app::http::ingress::ClientAddr;

/// The caller's address as the HTTP API saw it (`requestContext.http.sourceIp`), for
/// `ip_allowlist` and the audit log. Use as `axum::middleware::map_request(client_addr)`.
pub async fn client_addr(mut req: Request) -> Request {
    let ip = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.http.source_ip.as_deref().and_then(|s| s.parse().ok())
        }
        _ => None,
    };
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientAddr(ip));
    }
    req
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
