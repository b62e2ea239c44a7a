//! `once` triggers: each is one run at a given instant. A deploy records the run (with an
//! id derived from workflow, trigger and instant, so that deploying again, or a restart,
//! finds it instead of making a second) `queued` with `not_before`, and the queue's timer
//! starts it then. A deploy that moves the instant or removes the trigger cancels the run
//! still waiting for the old one.

use serde_json::json;
use sha2::Digest as _;
use tripline_core::definition::{OnceTrigger, Trigger};
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::{RunStatus, Timestamp};

use crate::App;
use crate::ports::{InboxMessage, StoreError, WorkflowRecord};

/// The id of the run (and its inbox message) of `trigger` of `workflow` at `at`.
pub fn once_run_id(workflow: &str, trigger: &str, at: Timestamp) -> String {
    let mut h = sha2::Sha256::new();
    for part in [workflow, trigger, "once"] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(at.millis().to_be_bytes());
    crate::tokens::derived_ulid(at.millis(), &h.finalize())
}

fn once_triggers(rec: &WorkflowRecord) -> Vec<(&OnceTrigger, Timestamp)> {
    if rec.removed {
        return Vec::new();
    }
    rec.definition
        .triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Once(o) => o.instant().ok().map(|at| (o, at)),
            _ => None,
        })
        .collect()
}

impl App {
    /// Records the run of each `once` trigger of `rec` whose time has not come; one that
    /// exists already is left as it is.
    pub async fn schedule_once(&self, rec: &WorkflowRecord) -> Result<(), StoreError> {
        let now = self.clock.now();
        for (o, at) in once_triggers(rec) {
            if at <= now {
                continue;
            }
            let id = once_run_id(&rec.id, &o.id, at);
            let body = o.input.clone().unwrap_or(serde_json::Value::Null);
            let message = InboxMessage::new(id.clone(), now, &rec.id, &o.id, "ONCE")
                .at_path(format!("/v1/workflows/{}", rec.id))
                .with_json(&body);
            let trigger = TriggerRef {
                kind: TriggerKind::Once,
                id: o.id.clone(),
            };
            let mut run = self.run_of_message(&message, rec, trigger, json!({ "body": body }));
            run.not_before = Some(at);
            self.admit_runs(message, vec![run], None).await?;
        }
        Ok(())
    }

    /// After a deploy of `rec`: cancels the runs the previous revision's `once` triggers
    /// were waiting for that this one no longer has (moved or removed), then records this
    /// one's.
    pub async fn sync_once(&self, rec: &WorkflowRecord) -> Result<(), StoreError> {
        if rec.revision > 1
            && let Some(previous) = self.store.workflow(&rec.id, Some(rec.revision - 1)).await?
        {
            let keep: Vec<String> = once_triggers(rec)
                .into_iter()
                .map(|(o, at)| once_run_id(&rec.id, &o.id, at))
                .collect();
            for (o, at) in once_triggers(&previous) {
                let id = once_run_id(&rec.id, &o.id, at);
                if keep.contains(&id) {
                    continue;
                }
                if let Some(run) = self.store.run(&id).await?
                    && run.status == RunStatus::Queued
                {
                    tracing::info!(run_id = %id, trigger = %o.id, "the once trigger moved or went: its waiting run is cancelled");
                    let _ = self.cancel_run(&id).await;
                }
            }
        }
        self.schedule_once(rec).await
    }
}
