//! `trigger_workflow` steps: the run they start, and waiting for its end.

use serde_json::{Value, json};

use super::waits::{child_check, fail_wait, succeed_wait, waiting_step};
use crate::definition::{Action, Workflow};
use crate::engine::Effect;
use crate::engine::advance::advance;
use crate::engine::record::{self, Attempt, Failure};
use crate::run::{ErrorType, FailureClass, Run, RunStatus, WaitReason};
use crate::time::Timestamp;

/// `ChildStarted`: the run the step asked for is recorded. With `wait`, the run parks
/// until that run ends; without, its id is the step's output.
pub(in crate::engine) fn started(
    wf: &Workflow,
    run: &mut Run,
    step: &str,
    run_id: String,
    workflow: String,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let attempt = run.cursor.attempt;
    if !record::is_current(wf, run, step, attempt) {
        return;
    }
    let Some(Action::TriggerWorkflow(t)) = wf.steps.get(run.cursor.step).map(|s| &s.action) else {
        return;
    };
    if !run.children.contains(&run_id) {
        run.children.push(run_id.clone());
    }
    if t.wait {
        run.status = RunStatus::Waiting;
        run.waiting_reason = Some(WaitReason::Workflow);
        run.waiting_payload = Some(json!({"step": step, "run_id": run_id, "workflow": workflow}));
        run.waiting_expires_at = None;
        effects.push(Effect::Park {
            step: step.to_string(),
            reason: WaitReason::Workflow,
            until: Some(child_check(run, now)),
        });
    } else {
        let output = json!({"run_id": run_id, "workflow": workflow});
        let done = Attempt {
            step,
            attempt,
            started_at: now,
            request: None,
        };
        record::succeed_step(wf, run, done, output, now, effects);
        if !run.status.is_terminal() {
            advance(wf, run, now, effects);
        }
    }
}

/// `ChildEnded`: the run this one waits for ended; its output is the step's output, or
/// its failure fails the step.
#[allow(clippy::too_many_arguments)]
pub(in crate::engine) fn ended(
    wf: &Workflow,
    run: &mut Run,
    child: &str,
    status: RunStatus,
    output: Option<Value>,
    error: Option<String>,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let waits_for_this =
        run.status == RunStatus::Waiting && run.waiting_child().map(|(id, _)| id) == Some(child);
    if !waits_for_this || !status.is_terminal() {
        return;
    }
    if status == RunStatus::Succeeded {
        return succeed_wait(wf, run, output.unwrap_or(Value::Null), now, effects);
    }
    let Some(step) = waiting_step(wf, run).map(|s| s.id.clone()) else {
        return;
    };
    let workflow = run
        .waiting_child()
        .map(|(_, workflow)| workflow.to_string())
        .unwrap_or_default();
    let why = error.map(|e| format!(": {e}")).unwrap_or_default();
    let message = format!(
        "step `{step}`: the run {child} of workflow `{workflow}` ended {}{why}",
        status.as_str()
    );
    let failure = Failure {
        class: FailureClass::Request,
        error_type: ErrorType::StepFailed,
        step_error: message.clone(),
        run_error: message,
    };
    fail_wait(
        run,
        &step,
        json!({"run_id": child, "status": status}),
        failure,
        now,
        effects,
    );
}
