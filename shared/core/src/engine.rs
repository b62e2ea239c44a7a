//! The run state machine: `apply(workflow, run, event, now) -> (run', effects)`.
//!
//! Pure: the engine renders templates and runs pure steps (`transform`, `fail`) itself, and
//! asks its caller, through effects, for everything that needs the outside world (an HTTP
//! call, a timer). The caller performs the effects, feeds the results back as events, and
//! stores the run with a write conditional on its version.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde_json::{Value, json};

use crate::definition::{
    Action, DEFAULT_APPROVAL_TIMEOUT, HttpAction, HttpMethod, OnReject, OnTimeout, RetryOn, Step,
    Workflow,
};
use crate::run::{
    CallbackAttempt, CallbackCursor, FailureClass, Run, RunStatus, StepError, StepExecution,
    StepStatus,
};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// The default per-attempt timeout of an `http` step.
pub const DEFAULT_STEP_TIMEOUT: StdDuration = StdDuration::from_secs(30);

/// The default per-attempt timeout of a callback delivery.
pub const DEFAULT_CALLBACK_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// Why a run waits (`waiting_reason`).
pub mod waiting {
    pub const WEBHOOK: &str = "webhook";
    pub const APPROVAL: &str = "approval";
    pub const DELAY: &str = "delay";
    pub const WORKFLOW: &str = "workflow";
}

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
    /// Deliver `Continue` at `at` (retry back-off, a wait's end).
    ScheduleTimer { at: Timestamp },
    /// The run is `waiting`: write it, make its single-use URLs (see [`expose`]) for a
    /// `webhook` or `approval` wait, send the step's notification (see
    /// [`wait_notification`]), and deliver `Continue` at `until` when there is one.
    Park {
        step: String,
        reason: &'static str,
        until: Option<Timestamp>,
    },
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
    /// The run ended; it carries its final status.
    Finish { status: RunStatus },
    /// POST the run's envelope to its callback (signed by the caller) and report
    /// `CallbackDone`.
    Callback {
        attempt: u32,
        request: HttpRequest,
        timeout: StdDuration,
    },
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
        return apply_ended(wf, run, event, now);
    }
    let (mut run, mut effects) = apply_live(wf, run, event, now);
    if run.status.is_terminal() {
        leave_wait(&mut run);
        if wf.callback_for(run.status).is_some() {
            run.cursor.callback = Some(CallbackCursor {
                attempt: 1,
                retry_at: None,
            });
            push_callback(wf, &mut run, now, &mut effects);
        }
    }
    (run, effects)
}

/// An ended run only delivers its callback.
fn apply_ended(wf: &Workflow, mut run: Run, event: Event, now: Timestamp) -> (Run, Vec<Effect>) {
    let mut effects = Vec::new();
    let Some(cursor) = run.cursor.callback.clone() else {
        return (run, effects);
    };
    match event {
        Event::Continue | Event::Started => match cursor.retry_at {
            Some(at) if at > now => effects.push(Effect::ScheduleTimer { at }),
            _ => push_callback(wf, &mut run, now, &mut effects),
        },
        Event::CallbackDone {
            attempt,
            url,
            status,
            error,
        } if attempt == cursor.attempt => {
            run.callbacks.push(CallbackAttempt {
                attempt,
                url,
                status,
                error: error.as_ref().map(|e| e.message.clone()),
                succeeded: error.is_none(),
                at: now,
            });
            let policy = wf
                .callback_for(run.status)
                .map(|c| c.retry_policy())
                .filter(|r| attempt < r.max_attempts);
            match (error, policy) {
                (Some(e), Some(r)) if retries_on(&r.on, e.class) => {
                    let wait =
                        r.delay_before(attempt + 1, jitter_unit(&run.id, "callback", attempt));
                    let at = now.plus(wait);
                    run.cursor.callback = Some(CallbackCursor {
                        attempt: attempt + 1,
                        retry_at: Some(at),
                    });
                    effects.push(Effect::ScheduleTimer { at });
                }
                _ => run.cursor.callback = None,
            }
        }
        _ => {}
    }
    (run, effects)
}

/// Renders the callback request of an ended run (a template error ends the delivery, with
/// the error recorded as its attempt).
fn push_callback(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    let Some(cb) = wf.callback_for(run.status) else {
        run.cursor.callback = None;
        return;
    };
    let Some(cursor) = run.cursor.callback.clone() else {
        return;
    };
    let ctx = run.template_context();
    let rendered = (|| -> Result<HttpRequest, TemplateError> {
        let mut headers = BTreeMap::new();
        for (k, v) in &cb.headers {
            headers.insert(k.to_ascii_lowercase(), template::render_string(v, &ctx)?);
        }
        headers.insert("content-type".into(), "application/json".into());
        let mut body = envelope(run);
        body["type"] = json!(format!("run.{}", run.status.as_str()));
        Ok(HttpRequest {
            method: HttpMethod::Post,
            url: template::render_string(&cb.url, &ctx)?,
            headers,
            query: BTreeMap::new(),
            body: Some(body),
            idempotency_key: format!("{}:callback", run.id),
        })
    })();
    match rendered {
        Ok(request) => {
            run.cursor.callback = Some(CallbackCursor {
                attempt: cursor.attempt,
                retry_at: None,
            });
            effects.push(Effect::Callback {
                attempt: cursor.attempt,
                request,
                timeout: cb.timeout.map_or(DEFAULT_CALLBACK_TIMEOUT, |t| t.std()),
            });
        }
        Err(e) => {
            run.callbacks.push(CallbackAttempt {
                attempt: cursor.attempt,
                url: cb.url.clone(),
                status: None,
                error: Some(format!("the callback's template failed: {e}")),
                succeeded: false,
                at: now,
            });
            run.cursor.callback = None;
        }
    }
}

