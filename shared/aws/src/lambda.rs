//! The step executor's Lambda events: SQS batches (with partial batch failure reporting),
//! the sweeper's schedule, and the runs table's stream (the listings' index).

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::{Value, json};
use tracing::Instrument;
use tripline_app::App;

use crate::queue::decode;
use crate::store::index::Indexed;

/// How long a run may stay `queued` before the sweeper enqueues it again, unless
/// `TRIPLINE_SWEEP_AFTER` says otherwise.
pub const SWEEP_AFTER: Duration = Duration::from_secs(5 * 60);

/// The step executor's own settings, read once at cold start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExecutorSettings {
    /// How long a run may stay `queued` before the sweeper enqueues it again.
    pub sweep_after: Duration,
}

impl ExecutorSettings {
    /// From `TRIPLINE_SWEEP_AFTER` (e.g. `5m`; default 5 minutes). A value that is not a
    /// duration stops the start with its name.
    pub fn from_env() -> Result<Self, String> {
        let sweep_after = match std::env::var("TRIPLINE_SWEEP_AFTER") {
            Ok(v) if !v.is_empty() => tripline_core::Duration::parse(&v)
                .map_err(|e| format!("TRIPLINE_SWEEP_AFTER: {e}"))?
                .std(),
            _ => SWEEP_AFTER,
        };
        Ok(Self { sweep_after })
    }
}

/// Handles one SQS batch: every record's run is advanced at once, each only while the
/// invocation has time left. Records whose handling failed are reported, so that SQS
/// delivers them again (and, after the redrive limit, to the dead-letter queue); the
/// others are deleted by the event source mapping.
pub async fn sqs_batch(
    app: &App,
    event: SqsEvent,
    deadline: tokio::time::Instant,
) -> SqsBatchResponse {
    let work = event.records.into_iter().map(|record| {
        let id = record.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("sqs_message", message_id = %id, run_id = tracing::field::Empty);
        async move {
            let Some(item) = record.body.as_deref().and_then(decode) else {
                tracing::error!("an SQS message that is not a work item; it goes to the dead-letter queue after its retries");
                return Some(id);
            };
            tracing::Span::current().record("run_id", item.run_id.as_str());
            match app.advance_item(&item, Some(deadline)).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, "work item failed; SQS delivers it again");
                    Some(id)
                }
            }
        }
        .instrument(span)
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

/// The items a batch of the runs table's stream created that listings name.
pub fn stream_records(event: &Value) -> Vec<Indexed> {
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    records
        .iter()
        .filter(|r| r.get("eventName").and_then(Value::as_str) == Some("INSERT"))
        .filter_map(|r| Indexed::of_image(r.get("dynamodb")?.get("NewImage")?))
        .collect()
}

/// How much earlier than the sweeper's reach a run indexed late is checked (the
/// functions' clocks may differ a little).
const LATE_MARGIN: Duration = Duration::from_secs(60);

/// Of runs just indexed, those admitted before the sweeper's reach (it may have passed
/// them already) are enqueued again if still `queued`; how many were.
async fn requeue_late(
    app: &App,
    indexed: &[Indexed],
    sweep_after: Duration,
) -> Result<usize, tripline_app::ports::StoreError> {
    let reach = app.clock.now().minus(sweep_after).plus(LATE_MARGIN);
    let late: Vec<String> = indexed
        .iter()
        .filter(|r| r.timed && r.admitted_before(reach))
        .map(|r| r.id.clone())
        .collect();
    app.sweep_runs(&late).await
}

/// Handles a batch of the runs table's stream: writes the index pages that list the
/// items it created (`store/index.rs`). An error fails the batch, which the event source
/// mapping delivers again (pages are written idempotently).
///
/// The sweeper finds runs never enqueued through these pages, and moves its watermark to
/// `sweep_after` ago at each pass: a run indexed later than that after its admission (the
/// mapping fell behind) may have been passed by already. So such runs are checked here,
/// once their pages are written, and enqueued again if still `queued`.
pub async fn stream_batch(
    app: &App,
    store: &crate::DynamoStore,
    sweep_after: Duration,
    event: &Value,
) -> Result<Value, crate::BoxError> {
    let indexed = stream_records(event);
    let pages = store.index(&indexed).await?;
    let requeued = requeue_late(app, &indexed, sweep_after).await?;
    tracing::debug!(
        indexed = indexed.len(),
        pages,
        requeued,
        "stream batch indexed"
    );
    Ok(json!({ "indexed": indexed.len(), "pages": pages, "requeued": requeued }))
}

/// An operator's `{"reindex": true, "from": ID, "limit": N}`: indexes the runs table again
/// from its items, N (1,000 by default) a `Scan` ([`crate::DynamoStore::reindex`]), until
/// the invocation has 10 seconds left, then
/// answers where to go on (`"next"`, to send as `"from"`; `null` when done). Runs found
/// still `queued` past the sweeper's reach are enqueued again, as for a late stream batch.
pub async fn reindex_event(
    app: &App,
    store: &crate::DynamoStore,
    sweep_after: Duration,
    event: &Value,
    deadline: tokio::time::Instant,
) -> Result<Value, crate::BoxError> {
    let mut from = event.get("from").and_then(Value::as_str).map(String::from);
    let limit = event.get("limit").and_then(Value::as_i64).unwrap_or(1000);
    let limit = i32::try_from(limit).unwrap_or(1000);
    let (mut indexed, mut requeued) = (0, 0);
    loop {
        let (records, next) = store.reindex(from, limit).await?;
        indexed += records.len();
        requeued += requeue_late(app, &records, sweep_after).await?;
        from = next;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if from.is_none() || left < Duration::from_secs(10) {
            break;
        }
    }
    tracing::info!(indexed, requeued, next = ?from, "runs table indexed again");
    Ok(json!({ "indexed": indexed, "requeued": requeued, "next": from }))
}

