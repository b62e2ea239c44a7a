//! Reprocessing an inbox message: the message is matched again against the current
//! revision of its workflow, as if it had just arrived, and recorded as a new message
//! (`reprocess_of` the first) with the run it starts. For a message that was filtered or
//! failed, after the workflow was fixed; or to run a record again on purpose.

use serde_json::{Value, json};
use tripline_core::definition::{KafkaTrigger, Trigger};
use tripline_core::run::{TriggerKind, TriggerRef};

use crate::App;
use crate::admission::Refused;
use crate::intake::kafka;
use crate::intake::webhook::{trigger_body, webhook_input};
use crate::ports::{
    Admitted, IdempotencyClaim, InboxMessage, KafkaMeta, Outcome, StoreError, WorkflowRecord,
};

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

/// What a message becomes when matched again: a run's input for a trigger kind with the
/// idempotency claim its trigger makes of it, or an outcome that starts nothing.
pub(crate) type Matched = Result<(TriggerKind, Value, Option<IdempotencyClaim>), Outcome>;

impl App {
    pub async fn reprocess(&self, original: &InboxMessage) -> Result<Reprocessed, ReprocessError> {
        self.reprocess_once(original, None).await
    }

    /// [`App::reprocess`]; with `key`, reprocessing the message again with the same key
    /// (a bulk job's item delivered twice) starts nothing new, when the trigger's own
    /// idempotency key does not already decide.
    pub async fn reprocess_once(
        &self,
        original: &InboxMessage,
        key: Option<&str>,
    ) -> Result<Reprocessed, ReprocessError> {
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
        if original.kafka.is_none()
            && let Some(why) = rec.switched_off(&original.trigger)
        {
            return Err(ReprocessError::Refused(why));
        }
        let trigger = rec
            .definition
            .triggers
            .iter()
            .find(|t| t.id() == original.trigger);
        let mut message = original.clone();
        message.id = self.new_id();
        message.received_at = self.clock.now();
        message.reprocess_of = Some(original.id.clone());
        let matched = self.match_again(&rec, trigger, original, &mut message)?;
        let message_id = message.id.clone();
        let outcome = match matched {
            Ok((kind, input, claim)) => {
                let claim = claim.or_else(|| {
                    key.map(|k| IdempotencyClaim {
                        key: format!(
                            "{}/{}/reprocess:{}:{k}",
                            rec.id, message.trigger, original.id
                        ),
                        expires_at: self.clock.now().plus(crate::admission::IDEMPOTENCY_WINDOW),
                        held_by_message: false,
                    })
                });
                let trigger = TriggerRef {
                    kind,
                    id: message.trigger.clone(),
                };
                let run = self.run_of_message(&message, &rec, trigger, input);
                let run_id = run.id.clone();
                match self.admit_runs(message, vec![run], claim).await? {
                    Admitted::New { .. } => Outcome::Started {
                        run_ids: vec![run_id],
                    },
                    Admitted::Duplicate { run_id } => Outcome::Duplicate { run_id },
                }
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

    /// The message matched again against `trigger` (the one it came by, now): every gate
    /// of the trigger applies again (filter, condition, idempotency key).
    pub(crate) fn match_again(
        &self,
        rec: &WorkflowRecord,
        trigger: Option<&Trigger>,
        original: &InboxMessage,
        message: &mut InboxMessage,
    ) -> Result<Matched, ReprocessError> {
        let json_body =
            || -> Value { serde_json::from_slice(&original.body).unwrap_or(Value::Null) };
        // Every gate of the trigger applies again: filter, condition, idempotency key.
        Ok(match (trigger, &original.kafka) {
            (_, Some(meta)) => Self::kafka_again(rec, meta, message)?,
            (Some(t @ Trigger::Webhook(w)), None) => {
                match trigger_body(w, message.content_type.as_deref(), &message.body) {
                    Ok(body) => {
                        let input = webhook_input(message, body);
                        let headers = header_map(&message.headers);
                        self.gated(rec, t, TriggerKind::Webhook, input, Some(&headers))
                    }
                    Err((_, _, reason)) => Err(Outcome::Rejected { reason }),
                }
            }
            (Some(t @ Trigger::Manual(_)), None) => {
                let body = if original.body.is_empty() {
                    Value::Null
                } else {
                    json_body()
                };
                self.gated(rec, t, TriggerKind::Manual, json!({ "body": body }), None)
            }
            // A flow message holds the flow input it was given.
            (Some(t @ Trigger::Flow(_)), None) => {
                self.gated(rec, t, TriggerKind::Flow, json_body(), None)
            }
            _ => {
                return Err(ReprocessError::Refused(format!(
                    "workflow `{}` has no trigger `{}` of this message's kind now",
                    rec.id, original.trigger
                )));
            }
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
                Trigger::Kafka(k)
                    if k.enabled && rec.is_on(&k.id) && k.topics.contains(&meta.topic) =>
                {
                    Some(k.clone())
                }
                _ => None,
            })
            .collect();
        if triggers.is_empty() {
            return Err(ReprocessError::Refused(format!(
                "no kafka trigger of workflow `{}` consumes topic `{}` now (or every one is switched off)",
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
                Ok((TriggerKind::Kafka, input, None))
            }
            Err(refused) => Err(refused.outcome()),
        })
    }

    /// An input through `trigger`'s gate, as if it had just arrived.
    fn gated(
        &self,
        rec: &WorkflowRecord,
        trigger: &Trigger,
        kind: TriggerKind,
        input: Value,
        headers: Option<&axum::http::HeaderMap>,
    ) -> Matched {
        match self.gate(&rec.id, trigger.id(), trigger.gate(), &input, headers) {
            Ok(claim) => Ok((kind, input, claim)),
            Err(Refused::Filtered(why)) => Err(Outcome::Filtered {
                reason: format!("trigger `{}`: {why}", trigger.id()),
            }),
            Err(Refused::KeyFailed(reason)) => Err(Outcome::Rejected { reason }),
        }
    }
}

/// A recorded request's headers (credentials were redacted when it was recorded; the
/// `Idempotency-Key` header is kept).
fn header_map(headers: &[(String, String)]) -> axum::http::HeaderMap {
    let mut map = axum::http::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    map
}
