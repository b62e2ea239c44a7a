//! Flow triggers' pure rules: which workflows listen to which ends, the loops a deploy
//! must refuse, and the trigger input of a run that an end starts.

use std::collections::{HashMap, VecDeque};

use serde_json::{Value, json};

use crate::definition::{FlowTrigger, Trigger, Workflow};
use crate::run::Run;

/// The trigger input of a flow run: the ended run's output (or one item of it) as `body`,
/// its status and error, the parent run, and the item's position; and what a failure
/// handler needs to act on the failure: the ended run's own trigger input (`input`), its
/// `context`, and the step that failed last (`failed_step`: its id, attempt, error and
/// the last response it got, already capped where it was recorded).
pub fn flow_input(run: &Run, body: Value, index: Option<usize>) -> Value {
    let error = run
        .error
        .as_ref()
        .map(|m| json!({"type": run.error_type, "message": m}));
    let failed_step = run
        .step_executions
        .iter()
        .rev()
        .find(|e| e.status == crate::run::StepStatus::Failed)
        .filter(|_| run.status != crate::run::RunStatus::Succeeded)
        .map(|e| {
            json!({
                "id": e.step_id,
                "attempt": e.attempt,
                "error": e.error,
                "response": e.output,
            })
        });
    json!({
        "body": body,
        "status": run.status.as_str(),
        "error": error,
        "input": run.trigger_input,
        "context": run.context,
        "failed_step": failed_step,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Format, load};

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
}
