//! Whether and when a failed attempt is tried again.

use serde_json::Value;

use super::Effect;
use super::record::{self, Attempt};
use crate::definition::{RetryOn, Workflow};
use crate::run::{ErrorType, FailureClass, Run, StepError};
use crate::time::Timestamp;

/// A step attempt failed: it is recorded, then retried after its back-off when the step's
/// `retry` allows, else the run fails.
pub(super) fn step_failed(
    wf: &Workflow,
    run: &mut Run,
    tried: Attempt,
    error: StepError,
    output: Option<Value>,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let step = tried.step.to_string();
    let attempt = tried.attempt;
    let class = error.class;
    let message = error.message.clone();
    record::record_failure(run, tried, output, error, now);
    if record::past_deadline(run, now) {
        return record::finish_timed_out(run, now, effects);
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
            let why = format!("step `{step}` failed{tries}: {message}");
            record::fail_run(run, ErrorType::StepFailed, why, now, effects);
        }
    }
}

pub(super) fn retries_on(on: &[RetryOn], class: FailureClass) -> bool {
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
pub(super) fn jitter_unit(run_id: &str, step: &str, attempt: u32) -> f64 {
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
