//! The one place that records what a step attempt did (succeeded, failed, skipped), and
//! the ways a run ends.

use serde_json::Value;

use super::Effect;
use crate::definition::{Step, Workflow};
use crate::run::{
    ErrorType, FailureClass, Run, RunStatus, StepError, StepExecution, StepStatus, TriggerKind,
};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// An attempt of a step whose result is being recorded.
pub(super) struct Attempt<'a> {
    pub step: &'a str,
    pub attempt: u32,
    pub started_at: Timestamp,
    /// The rendered request of an `http` step.
    pub request: Option<Value>,
}

impl<'a> Attempt<'a> {
    /// An attempt of the cursor's step that began and ended `now` (pure steps, waits).
    pub fn now(run: &Run, step: &'a str, now: Timestamp) -> Self {
        Attempt {
            step,
            attempt: run.cursor.attempt.max(1),
            started_at: now,
            request: None,
        }
    }

    pub(super) fn execution(
        self,
        status: StepStatus,
        output: Option<Value>,
        error: Option<StepError>,
        now: Timestamp,
    ) -> StepExecution {
        StepExecution {
            step_id: self.step.to_string(),
            attempt: self.attempt,
            status,
            request: self.request,
            output,
            error,
            started_at: self.started_at,
            finished_at: now,
            duration_ms: now.millis() - self.started_at.millis(),
        }
    }
}

/// How a step failed, for its execution (`step_error`) and for the run (`run_error`).
pub(super) struct Failure {
    pub class: FailureClass,
    pub error_type: ErrorType,
    pub step_error: String,
    pub run_error: String,
}

/// Records a step's success and its extracts, and moves the cursor past it (or fails the
/// run when an extract fails).
pub(super) fn succeed_step(
    wf: &Workflow,
    run: &mut Run,
    done: Attempt,
    output: Value,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let step = done.step.to_string();
    let exec = done.execution(StepStatus::Succeeded, Some(output), None, now);
    run.step_executions.push(exec);
    let idx = run.cursor.step;
    match extract(&wf.steps[idx], run) {
        Ok(writes) if writes.is_empty() => {}
        Ok(writes) => effects.push(Effect::WriteContext { writes }),
        Err(e) => {
            let why = format!("step `{step}`: extract: {e}");
            return fail_run(run, ErrorType::TemplateError, why, now, effects);
        }
    }
    run.cursor.step += 1;
    run.cursor.attempt = 0;
}

/// Records a failed attempt; the caller decides what follows (a retry, or the run's end).
pub(super) fn record_failure(
    run: &mut Run,
    tried: Attempt,
    output: Option<Value>,
    error: StepError,
    now: Timestamp,
) {
    let exec = tried.execution(StepStatus::Failed, output, Some(error), now);
    run.step_executions.push(exec);
}

/// Records a failed attempt that fails the run.
pub(super) fn fail_step(
    run: &mut Run,
    tried: Attempt,
    output: Option<Value>,
    failure: Failure,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let error = StepError {
        class: failure.class,
        message: failure.step_error,
    };
    record_failure(run, tried, output, error, now);
    fail_run(run, failure.error_type, failure.run_error, now, effects);
}

/// A step's template failed at run time: the step fails, and so does the run.
pub(super) fn template_failure(
    run: &mut Run,
    step: &Step,
    e: TemplateError,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let error_type = if e.is_limit() {
        ErrorType::TemplateLimit
    } else {
        ErrorType::TemplateError
    };
    let failure = Failure {
        class: FailureClass::Template,
        error_type,
        run_error: format!("step `{}`: {e}", step.id),
        step_error: e.0,
    };
    let tried = Attempt::now(run, &step.id, now);
    fail_step(run, tried, None, failure, now, effects);
}

/// A step whose `when` is false.
pub(super) fn skip_step(run: &mut Run, step: &str, now: Timestamp) {
    let skipped = Attempt {
        step,
        attempt: 0,
        started_at: now,
        request: None,
    };
    let exec = skipped.execution(StepStatus::Skipped, None, None, now);
    run.step_executions.push(exec);
    run.cursor.step += 1;
}

/// The largest value of a context store key, in bytes.
pub const CONTEXT_VALUE_LIMIT: usize = 32 * 1024;

