//! Lambda: EventBridge Scheduler → the cron tick. Each cron trigger's schedule invokes this
//! function with `{"workflow", "trigger", "scheduled_time"}`; the tick starts the run
//! (at most one per scheduled time) or records why not.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tripline_aws::lambda::cron_tick_event;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::app_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            let answer = cron_tick_event(&app, event.payload).await;
            tripline_aws::flush_metrics(&app);
            answer
        }
    }))
    .await
}
