//! The [`Queue`] on SQS: a standard queue with a dead-letter queue (redrive policy in
//! template.yaml). Delays up to SQS's 15 minutes use `DelaySeconds`; a longer timer is sent
//! with the longest delay, and the executor, finding it is not yet due, sends it on again.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tripline_app::ports::{Delivery, Queue, StoreError, WorkItem};

use crate::store_error;

/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug)]
pub struct SqsQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
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
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, item: &WorkItem, delay: Duration) -> Result<(), StoreError> {
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
    fn a_work_item_round_trips_through_a_message_body() {
        let item = WorkItem {
            run_id: "01J".into(),
        };
        assert_eq!(decode(&encode(&item)), Some(item));
        assert_eq!(decode("not json"), None);
    }
}