/// Renders the step's `extract` into the run's context, and its `extract_to_context` into
/// the run's view of the store; returns the store writes to perform.
fn extract(step: &Step, run: &mut Run) -> Result<ContextWrites, TemplateError> {
    if step.extract.is_empty() && step.extract_to_context.is_empty() {
        return Ok(ContextWrites::new());
    }
    let mut ctx = run.template_context();
    let output = run
        .step_outputs()
        .get(&step.id)
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(obj) = ctx.as_object_mut() {
        obj.insert("output".into(), output);
    }
    for (k, tpl) in &step.extract {
        let v = template::render_value(tpl, &ctx)?;
        run.context.insert(k.clone(), v);
    }
    // All rendered before any is recorded: a template error writes none of them.
    let mut writes = Vec::new();
    for (k, tpl) in &step.extract_to_context {
        let v = match template::render_value(tpl, &ctx)? {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        };
        if let Some(v) = &v
            && v.len() > CONTEXT_VALUE_LIMIT
        {
            return Err(TemplateError(format!(
                "extract_to_context `{k}` is {} bytes, over the context store's limit of {CONTEXT_VALUE_LIMIT} per value",
                v.len()
            )));
        }
        writes.push((k.clone(), v));
    }
    let mut out = ContextWrites::new();
    for (k, v) in writes {
        let store = run.store.get_or_insert_with(Default::default);
        match &v {
            Some(v) => store.insert(k.clone(), v.clone()),
            None => store.remove(&k),
        };
        out.insert(k, v);
    }
    Ok(out)
}

/// Context-store keys to write (`None` deletes one).
type ContextWrites = std::collections::BTreeMap<String, Option<String>>;

/// Every step has run: the run's output (and a cron run's next state) are rendered, and
/// the run succeeds.
pub(super) fn finish_succeeded(
    wf: &Workflow,
    run: &mut Run,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let output = match &wf.output {
        Some(tpl) => template::render_value(tpl, &crate::run::TemplateView(run)),
        None => Ok(last_output(run)),
    };
    let out = match output {
        Ok(out) => out,
        Err(e) => {
            let why = format!("output: {e}");
            return fail_run(run, ErrorType::TemplateError, why, now, effects);
        }
    };
    if run.trigger.kind == TriggerKind::Cron {
        match next_state(wf, run, &out) {
            Ok(state) => {
                if let Some(value) = &state {
                    effects.push(Effect::SaveState {
                        value: value.clone(),
                    });
                }
                run.next_state = state;
            }
            Err(e) => {
                let why = format!("state: {e}");
                return fail_run(run, ErrorType::TemplateError, why, now, effects);
            }
        }
    }
    run.final_output = Some(out);
    end(run, RunStatus::Succeeded, now, effects);
}

pub(super) fn fail_run(
    run: &mut Run,
    error_type: ErrorType,
    error: String,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    run.error_type = Some(error_type);
    run.error = Some(error);
    end(run, RunStatus::Failed, now, effects);
}

pub(super) fn finish_timed_out(run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    run.error_type = Some(ErrorType::TimedOut);
    run.error = Some("the run took longer than the workflow's max_duration".into());
    end(run, RunStatus::TimedOut, now, effects);
}

pub(super) fn cancel(run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    run.error_type = Some(ErrorType::Cancelled);
    run.error = Some("the run was cancelled".into());
    end(run, RunStatus::Cancelled, now, effects);
}

/// Every end goes through here: the runs the end starts are admitted, then the end is
/// written.
fn end(run: &mut Run, status: RunStatus, now: Timestamp, effects: &mut Vec<Effect>) {
    run.status = status;
    run.finished_at = Some(now);
    run.cursor.retry_at = None;
    // The lanes' executions are recorded; results still out are dropped.
    run.cursor.fan = None;
    effects.push(Effect::StartFlows);
    effects.push(Effect::Finish { status });
}

fn last_output(run: &Run) -> Value {
    run.step_executions
        .iter()
        .rev()
        .find(|e| e.status == StepStatus::Succeeded)
        .and_then(|e| e.output.clone())
        .unwrap_or(Value::Null)
}

/// The state a successful cron run leaves to the next: the workflow's `state` template
/// (which may read `output`), else the `state` field of the output; `None` leaves the
/// saved state as it is.
fn next_state(wf: &Workflow, run: &Run, output: &Value) -> Result<Option<Value>, TemplateError> {
    match &wf.state {
        Some(tpl) => {
            let mut ctx = run.template_context();
            ctx["output"] = output.clone();
            template::render_value(tpl, &ctx).map(Some)
        }
        None => Ok(output.get("state").cloned()),
    }
}

pub(super) fn past_deadline(run: &Run, now: Timestamp) -> bool {
    run.cursor.deadline.is_some_and(|d| now >= d)
}

/// Whether a result is for the attempt the run is waiting on (else it is a duplicate or
/// late, and changes nothing).
pub(super) fn is_current(wf: &Workflow, run: &Run, step: &str, attempt: u32) -> bool {
    run.status == RunStatus::Running
        && run.cursor.retry_at.is_none()
        && wf.steps.get(run.cursor.step).is_some_and(|s| s.id == step)
        && run.cursor.attempt == attempt
}
