//! Reprocessing an inbox message: the message is matched again against the current
//! revision of its workflow, as if it had just arrived, and recorded as a new message
//! (`reprocess_of` the first) with the run it starts. For a message that was filtered or
//! failed, after the workflow was fixed; or to run a record again on purpose.

use serde_json::{Value, json};
use tripline_core::definition::{KafkaTrigger, Trigger, WebhookTrigger};
use tripline_core::run::{TriggerKind, TriggerRef};

use crate::App;
use crate::intake::kafka;
use crate::intake::webhook::{parse_body, webhook_input};
use crate::ports::{InboxMessage, KafkaMeta, Outcome, StoreError, WorkflowRecord};

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

/// What a message becomes when matched again: a run's input for a trigger kind, or an
/// outcome that starts nothing.
type Matched = Result<(TriggerKind, Value), Outcome>;

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
        let matched = match (trigger, &original.kafka) {
            (_, Some(meta)) => Self::kafka_again(&rec, meta, &mut message)?,
            (Some(Trigger::Webhook(w)), None) => Self::webhook_again(w, &message),
            (Some(Trigger::Manual(_)), None) => {
                let body = if original.body.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&original.body).unwrap_or(Value::Null)
                };
                Ok((TriggerKind::Manual, json!({ "body": body })))
            }
            _ => {
                return Err(ReprocessError::Refused(format!(
                    "workflow `{}` has no trigger `{}` of this message's kind now",
                    rec.id, original.trigger
                )));
            }
        };
        let message_id = message.id.clone();
        let outcome = match matched {
            Ok((kind, input)) => {
                let trigger = TriggerRef {
                    kind,
                    id: message.trigger.clone(),
                };
                let run = self.new_run(self.new_id(), &rec, trigger, input, &message.id);
                let outcome = Outcome::Started {
                    run_ids: vec![run.id.clone()],
                };
                self.admit_runs(message, vec![run], None).await?;
                outcome
            }
            Err(outcome) => {
                self.record_message(message, outcome.clone()).await?;
                outcome
            }
        };
        Ok(Reprocessed {
            message_id,
            outcome,
        })
    }

    /// A Kafka record again: the workflow's kafka triggers on its topic now, the first
    /// that matches (the message takes its id).
    fn kafka_again(
        rec: &WorkflowRecord,
        meta: &KafkaMeta,
        message: &mut InboxMessage,
    ) -> Result<Matched, ReprocessError> {
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
        let record = kafka::record_of(meta, &message.body);
        let input = match kafka::record_input(&record) {
            Ok(v) => v,
            Err(undecodable) => {
                let reason = undecodable.to_string();
                return Ok(Err(Outcome::Rejected { reason }));
            }
        };
        Ok(match kafka::matching(&triggers, &input) {
            Ok(t) => {
                message.trigger = t.id.clone();
                Ok((TriggerKind::Kafka, input))
            }
            Err(refused) => Err(refused.outcome()),
        })
    }

    /// A webhook request again: its body decoded as received, through the trigger's
    /// filter and condition.
    fn webhook_again(w: &WebhookTrigger, message: &InboxMessage) -> Matched {
        let body = parse_body(message.content_type.as_deref(), &message.body)
            .map_err(|(_, _, reason)| Outcome::Rejected { reason })?;
        let input = webhook_input(message, body);
        let gate = w.gate();
        match crate::admission::unmet(gate.filter, gate.condition, &input) {
            Some(reason) => Err(Outcome::Filtered { reason }),
            None => Ok((TriggerKind::Webhook, input)),
        }
    }
}
