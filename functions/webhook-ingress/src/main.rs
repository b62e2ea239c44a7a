//! Lambda: API Gateway (HTTP API) → the webhook ingress, the same axum Router as the local
//! server's. Sync replies poll the run record within their budget.

use axum::extract::Request;
use lambda_http::RequestExt as _;
use lambda_http::request::RequestContext;
use tripline_app::http::ingress::ClientAddr;

/// The caller's address as the HTTP API saw it (`requestContext.http.sourceIp`), for
/// `ip_allowlist`.
async fn client_addr(mut req: Request) -> Request {
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

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::app_with_secrets_from_env().await?;
    let router =
        tripline_app::http::ingress::router(app).layer(axum::middleware::map_request(client_addr));
    lambda_http::run(router).await
}
