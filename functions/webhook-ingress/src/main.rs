//! Lambda: API Gateway (HTTP API) → the webhook ingress, the same axum Router as the local
//! server's. Sync replies poll the run record within their budget.

use tripline_aws::http_api::client_addr;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::app_with_secrets_from_env().await?;
    let router = tripline_app::http::ingress::router(app.clone())
        .layer(axum::middleware::map_request(client_addr));
    let router = tripline_aws::http_api::with_metrics(router, app);
    lambda_http::run(router).await
}
