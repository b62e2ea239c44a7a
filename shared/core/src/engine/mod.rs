//! The run state machine: `apply(workflow, run, event, now) -> (run', effects)`.
//!
//! Pure: the engine renders templates and runs pure steps (`transform`, `fail`) itself, and
//! asks its caller, through effects, for everything that needs the outside world (an HTTP
//! call, a timer). The caller performs the effects, feeds the results back as events, and
//! stores the run with a write conditional on its version.
//!
//! Where things are: [`apply`] (here) hands each event to the file of what it is about:
//! `advance.rs` runs steps from the cursor on, `steps/` starts each kind of step
//! (`http.rs`, `waits.rs`, `delay.rs`, `child.rs`, `pure.rs`), `record.rs` is the one place
//! that records an attempt's result and ends a run, `retry.rs` decides retries, and
//! `callbacks.rs` delivers an ended run's callback.

mod advance;
mod callbacks;
#[cfg(test)]
mod fan_tests;
mod record;
mod retry;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde_json::Value;

use crate::definition::{HttpMethod, Workflow};
use crate::run::{Run, RunStatus, StepError, WaitReason};

use crate::time::Timestamp;

pub use record::CONTEXT_VALUE_LIMIT;
pub use steps::waits::{CHILD_CHECK_INTERVAL, expose, show_urls, token_hash, wait_notification};

/// The default per-attempt timeout of an `http` step.
pub const DEFAULT_STEP_TIMEOUT: StdDuration = StdDuration::from_secs(30);

/// The default per-attempt timeout of a callback delivery.
pub const DEFAULT_CALLBACK_TIMEOUT: StdDuration = StdDuration::from_secs(10);

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The executor picked up a queued run.
    Started,
    /// The run was picked up again: a retry timer fired, or a delivery repeated after a
    /// crash. The pending step is issued (again); a timer not yet due is scheduled again.
    Continue,
    StepSucceeded {
        step: String,
        attempt: u32,
        started_at: Timestamp,
        request: Value,
        output: Value,
    },
    StepFailed {
        step: String,
        attempt: u32,
        started_at: Timestamp,
        request: Value,
        error: StepError,
        output: Option<Value>,
    },
    /// The single-use `resume_url` of a `wait_for_webhook` step was called with `payload`.
    Resumed { payload: Value },
    /// A person decided an `approval` step.
    Decided {
        approved: bool,
        comment: Option<String>,
    },
    /// The run started by a `trigger_workflow` step was recorded.
    ChildStarted {
        step: String,
        run_id: String,
        workflow: String,
    },
    /// The run a `trigger_workflow` step waits for ended.
    ChildEnded {
        run_id: String,
        status: RunStatus,
        output: Option<Value>,
        error: Option<String>,
    },
    /// `POST /v1/runs/{id}/cancel`.
    Cancel,
    /// An attempt to deliver the run's callback is over.
    CallbackDone {
        attempt: u32,
        url: String,
        status: Option<u16>,
        error: Option<StepError>,
    },
}

/// An HTTP request, rendered.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HttpRequest {
    pub method: HttpMethod,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// `Idempotency-Key: {run_id}:{step_id}`, sent with every attempt.
    pub idempotency_key: String,
    /// The workflow's `allowed_hosts`: the sender refuses any other host, and follows no
    /// redirect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

/// True when `host` is one `allowed` names (`api.example.com`, or `*.example.com` for
/// any name under it), case-insensitively; an empty list allows every host.
pub fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.is_empty()
        || allowed.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                None => host == pattern,
            }
        })
}

// One effect at a time is in hand; its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Perform an HTTP step attempt and report `StepSucceeded` / `StepFailed`.
    RunStep {
        step: String,
        attempt: u32,
        request: HttpRequest,
        timeout: StdDuration,
        success: SuccessRule,
    },
    /// Perform these `http` attempts of a `map` or `parallel` step's lanes at the same
    /// time, reporting each as `StepSucceeded` / `StepFailed` as it ends. Applying a
    /// report may ask for more attempts (another `RunSteps`) while others are still out:
    /// they join those out.
    RunSteps { calls: Vec<StepCall> },
    /// Deliver `Continue` at `at` (retry back-off, a wait's end).
    ScheduleTimer { at: Timestamp },
    /// Write these keys of the workflow's context store (`None` deletes one): a step's
    /// `extract_to_context`. Before the run is written, so a crash repeats them and never
    /// loses them.
    WriteContext {
        writes: BTreeMap<String, Option<String>>,
    },
    /// Make the single-use URLs of the wait about to park (see [`expose`]): one secret of
    /// ≥ 128 bits per purpose, derived by the caller; the run keeps their hashes. Comes
    /// before its `Park`.
    Expose,
    /// The run is `waiting`: write it, and deliver `Continue` at `until` when there is
    /// one.
    Park {
        step: String,
        reason: WaitReason,
        until: Option<Timestamp>,
    },
    /// Send the parked step's notification (rendered by [`wait_notification`], once the
    /// URLs exist) and record how it went on the run. Comes after its `Park`.
    Notify { step: String },
    /// Record a run of `workflow` with `input` as its `trigger.body` (one per run and step,
    /// however often asked) and report `ChildStarted` (or `StepFailed` when it cannot).
    StartRun {
        step: String,
        workflow: String,
        input: Value,
    },
    /// Write the run and deliver `Continue` through the queue (the run was moved on from
    /// outside the executor: a resume, an approval).
    Continue,
    /// A cron run succeeded: save the state it leaves to the next run of its workflow.
    /// Before the end is written, so a crash saves it again and never loses it.
    SaveState { value: Value },
    /// Admit the runs that this run's end starts (flow triggers listening to its
    /// workflow). Before the end is written, with ids a second admission recognizes.
    StartFlows,
    /// The run ended, with this status: write it, wake whoever waits for it (a sync
    /// reply, a parent run, the run ordered behind it).
    Finish { status: RunStatus },
    /// After the end is written: give the run's concurrency slot back (handing it to the
    /// first waiting run).
    ReleaseSlot,
    /// POST the run's envelope to its callback (signed by the caller) and report
    /// `CallbackDone`.
    Callback {
        attempt: u32,
        request: HttpRequest,
        timeout: StdDuration,
    },
}

