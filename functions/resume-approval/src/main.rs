//! Lambda: API Gateway (HTTP API) → the routes of parked runs: `POST /resume/{token}`, the
//! review page `GET /review/{token}`, and `/approve/{token}`, `/reject/{token}`. The same
//! Router as the local server's; the run goes on in the step executor (a work item).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::app_with_secrets_from_env().await?;
    let router = tripline_app::http::resume::router(app.clone());
    tripline_aws::http_api::run(tripline_aws::http_api::with_metrics(router, app)).await
}
