//! Lambda: SQS batches → the step executor, with partial batch failure reporting; the
//! runs table's stream → the listings' index; and the sweeper's schedule, which enqueues
//! runs left `queued` again.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tripline_aws::lambda::{ExecutorSettings, deadline_of, executor_event};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tripline_aws::init_tracing();
    let (app, store) = tripline_aws::executor_app_from_env().await?;
    let settings = ExecutorSettings::from_env()?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = app.clone();
        let store = store.clone();
        async move {
            let deadline = deadline_of(&event.context);
            let answer = executor_event(&app, &store, &settings, event.payload, deadline).await;
            tripline_aws::flush_metrics(&app);
            answer
        }
    }))
    .await
}