fn apply_live(wf: &Workflow, mut run: Run, event: Event, now: Timestamp) -> (Run, Vec<Effect>) {
    let mut effects = Vec::new();
    match event {
        Event::Started => {
            if run.status != RunStatus::Queued {
                return apply_live(wf, run, Event::Continue, now);
            }
            run.status = RunStatus::Running;
            run.claimed_at = Some(now);
            run.started_at = Some(now);
            run.cursor.deadline = wf.max_duration.map(|d| now.plus(d.std()));
            advance(wf, &mut run, now, &mut effects);
        }
        Event::Continue => {
            if run.status == RunStatus::Queued {
                return apply_live(wf, run, Event::Started, now);
            }
            if past_deadline(&run, now) {
                finish_timed_out(&mut run, now, &mut effects);
            } else if run.status == RunStatus::Waiting {
                continue_waiting(wf, &mut run, now, &mut effects);
            } else if let Some(at) = run.cursor.retry_at.filter(|at| *at > now) {
                effects.push(Effect::ScheduleTimer { at });
            } else if run.cursor.retry_at.is_some() {
                run.cursor.retry_at = None;
                run.cursor.attempt += 1;
                issue(wf, &mut run, now, &mut effects);
            } else if run.cursor.attempt == 0 {
                advance(wf, &mut run, now, &mut effects);
            } else {
                // A delivery repeated while a step was in flight: issue the same attempt
                // again; its idempotency key lets the downstream drop the duplicate.
                issue(wf, &mut run, now, &mut effects);
            }
        }
        Event::StepSucceeded {
            step,
            attempt,
            started_at,
            request,
            output,
        } => {
            if !is_current(wf, &run, &step, attempt) {
                return (run, effects);
            }
            if past_deadline(&run, now) {
                finish_timed_out(&mut run, now, &mut effects);
                return (run, effects);
            }
            let exec = execution(
                &step,
                attempt,
                StepStatus::Succeeded,
                Some(request),
                Some(output),
                None,
                started_at,
                now,
            );
            run.step_executions.push(exec);
            let idx = run.cursor.step;
            if let Err(e) = extract(&wf.steps[idx], &mut run) {
                fail_run(
                    &mut run,
                    "template_error",
                    format!("step `{step}`: extract: {e}"),
                    now,
                    &mut effects,
                );
                return (run, effects);
            }
            run.cursor.step += 1;
            run.cursor.attempt = 0;
            advance(wf, &mut run, now, &mut effects);
        }
        Event::StepFailed {
            step,
            attempt,
            started_at,
            request,
            error,
            output,
        } => {
            if !is_current(wf, &run, &step, attempt) {
                return (run, effects);
            }
            let class = error.class;
            let message = error.message.clone();
            let exec = execution(
                &step,
                attempt,
                StepStatus::Failed,
                Some(request),
                output,
                Some(error),
                started_at,
                now,
            );
            run.step_executions.push(exec);
            if past_deadline(&run, now) {
                finish_timed_out(&mut run, now, &mut effects);
                return (run, effects);
            }
            let def = &wf.steps[run.cursor.step];
            match def
                .retry
                .as_ref()
                .filter(|r| attempt < r.max_attempts && retries_on(&r.on, class))
            {
                Some(r) => {
                    let wait = r.delay_before(attempt + 1, jitter_unit(&run.id, &step, attempt));
                    let mut at = now.plus(wait);
                    if let Some(d) = run.cursor.deadline {
                        at = at.min(d);
                    }
                    run.cursor.retry_at = Some(at);
                    effects.push(Effect::ScheduleTimer { at });
                }
                None => {
                    let tries = if attempt > 1 {
                        format!(" after {attempt} attempts")
                    } else {
                        String::new()
                    };
                    fail_run(
                        &mut run,
                        "step_failed",
                        format!("step `{step}` failed{tries}: {message}"),
                        now,
                        &mut effects,
                    );
                }
            }
        }
        Event::Resumed { payload } => {
            if !waits_for(&run, waiting::WEBHOOK) {
                return (run, effects);
            }
            succeed_wait(wf, &mut run, payload, now, &mut effects);
        }
        Event::Decided { approved, comment } => {
            if !waits_for(&run, waiting::APPROVAL) {
                return (run, effects);
            }
            let Some(Action::Approval(a)) = wf.steps.get(run.cursor.step).map(|s| &s.action) else {
                return (run, effects);
            };
            let decision = if approved { "approved" } else { "rejected" };
            let output = json!({"decision": decision, "comment": comment, "decided_at": now});
            if approved || a.on_reject == OnReject::Continue {
                succeed_wait(wf, &mut run, output, now, &mut effects);
            } else {
                let step = wf.steps[run.cursor.step].id.clone();
                let why = comment
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                fail_wait(
                    &mut run,
                    &step,
                    FailureClass::Request,
                    output,
                    "rejected",
                    format!("step `{step}` was rejected{why}"),
                    now,
                    &mut effects,
                );
            }
        }
        Event::ChildStarted {
            step,
            run_id,
            workflow,
        } => {
            let attempt = run.cursor.attempt;
            if !is_current(wf, &run, &step, attempt) {
                return (run, effects);
            }
            let Some(Action::TriggerWorkflow(t)) = wf.steps.get(run.cursor.step).map(|s| &s.action)
            else {
                return (run, effects);
            };
            if !run.children.contains(&run_id) {
                run.children.push(run_id.clone());
            }
            if t.wait {
                run.status = RunStatus::Waiting;
                run.waiting_reason = Some(waiting::WORKFLOW.into());
                run.waiting_payload =
                    Some(json!({"step": step, "run_id": run_id, "workflow": workflow}));
                run.waiting_expires_at = None;
                effects.push(Effect::Park {
                    step,
                    reason: waiting::WORKFLOW,
                    until: Some(child_check(&run, now)),
                });
            } else {
                let output = json!({"run_id": run_id, "workflow": workflow});
                complete_step(wf, &mut run, &step, attempt, output, now, now, &mut effects);
                if !run.status.is_terminal() {
                    advance(wf, &mut run, now, &mut effects);
                }
            }
        }
        Event::ChildEnded {
            run_id,
            status,
            output,
            error,
        } => {
            let waits_for_this = waits_for(&run, waiting::WORKFLOW)
                && run
                    .waiting_payload
                    .as_ref()
                    .and_then(|p| p.get("run_id"))
                    .and_then(Value::as_str)
                    == Some(run_id.as_str());
            if !waits_for_this || !status.is_terminal() {
                return (run, effects);
            }
            if status == RunStatus::Succeeded {
                succeed_wait(
                    wf,
                    &mut run,
                    output.unwrap_or(Value::Null),
                    now,
                    &mut effects,
                );
            } else {
                let step = wf.steps[run.cursor.step].id.clone();
                let workflow = run
                    .waiting_payload
                    .as_ref()
                    .and_then(|p| p.get("workflow"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let why = error.map(|e| format!(": {e}")).unwrap_or_default();
                fail_wait(
                    &mut run,
                    &step,
                    FailureClass::Request,
                    json!({"run_id": run_id, "status": status}),
                    "step_failed",
                    format!(
                        "step `{step}`: the run {run_id} of workflow `{workflow}` ended {}{why}",
                        status.as_str()
                    ),
                    now,
                    &mut effects,
                );
            }
        }
        Event::Cancel => {
            run.error_type = Some("cancelled".into());
            run.error = Some("the run was cancelled".into());
            end(&mut run, RunStatus::Cancelled, now, &mut effects);
        }
        Event::CallbackDone { .. } => {}
    }
    (run, effects)
}

fn waits_for(run: &Run, reason: &str) -> bool {
    run.status == RunStatus::Waiting && run.waiting_reason.as_deref() == Some(reason)
}

/// The step of the current wait, when the run is waiting.
fn waiting_step<'a>(wf: &'a Workflow, run: &Run) -> Option<&'a Step> {
    (run.status == RunStatus::Waiting)
        .then(|| wf.steps.get(run.cursor.step))
        .flatten()
}

/// Ends the wait: its URLs become used, its fields are cleared.
fn leave_wait(run: &mut Run) {
    let tokens = std::mem::take(&mut run.waiting_tokens);
    run.used_tokens.extend(tokens.into_values());
    run.waiting_reason = None;
    run.waiting_payload = None;
    run.waiting_expires_at = None;
    run.cursor.delay_until = None;
}

/// The wait's step succeeded with `output`: the run is `running` again and goes on, in the
/// executor (`Continue`).
fn succeed_wait(
    wf: &Workflow,
    run: &mut Run,
    output: Value,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let Some(step) = waiting_step(wf, run) else {
        return;
    };
    let id = step.id.clone();
    let attempt = run.cursor.attempt.max(1);
    let since = run
        .waiting_payload
        .as_ref()
        .and_then(|p| p.get("since"))
        .and_then(Value::as_str)
        .and_then(|s| Timestamp::parse_rfc3339(s).ok())
        .unwrap_or(now);
    leave_wait(run);
    run.status = RunStatus::Running;
    run.cursor.attempt = attempt;
    complete_step(wf, run, &id, attempt, output, since, now, effects);
    if !run.status.is_terminal() {
        effects.push(Effect::Continue);
    }
}

