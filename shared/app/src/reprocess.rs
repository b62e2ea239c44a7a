//! Reprocessing an inbox message: the message is matched again against the current
//! revision of its workflow, as if it had just arrived, and recorded as a new message
//! (`reprocess_of` the first) with the run it starts. For a message that was filtered or
//! failed, after the workflow was fixed; or to run a record again on purpose.

use serde_json::{Map, Value, json};
use tripline_core::Run;
use tripline_core::definition::{KafkaTrigger, Trigger};
use tripline_core::run::{TriggerKind, TriggerRef};

use crate::App;
use crate::deploy::Hook;
use crate::ports::{Admission, InboxMessage, Outcome, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    /// The message cannot be reprocessed; the text says why and what to do instead.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a reprocessing recorded.
#[derive(Clone, Debug)]
pub struct Reprocessed {
    pub message_id: String,
    pub outcome: Outcome,
}

impl App {
    pub async fn reprocess(&self, original: &InboxMessage) -> Result<Reprocessed, ReprocessError> {
        if original.scheduled_at.is_some() {
            return Err(ReprocessError::Refused(format!(
                "a cron tick is not reprocessed; start the trigger now with POST /v1/workflows/{}/runs?trigger={}",
                original.workflow, original.trigger
            )));
        }
        self.refresh_workflows(true).await;
        let Some(rec) = self.deployments.latest(&original.workflow) else {
            return Err(ReprocessError::Refused(format!(
                "workflow `{}` is not deployed; deploy it, then reprocess the message",
                original.workflow
            )));
        };
        let trigger = rec
            .definition
            .triggers
            .iter()
            .find(|t| t.id() == original.trigger);
        let mut message = original.clone();
        message.id = self.new_id();
        message.received_at = self.clock.now();
        message.reprocess_of = Some(original.id.clone());
        let (kind, input) = match (trigger, &original.kafka) {
            (_, Some(meta)) => {
                let triggers: Vec<KafkaTrigger> = rec
                    .definition
                    .triggers
                    .iter()
                    .filter_map(|t| match t {
                        Trigger::Kafka(k) if k.topics.contains(&meta.topic) => Some(k.clone()),
                        _ => None,
                    })
                    .collect();
                if triggers.is_empty() {
                    return Err(ReprocessError::Refused(format!(
                        "no kafka trigger of workflow `{}` consumes topic `{}` now",
                        rec.id, meta.topic
                    )));
                }
                let record = crate::kafka::record_of(meta, &original.body);
                let input = match crate::kafka::record_input(&record) {
                    Ok(v) => v,
                    Err(reason) => {
                        return self
                            .record_outcome(message, Outcome::Rejected { reason })
                            .await;
                    }
                };
                match crate::kafka::matching(&triggers, &input) {
                    Ok(t) => {
                        message.trigger = t.id.clone();
                        (TriggerKind::Kafka, input)
                    }
                    Err(reason) => {
                        return self
                            .record_outcome(message, Outcome::Filtered { reason })
                            .await;
                    }
                }
            }
            (Some(Trigger::Webhook(w)), None) => {
                let body = match crate::ingress::parse_body(
                    original.content_type.as_deref(),
                    &original.body,
                ) {
                    Ok(v) => v,
                    Err((_, _, reason)) => {
                        return self
                            .record_outcome(message, Outcome::Rejected { reason })
                            .await;
                    }
                };
                let headers: Map<String, Value> = original
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                let input = json!({
                    "body": body,
                    "headers": headers,
                    "query": crate::ingress::query_map(&original.query),
                    "method": original.method,
                    "path": original.path,
                });
                let hook = Hook {
                    record: rec.clone(),
                    trigger: w.clone(),
                };
                if let Some(reason) = crate::ingress::filtered(&hook, &input) {
                    return self
                        .record_outcome(message, Outcome::Filtered { reason })
                        .await;
                }
                (TriggerKind::Webhook, input)
            }
            (Some(Trigger::Manual(_)), None) => {
                let body = if original.body.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&original.body).unwrap_or(Value::Null)
                };
                (TriggerKind::Manual, json!({ "body": body }))
            }
            _ => {
                return Err(ReprocessError::Refused(format!(
                    "workflow `{}` has no trigger `{}` of this message's kind now",
                    rec.id, original.trigger
                )));
            }
        };
        let run_id = self.new_id();
        let mut run = Run::new(
            run_id.clone(),
            &rec.id,
            rec.revision,
            TriggerRef {
                kind,
                id: message.trigger.clone(),
            },
            input,
            self.clock.now(),
        );
        run.message_id = Some(message.id.clone());
        message.outcome = Outcome::Started {
            run_ids: vec![run_id],
        };
        let outcome = message.outcome.clone();
        let message_id = message.id.clone();
        self.admit(Admission {
            message,
            runs: vec![run],
            idempotency: None,
        })
        .await?;
        Ok(Reprocessed {
            message_id,
            outcome,
        })
    }

    async fn record_outcome(
        &self,
        mut message: InboxMessage,
        outcome: Outcome,
    ) -> Result<Reprocessed, ReprocessError> {
        message.outcome = outcome.clone();
        let message_id = message.id.clone();
        self.admit(Admission {
            message,
            runs: Vec::new(),
            idempotency: None,
        })
        .await?;
        Ok(Reprocessed {
            message_id,
            outcome,
        })
    }
}
