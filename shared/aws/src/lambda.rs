//! The step executor's Lambda events: SQS batches (with partial batch failure reporting)
//! and the sweeper's schedule.

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::{Value, json};
use tripline_app::App;

use crate::queue::decode;

/// How long a run may stay `queued` before the sweeper enqueues it again, unless
/// `TRIPLINE_SWEEP_AFTER` says otherwise.
pub const SWEEP_AFTER: Duration = Duration::from_secs(5 * 60);

/// Handles one SQS batch: every record's run is advanced at once, each only while the
/// invocation has time left. Records whose handling failed are reported, so that SQS
/// delivers them again (and, after the redrive limit, to the dead-letter queue); the
/// others are deleted by the event source mapping.
pub async fn sqs_batch(
    app: &App,
    event: SqsEvent,
    deadline: tokio::time::Instant,
) -> SqsBatchResponse {
    let work = event.records.into_iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        let Some(item) = record.body.as_deref().and_then(decode) else {
            tracing::error!(message_id = %id, "an SQS message that is not a work item; it goes to the dead-letter queue after its retries");
            return Some(id);
        };
        match app.advance_run_until(&item.run_id, Some(deadline)).await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(run_id = %item.run_id, error = %e, "work item failed; SQS delivers it again");
                Some(id)
            }
        }
    });
    let failed = futures::future::join_all(work).await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .flatten()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

/// The step executor's handler: an SQS batch, or the sweeper's scheduled event
/// (EventBridge `Scheduled Event`, or `{"sweep": true}`).
pub async fn executor_event(
    app: &App,
    event: Value,
    deadline: tokio::time::Instant,
) -> Result<Value, crate::BoxError> {
    if event.get("Records").is_some() {
        let batch: SqsEvent = serde_json::from_value(event)
            .map_err(|e| format!("the SQS event could not be read: {e}"))?;
        return Ok(serde_json::to_value(sqs_batch(app, batch, deadline).await)?);
    }
    let scheduled = event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.get("sweep").and_then(Value::as_bool) == Some(true);
    if scheduled {
        let after = std::env::var("TRIPLINE_SWEEP_AFTER")
            .ok()
            .and_then(|v| tripline_core::Duration::parse(&v).ok())
            .map_or(SWEEP_AFTER, |d| d.std());
        let swept = app.sweep(after).await?;
        return Ok(json!({ "swept": swept }));
    }
    Err("the step executor takes SQS batches and the sweeper's scheduled event; this event is neither".into())
}

/// The time an invocation must end by, from the runtime's deadline (ms since the epoch).
pub fn deadline_of(context: &lambda_runtime::Context) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = Duration::from_millis(context.deadline.saturating_sub(now_ms));
    tokio::time::Instant::now() + left
}

/// The event an EventBridge Scheduler schedule of a cron trigger sends (its `Input`, with
/// `<aws.scheduler.scheduled-time>` filled in).
#[derive(Debug, serde::Deserialize)]
pub struct TickEvent {
    pub workflow: String,
    pub trigger: String,
    /// RFC 3339, e.g. `2026-11-23T08:00:00Z`.
    pub scheduled_time: String,
}

/// Handles a cron trigger's tick. An error makes Lambda retry the (asynchronous)
/// invocation, then send it to the function's failure destination: a tick that could not
/// be recorded is not lost.
pub async fn cron_tick_event(app: &App, payload: Value) -> Result<Value, crate::BoxError> {
    let event: TickEvent = serde_json::from_value(payload).map_err(|e| {
        format!("not a cron tick event ({e}); a schedule sends {{\"workflow\", \"trigger\", \"scheduled_time\"}}")
    })?;
    let scheduled = tripline_core::Timestamp::parse_rfc3339(&event.scheduled_time)
        .map_err(|e| format!("`scheduled_time`: {e}"))?;
    let outcome = app
        .cron_tick(
            &event.workflow,
            &event.trigger,
            scheduled,
            tripline_app::cron::Delivery::OnTime,
        )
        .await?;
    tracing::info!(workflow = %event.workflow, trigger = %event.trigger, %scheduled, outcome = outcome.kind(), "cron tick");
    Ok(json!({"outcome": outcome}))
}
