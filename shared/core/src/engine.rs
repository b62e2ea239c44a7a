//! The run state machine: `apply(workflow, run, event, now) -> (run', effects)`.
//!
//! Pure: the engine renders templates and runs pure steps (`transform`, `fail`) itself, and
//! asks its caller, through effects, for everything that needs the outside world (an HTTP
//! call, a timer). The caller performs the effects, feeds the results back as events, and
//! stores the run with a write conditional on its version.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde_json::{Value, json};

use crate::definition::{Action, HttpMethod, RetryOn, Step, Workflow};
use crate::run::{FailureClass, Run, RunStatus, StepError, StepExecution, StepStatus};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// The default per-attempt timeout of an `http` step.
pub const DEFAULT_STEP_TIMEOUT: StdDuration = StdDuration::from_secs(30);

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
    /// Deliver `Continue` at `at` (retry back-off).
    ScheduleTimer { at: Timestamp },
    /// The run ended; it carries its final status.
    Finish { status: RunStatus },
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
/// result for a step that already moved on) change nothing and produce no effects.
pub fn apply(wf: &Workflow, mut run: Run, event: Event, now: Timestamp) -> (Run, Vec<Effect>) {
    let mut effects = Vec::new();
    if run.status.is_terminal() {
        return (run, effects);
    }
    match event {
        Event::Started => {
            if run.status != RunStatus::Queued {
                return apply(wf, run, Event::Continue, now);
            }
            run.status = RunStatus::Running;
            run.claimed_at = Some(now);
            run.started_at = Some(now);
            run.cursor.deadline = wf.max_duration.map(|d| now.plus(d.std()));
            advance(wf, &mut run, now, &mut effects);
        }
        Event::Continue => {
            if run.status == RunStatus::Queued {
                return apply(wf, run, Event::Started, now);
            }
            if past_deadline(&run, now) {
                finish_timed_out(&mut run, now, &mut effects);
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
    }
    (run, effects)
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
            Action::Http(_) => {
                issue(wf, run, now, effects);
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
    match output {
        Ok(out) => {
            run.final_output = Some(out);
            end(run, RunStatus::Succeeded, now, effects);
        }
        Err(e) => fail_run(run, "template_error", format!("output: {e}"), now, effects),
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
    let Action::Http(h) = &step.action else {
        advance(wf, run, now, effects);
        return;
    };
    let ctx = run.template_context();
    let rendered = (|| -> Result<HttpRequest, TemplateError> {
        let mut headers = BTreeMap::new();
        for (k, v) in &h.headers {
            headers.insert(k.to_ascii_lowercase(), template::render_string(v, &ctx)?);
        }
        let mut query = BTreeMap::new();
        for (k, v) in &h.query {
            query.insert(k.clone(), template::render_string(v, &ctx)?);
        }
        Ok(HttpRequest {
            method: h.method,
            url: template::render_string(&h.url, &ctx)?,
            headers,
            query,
            body: h
                .body
                .as_ref()
                .map(|b| template::render_value(b, &ctx))
                .transpose()?,
            idempotency_key: format!("{}:{}", run.id, step.id),
        })
    })();
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

fn extract(step: &Step, run: &mut Run) -> Result<(), TemplateError> {
    if step.extract.is_empty() {
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

    #[test]
    fn jitter_units_are_in_range_and_deterministic() {
        let a = jitter_unit("r", "s", 1);
        assert_eq!(a, jitter_unit("r", "s", 1));
        assert!((0.0..1.0).contains(&a));
        assert_ne!(a, jitter_unit("r", "s", 2));
    }
}
