//! `delay` steps: park the run for a duration or until a time.

use serde_json::json;

use super::Then;
use super::waits::park;
use crate::definition::{DelayAction, Step, Workflow};
use crate::engine::Effect;
use crate::engine::record::{self, Attempt};
use crate::run::{Run, WaitReason};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

pub(in crate::engine) fn start(
    wf: &Workflow,
    run: &mut Run,
    step: &Step,
    d: &DelayAction,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    let until = match (&d.duration, &d.until) {
        (Some(dur), _) => Ok(now.plus(dur.std())),
        (None, Some(tpl)) => template::render_string(tpl, &run.template_context())
            .map_err(|e| e.0)
            .and_then(|s| Timestamp::parse_rfc3339(s.trim()).map_err(String::from)),
        (None, None) => Ok(now),
    };
    match until {
        Ok(until) if until <= now => {
            // A time already past: the delay is over at once.
            let done = Attempt {
                step: &step.id,
                attempt: 1,
                started_at: now,
                request: None,
            };
            let output = json!({"waited_until": until});
            record::succeed_step(wf, run, done, output, now, effects);
            if run.status.is_terminal() {
                return Then::Stop;
            }
            Then::Next
        }
        Ok(until) => {
            run.cursor.delay_until = Some(until);
            let payload = json!({"step": step.id, "since": now, "until": until});
            park(run, step, WaitReason::Delay, payload, None, effects);
            Then::Stop
        }
        Err(msg) => {
            let e = TemplateError(format!("until: {msg}"));
            record::template_failure(run, step, e, now, effects);
            Then::Stop
        }
    }
}
