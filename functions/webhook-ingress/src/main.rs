//! Lambda: API Gateway (HTTP API) → the webhook ingress, the same axum Router as the local
//! server's. Sync replies poll the run record within their budget.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::app_with_secrets_from_env().await?;
    let router = tripline_app::http::ingress::router(app.clone());
    tripline_aws::http_api::run(tripline_aws::http_api::with_metrics(router, app)).await
}