/// Records a step's success and its extracts, and moves the cursor past it (or fails the
/// run when an extract fails).
#[allow(clippy::too_many_arguments)]
fn complete_step(
    wf: &Workflow,
    run: &mut Run,
    step: &str,
    attempt: u32,
    output: Value,
    started_at: Timestamp,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let exec = execution(
        step,
        attempt,
        StepStatus::Succeeded,
        None,
        Some(output),
        None,
        started_at,
        now,
    );
    run.step_executions.push(exec);
    let idx = run.cursor.step;
    if let Err(e) = extract(&wf.steps[idx], run) {
        fail_run(
            run,
            "template_error",
            format!("step `{step}`: extract: {e}"),
            now,
            effects,
        );
        return;
    }
    run.cursor.step += 1;
    run.cursor.attempt = 0;
}

#[allow(clippy::too_many_arguments)]
fn fail_wait(
    run: &mut Run,
    step: &str,
    class: FailureClass,
    output: Value,
    error_type: &str,
    message: String,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let exec = execution(
        step,
        run.cursor.attempt.max(1),
        StepStatus::Failed,
        None,
        Some(output),
        Some(StepError {
            class,
            message: message.clone(),
        }),
        now,
        now,
    );
    run.step_executions.push(exec);
    fail_run(run, error_type, message, now, effects);
}

/// `Continue` for a waiting run: a wait whose time is up ends; otherwise the timer is set
/// again (it fired early, or the delivery was a duplicate).
fn continue_waiting(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    let Some(step) = waiting_step(wf, run) else {
        return;
    };
    let reason = run.waiting_reason.clone().unwrap_or_default();
    if reason == waiting::WORKFLOW {
        // The child's end wakes the run (the caller turns that delivery into `ChildEnded`);
        // this timer is the fallback should that wake-up be lost in a crash.
        effects.push(Effect::ScheduleTimer {
            at: child_check(run, now),
        });
        return;
    }
    if reason == waiting::DELAY {
        if run.cursor.delay_until.is_some_and(|u| now >= u) {
            let until = run.cursor.delay_until;
            succeed_wait(wf, run, json!({"waited_until": until}), now, effects);
        } else if let Some(at) = wait_timer(run) {
            effects.push(Effect::ScheduleTimer { at });
        }
        return;
    }
    if run.waiting_expires_at.is_some_and(|e| now >= e) {
        let on_timeout = match &step.action {
            Action::WaitForWebhook(w) => w.on_timeout,
            Action::Approval(a) => a.on_timeout,
            _ => OnTimeout::Fail,
        };
        let id = step.id.clone();
        if on_timeout == OnTimeout::Continue {
            let output = if reason == waiting::APPROVAL {
                json!({"decision": "timed_out", "comment": null, "decided_at": now})
            } else {
                Value::Null
            };
            succeed_wait(wf, run, output, now, effects);
        } else {
            let what = if reason == waiting::APPROVAL {
                "no decision"
            } else {
                "no callback"
            };
            fail_wait(
                run,
                &id,
                FailureClass::Timeout,
                Value::Null,
                "wait_timed_out",
                format!("step `{id}`: {what} before the wait's timeout"),
                now,
                effects,
            );
        }
        return;
    }
    if let Some(at) = wait_timer(run) {
        effects.push(Effect::ScheduleTimer { at });
    }
}

/// How often a run waiting for a child run looks at it, in case the child's wake-up was
/// lost (a crash between the child's last write and the message to its parent).
pub const CHILD_CHECK_INTERVAL: StdDuration = StdDuration::from_secs(5 * 60);

/// The next look at a waiting child run: at the check interval, or the deadline if sooner.
fn child_check(run: &Run, now: Timestamp) -> Timestamp {
    let check = now.plus(CHILD_CHECK_INTERVAL);
    run.cursor.deadline.map_or(check, |d| d.min(check))
}

