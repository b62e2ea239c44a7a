//! Lambda: API Gateway (HTTP API) → the control API (`/v1/...`: workflows, runs, inbox,
//! secrets, keys, the audit log) and the web console's pages, the same axum Routers as
//! the local server's.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::control_app_from_env().await?;
    let router = tripline_app::http::control::router(app.clone())
        .merge(tripline_app::http::console::router(app.clone()));
    tripline_aws::http_api::run(tripline_aws::http_api::with_metrics(router, app)).await
}
