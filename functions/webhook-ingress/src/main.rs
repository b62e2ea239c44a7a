//! Lambda: API Gateway (HTTP API) → the webhook ingress, the same axum Router as the local
//! server's. Sync replies poll the run record within their budget.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::app_from_env().await?;
    lambda_http::run(tripline_app::http::ingress::router(app)).await
}
