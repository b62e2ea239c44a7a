//! Runs steps from the cursor on until one needs the outside world or the run ends.

use super::Effect;
use super::record;
use super::steps::{self, Then};
use crate::definition::{Action, Workflow};
use crate::run::{ErrorType, Run, RunStatus};
use crate::template;
use crate::time::Timestamp;

/// `Started`: the executor picked up the run.
pub(super) fn start(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    if run.status != RunStatus::Queued {
        return resume(wf, run, now, effects);
    }
    run.status = RunStatus::Running;
    run.claimed_at = Some(now);
    run.started_at = Some(now);
    run.cursor.deadline = wf.max_duration.map(|d| now.plus(d.std()));
    advance(wf, run, now, effects);
}

/// `Continue`: a timer fired, or a delivery was repeated. A waiting run looks at its wait;
/// a run in back-off retries when it is time; a step in flight is issued again (its
/// idempotency key lets the downstream drop the duplicate).
pub(super) fn resume(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    if run.status == RunStatus::Queued {
        return start(wf, run, now, effects);
    }
    if record::past_deadline(run, now) {
        record::finish_timed_out(run, now, effects);
    } else if run.cursor.fan.is_some() {
        if let Then::Next = steps::fan::resume(wf, run, now, effects) {
            advance(wf, run, now, effects);
        }
    } else if run.status == RunStatus::Waiting {
        steps::waits::continue_waiting(wf, run, now, effects);
    } else if let Some(at) = run.cursor.retry_at.filter(|at| *at > now) {
        effects.push(Effect::ScheduleTimer { at });
    } else if run.cursor.retry_at.is_some() {
        run.cursor.retry_at = None;
        run.cursor.attempt += 1;
        steps::http::issue(wf, run, now, effects);
    } else if run.cursor.attempt == 0 {
        advance(wf, run, now, effects);
    } else {
        steps::http::issue(wf, run, now, effects);
    }
}

/// Runs steps from the cursor on until one needs I/O or the run ends.
pub(super) fn advance(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    if record::past_deadline(run, now) {
        record::finish_timed_out(run, now, effects);
        return;
    }
    while let Some(step) = wf.steps.get(run.cursor.step) {
        if let Some(when) = &step.when {
            match template::eval_condition(when, &run.template_context()) {
                Ok(true) => {}
                Ok(false) => {
                    record::skip_step(run, &step.id, now);
                    continue;
                }
                Err(e) => {
                    let why = format!("step `{}`: when: {e}", step.id);
                    record::fail_run(run, ErrorType::TemplateError, why, now, effects);
                    return;
                }
            }
        }
        run.cursor.attempt = 1;
        let then = match &step.action {
            Action::Http(_) | Action::TriggerWorkflow(_) => {
                steps::http::issue(wf, run, now, effects);
                Then::Stop
            }
            Action::WaitForWebhook(_) => steps::waits::start_webhook(run, step, now, effects),
            Action::Approval(a) => steps::waits::start_approval(run, step, a, now, effects),
            Action::Delay(d) => steps::delay::start(wf, run, step, d, now, effects),
            Action::Transform { value } => {
                steps::pure::transform(wf, run, step, value, now, effects)
            }
            Action::Fail { message } => steps::pure::fail(run, step, message, now, effects),
            Action::Map(_) | Action::Parallel(_) => steps::fan::start(wf, run, step, now, effects),
        };
        match then {
            Then::Next => continue,
            Then::Stop => return,
        }
    }
    record::finish_succeeded(wf, run, now, effects);
}
