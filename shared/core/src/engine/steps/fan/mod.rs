//! `map` and `parallel` steps: lanes (a map's items, a parallel's branches) that each run
//! a short sequence of steps, up to a bound at a time, and join into one output.
//!
//! A lane's steps are recorded as executions named `step[item].inner` (`step[branch].inner`
//! for a branch), each with its own attempts and its own idempotency key
//! `{run_id}:step[item].inner`. The cursor's [`Fan`] says where each lane stands; the
//! lanes' `http` attempts go out together in one [`Effect::RunSteps`], and each report
//! may start the next attempts at once (the caller adds them to those out), so the bound
//! holds without waiting for the slowest of a batch.

use serde_json::{Value, json};

mod lane;

use self::lane::{LaneFailure, failure_message, issue, step_lane, template_error};
use super::Then;
use crate::definition::MAP_MAX_ITEMS;
use crate::definition::{Action, OnItemFailure, Step, Workflow};
use crate::engine::record::{self, Attempt};
use crate::engine::retry::{jitter_unit, retries_on};
use crate::engine::{Effect, StepCall};
use crate::run::{ErrorType, Fan, Lane, Run, RunStatus, StepError, StepStatus};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// Whether a reported step is a lane's (`step[item].inner`).
pub(in crate::engine) fn is_lane_step(step: &str) -> bool {
    step.contains('[')
}

/// What a `map` or `parallel` step is, for its lanes.
struct Shape<'a> {
    step: &'a Step,
    /// Lanes in all: items, or branches.
    total: usize,
    /// How many lanes run at the same time.
    width: usize,
    on_failure: OnItemFailure,
}

impl<'a> Shape<'a> {
    /// The step the cursor is on, when the run is running its lanes (read in place: a
    /// report must not copy every lane and item).
    fn current(wf: &'a Workflow, run: &Run) -> Option<Self> {
        if run.status != RunStatus::Running {
            return None;
        }
        let fan = run.cursor.fan.as_ref()?;
        let step = wf.steps.get(run.cursor.step)?;
        let (total, width, on_failure) = match &step.action {
            Action::Map(m) => (fan.items.len(), m.concurrency.max(1) as usize, m.on_failure),
            Action::Parallel(p) => (p.branches.len(), p.branches.len(), p.on_failure),
            _ => return None,
        };
        Some(Shape {
            step,
            total,
            width,
            on_failure,
        })
    }

    /// The steps lane `i` runs.
    fn steps(&self, i: usize) -> &'a [Step] {
        match &self.step.action {
            Action::Map(m) => &m.steps,
            Action::Parallel(p) => p.branches.get(i).map_or(&[], |b| &b.steps),
            _ => &[],
        }
    }

    /// Lane `i` as it appears in executions' names: the item's index, or the branch's id.
    fn key(&self, i: usize) -> String {
        match &self.step.action {
            Action::Parallel(p) => p.branches.get(i).map_or(String::new(), |b| b.id.clone()),
            _ => i.to_string(),
        }
    }

    /// Lane `i` in a message: `item 3`, or `branch `slack``.
    fn name(&self, i: usize) -> String {
        match &self.step.action {
            Action::Parallel(_) => format!("branch `{}`", self.key(i)),
            _ => format!("item {i}"),
        }
    }

    fn execution_id(&self, i: usize, inner: &str) -> String {
        format!("{}[{}].{inner}", self.step.id, self.key(i))
    }
}

/// Starts a `map` or `parallel` step: its items are read, and its first lanes run.
pub(in crate::engine) fn start(
    wf: &Workflow,
    run: &mut Run,
    step: &Step,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    let items = match &step.action {
        Action::Map(m) => match map_items(&m.items, &run.template_context()) {
            Ok(items) => items,
            Err(e) => {
                record::template_failure(run, step, e, now, effects);
                return Then::Stop;
            }
        },
        _ => Vec::new(),
    };
    run.cursor.fan = Some(Fan {
        items,
        lanes: Vec::new(),
    });
    pump(wf, run, now, effects)
}