/// The step executor's handler: an SQS batch, a batch of the runs table's stream (the
/// listings' index, written through `store`), the sweeper's scheduled event
/// (EventBridge `Scheduled Event`, or `{"sweep": true}`), or an operator's `{"reindex":
/// true}` ([`reindex_event`]).
pub async fn executor_event(
    app: &App,
    store: &crate::DynamoStore,
    settings: &ExecutorSettings,
    event: Value,
    deadline: tokio::time::Instant,
) -> Result<Value, crate::BoxError> {
    let source = event
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str);
    if source == Some("aws:dynamodb") {
        return stream_batch(app, store, settings.sweep_after, &event).await;
    }
    if event.get("reindex").and_then(Value::as_bool) == Some(true) {
        return reindex_event(app, store, settings.sweep_after, &event, deadline).await;
    }
    if event.get("Records").is_some() {
        let batch: SqsEvent = serde_json::from_value(event)
            .map_err(|e| format!("the SQS event could not be read: {e}"))?;
        return Ok(serde_json::to_value(sqs_batch(app, batch, deadline).await)?);
    }
    let scheduled = event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.get("sweep").and_then(Value::as_bool) == Some(true);
    if scheduled {
        let swept = app.sweep(settings.sweep_after).await?;
        return Ok(json!({ "swept": swept }));
    }
    Err("the step executor takes SQS batches, the runs table's stream, the sweeper's scheduled event and {\"reindex\": true}; this event is none of them".into())
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
            tripline_app::intake::cron::Delivery::OnTime,
        )
        .await?;
    tracing::info!(workflow = %event.workflow, trigger = %event.trigger, %scheduled, outcome = outcome.kind(), "cron tick");
    Ok(json!({"outcome": outcome}))
}

/// The MSK event source's event (as documented for Lambda): records by `topic-partition`,
/// keys and values in base64, headers as lists of bytes. Read here rather than through
/// `aws_lambda_events`, whose timestamp goes through a float and can lose a millisecond.
#[derive(Debug, serde::Deserialize)]
pub struct MskEvent {
    #[serde(default)]
    pub records: std::collections::BTreeMap<String, Vec<MskRecord>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MskRecord {
    #[serde(default)]
    pub topic: Option<String>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// Each header's bytes, signed (Java's bytes) or not.
    #[serde(default)]
    pub headers: Vec<std::collections::BTreeMap<String, Vec<i16>>>,
}

/// Handles a batch of the MSK event source: every record is recorded in the inbox (with
/// the runs it starts) before this returns `Ok`, which is what lets the event source move
/// on. Any record that could not be stored fails the invocation: the event source delivers
/// the batch again, and the records already stored are recognized and start nothing.
pub async fn msk_event(app: &App, payload: Value) -> Result<Value, crate::BoxError> {
    let event: MskEvent =
        serde_json::from_value(payload).map_err(|e| format!("not an MSK event ({e})"))?;
    let records = msk_records(event);
    let count = records.len();
    let report = app.kafka_intake(records).await?;
    tracing::info!(
        records = count,
        recorded = report.recorded,
        already = report.already,
        runs = report.runs_started,
        "MSK batch recorded"
    );
    Ok(json!({
        "records": count,
        "recorded": report.recorded,
        "already_recorded": report.already,
        "runs_started": report.runs_started,
    }))
}

/// The records of an MSK event, decoded.
pub fn msk_records(event: MskEvent) -> Vec<tripline_app::ports::KafkaRecord> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    // A value that is not base64 (MSK always sends base64) is kept as the text it is.
    let decode = |s: &String| b64.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec());
    let mut records = Vec::new();
    for (source, batch) in event.records {
        for r in batch {
            let topic = r.topic.clone().unwrap_or_else(|| {
                // `topic-partition` is the batch's key.
                source
                    .rsplit_once('-')
                    .map_or(source.clone(), |(t, _)| t.to_string())
            });
            let headers = r
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|(k, v)| (k.clone(), v.iter().map(|b| *b as u8).collect()))
                .collect();
            records.push(tripline_app::ports::KafkaRecord {
                topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: tripline_core::Timestamp(r.timestamp),
                key: r.key.as_ref().map(decode),
                value: r.value.as_ref().map(decode),
                headers,
                source: None,
            });
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_msk_event_keeps_the_exact_timestamp_bytes_and_signed_header_bytes() {
        let event: MskEvent = serde_json::from_value(json!({
            "eventSource": "aws:kafka",
            "records": {"my-topic-3": [{
                "topic": "my-topic", "partition": 3, "offset": 15,
                "timestamp": 1545084650987i64, "timestampType": "CREATE_TIME",
                "key": "a2V5", "value": "eyJhIjogMX0=",
                "headers": [{"h": [104, -1, 0]}]
            }]}
        }))
        .expect("event");
        let r = &msk_records(event)[0];
        assert_eq!(
            (r.topic.as_str(), r.partition, r.offset),
            ("my-topic", 3, 15)
        );
        assert_eq!(r.timestamp.millis(), 1_545_084_650_987);
        assert_eq!(r.key.as_deref(), Some(&b"key"[..]));
        assert_eq!(r.value.as_deref(), Some(&br#"{"a": 1}"#[..]));
        assert_eq!(r.headers, vec![("h".to_string(), vec![104u8, 0xff, 0])]);
    }
}
