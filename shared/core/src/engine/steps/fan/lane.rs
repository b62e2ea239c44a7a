//! One lane of a `map` or `parallel` step: its steps run in order, pure ones here, `http`
//! ones rendered for the caller; what its templates see; how it fails.

use serde_json::{Value, json};

use super::{Shape, lane_failed, lane_mut};
use crate::definition::{Action, Step, Workflow};
use crate::engine::record::Attempt;
use crate::engine::steps::Then;
use crate::engine::steps::http::render_http;
use crate::engine::{DEFAULT_STEP_TIMEOUT, Effect, StepCall, SuccessRule};
use crate::run::{ErrorType, FailureClass, Run, StepError, StepStatus};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// Runs lane `i` from its next step: a due retry goes out again; pure steps run here,
/// until an `http` step's attempt is to go out (returned) or the lane ends. `Err` when a
/// failing lane failed the run.
pub(super) fn step_lane(
    wf: &Workflow,
    run: &mut Run,
    shape: &Shape,
    i: usize,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Result<Option<StepCall>, ()> {
    let lane = lane_mut(run, i);
    if lane.retry_at.take().is_some() {
        lane.attempt += 1;
        let attempt = lane.attempt;
        return match issue(wf, run, shape, i, attempt, now) {
            Ok(call) => Ok(Some(call)),
            Err(e) => {
                let failure = template_error(run, shape, i, e);
                stop_if_failed(lane_failed(run, shape, i, failure, now, effects))
            }
        };
    }
    let steps = shape.steps(i);
    loop {
        let at = run.cursor.fan.as_ref().expect("a fan is running").lanes[i].step;
        let Some(inner) = steps.get(at) else {
            let output = lane_output(run, shape, i, steps);
            lane_mut(run, i).result = Some(output);
            return Ok(None);
        };
        let exec = shape.execution_id(i, &inner.id);
        match run_inner(wf, run, shape, i, inner, now) {
            Inner::Skipped => {
                record_lane(run, &exec, 0, StepStatus::Skipped, None, None, now);
                lane_mut(run, i).step += 1;
            }
            Inner::Succeeded(output) => {
                record_lane(
                    run,
                    &exec,
                    1,
                    StepStatus::Succeeded,
                    Some(output),
                    None,
                    now,
                );
                lane_mut(run, i).step += 1;
            }
            Inner::Call(call) => {
                lane_mut(run, i).attempt = 1;
                return Ok(Some(call));
            }
            Inner::Failed(failure) => {
                let error = Some(failure.step_error());
                record_lane(run, &exec, 1, StepStatus::Failed, None, error, now);
                return stop_if_failed(lane_failed(run, shape, i, failure, now, effects));
            }
        }
    }
}

/// What starting one of a lane's steps came to.
enum Inner {
    /// Its `when` was false.
    Skipped,
    /// A pure step, done.
    Succeeded(Value),
    /// An `http` step's first attempt, to go out.
    Call(StepCall),
    Failed(LaneFailure),
}

fn run_inner(
    wf: &Workflow,
    run: &Run,
    shape: &Shape,
    i: usize,
    inner: &Step,
    now: Timestamp,
) -> Inner {
    let ctx = lane_context(run, shape, i);
    if let Some(when) = &inner.when {
        match template::eval_condition(when, &ctx) {
            Ok(true) => {}
            Ok(false) => return Inner::Skipped,
            Err(e) => {
                let e = TemplateError(format!("when: {e}"));
                return Inner::Failed(LaneFailure::template(&inner.id, e));
            }
        }
    }
    match &inner.action {
        Action::Transform { value } => match template::render_value(value, &ctx) {
            Ok(output) => Inner::Succeeded(output),
            Err(e) => Inner::Failed(LaneFailure::template(&inner.id, e)),
        },
        Action::Fail { message } => {
            let msg = template::render_string(message, &ctx)
                .unwrap_or_else(|e| format!("{message} (the message template failed: {e})"));
            Inner::Failed(LaneFailure {
                step: inner.id.clone(),
                error_type: ErrorType::FailStep,
                message: msg,
                class: FailureClass::Request,
            })
        }
        _ => match issue(wf, run, shape, i, 1, now) {
            Ok(call) => Inner::Call(call),
            Err(e) => Inner::Failed(LaneFailure::template(&inner.id, e)),
        },
    }
}

fn stop_if_failed(then: Then) -> Result<Option<StepCall>, ()> {
    match then {
        Then::Stop => Err(()),
        Then::Next => Ok(None),
    }
}

/// Renders lane `i`'s current `http` step as attempt `attempt`.
pub(super) fn issue(
    wf: &Workflow,
    run: &Run,
    shape: &Shape,
    i: usize,
    attempt: u32,
    now: Timestamp,
) -> Result<StepCall, TemplateError> {
    let at = run.cursor.fan.as_ref().expect("a fan is running").lanes[i].step;
    let inner = &shape.steps(i)[at];
    let Action::Http(h) = &inner.action else {
        return Err(TemplateError(format!(
            "a `{}` step cannot run inside a `{}` step",
            inner.action.kind(),
            shape.step.action.kind()
        )));
    };
    let exec = shape.execution_id(i, &inner.id);
    let mut ctx = lane_context(run, shape, i);
    ctx["run"]["attempt"] = json!(attempt);
    let request = render_http(wf, h, &ctx, format!("{}:{exec}", run.id))?;
    let mut timeout = inner.timeout.map_or(DEFAULT_STEP_TIMEOUT, |t| t.std());
    if let Some(d) = run.cursor.deadline {
        timeout = timeout.min(d.since(now));
    }
    Ok(StepCall {
        step: exec,
        attempt,
        request,
        timeout,
        success: SuccessRule(h.success_status.clone()),
    })
}

/// What lane `i`'s templates see: the run's, with `item` and `index` (a map's) or
/// `branch` (a parallel's), and the outputs of the lane's steps before in `steps`.
fn lane_context(run: &Run, shape: &Shape, i: usize) -> Value {
    let mut ctx = run.template_context();
    let fan = run.cursor.fan.as_ref().expect("a fan is running");
    let prefix = format!("{}[{}].", shape.step.id, shape.key(i));
    if let Some(steps) = ctx.get_mut("steps").and_then(Value::as_object_mut) {
        for e in &run.step_executions {
            if e.status == StepStatus::Succeeded
                && let Some(inner) = e.step_id.strip_prefix(&prefix)
            {
                steps.insert(inner.to_string(), e.output.clone().unwrap_or(Value::Null));
            }
        }
    }
    let (item, branch) = match &shape.step.action {
        Action::Parallel(_) => (Value::Null, json!(shape.key(i))),
        _ => (
            fan.items.get(i).cloned().unwrap_or(Value::Null),
            Value::Null,
        ),
    };
    ctx["item"] = item;
    ctx["index"] = json!(i);
    ctx["branch"] = branch;
    ctx
}

/// A lane's output: its last step's that ran (`null` when every step was skipped).
fn lane_output(run: &Run, shape: &Shape, i: usize, steps: &[Step]) -> Value {
    steps
        .iter()
        .rev()
        .find_map(|s| {
            let id = shape.execution_id(i, &s.id);
            run.step_executions
                .iter()
                .rev()
                .find(|e| e.step_id == id && e.status == StepStatus::Succeeded)
                .map(|e| e.output.clone().unwrap_or(Value::Null))
        })
        .unwrap_or(Value::Null)
}

fn record_lane(
    run: &mut Run,
    exec: &str,
    attempt: u32,
    status: StepStatus,
    output: Option<Value>,
    error: Option<StepError>,
    now: Timestamp,
) {
    let done = Attempt {
        step: exec,
        attempt,
        started_at: now,
        request: None,
    };
    run.step_executions
        .push(done.execution(status, output, error, now));
}

/// How a lane failed.
pub(super) struct LaneFailure {
    /// The lane's step that failed.
    pub(super) step: String,
    pub(super) error_type: ErrorType,
    pub(super) message: String,
    pub(super) class: FailureClass,
}

impl LaneFailure {
    fn template(step: &str, e: TemplateError) -> Self {
        LaneFailure {
            step: step.to_string(),
            error_type: if e.is_limit() {
                ErrorType::TemplateLimit
            } else {
                ErrorType::TemplateError
            },
            message: e.0,
            class: FailureClass::Template,
        }
    }

    fn step_error(&self) -> StepError {
        StepError {
            class: self.class,
            message: self.message.clone(),
        }
    }
}

/// A template error found while issuing a retry or a repeated attempt of lane `i`'s step.
pub(super) fn template_error(run: &Run, shape: &Shape, i: usize, e: TemplateError) -> LaneFailure {
    let at = run.cursor.fan.as_ref().map_or(0, |f| f.lanes[i].step);
    let step = shape.steps(i).get(at).map_or("", |s| s.id.as_str());
    LaneFailure::template(step, e)
}

pub(super) fn failure_message(error: &StepError, attempt: u32) -> String {
    if attempt > 1 {
        format!("failed after {attempt} attempts: {}", error.message)
    } else {
        format!("failed: {}", error.message)
    }
}
