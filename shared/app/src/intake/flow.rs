//! Flow triggers: a run's end starts runs of the workflows whose `flow` trigger names its
//! workflow and status. The runs are admitted before the ended run's end is written, with
//! ids derived from (ended run, workflow, trigger, item), so a second admission (a crash
//! before the end was written, a duplicate delivery) recognizes them and starts nothing.

use std::collections::{HashMap, VecDeque};

use serde_json::{Value, json};
use sha2::Digest as _;
use tripline_core::definition::{FlowOn, FlowTrigger, Trigger, Workflow};
use tripline_core::run::{ParentRef, TriggerKind, TriggerRef};
use tripline_core::{Run, Timestamp};

use crate::App;
use crate::ports::{Admission, Admitted, IdempotencyClaim, InboxMessage, Outcome, StoreError};

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

/// The trigger input of a flow run: the ended run's output (or one item of it) as `body`,
/// its status and error, the parent run, and the item's position.
fn flow_input(run: &Run, body: Value, index: Option<usize>) -> Value {
    let error = run
        .error
        .as_ref()
        .map(|m| json!({"type": run.error_type, "message": m}));
    json!({
        "body": body,
        "status": run.status.as_str(),
        "error": error,
        "parent": {"run_id": run.id, "workflow": run.workflow},
        "index": index,
    })
}

/// The workflows that listen to `workflow`'s ends, by listened-to workflow: an edge
/// `source → listener` for each flow trigger.
fn listeners<'a>(workflows: impl Iterator<Item = &'a Workflow>) -> HashMap<String, Vec<String>> {
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for wf in workflows {
        for t in &wf.triggers {
            if let Trigger::Flow(f) = t {
                edges
                    .entry(f.workflow.clone())
                    .or_default()
                    .push(wf.id.clone());
            }
        }
    }
    edges
}

/// The loop `trigger` of `wf` would close among the deployed workflows (with `wf` in place
/// of its deployed revision), as the workflow ids along it, first and last the same.
pub fn flow_cycle<'a>(
    deployed: impl Iterator<Item = &'a Workflow>,
    wf: &'a Workflow,
    trigger: &FlowTrigger,
) -> Option<Vec<String>> {
    let edges = listeners(deployed.filter(|d| d.id != wf.id).chain([wf]));
    // A path from wf to the trigger's workflow, whose end then starts wf again.
    let mut came_from: HashMap<&str, &str> = HashMap::new();
    let mut queue = VecDeque::from([wf.id.as_str()]);
    while let Some(at) = queue.pop_front() {
        if at == trigger.workflow {
            let mut path = vec![at.to_string()];
            let mut cur = at;
            while cur != wf.id {
                cur = came_from[cur];
                path.push(cur.to_string());
            }
            path.reverse();
            path.push(wf.id.clone());
            return Some(path);
        }
        for next in edges.get(at).into_iter().flatten() {
            if next != &wf.id && !came_from.contains_key(next.as_str()) {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

impl App {
    /// Whether a deployed workflow has a flow trigger on `workflow` (as this process last
    /// saw the deploys).
    pub fn has_flow_listeners(&self, workflow: &str) -> bool {
        self.deployments.all().iter().any(|rec| {
            rec.definition
                .triggers
                .iter()
                .any(|t| matches!(t, Trigger::Flow(f) if f.workflow == workflow))
        })
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
        let ended = run.finished_at.unwrap_or_else(|| self.clock.now());
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
                    let input = flow_input(run, body, index);
                    let id = flow_run_id(&run.id, &rec.id, &f.id, index, ended);
                    let keyed =
                        self.claim_for(&rec.id, &f.id, f.idempotency_key.as_deref(), &input, None);
                    let unmet = match &keyed {
                        Err(why) => Some(why.clone()),
                        Ok(_) => crate::admission::unmet(
                            f.filter.as_ref(),
                            f.condition.as_deref(),
                            &input,
                        ),
                    };
                    let (outcome, runs) = match unmet {
                        Some(why) if keyed.is_err() => (Outcome::Rejected { reason: why }, vec![]),
                        Some(why) => (
                            Outcome::Filtered {
                                reason: format!("trigger `{}`: {why}", f.id),
                            },
                            vec![],
                        ),
                        None => {
                            let mut child = Run::new(
                                id.clone(),
                                &rec.id,
                                rec.revision,
                                TriggerRef {
                                    kind: TriggerKind::Flow,
                                    id: f.id.clone(),
                                },
                                input.clone(),
                                self.clock.now(),
                            );
                            child.message_id = Some(id.clone());
                            child.parent = Some(ParentRef {
                                run_id: run.id.clone(),
                                workflow: run.workflow.clone(),
                                step: String::new(),
                                flow: Some(f.id.clone()),
                            });
                            (
                                Outcome::Started {
                                    run_ids: vec![id.clone()],
                                },
                                vec![child],
                            )
                        }
                    };
                    let started = !runs.is_empty();
                    let message = InboxMessage {
                        id: id.clone(),
                        received_at: self.clock.now(),
                        workflow: rec.id.clone(),
                        trigger: f.id.clone(),
                        method: "POST".into(),
                        path: format!("/v1/runs/{}", run.id),
                        query: String::new(),
                        headers: vec![],
                        content_type: Some("application/json".into()),
                        body: serde_json::to_vec(&input).unwrap_or_default(),
                        outcome,
                        scheduled_at: None,
                        kafka: None,
                        reprocess_of: None,
                    };
                    // The trigger's own key when it has one (a second end with the same key
                    // starts nothing); else one per (ended run, item), so that admitting
                    // again after a crash starts nothing new.
                    let claim = keyed.ok().flatten().unwrap_or_else(|| IdempotencyClaim {
                        key: format!(
                            "{}/{}/flow:{}:{}",
                            rec.id,
                            f.id,
                            run.id,
                            index.map_or(String::new(), |i| i.to_string())
                        ),
                        expires_at: ended.plus(FLOW_CLAIM_WINDOW),
                    });
                    let admitted = self
                        .admit(Admission {
                            message,
                            runs,
                            idempotency: Some(claim),
                        })
                        .await?;
                    let child = match admitted {
                        Admitted::New { .. } => started.then_some(id),
                        Admitted::Duplicate { run_id } => Some(run_id),
                    };
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::validate::{Format, load};

    fn wf(text: &str) -> Workflow {
        load(text, Format::Yaml).expect("valid")
    }

    fn on(source: &str, id: &str) -> Workflow {
        wf(&format!(
            "id: {id}\ntriggers: [{{type: flow, workflow: {source}}}]\nsteps: [{{id: a, type: transform, value: 1}}]\n"
        ))
    }

    #[test]
    fn a_loop_is_found_with_its_path_and_a_chain_is_not_a_loop() {
        let deployed = [on("a", "b"), on("b", "c")];
        let a = on("c", "a");
        let t = match &a.triggers[0] {
            Trigger::Flow(f) => f.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            flow_cycle(deployed.iter(), &a, &t),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        let d = on("c", "d");
        let t = match &d.triggers[0] {
            Trigger::Flow(f) => f.clone(),
            _ => unreachable!(),
        };
        assert_eq!(flow_cycle(deployed.iter(), &d, &t), None);
        let own = on("x", "x");
        let t = match &own.triggers[0] {
            Trigger::Flow(f) => f.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            flow_cycle(std::iter::empty(), &own, &t),
            Some(vec!["x".into(), "x".into()])
        );
    }

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