/// When a waiting run must be looked at again: the wait's end or the run's deadline.
fn wait_timer(run: &Run) -> Option<Timestamp> {
    let end = run.cursor.delay_until.or(run.waiting_expires_at);
    match (end, run.cursor.deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parks the run at its current (parking) step.
fn park(
    run: &mut Run,
    step: &Step,
    reason: &'static str,
    payload: Value,
    expires_at: Option<Timestamp>,
    effects: &mut Vec<Effect>,
) {
    run.status = RunStatus::Waiting;
    run.cursor.attempt = 1;
    run.waiting_reason = Some(reason.into());
    run.waiting_payload = Some(payload);
    run.waiting_expires_at = expires_at;
    effects.push(Effect::Park {
        step: step.id.clone(),
        reason,
        until: wait_timer(run),
    });
}

fn is_current(wf: &Workflow, run: &Run, step: &str, attempt: u32) -> bool {
    run.status == RunStatus::Running
        && run.cursor.retry_at.is_none()
        && wf.steps.get(run.cursor.step).is_some_and(|s| s.id == step)
        && run.cursor.attempt == attempt
}

fn retries_on(on: &[RetryOn], class: FailureClass) -> bool {
    let wanted = match class {
        FailureClass::Timeout => RetryOn::Timeout,
        FailureClass::Connection => RetryOn::Connection,
        FailureClass::Status5xx => RetryOn::Status5xx,
        FailureClass::Status429 => RetryOn::Status429,
        FailureClass::Status4xx => RetryOn::Status4xx,
        FailureClass::Request | FailureClass::Template => return false,
    };
    on.contains(&wanted)
}

/// A number in [0, 1) that depends only on its inputs (FNV-1a), so jitter stays pure.
fn jitter_unit(run_id: &str, step: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in run_id
        .bytes()
        .chain(step.bytes())
        .chain(attempt.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn past_deadline(run: &Run, now: Timestamp) -> bool {
    run.cursor.deadline.is_some_and(|d| now >= d)
}

#[allow(clippy::too_many_arguments)]
fn execution(
    step: &str,
    attempt: u32,
    status: StepStatus,
    request: Option<Value>,
    output: Option<Value>,
    error: Option<StepError>,
    started_at: Timestamp,
    now: Timestamp,
) -> StepExecution {
    StepExecution {
        step_id: step.to_string(),
        attempt,
        status,
        request,
        output,
        error,
        started_at,
        finished_at: now,
        duration_ms: now.millis() - started_at.millis(),
    }
}

/// Runs steps from the cursor on until one needs I/O or the run ends.
fn advance(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    if past_deadline(run, now) {
        finish_timed_out(run, now, effects);
        return;
    }
    while let Some(step) = wf.steps.get(run.cursor.step) {
        if let Some(when) = &step.when {
            match template::eval_condition(when, &run.template_context()) {
                Ok(true) => {}
                Ok(false) => {
                    let exec =
                        execution(&step.id, 0, StepStatus::Skipped, None, None, None, now, now);
                    run.step_executions.push(exec);
                    run.cursor.step += 1;
                    continue;
                }
                Err(e) => {
                    fail_run(
                        run,
                        "template_error",
                        format!("step `{}`: when: {e}", step.id),
                        now,
                        effects,
                    );
                    return;
                }
            }
        }
        run.cursor.attempt = 1;
        match &step.action {
            Action::Http(_) | Action::TriggerWorkflow(_) => {
                issue(wf, run, now, effects);
                return;
            }
            Action::WaitForWebhook(_) => {
                let expires = step.timeout.map(|t| now.plus(t.std()));
                let payload = json!({"step": step.id, "since": now, "expires_at": expires});
                park(run, step, waiting::WEBHOOK, payload, expires, effects);
                return;
            }
            Action::Approval(a) => {
                let timeout = step.timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
                let expires = Some(now.plus(timeout.std()));
                let ctx = run.template_context();
                let summary = match a
                    .summary
                    .as_deref()
                    .map(|t| template::render_string(t, &ctx))
                {
                    Some(Ok(s)) => Some(s),
                    Some(Err(e)) => {
                        step_template_failure(run, step, e, now, effects);
                        return;
                    }
                    None => None,
                };
                let payload = json!({
                    "step": step.id,
                    "since": now,
                    "expires_at": expires,
                    "summary": summary,
                });
                park(run, step, waiting::APPROVAL, payload, expires, effects);
                return;
            }
            Action::Delay(d) => {
                let until = match (&d.duration, &d.until) {
                    (Some(dur), _) => Ok(now.plus(dur.std())),
                    (None, Some(tpl)) => template::render_string(tpl, &run.template_context())
                        .map_err(|e| e.0)
                        .and_then(|s| Timestamp::parse_rfc3339(s.trim())),
                    (None, None) => Ok(now),
                };
                match until {
                    Ok(until) if until <= now => {
                        // A time already past: the delay is over at once.
                        let id = step.id.clone();
                        complete_step(
                            wf,
                            run,
                            &id,
                            1,
                            json!({"waited_until": until}),
                            now,
                            now,
                            effects,
                        );
                        if run.status.is_terminal() {
                            return;
                        }
                        continue;
                    }
                    Ok(until) => {
                        run.cursor.delay_until = Some(until);
                        let payload = json!({"step": step.id, "since": now, "until": until});
                        park(run, step, waiting::DELAY, payload, None, effects);
                    }
                    Err(msg) => {
                        step_template_failure(
                            run,
                            step,
                            TemplateError(format!("until: {msg}")),
                            now,
                            effects,
                        );
                    }
                }
                return;
            }
            Action::Transform { value } => {
                match template::render_value(value, &run.template_context()) {
                    Ok(output) => {
                        let exec = execution(
                            &step.id,
                            1,
                            StepStatus::Succeeded,
                            None,
                            Some(output),
                            None,
                            now,
                            now,
                        );
                        run.step_executions.push(exec);
                        if let Err(e) = extract(step, run) {
                            fail_run(
                                run,
                                "template_error",
                                format!("step `{}`: extract: {e}", step.id),
                                now,
                                effects,
                            );
                            return;
                        }
                    }
                    Err(e) => {
                        step_template_failure(run, step, e, now, effects);
                        return;
                    }
                }
            }
            Action::Fail { message } => {
                let msg = template::render_string(message, &run.template_context())
                    .unwrap_or_else(|e| format!("{message} (the message template failed: {e})"));
                let error = StepError {
                    class: FailureClass::Request,
                    message: msg.clone(),
                };
                let exec = execution(
                    &step.id,
                    1,
                    StepStatus::Failed,
                    None,
                    None,
                    Some(error),
                    now,
                    now,
                );
                run.step_executions.push(exec);
                fail_run(run, "fail_step", msg, now, effects);
                return;
            }
        }
        run.cursor.step += 1;
        run.cursor.attempt = 0;
    }
    let output = match &wf.output {
        Some(tpl) => template::render_value(tpl, &run.template_context()),
        None => Ok(last_output(run)),
    };
    let out = match output {
        Ok(out) => out,
        Err(e) => return fail_run(run, "template_error", format!("output: {e}"), now, effects),
    };
    if run.trigger.kind == "cron" {
        match next_state(wf, run, &out) {
            Ok(state) => run.next_state = state,
            Err(e) => return fail_run(run, "template_error", format!("state: {e}"), now, effects),
        }
    }
    run.final_output = Some(out);
    end(run, RunStatus::Succeeded, now, effects);
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

fn last_output(run: &Run) -> Value {
    run.step_executions
        .iter()
        .rev()
        .find(|e| e.status == StepStatus::Succeeded)
        .and_then(|e| e.output.clone())
        .unwrap_or(Value::Null)
}

fn step_template_failure(
    run: &mut Run,
    step: &Step,
    e: TemplateError,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let error = StepError {
        class: FailureClass::Template,
        message: e.0.clone(),
    };
    let exec = execution(
        &step.id,
        run.cursor.attempt.max(1),
        StepStatus::Failed,
        None,
        None,
        Some(error),
        now,
        now,
    );
    run.step_executions.push(exec);
    fail_run(
        run,
        "template_error",
        format!("step `{}`: {e}", step.id),
        now,
        effects,
    );
}

/// Renders the current http step and asks for it to be performed.
fn issue(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    let Some(step) = wf.steps.get(run.cursor.step) else {
        advance(wf, run, now, effects);
        return;
    };
    let h = match &step.action {
        Action::Http(h) => h,
        Action::TriggerWorkflow(t) => {
            let input = match &t.input {
                Some(tpl) => template::render_value(tpl, &run.template_context()),
                None => Ok(Value::Null),
            };
            match input {
                Ok(input) => effects.push(Effect::StartRun {
                    step: step.id.clone(),
                    workflow: t.workflow.clone(),
                    input,
                }),
                Err(e) => step_template_failure(run, step, e, now, effects),
            }
            return;
        }
        _ => {
            advance(wf, run, now, effects);
            return;
        }
    };
    let rendered = render_http(
        h,
        &run.template_context(),
        format!("{}:{}", run.id, step.id),
    );
    match rendered {
        Ok(request) => {
            let mut timeout = step.timeout.map_or(DEFAULT_STEP_TIMEOUT, |t| t.std());
            if let Some(d) = run.cursor.deadline {
                timeout = timeout.min(d.since(now));
            }
            effects.push(Effect::RunStep {
                step: step.id.clone(),
                attempt: run.cursor.attempt.max(1),
                request,
                timeout,
                success: SuccessRule(h.success_status.clone()),
            });
        }
        Err(e) => step_template_failure(run, step, e, now, effects),
    }
}

fn render_http(
    h: &HttpAction,
    ctx: &Value,
    idempotency_key: String,
) -> Result<HttpRequest, TemplateError> {
    let mut headers = BTreeMap::new();
    for (k, v) in &h.headers {
        headers.insert(k.to_ascii_lowercase(), template::render_string(v, ctx)?);
    }
    let mut query = BTreeMap::new();
    for (k, v) in &h.query {
        query.insert(k.clone(), template::render_string(v, ctx)?);
    }
    Ok(HttpRequest {
        method: h.method,
        url: template::render_string(&h.url, ctx)?,
        headers,
        query,
        body: h
            .body
            .as_ref()
            .map(|b| template::render_value(b, ctx))
            .transpose()?,
        idempotency_key,
    })
}

/// Makes the single-use URLs of a parked `webhook` or `approval` wait: one secret per
/// purpose from `secret` (≥ 128 random bits, drawn by the caller), kept in
/// `waiting_tokens`, and the URLs (`{base_url}/resume/{run_id}.{secret}`, `/review/...`,
/// `/approve/...`, `/reject/...`) in `waiting_payload`. Does nothing for other waits or
/// when the URLs exist already.
pub fn expose(run: &mut Run, base_url: &str, mut secret: impl FnMut() -> String) {
    let purposes: &[&str] = match run.waiting_reason.as_deref() {
        Some(waiting::WEBHOOK) => &["resume"],
        Some(waiting::APPROVAL) => &["review", "approve", "reject"],
        _ => return,
    };
    if !run.waiting_tokens.is_empty() {
        return;
    }
    let base = base_url.trim_end_matches('/');
    let mut payload = run.waiting_payload.take().unwrap_or_else(|| json!({}));
    for purpose in purposes {
        let s = secret();
        payload[format!("{purpose}_url")] = json!(format!("{base}/{purpose}/{}.{s}", run.id));
        run.waiting_tokens.insert((*purpose).to_string(), s);
    }
    run.waiting_payload = Some(payload);
}

/// The notification request of a parked `wait_for_webhook` or `approval` step (after
/// [`expose`]): its templates see `wait` (`resume_url`, `expires_at`) or `approval`
/// (`review_url`, `approve_url`, `reject_url`, `expires_at`, `summary`).
pub fn wait_notification(wf: &Workflow, run: &Run) -> Option<Result<HttpRequest, TemplateError>> {
    if run.status != RunStatus::Waiting {
        return None;
    }
    let step = wf.steps.get(run.cursor.step)?;
    let (root, notify) = match (&step.action, run.waiting_reason.as_deref()) {
        (Action::Approval(a), Some(waiting::APPROVAL)) => ("approval", a.notify.as_ref()?),
        (Action::WaitForWebhook(w), Some(waiting::WEBHOOK)) => ("wait", w.notify.as_ref()?),
        _ => return None,
    };
    let mut ctx = run.template_context();
    ctx[root] = run.waiting_payload.clone().unwrap_or(Value::Null);
    Some(render_http(
        notify,
        &ctx,
        format!("{}:{}:notify", run.id, step.id),
    ))
}

/// The largest value of a context store key, in bytes.
pub const CONTEXT_VALUE_LIMIT: usize = 32 * 1024;

fn extract(step: &Step, run: &mut Run) -> Result<(), TemplateError> {
    if step.extract.is_empty() && step.extract_to_context.is_empty() {
        return Ok(());
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
    for (k, v) in writes {
        let store = run.store.get_or_insert_with(Default::default);
        match &v {
            Some(v) => store.insert(k.clone(), v.clone()),
            None => store.remove(&k),
        };
        run.store_writes.insert(k, v);
    }
    Ok(())
}

fn fail_run(
    run: &mut Run,
    error_type: &str,
    error: String,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    run.error_type = Some(error_type.into());
    run.error = Some(error);
    end(run, RunStatus::Failed, now, effects);
}

fn finish_timed_out(run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    run.error_type = Some("timed_out".into());
    run.error = Some("the run took longer than the workflow's max_duration".into());
    end(run, RunStatus::TimedOut, now, effects);
}

fn end(run: &mut Run, status: RunStatus, now: Timestamp, effects: &mut Vec<Effect>) {
    run.status = status;
    run.finished_at = Some(now);
    run.cursor.retry_at = None;
    effects.push(Effect::Finish { status });
}

/// Runs a run whose workflow has only pure steps to its end, in memory (no effects other
/// than `Finish` can occur). Used for synchronous replies that need no I/O.
pub fn run_pure(wf: &Workflow, run: Run, now: Timestamp) -> Run {
    let (run, _) = apply(wf, run, Event::Started, now);
    run
}

/// The run's output in the reply envelope's `data` field.
pub fn envelope(run: &Run) -> Value {
    json!({ "data": run.final_output, "meta": run.meta() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::TriggerRef;
    use crate::validate::{Format, load};

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn wf(yaml: &str) -> Workflow {
        load(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:#?}"))
    }

    fn new_run(input: Value) -> Run {
        Run::new(
            "r1".into(),
            "w",
            1,
            TriggerRef {
                kind: "manual".into(),
                id: "manual".into(),
            },
            input,
            T0,
        )
    }

    fn after(ms: i64) -> Timestamp {
        Timestamp(T0.0 + ms)
    }

    const HTTP_THEN_TRANSFORM: &str = r#"
id: w
max_duration: 1m
steps:
  - id: call
    type: http
    method: POST
    url: "https://example.com/{{ trigger.body.id }}"
    headers: { X-Trace: "t-{{ run.id }}" }
    body: { id: "{{ trigger.body.id }}" }
    retry: { max_attempts: 3, backoff: exponential, initial: 1s, max: 10s }
    extract: { code: "{{ output.status }}" }
  - id: shape
    type: transform
    value: { got: "{{ steps.call.body.ok }}", code: "{{ context.code }}" }
"#;

    fn succeeded(step: &str, attempt: u32, output: Value) -> Event {
        Event::StepSucceeded {
            step: step.into(),
            attempt,
            started_at: T0,
            request: json!({}),
            output,
        }
    }

    fn failed(step: &str, attempt: u32, class: FailureClass) -> Event {
        Event::StepFailed {
            step: step.into(),
            attempt,
            started_at: T0,
            request: json!({}),
            error: StepError {
                class,
                message: "boom".into(),
            },
            output: None,
        }
    }

    #[test]
    fn starting_renders_the_first_http_step_with_its_idempotency_key() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let (run, effects) = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0);
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.cursor.deadline, Some(after(60_000)));
        let [
            Effect::RunStep {
                step,
                attempt,
                request,
                ..
            },
        ] = effects.as_slice()
        else {
            panic!("{effects:?}")
        };
        assert_eq!((step.as_str(), *attempt), ("call", 1));
        assert_eq!(request.url, "https://example.com/7");
        assert_eq!(request.body, Some(json!({"id": 7})));
        assert_eq!(request.headers["x-trace"], "t-r1");
        assert_eq!(request.idempotency_key, "r1:call");
    }

    #[test]
    fn a_step_result_runs_the_pure_steps_after_it_and_finishes() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let (run, _) = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0);
        let out = json!({"status": 201, "headers": {}, "body": {"ok": true}});
        let (run, effects) = apply(&w, run, succeeded("call", 1, out), after(5));
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::Succeeded
            }]
        );
        assert_eq!(run.final_output, Some(json!({"got": true, "code": 201})));
        assert_eq!(run.context["code"], json!(201));
        assert_eq!(run.finished_at, Some(after(5)));
    }

    #[test]
    fn a_retryable_failure_schedules_a_timer_with_backoff() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let (run, _) = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0);
        let (run, effects) = apply(
            &w,
            run,
            failed("call", 1, FailureClass::Status5xx),
            after(10),
        );
        assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(1010) }]);
        // Early wake-up: the timer is scheduled again, nothing runs.
        let (run, effects) = apply(&w, run, Event::Continue, after(500));
        assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(1010) }]);
        let (run, effects) = apply(&w, run, Event::Continue, after(1010));
        assert!(
            matches!(&effects[..], [Effect::RunStep { attempt: 2, .. }]),
            "{effects:?}"
        );
        let (_, effects) = apply(
            &w,
            run,
            failed("call", 2, FailureClass::Timeout),
            after(1100),
        );
        assert_eq!(
            effects,
            vec![Effect::ScheduleTimer {
                at: after(1100 + 2000)
            }]
        );
    }

    #[test]
    fn the_last_attempt_failing_fails_the_run() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let mut run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
        for attempt in 1..=2 {
            run = apply(
                &w,
                run,
                failed("call", attempt, FailureClass::Connection),
                T0,
            )
            .0;
            run = apply(&w, run, Event::Continue, after(60_000 - 1)).0;
        }
        let (run, effects) = apply(
            &w,
            run,
            failed("call", 3, FailureClass::Connection),
            after(59_999),
        );
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::Failed
            }]
        );
        assert_eq!(run.error_type.as_deref(), Some("step_failed"));
        assert!(run.error.as_deref().unwrap().contains("after 3 attempts"));
        assert_eq!(run.step_executions.len(), 3);
    }

    #[test]
    fn a_non_retryable_failure_fails_at_once() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
        let (run, effects) = apply(
            &w,
            run,
            failed("call", 1, FailureClass::Status4xx),
            after(1),
        );
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::Failed
            }]
        );
        assert_eq!(run.status, RunStatus::Failed);
    }

    #[test]
    fn a_duplicate_or_stale_result_changes_nothing() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
        let done = apply(
            &w,
            run.clone(),
            succeeded("call", 1, json!({"body": {"ok": 1}, "status": 200})),
            after(1),
        )
        .0;
        let (again, effects) = apply(&w, done.clone(), succeeded("call", 1, json!({})), after(2));
        assert!(effects.is_empty());
        assert_eq!(again, done);
        let (same, effects) = apply(&w, run.clone(), succeeded("call", 9, json!({})), after(2));
        assert!(effects.is_empty());
        assert_eq!(same, run);
    }

    #[test]
    fn past_max_duration_the_run_times_out() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
        let (run, effects) = apply(
            &w,
            run,
            failed("call", 1, FailureClass::Timeout),
            after(60_000),
        );
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::TimedOut
            }]
        );
        assert_eq!(run.status, RunStatus::TimedOut);
    }

    #[test]
    fn the_step_timeout_is_cut_to_the_time_left() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
        let run = apply(
            &w,
            run,
            failed("call", 1, FailureClass::Timeout),
            after(50_000),
        )
        .0;
        let (_, effects) = apply(&w, run, Event::Continue, after(58_000));
        let [Effect::RunStep { timeout, .. }] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        assert_eq!(*timeout, StdDuration::from_secs(2));
    }

    #[test]
    fn a_repeated_delivery_reissues_the_step_in_flight() {
        let w = wf(HTTP_THEN_TRANSFORM);
        let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
        let (_, effects) = apply(&w, run, Event::Continue, after(3));
        let [
            Effect::RunStep {
                attempt: 1,
                request,
                ..
            },
        ] = effects.as_slice()
        else {
            panic!("{effects:?}")
        };
        assert_eq!(request.idempotency_key, "r1:call");
    }

    #[test]
    fn when_false_skips_a_step_and_fail_ends_the_run() {
        let w = wf(r#"
id: w
steps:
  - { id: skipped, type: transform, when: "trigger.n > 5", value: 1 }
  - { id: stop, type: fail, message: "n was {{ trigger.n }}" }
  - { id: never, type: transform, value: 2 }
"#);
        let run = run_pure(&w, new_run(json!({"n": 1})), T0);
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error.as_deref(), Some("n was 1"));
        assert_eq!(run.error_type.as_deref(), Some("fail_step"));
        let statuses: Vec<_> = run.step_executions.iter().map(|e| e.status).collect();
        assert_eq!(statuses, vec![StepStatus::Skipped, StepStatus::Failed]);
    }

    #[test]
    fn a_template_error_at_run_time_fails_the_run_with_its_cause() {
        let w = wf(
            "id: w\nsteps:\n  - { id: t, type: transform, value: '{{ trigger.body.missing.x }}' }\n",
        );
        let run = run_pure(&w, new_run(json!({"body": {}})), T0);
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error_type.as_deref(), Some("template_error"));
        assert!(
            run.error.as_deref().unwrap().contains("step `t`"),
            "{:?}",
            run.error
        );
    }

    #[test]
    fn without_an_output_template_the_last_output_is_the_output() {
        let w = wf(
            "id: w\nsteps:\n  - { id: t, type: transform, value: { sum: '{{ trigger.a + trigger.b }}' } }\n",
        );
        let run = run_pure(&w, new_run(json!({"a": 1, "b": 2})), T0);
        assert_eq!(run.final_output, Some(json!({"sum": 3})));
        assert_eq!(envelope(&run)["meta"]["status"], json!("succeeded"));
    }

    #[test]
    fn a_terminal_run_ignores_every_event() {
        let w = wf("id: w\nsteps:\n  - { id: t, type: transform, value: 1 }\n");
        let run = run_pure(&w, new_run(json!({})), T0);
        for ev in [Event::Started, Event::Continue] {
            let (same, effects) = apply(&w, run.clone(), ev, after(1));
            assert!(effects.is_empty());
            assert_eq!(same, run);
        }
    }

    const PARKING: &str = r#"
