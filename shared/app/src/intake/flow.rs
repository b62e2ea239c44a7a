//! Flow triggers: a run's end starts runs of the workflows whose `flow` trigger names its
//! workflow and status. The runs are admitted before the ended run's end is written, with
//! ids derived from (ended run, workflow, trigger, item), so a second admission (a crash
//! before the end was written, a duplicate delivery) recognizes them and starts nothing.

use serde_json::Value;
use sha2::Digest as _;
use tripline_core::definition::{FlowOn, FlowTrigger, Trigger};
use tripline_core::flow::flow_input;
use tripline_core::run::{ParentRef, TriggerKind, TriggerRef};
use tripline_core::{Run, Timestamp};

use crate::App;
use crate::admission::Refused;
use crate::ports::{Admitted, IdempotencyClaim, InboxMessage, Outcome, StoreError, WorkflowRecord};

/// How long a flow run's admission is recognized (a crash retried much later still finds
/// it): as long as a `trigger_workflow` child's.
const FLOW_CLAIM_WINDOW: std::time::Duration = crate::executor::CHILD_CLAIM_WINDOW;

/// The id of the run (and of its inbox message) that `trigger` of `workflow` starts for
/// item `index` of the end of run `parent`, which ended at `ended`.
pub fn flow_run_id(
    parent: &str,
    workflow: &str,
    trigger: &str,
    index: Option<usize>,
    ended: Timestamp,
) -> String {
    let mut h = sha2::Sha256::new();
    for part in [parent, workflow, trigger] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(index.map_or(u64::MAX, |i| i as u64).to_be_bytes());
    crate::tokens::derived_ulid(ended.millis(), &h.finalize())
}

impl App {
    /// Whether a deployed workflow has a flow trigger on `workflow` (as this process last
    /// saw the deploys).
    pub fn has_flow_listeners(&self, workflow: &str) -> bool {
        self.deployments.listened_to(workflow)
    }

    /// Admits the runs that flow triggers start because `run` ended, and records them as
    /// its children. Called before the end is written (see the module's comment).
    pub(crate) async fn start_flows(&self, run: &mut Run) -> Result<(), StoreError> {
        let Some(on) = FlowOn::of(run.status) else {
            return Ok(());
        };
        // Where deploys happen elsewhere (AWS), look at the deploy marker now: a listener
        // deployed a moment ago must hear this end (one read per run end).
        self.refresh_workflows(true).await;
        for rec in self.deployments.all() {
            for t in &rec.definition.triggers {
                let Trigger::Flow(f) = t else { continue };
                if f.workflow != run.workflow || !f.on.contains(&on) {
                    continue;
                }
                let output = run.final_output.clone().unwrap_or(Value::Null);
                let items: Vec<(Option<usize>, Value)> = match output {
                    Value::Array(items) if f.for_each => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (Some(i), v))
                        .collect(),
                    other => vec![(None, other)],
                };
                for (index, body) in items {
                    let child = self.start_flow(run, &rec, f, index, body).await?;
                    if let Some(child) = child
                        && !child.is_empty()
                        && !run.children.contains(&child)
                    {
                        run.children.push(child);
                    }
                }
            }
        }
        Ok(())
    }

    /// One run of flow trigger `f` for the end of `run` (one item of its output with
    /// `for_each`): admitted through the trigger's gate, with an id and a claim derived
    /// from (ended run, workflow, trigger, item) so that admitting again starts nothing
    /// new. Returns the run started (or found) for it.
    async fn start_flow(
        &self,
        run: &Run,
        rec: &WorkflowRecord,
        f: &FlowTrigger,
        index: Option<usize>,
        body: Value,
    ) -> Result<Option<String>, StoreError> {
        let ended = run.finished_at.unwrap_or_else(|| self.clock.now());
        let input = flow_input(run, body, index);
        let id = flow_run_id(&run.id, &rec.id, &f.id, index, ended);
        let message = InboxMessage::new(id.clone(), self.clock.now(), &rec.id, &f.id, "POST")
            .at_path(format!("/v1/runs/{}", run.id))
            .with_json(&input);
        if let Some(reason) = rec.switched_off(&f.id) {
            self.record_message(message, Outcome::Skipped { reason })
                .await?;
            return Ok(None);
        }
        let keyed = match self.gate(&rec.id, &f.id, f.gate(), &input, None) {
            Ok(keyed) => keyed,
            Err(Refused::Filtered(why)) => {
                let reason = format!("trigger `{}`: {why}", f.id);
                self.record_message(message, Outcome::Filtered { reason })
                    .await?;
                return Ok(None);
            }
            Err(Refused::KeyFailed(reason)) => {
                self.record_message(message, Outcome::Rejected { reason })
                    .await?;
                return Ok(None);
            }
        };
        let trigger = TriggerRef {
            kind: TriggerKind::Flow,
            id: f.id.clone(),
        };
        let mut child = self.run_of_message(&message, rec, trigger, input);
        child.parent = Some(ParentRef {
            run_id: run.id.clone(),
            workflow: run.workflow.clone(),
            step: String::new(),
            flow: Some(f.id.clone()),
        });
        // The trigger's own key when it has one (a second end with the same key starts
        // nothing); else one per (ended run, item), so that admitting again after a crash
        // starts nothing new.
        let claim = keyed.unwrap_or_else(|| IdempotencyClaim {
            key: format!(
                "{}/{}/flow:{}:{}",
                rec.id,
                f.id,
                run.id,
                index.map_or(String::new(), |i| i.to_string())
            ),
            expires_at: ended.plus(FLOW_CLAIM_WINDOW),
            held_by_message: false,
        });
        Ok(
            match self.admit_runs(message, vec![child], Some(claim)).await? {
                Admitted::New { .. } => Some(id),
                Admitted::Duplicate { run_id } => Some(run_id),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_run_ids_are_the_same_each_time_and_differ_by_item() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let a = flow_run_id("r1", "b", "flow", Some(0), at);
        assert_eq!(a, flow_run_id("r1", "b", "flow", Some(0), at));
        assert_ne!(a, flow_run_id("r1", "b", "flow", Some(1), at));
        assert_ne!(a, flow_run_id("r1", "b", "flow", None, at));
        assert_ne!(a, flow_run_id("r2", "b", "flow", Some(0), at));
    }
}