/// One attempt of a lane's `http` step (named `step[item].inner`), to be performed.
#[derive(Clone, Debug, PartialEq)]
pub struct StepCall {
    pub step: String,
    pub attempt: u32,
    pub request: HttpRequest,
    pub timeout: StdDuration,
    pub success: SuccessRule,
}

/// Which statuses count as success for an http step.
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessRule(pub Option<Vec<crate::definition::StatusPattern>>);

impl SuccessRule {
    pub fn is_success(&self, status: u16) -> bool {
        match &self.0 {
            None => (200..300).contains(&status),
            Some(ps) => ps.iter().any(|p| p.matches(status)),
        }
    }
}

/// Applies one event. Events that make no sense for the run's state (a duplicate, a late
/// result for a step that already moved on) change nothing and produce no effects. Effects
/// are to be performed in order.
pub fn apply(wf: &Workflow, run: Run, event: Event, now: Timestamp) -> (Run, Vec<Effect>) {
    if run.status.is_terminal() {
        return callbacks::apply_ended(wf, run, event, now);
    }
    let mut run = run;
    let mut effects = Vec::new();
    apply_live(wf, &mut run, event, now, &mut effects);
    if run.status.is_terminal() {
        steps::waits::leave_wait(&mut run);
        if wf.concurrency.is_some() {
            effects.push(Effect::ReleaseSlot);
        }
        callbacks::start(wf, &mut run, now, &mut effects);
    }
    (run, effects)
}

/// An event for a run that has not ended: each is handled where its subject lives.
fn apply_live(
    wf: &Workflow,
    run: &mut Run,
    event: Event,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    match event {
        Event::Started => advance::start(wf, run, now, effects),
        Event::Continue => advance::resume(wf, run, now, effects),
        Event::StepSucceeded {
            step,
            attempt,
            started_at,
            request,
            output,
        } => {
            let done = record::Attempt {
                step: &step,
                attempt,
                started_at,
                request: Some(request),
            };
            if steps::fan::is_lane_step(&step) {
                return steps::fan::reported(wf, run, done, Ok(output), now, effects);
            }
            if !record::is_current(wf, run, &step, attempt) {
                return;
            }
            if record::past_deadline(run, now) {
                return record::finish_timed_out(run, now, effects);
            }
            record::succeed_step(wf, run, done, output, now, effects);
            if !run.status.is_terminal() {
                advance::advance(wf, run, now, effects);
            }
        }
        Event::StepFailed {
            step,
            attempt,
            started_at,
            request,
            error,
            output,
        } => {
            let tried = record::Attempt {
                step: &step,
                attempt,
                started_at,
                request: Some(request),
            };
            if steps::fan::is_lane_step(&step) {
                return steps::fan::reported(wf, run, tried, Err((error, output)), now, effects);
            }
            if !record::is_current(wf, run, &step, attempt) {
                return;
            }
            retry::step_failed(wf, run, tried, error, output, now, effects);
        }
        Event::Resumed { payload } => steps::waits::resumed(wf, run, payload, now, effects),
        Event::Decided { approved, comment } => {
            steps::waits::decided(wf, run, approved, comment, now, effects)
        }
        Event::ChildStarted {
            step,
            run_id,
            workflow,
        } => steps::child::started(wf, run, &step, run_id, workflow, now, effects),
        Event::ChildEnded {
            run_id,
            status,
            output,
            error,
        } => steps::child::ended(wf, run, &run_id, status, output, error, now, effects),
        Event::Cancel => record::cancel(run, now, effects),
        Event::CallbackDone { .. } => {}
    }
}

/// Runs a run whose workflow has only pure steps to its end, in memory. Used for
/// synchronous replies that need no I/O: the effects left are those of its end
/// (`WriteContext`, `StartFlows`, `Finish`, and a `Callback` when it has one).
pub fn run_pure(wf: &Workflow, run: Run, now: Timestamp) -> (Run, Vec<Effect>) {
    apply(wf, run, Event::Started, now)
}

/// The run's output in the reply envelope's `data` field.
pub fn envelope(run: &Run) -> Value {
    serde_json::json!({ "data": run.final_output, "meta": run.meta() })
}
