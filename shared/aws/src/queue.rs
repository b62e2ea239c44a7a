//! The [`Queue`] on SQS: a standard queue with a dead-letter queue (redrive policy in
//! template.yaml). Delays up to SQS's 15 minutes use `DelaySeconds`. A longer timer is a
//! one-time EventBridge Scheduler schedule (`at(...)`, deleted after it ran) that sends the
//! work item to the queue when due; without Scheduler settings it is sent with the longest
//! delay, and the executor, finding it is not yet due, sends it on again. A timer that fires
//! twice changes nothing: the executor looks at the run's state and time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tripline_app::ports::{Delivery, Queue, StoreError, WorkItem};

use crate::settings::TimerSettings;
use crate::store_error;

/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug)]
pub struct SqsQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
    timers: Option<Arc<dyn LongTimers>>,
}

/// Where timers longer than SQS's delay go. A trait object, so that only the binary that
/// builds [`SchedulerTimers`] (the step executor) links the Scheduler client.
#[async_trait]
pub trait LongTimers: Send + Sync + std::fmt::Debug + 'static {
    /// Delivers `item` to the queue after `delay`; asking twice for the same timer is one.
    async fn schedule(&self, item: &WorkItem, delay: Duration) -> Result<(), StoreError>;
}

/// Long timers as one-time EventBridge Scheduler schedules that send to the queue.
#[derive(Debug)]
pub struct SchedulerTimers {
    scheduler: aws_sdk_scheduler::Client,
    settings: TimerSettings,
}

impl SchedulerTimers {
    pub fn new(scheduler: aws_sdk_scheduler::Client, settings: TimerSettings) -> Self {
        Self {
            scheduler,
            settings,
        }
    }
}

/// The name of the schedule of the timer of `run_id` due at `due_secs`: the same timer
/// asked for twice is one schedule (the second create answers a conflict).
pub fn schedule_name(run_id: &str, due_secs: i64) -> String {
    // Schedule names: 1 to 64 of [0-9a-zA-Z-_.].
    format!("tl-{run_id}-{due_secs}")
}

/// EventBridge Scheduler's one-time expression, in UTC, to the second.
pub fn at_expression(due_secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(due_secs).unwrap_or(0));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("at({})", s.trim_end_matches('Z'))
}

/// Whole seconds, rounded up (SQS counts in seconds; early would be wrong, late is fine).
fn seconds(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

/// The body of an SQS message for a work item.
pub fn encode(item: &WorkItem) -> String {
    serde_json::to_string(item).unwrap_or_default()
}

/// A work item from an SQS message body; `None` when the body is not one.
pub fn decode(body: &str) -> Option<WorkItem> {
    serde_json::from_str(body).ok()
}

impl SqsQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            sqs,
            url: url.into(),
            timers: None,
        }
    }

    /// Timers over 15 minutes go to `timers` (EventBridge Scheduler schedules).
    pub fn with_timers(mut self, timers: Arc<dyn LongTimers>) -> Self {
        self.timers = Some(timers);
        self
    }
}

#[async_trait]
impl LongTimers for SchedulerTimers {
    async fn schedule(&self, item: &WorkItem, delay: Duration) -> Result<(), StoreError> {
        let (scheduler, t) = (&self.scheduler, &self.settings);
        use aws_sdk_scheduler::types::{
            ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode,
            RetryPolicy, Target,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Rounded up: a timer may fire late, never early.
        let due = now + delay;
        let due_secs =
            i64::try_from(due.as_secs() + u64::from(due.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        let bad = |e: aws_sdk_scheduler::error::BuildError| StoreError::Unavailable(Box::new(e));
        let mut target = Target::builder()
            .arn(&t.queue_arn)
            .role_arn(&t.role_arn)
            .input(encode(item));
        if let Some(dlq) = &t.dead_letter_arn {
            target = target.dead_letter_config(DeadLetterConfig::builder().arn(dlq).build());
        }
        let target = target
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(185)
                    .maximum_event_age_in_seconds(86_400)
                    .build(),
            )
            .build()
            .map_err(bad)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(bad)?;
        let result = scheduler
            .create_schedule()
            .name(schedule_name(&item.run_id, due_secs))
            .group_name(&t.schedule_group)
            .schedule_expression(at_expression(due_secs))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conflict_exception()) =>
            {
                // Already scheduled by an earlier delivery: the same timer.
                Ok(())
            }
            Err(e) => Err(store_error("Scheduler CreateSchedule", e)),
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, item: &WorkItem, delay: Duration) -> Result<(), StoreError> {
        if delay > MAX_DELAY
            && let Some(timers) = &self.timers
        {
            return timers.schedule(item, delay).await;
        }
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(encode(item))
            .delay_seconds(seconds(delay.min(MAX_DELAY)))
            .send()
            .await
            .map_err(|e| store_error("SQS SendMessage", e))?;
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
            .visibility_timeout(seconds(lease).max(1))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| store_error("SQS ReceiveMessage", e))?;
        let mut deliveries = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let (Some(receipt), Some(body)) = (m.receipt_handle(), m.body()) else {
                continue;
            };
            let Some(item) = decode(body) else {
                tracing::error!(
                    body,
                    "an SQS message that is not a work item; left for the dead-letter queue"
                );
                continue;
            };
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            deliveries.push(Delivery {
                receipt: receipt.to_string(),
                item,
                receive_count,
            });
        }
        Ok(deliveries)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.sqs
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .send()
            .await
            .map_err(|e| store_error("SQS DeleteMessage", e))?;
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), StoreError> {
        self.sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(seconds(delay))
            .send()
            .await
            .map_err(|e| store_error("SQS ChangeMessageVisibility", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::ZERO), 0);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(2000)), 2);
        assert_eq!(seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn one_time_schedules_are_named_by_run_and_due_second_in_utc() {
        assert_eq!(at_expression(1_800_000_000), "at(2027-01-15T08:00:00)");
        let name = schedule_name("01KBCDEFGHJKMNPQRSTVWXYZ01", 1_800_000_000);
        assert!(name.len() <= 64, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
    }

    #[test]
    fn a_work_item_round_trips_through_a_message_body() {
        let item = WorkItem::run("01J");
        assert_eq!(decode(&encode(&item)), Some(item));
        assert_eq!(decode("not json"), None);
    }
}
