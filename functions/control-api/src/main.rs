//! Lambda: API Gateway (HTTP API) → the control API (`/v1/...`: workflows, runs, inbox),
//! the same axum Router as the local server's.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::control_app_from_env().await?;
    lambda_http::run(tripline_app::http::control::router(app)).await
}
