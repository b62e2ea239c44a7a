//! Lambda: the MSK event source → Kafka intake. Every record of a batch is in the inbox
//! (with the runs it starts) before the invocation succeeds; otherwise it fails and the
//! event source delivers the batch again, which is harmless.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tripline_aws::lambda::msk_event;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tripline_aws::init_tracing();
    let app = tripline_aws::app_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            let answer = msk_event(&app, event.payload).await;
            tripline_aws::flush_metrics(&app);
            answer
        }
    }))
    .await
}