/// A map's `items`: an array of at most [`MAP_MAX_ITEMS`].
fn map_items(expr: &str, ctx: &Value) -> Result<Vec<Value>, TemplateError> {
    match template::eval(expr, ctx).map_err(|e| e.in_field("items"))? {
        Value::Array(items) if items.len() > MAP_MAX_ITEMS => Err(TemplateError(format!(
            "`items` gave {} items; a map step takes at most {MAP_MAX_ITEMS}: split the array, or start a run for each item with a flow trigger's `for_each`",
            items.len()
        ))),
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(TemplateError(format!(
            "`items` must give an array, and `{expr}` gave {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `Continue` while lanes run: attempts that were out when the run was last written are
/// issued again (their idempotency keys let the downstream drop duplicates), retries that
/// are due go out, and the lanes go on.
pub(in crate::engine) fn resume(
    wf: &Workflow,
    run: &mut Run,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    let Some(shape) = Shape::current(wf, run) else {
        run.cursor.fan = None;
        return Then::Next;
    };
    let out: Vec<(usize, u32)> = lanes(run)
        .iter()
        .enumerate()
        .filter(|(_, l)| l.in_flight())
        .map(|(i, l)| (i, l.attempt))
        .collect();
    let mut calls = Vec::new();
    for (i, attempt) in out {
        match issue(wf, run, &shape, i, attempt, now) {
            Ok(call) => calls.push(call),
            Err(e) => {
                let failure = template_error(run, &shape, i, e);
                if let Then::Stop = lane_failed(run, &shape, i, failure, now, effects) {
                    return Then::Stop;
                }
            }
        }
    }
    pump_with(wf, run, &shape, calls, now, effects)
}

/// A lane's `http` attempt reported: recorded, retried or failed by the step's `retry`,
/// and the lanes go on (the run too, when this was the last).
pub(in crate::engine) fn reported(
    wf: &Workflow,
    run: &mut Run,
    done: Attempt,
    outcome: Result<Value, (StepError, Option<Value>)>,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let Some(shape) = Shape::current(wf, run) else {
        return;
    };
    let Some(i) = lane_reported(&shape, lanes(run), done.step, done.attempt) else {
        return;
    };
    if record::past_deadline(run, now) {
        return record::finish_timed_out(run, now, effects);
    }
    let inner = &shape.steps(i)[lanes(run)[i].step];
    match outcome {
        Ok(output) => {
            let exec = done.execution(StepStatus::Succeeded, Some(output), None, now);
            run.step_executions.push(exec);
            let lane = lane_mut(run, i);
            lane.step += 1;
            lane.attempt = 0;
        }
        Err((error, output)) => {
            let attempt = done.attempt;
            let retry = inner
                .retry
                .as_ref()
                .filter(|r| attempt < r.max_attempts && retries_on(&r.on, error.class));
            let step_name = done.step.to_string();
            let why = failure_message(&error, attempt);
            let class = error.class;
            record::record_failure(run, done, output, error, now);
            match retry {
                Some(r) => {
                    let wait =
                        r.delay_before(attempt + 1, jitter_unit(&run.id, &step_name, attempt));
                    let at = run
                        .cursor
                        .deadline
                        .map_or(now.plus(wait), |d| d.min(now.plus(wait)));
                    lane_mut(run, i).retry_at = Some(at);
                }
                None => {
                    let failure = LaneFailure {
                        step: inner.id.clone(),
                        error_type: ErrorType::StepFailed,
                        message: why,
                        class,
                    };
                    if let Then::Stop = lane_failed(run, &shape, i, failure, now, effects) {
                        return;
                    }
                }
            }
        }
    }
    if let Then::Next = pump(wf, run, now, effects) {
        super::super::advance::advance(wf, run, now, effects);
    }
}

/// The lanes of the fan the run is running.
fn lanes(run: &Run) -> &[Lane] {
    &run.cursor.fan.as_ref().expect("a fan is running").lanes
}

/// The lane a report is for, when it is the attempt that lane has out (else it is late
/// or repeated, and changes nothing).
fn lane_reported(shape: &Shape, lanes: &[Lane], step: &str, attempt: u32) -> Option<usize> {
    let rest = step
        .strip_prefix(shape.step.id.as_str())?
        .strip_prefix('[')?;
    let (key, inner) = rest.split_once("].")?;
    let i = match &shape.step.action {
        Action::Parallel(p) => p.branches.iter().position(|b| b.id == key)?,
        _ => key.parse().ok()?,
    };
    let lane = lanes.get(i)?;
    let current = shape.steps(i).get(lane.step)?;
    (lane.in_flight() && lane.attempt == attempt && current.id == inner).then_some(i)
}

fn lane_mut(run: &mut Run, i: usize) -> &mut Lane {
    &mut run.cursor.fan.as_mut().expect("a fan is running").lanes[i]
}

/// Starts lanes up to the bound and runs each ready one to its next `http` attempt or its
/// end; asks for the attempts, a timer for the next retry, or ends the step.
pub(in crate::engine) fn pump(
    wf: &Workflow,
    run: &mut Run,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    match Shape::current(wf, run) {
        Some(shape) => pump_with(wf, run, &shape, Vec::new(), now, effects),
        None => Then::Stop,
    }
}

fn pump_with(
    wf: &Workflow,
    run: &mut Run,
    shape: &Shape,
    mut calls: Vec<StepCall>,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    if record::past_deadline(run, now) {
        record::finish_timed_out(run, now, effects);
        return Then::Stop;
    }
    loop {
        open_lanes(run, shape);
        let ready = ready_lanes(run, now);
        if ready.is_empty() {
            break;
        }
        for i in ready {
            match step_lane(wf, run, shape, i, now, effects) {
                Ok(Some(call)) => calls.push(call),
                Ok(None) => {}
                Err(()) => return Then::Stop,
            }
        }
    }
    if !calls.is_empty() {
        effects.push(Effect::RunSteps { calls });
        return Then::Stop;
    }
    let lanes = &run.cursor.fan.as_ref().expect("a fan is running").lanes;
    if lanes.iter().any(Lane::in_flight) {
        return Then::Stop;
    }
    if let Some(at) = lanes.iter().filter_map(|l| l.retry_at).min() {
        effects.push(Effect::ScheduleTimer { at });
        return Then::Stop;
    }
    join(wf, run, shape, now, effects)
}

/// Starts new lanes while fewer than the bound are running and items are left.
fn open_lanes(run: &mut Run, shape: &Shape) {
    let fan = run.cursor.fan.as_mut().expect("a fan is running");
    let mut running = fan.lanes.iter().filter(|l| !l.ended()).count();
    while running < shape.width && fan.lanes.len() < shape.total {
        fan.lanes.push(Lane::default());
        running += 1;
    }
}

/// Lanes whose next step can start now: a new step, or a retry that is due.
fn ready_lanes(run: &Run, now: Timestamp) -> Vec<usize> {
    let fan = run.cursor.fan.as_ref().expect("a fan is running");
    fan.lanes
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.ended() && (l.attempt == 0 || l.retry_at.is_some_and(|at| at <= now)))
        .map(|(i, _)| i)
        .collect()
}

/// Lane `i` failed: with `fail_fast` the run fails (`Stop`); with `collect` the lane ends
/// with `{"error": …}` as its output and the others go on (`Next`).
fn lane_failed(
    run: &mut Run,
    shape: &Shape,
    i: usize,
    failure: LaneFailure,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    match shape.on_failure {
        OnItemFailure::FailFast => {
            let inner = if failure.step.is_empty() {
                String::new()
            } else {
                format!(", step `{}`", failure.step)
            };
            let why = format!(
                "step `{}`, {}{inner}: {}",
                shape.step.id,
                shape.name(i),
                failure.message
            );
            record::fail_run(run, failure.error_type, why, now, effects);
            Then::Stop
        }
        OnItemFailure::Collect => {
            lane_mut(run, i).result = Some(json!({"error": {
                "step": failure.step,
                "type": failure.error_type.as_str(),
                "message": failure.message,
            }}));
            Then::Next
        }
    }
}

/// Every lane has ended: the step's output is their outputs (in order for a map, by
/// branch for a parallel), recorded as the step's execution; the run goes on.
fn join(
    wf: &Workflow,
    run: &mut Run,
    shape: &Shape,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    let fan = run.cursor.fan.take().expect("a fan is running");
    let results = fan
        .lanes
        .into_iter()
        .map(|l| l.result.unwrap_or(Value::Null));
    let output = match &shape.step.action {
        Action::Parallel(p) => Value::Object(
            p.branches
                .iter()
                .map(|b| b.id.clone())
                .zip(results)
                .collect(),
        ),
        _ => Value::Array(results.collect()),
    };
    let done = Attempt::now(run, &shape.step.id, now);
    record::succeed_step(wf, run, done, output, now, effects);
    if run.status.is_terminal() {
        Then::Stop
    } else {
        Then::Next
    }
}
