//! Manual runs: `POST /v1/workflows/{id}/runs` (the control API, the CLI). The body is the
//! run's `trigger.body`; a cron trigger named with `?trigger=` runs now, outside its
//! schedule, with the current state.

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tripline_core::definition::Trigger;
use tripline_core::run::{TriggerKind, TriggerRef};

use crate::App;
use crate::admission::Refused;
use crate::ports::{Admitted, InboxMessage, StoreError, WorkflowRecord};

/// Why a manual input started nothing (the message is recorded with it).
#[derive(Debug)]
pub enum ManualRefused {
    /// The trigger's filter or condition refused the input.
    Condition {
        message_id: String,
        reason: String,
    },
    /// The trigger's idempotency key could not be rendered from the input.
    KeyFailed {
        message_id: String,
        reason: String,
    },
    Store(StoreError),
}

impl From<StoreError> for ManualRefused {
    fn from(e: StoreError) -> Self {
        ManualRefused::Store(e)
    }
}

impl App {
    /// Starts a run of `trigger` (a manual or cron trigger of `rec`) with `input`, the
    /// JSON of `body`; returns its id (or, for a repeated idempotency key, the first
    /// run's) and the id of the inbox message that records the request.
    pub async fn start_manual(
        &self,
        rec: &WorkflowRecord,
        trigger: &Trigger,
        body: &[u8],
        input: Value,
        headers: &HeaderMap,
        not_before: Option<tripline_core::Timestamp>,
    ) -> Result<(String, String), ManualRefused> {
        let now = self.clock.now();
        let message_id = self.new_id();
        let mut message = InboxMessage::new(message_id.clone(), now, &rec.id, trigger.id(), "POST")
            .at_path(format!("/v1/workflows/{}/runs", rec.id));
        message.content_type = Some("application/json".into());
        message.body = body.to_vec();
        let mut run = match trigger {
            Trigger::Cron(c) => self.run_now(rec, c, input),
            _ => {
                let trigger_ref = TriggerRef {
                    kind: TriggerKind::Manual,
                    id: trigger.id().to_string(),
                };
                self.run_of_message(&message, rec, trigger_ref, json!({ "body": input }))
            }
        };
        run.message_id = Some(message_id.clone());
        run.not_before = not_before;
        // A cron trigger's gate is for its ticks; "run now" is asked for on purpose.
        let gate = match trigger {
            Trigger::Manual(m) => m.gate(),
            _ => Default::default(),
        };
        let idempotency = match self.gate(
            &rec.id,
            trigger.id(),
            gate,
            &run.trigger_input,
            Some(headers),
        ) {
            Ok(claim) => claim,
            Err(refused) => {
                self.record_message(message, refused.outcome()).await?;
                let reason = refused.reason().to_string();
                return Err(match refused {
                    Refused::Filtered(_) => ManualRefused::Condition { message_id, reason },
                    Refused::KeyFailed(_) => ManualRefused::KeyFailed { message_id, reason },
                });
            }
        };
        let run_id = run.id.clone();
        match self.admit_runs(message, vec![run], idempotency).await? {
            Admitted::New { .. } => Ok((run_id, message_id)),
            Admitted::Duplicate { run_id } => Ok((run_id, message_id)),
        }
    }
}