id: w
max_duration: 1h
on_failure: { url: "https://example.com/cb/{{ run.id }}", retry: { max_attempts: 2, initial: 1s } }
steps:
  - { id: wait, type: wait_for_webhook, timeout: 10m, extract: { who: "{{ output.name }}" } }
  - id: ok
    type: approval
    summary: "pay {{ steps.wait.amount }}"
    notify: { method: POST, url: "https://chat.example/hook", body: { text: "{{ approval.review_url }}" } }
  - { id: pause, type: delay, duration: 5m }
  - { id: done, type: transform, value: { who: "{{ context.who }}", decision: "{{ steps.ok.decision }}" } }
"#;

    fn secrets() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("s{n}")
        }
    }

    #[test]
    fn a_wait_parks_with_single_use_urls_and_a_resume_continues_with_the_body() {
        let w = wf(PARKING);
        let (mut run, effects) = apply(&w, new_run(json!({})), Event::Started, T0);
        assert_eq!(
            effects,
            vec![Effect::Park {
                step: "wait".into(),
                reason: waiting::WEBHOOK,
                until: Some(after(600_000)),
            }]
        );
        assert_eq!(run.status, RunStatus::Waiting);
        assert_eq!(run.waiting_expires_at, Some(after(600_000)));
        expose(&mut run, "http://h/", secrets());
        let payload = run.waiting_payload.clone().unwrap();
        assert_eq!(payload["resume_url"], json!("http://h/resume/r1.s1"));
        assert_eq!(run.waiting_tokens["resume"], "s1");

        let (run, effects) = apply(
            &w,
            run,
            Event::Resumed {
                payload: json!({"name": "ann", "amount": 5}),
            },
            after(10),
        );
        assert_eq!(effects, vec![Effect::Continue]);
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.context["who"], json!("ann"));
        assert_eq!(run.used_tokens, vec!["s1".to_string()]);
        assert!(run.waiting_payload.is_none() && run.waiting_tokens.is_empty());
        // A second resume of the same wait changes nothing.
        let (same, effects) = apply(
            &w,
            run.clone(),
            Event::Resumed { payload: json!({}) },
            after(11),
        );
        assert!(effects.is_empty());
        assert_eq!(same, run);
        // The executor goes on to the approval, which parks with its summary.
        let (run, effects) = apply(&w, run, Event::Continue, after(12));
        assert!(
            matches!(
                &effects[..],
                [Effect::Park {
                    reason: "approval",
                    ..
                }]
            ),
            "{effects:?}"
        );
        assert_eq!(
            run.waiting_payload.as_ref().unwrap()["summary"],
            json!("pay 5")
        );
    }

    #[test]
    fn an_expired_wait_fails_the_run_or_continues_with_null() {
        let w = wf(PARKING);
        let run = apply(&w, new_run(json!({})), Event::Started, T0).0;
        // Early: the timer is set again.
        let (run, effects) = apply(&w, run, Event::Continue, after(1_000));
        assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(600_000) }]);
        let (failed, effects) = apply(&w, run.clone(), Event::Continue, after(600_000));
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.error_type.as_deref(), Some("wait_timed_out"));
        assert!(matches!(
            effects[0],
            Effect::Finish {
                status: RunStatus::Failed
            }
        ));
        assert!(
            matches!(effects[1], Effect::Callback { attempt: 1, .. }),
            "{effects:?}"
        );

        let w2 = wf(&PARKING
            .replace(
                "type: wait_for_webhook,",
                "type: wait_for_webhook, on_timeout: continue,",
            )
            .replace("{ who: \"{{ output.name }}\" }", "{}")
            .replace("who: \"{{ context.who }}\", ", ""));
        let run = apply(&w2, new_run(json!({})), Event::Started, T0).0;
        let (run, effects) = apply(&w2, run, Event::Continue, after(600_000));
        assert_eq!(effects, vec![Effect::Continue]);
        assert_eq!(run.step_executions[0].output, Some(Value::Null));
        assert_eq!(run.step_executions[0].status, StepStatus::Succeeded);
    }

    fn at_approval(w: &Workflow) -> Run {
        let run = apply(w, new_run(json!({})), Event::Started, T0).0;
        let run = apply(
            w,
            run,
            Event::Resumed {
                payload: json!({"name": "a", "amount": 1}),
            },
            after(1),
        )
        .0;
        let mut run = apply(w, run, Event::Continue, after(2)).0;
        expose(&mut run, "http://h", secrets());
        run
    }

    #[test]
    fn an_approval_exposes_three_urls_and_renders_its_notification() {
        let w = wf(PARKING);
        let run = at_approval(&w);
        let p = run.waiting_payload.clone().unwrap();
        for k in ["review_url", "approve_url", "reject_url"] {
            assert!(p[k].as_str().unwrap().starts_with("http://h/"), "{k}: {p}");
        }
        assert_eq!(run.waiting_tokens.len(), 3);
        assert_eq!(
            run.waiting_expires_at,
            Some(after(2).plus(DEFAULT_APPROVAL_TIMEOUT.std()))
        );
        let req = wait_notification(&w, &run).unwrap().unwrap();
        assert_eq!(req.body, Some(json!({"text": "http://h/review/r1.s1"})));
    }

    #[test]
    fn approving_goes_on_and_rejecting_fails_the_run_with_the_comment() {
        let w = wf(PARKING);
        let run = at_approval(&w);
        let (ok, effects) = apply(
            &w,
            run.clone(),
            Event::Decided {
                approved: true,
                comment: Some("fine".into()),
            },
            after(3),
        );
        assert_eq!(effects, vec![Effect::Continue]);
        assert_eq!(ok.step_outputs()["ok"]["decision"], json!("approved"));
        assert_eq!(ok.used_tokens.len(), 3);
        let (no, _) = apply(
            &w,
            run,
            Event::Decided {
                approved: false,
                comment: Some("too much".into()),
            },
            after(3),
        );
        assert_eq!(no.status, RunStatus::Failed);
        assert_eq!(no.error_type.as_deref(), Some("rejected"));
        assert!(no.error.as_deref().unwrap().contains("too much"));
        assert_eq!(
            no.cursor.callback,
            Some(CallbackCursor {
                attempt: 1,
                retry_at: None
            })
        );
    }

    #[test]
    fn a_rejection_with_on_reject_continue_is_the_steps_output() {
        let w = wf(&PARKING.replace("type: approval", "type: approval\n    on_reject: continue"));
        let run = at_approval(&w);
        let (run, effects) = apply(
            &w,
            run,
            Event::Decided {
                approved: false,
                comment: None,
            },
            after(3),
        );
        assert_eq!(effects, vec![Effect::Continue]);
        assert_eq!(run.step_outputs()["ok"]["decision"], json!("rejected"));
    }

    #[test]
    fn a_delay_parks_until_its_end_and_then_the_run_finishes() {
        let w = wf(PARKING);
        let run = at_approval(&w);
        let run = apply(
            &w,
            run,
            Event::Decided {
                approved: true,
                comment: None,
            },
            after(3),
        )
        .0;
        let (run, effects) = apply(&w, run, Event::Continue, after(4));
        assert_eq!(
            effects,
            vec![Effect::Park {
                step: "pause".into(),
                reason: waiting::DELAY,
                until: Some(after(4 + 300_000))
            }]
        );
        let (run, effects) = apply(&w, run, Event::Continue, after(100));
        assert_eq!(
            effects,
            vec![Effect::ScheduleTimer {
                at: after(4 + 300_000)
            }]
        );
        let (run, effects) = apply(&w, run, Event::Continue, after(4 + 300_000));
        assert_eq!(effects, vec![Effect::Continue]);
        let (run, effects) = apply(&w, run, Event::Continue, after(300_010));
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::Succeeded
            }]
        );
        assert_eq!(
            run.final_output,
            Some(json!({"who": "a", "decision": "approved"}))
        );
    }

    #[test]
    fn a_delay_until_a_past_time_does_not_park() {
        let w = wf(
            "id: w\nsteps:\n  - { id: d, type: delay, until: '{{ trigger.at }}' }\n  - { id: t, type: transform, value: 1 }\n",
        );
        let (run, effects) = apply(
            &w,
            new_run(json!({"at": "2020-01-01T00:00:00Z"})),
            Event::Started,
            T0,
        );
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::Succeeded
            }]
        );
        assert_eq!(run.final_output, Some(json!(1)));
        let (run, _) = apply(&w, new_run(json!({"at": "not a time"})), Event::Started, T0);
        assert_eq!(run.error_type.as_deref(), Some("template_error"));
    }

    #[test]
    fn max_duration_ends_a_waiting_run_timed_out() {
        let w = wf("id: w\nmax_duration: 1m\nsteps:\n  - { id: wait, type: wait_for_webhook }\n");
        let (run, effects) = apply(&w, new_run(json!({})), Event::Started, T0);
        assert_eq!(
            effects,
            vec![Effect::Park {
                step: "wait".into(),
                reason: waiting::WEBHOOK,
                until: Some(after(60_000))
            }]
        );
        let (run, effects) = apply(&w, run, Event::Continue, after(60_000));
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::TimedOut
            }]
        );
        assert!(run.waiting_reason.is_none());
    }

    #[test]
    fn trigger_workflow_starts_a_run_and_with_wait_takes_its_output() {
        let w = wf(
            "id: w\nsteps:\n  - { id: go, type: trigger_workflow, workflow: other, input: { n: '{{ trigger.n }}' }, wait: true }\n",
        );
        let (run, effects) = apply(&w, new_run(json!({"n": 3})), Event::Started, T0);
        assert_eq!(
            effects,
            vec![Effect::StartRun {
                step: "go".into(),
                workflow: "other".into(),
                input: json!({"n": 3})
            }]
        );
        // A repeated delivery asks again (the caller starts one run per run and step).
        let (_, again) = apply(&w, run.clone(), Event::Continue, after(1));
        assert_eq!(again, effects);
        let started = Event::ChildStarted {
            step: "go".into(),
            run_id: "c1".into(),
            workflow: "other".into(),
        };
        let (run, effects) = apply(&w, run, started, after(2));
        assert!(
            matches!(
                &effects[..],
                [Effect::Park {
                    reason: "workflow",
                    until: Some(at),
                    ..
                }] if *at == after(2).plus(CHILD_CHECK_INTERVAL)
            ),
            "{effects:?}"
        );
        // The check finds the child still running: it looks again later.
        let (_, effects) = apply(
            &w,
            run.clone(),
            Event::Continue,
            after(2).plus(CHILD_CHECK_INTERVAL),
        );
        assert_eq!(
            effects,
            vec![Effect::ScheduleTimer {
                at: after(2).plus(CHILD_CHECK_INTERVAL * 2)
            }]
        );
        assert_eq!(run.children, vec!["c1".to_string()]);
        let ended = |status, output| Event::ChildEnded {
            run_id: "c1".into(),
            status,
            output,
            error: Some("boom".into()),
        };
        let (other, effects) = apply(
            &w,
            run.clone(),
            Event::ChildEnded {
                run_id: "c2".into(),
                status: RunStatus::Succeeded,
                output: None,
                error: None,
            },
            after(3),
        );
        assert!(effects.is_empty());
        assert_eq!(other, run);
        let (ok, _) = apply(
            &w,
            run.clone(),
            ended(RunStatus::Succeeded, Some(json!({"x": 1}))),
            after(3),
        );
        assert_eq!(ok.step_outputs()["go"], json!({"x": 1}));
        let (bad, _) = apply(&w, run, ended(RunStatus::Failed, None), after(3));
        assert_eq!(bad.status, RunStatus::Failed);
        assert!(
            bad.error.as_deref().unwrap().contains("ended failed: boom"),
            "{:?}",
            bad.error
        );
    }

    #[test]
    fn trigger_workflow_without_wait_outputs_the_started_run() {
        let w = wf("id: w\nsteps:\n  - { id: go, type: trigger_workflow, workflow: other }\n");
        let run = apply(&w, new_run(json!({})), Event::Started, T0).0;
        let (run, effects) = apply(
            &w,
            run,
            Event::ChildStarted {
                step: "go".into(),
                run_id: "c1".into(),
                workflow: "other".into(),
            },
            after(1),
        );
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::Succeeded
            }]
        );
        assert_eq!(
            run.final_output,
            Some(json!({"run_id": "c1", "workflow": "other"}))
        );
    }

    #[test]
    fn cancel_ends_a_waiting_run_and_its_urls() {
        let w = wf(PARKING);
        let mut run = apply(&w, new_run(json!({})), Event::Started, T0).0;
        expose(&mut run, "http://h", secrets());
        let (run, effects) = apply(&w, run, Event::Cancel, after(1));
        assert_eq!(run.status, RunStatus::Cancelled);
        assert_eq!(run.used_tokens, vec!["s1".to_string()]);
        assert!(matches!(
            effects[0],
            Effect::Finish {
                status: RunStatus::Cancelled
            }
        ));
    }

    #[test]
    fn a_failed_callback_is_retried_with_backoff_and_then_given_up() {
        let w = wf(PARKING);
        let run = apply(&w, new_run(json!({})), Event::Started, T0).0;
        let (run, effects) = apply(&w, run, Event::Cancel, after(1));
        let Effect::Callback {
            attempt: 1,
            request,
            ..
        } = &effects[1]
        else {
            panic!("{effects:?}")
        };
        assert_eq!(request.url, "https://example.com/cb/r1");
        assert_eq!(
            request.body.as_ref().unwrap()["type"],
            json!("run.cancelled")
        );
        assert_eq!(
            request.body.as_ref().unwrap()["meta"]["status"],
            json!("cancelled")
        );
        let fail = |attempt| Event::CallbackDone {
            attempt,
            url: "u".into(),
            status: Some(503),
            error: Some(StepError {
                class: FailureClass::Status5xx,
                message: "503".into(),
            }),
        };
        let (run, effects) = apply(&w, run, fail(1), after(2));
        let [Effect::ScheduleTimer { at }] = effects[..] else {
            panic!("{effects:?}")
        };
        assert!(at > after(2) && at <= after(1002), "{at:?}");
        let (run, effects) = apply(&w, run, Event::Continue, after(3));
        assert_eq!(effects, vec![Effect::ScheduleTimer { at }]);
        let (run, effects) = apply(&w, run, Event::Continue, at);
        assert!(matches!(effects[..], [Effect::Callback { attempt: 2, .. }]));
        let (run, effects) = apply(&w, run, fail(2), at);
        assert!(effects.is_empty());
        assert_eq!(run.cursor.callback, None);
        assert_eq!(run.callbacks.len(), 2);
        assert!(run.callbacks.iter().all(|c| !c.succeeded));
        let (_, effects) = apply(&w, run, Event::Continue, after(5_000));
        assert!(effects.is_empty());
    }

    #[test]
    fn jitter_units_are_in_range_and_deterministic() {
        let a = jitter_unit("r", "s", 1);
        assert_eq!(a, jitter_unit("r", "s", 1));
        assert!((0.0..1.0).contains(&a));
        assert_ne!(a, jitter_unit("r", "s", 2));
    }

    fn cron_run(state: Option<Value>) -> Run {
        let mut run = new_run(json!({"scheduled_time": "2026-03-01T08:00:00.000Z"}));
        run.trigger = TriggerRef {
            kind: "cron".into(),
            id: "daily".into(),
        };
        run.state = state;
        run
    }

    #[test]
    fn a_cron_run_leaves_the_state_its_template_renders_reading_the_output_and_the_last_state() {
        let w = wf(r#"
id: w
triggers: [{ type: cron, id: daily, schedule: "@daily" }]
steps:
  - { id: page, type: transform, value: { items: 3, next: "{{ (state.cursor if state else 0) + 3 }}" } }
state: { cursor: "{{ output.next }}", at: "{{ trigger.scheduled_time }}" }
"#);
        let (run, effects) = apply(&w, cron_run(Some(json!({"cursor": 7}))), Event::Started, T0);
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: RunStatus::Succeeded
            }]
        );
        assert_eq!(
            run.next_state,
            Some(json!({"cursor": 10, "at": "2026-03-01T08:00:00.000Z"}))
        );
        let (first, _) = apply(&w, cron_run(None), Event::Started, T0);
        assert_eq!(
            first.next_state.as_ref().map(|s| &s["cursor"]),
            Some(&json!(3))
        );
    }

    #[test]
    fn without_a_state_template_the_outputs_state_field_is_the_next_state_if_any() {
        let w = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps:
  - { id: page, type: transform, value: { rows: [], state: { since: "{{ trigger.scheduled_time }}" } } }
"#);
        let (run, _) = apply(&w, cron_run(None), Event::Started, T0);
        assert_eq!(
            run.next_state,
            Some(json!({"since": "2026-03-01T08:00:00.000Z"}))
        );
        let plain = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps: [{ id: page, type: transform, value: [1, 2] }]
"#);
        let (run, _) = apply(&plain, cron_run(Some(json!(1))), Event::Started, T0);
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.next_state, None, "the saved state stays as it is");
    }

    #[test]
    fn a_failed_cron_run_leaves_no_state_and_a_broken_state_template_fails_the_run() {
        let failing = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps: [{ id: boom, type: fail, message: "no" }]
state: { n: 1 }
"#);
        let (run, _) = apply(&failing, cron_run(None), Event::Started, T0);
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.next_state, None);
        let broken = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps: [{ id: a, type: transform, value: 1 }]
state: { n: "{{ state.missing.deeper }}" }
"#);
        let (run, _) = apply(&broken, cron_run(None), Event::Started, T0);
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.error_type.as_deref(), Some("template_error"));
        assert!(
            run.error
                .as_deref()
                .unwrap_or_default()
                .starts_with("state:"),
            "{run:?}"
        );
    }
}
