//! Switching a workflow, or one of its triggers, off and on again without removing it.
//!
//! A switch is kept in the workflow's record and carried to every later revision; a change
//! is stored as a new revision with the same definition, so that every process (every
//! Lambda function) sees it the way it sees a deploy, and the revision list shows when it
//! was flipped. What a switched-off trigger does:
//! - webhook: answers `503` + `Retry-After` and records nothing (the sender keeps the
//!   message and delivers it again once the trigger is on);
//! - cron: its ticks are recorded `skipped` (in AWS its EventBridge schedule is disabled,
//!   so there are none);
//! - kafka: its topics are not read for it, and its position is kept;
//! - flow: the ended runs that would start it are recorded `skipped`;
//! - manual, retry, reprocess: refused with `409`, naming the switch.

use std::sync::Arc;

use tripline_core::Timestamp;
use tripline_core::definition::Trigger;

use crate::deploy::{DEPLOYED_MARKER, Deployments};
use crate::ports::{Store, StoreError, WorkflowRecord};

impl WorkflowRecord {
    /// Why `trigger` starts nothing now (it, or the workflow, is switched off), with how to
    /// turn it on; `None` when it is on.
    pub fn switched_off(&self, trigger: &str) -> Option<String> {
        let id = &self.id;
        if self.switches.disabled {
            Some(format!(
                "workflow `{id}` is switched off; turn it on with POST /v1/workflows/{id}/enable"
            ))
        } else if self.switches.triggers_off.contains(trigger) {
            Some(format!(
                "trigger `{trigger}` of workflow `{id}` is switched off; turn it on with POST /v1/workflows/{id}/triggers/{trigger}/enable"
            ))
        } else {
            None
        }
    }
}

/// What to switch: the whole workflow, or one trigger.
#[derive(Clone, Copy, Debug)]
pub enum Switch<'a> {
    Workflow,
    Trigger(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("no {0}")]
    NotFound(String),
    #[error("another deploy of this workflow happened at the same time; try again")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SwitchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => SwitchError::Conflict,
            other => SwitchError::Store(other),
        }
    }
}

impl Deployments {
    /// Turns `what` of workflow `id` on or off; answers the record as it is now (the same
    /// revision when nothing changed).
    pub async fn switch(
        &self,
        store: &dyn Store,
        id: &str,
        what: Switch<'_>,
        on: bool,
        now: Timestamp,
    ) -> Result<Arc<WorkflowRecord>, SwitchError> {
        let previous = store
            .workflow(id, None)
            .await?
            .filter(|p| !p.removed)
            .ok_or_else(|| SwitchError::NotFound(format!("workflow `{id}`")))?;
        let mut switches = previous.switches.clone();
        match what {
            Switch::Workflow => switches.disabled = !on,
            Switch::Trigger(t) => {
                if !previous.definition.triggers.iter().any(|x| x.id() == t) {
                    let known: Vec<&str> = previous
                        .definition
                        .triggers
                        .iter()
                        .map(|x| x.id())
                        .collect();
                    return Err(SwitchError::NotFound(format!(
                        "trigger `{t}` in workflow `{id}` (it has {})",
                        known.join(", ")
                    )));
                }
                if on {
                    switches.triggers_off.remove(t);
                } else {
                    switches.triggers_off.insert(t.to_string());
                }
            }
        }
        if switches == previous.switches {
            let rec = Arc::new(previous);
            self.install(rec.clone());
            return Ok(rec);
        }
        let record = WorkflowRecord {
            revision: previous.revision + 1,
            deployed_at: now,
            switches,
            ..previous.clone()
        };
        self.pause_schedules(&previous, &record).await?;
        store.deploy(&record).await?;
        if let Err(e) = store.set_marker(DEPLOYED_MARKER, now).await {
            tracing::warn!(error = %e, "the deploy marker was not moved; other processes see this switch at their next full reload");
        }
        let rec = Arc::new(record);
        self.install(rec.clone());
        tracing::info!(workflow = %id, revision = rec.revision, switches = ?rec.switches, "workflow switched");
        Ok(rec)
    }

    /// Pauses or resumes the external schedules (EventBridge Scheduler) of the cron
    /// triggers whose switch changed; before the revision is stored, so that a failure
    /// leaves the old one and the switch can be asked again.
    async fn pause_schedules(
        &self,
        before: &WorkflowRecord,
        after: &WorkflowRecord,
    ) -> Result<(), StoreError> {
        let Some(schedules) = self.schedules() else {
            return Ok(());
        };
        for t in &after.definition.triggers {
            if let Trigger::Cron(c) = t
                && before.is_on(&c.id) != after.is_on(&c.id)
            {
                schedules.put(&after.id, c, after.is_on(&c.id)).await?;
            }
        }
        Ok(())
    }
}
