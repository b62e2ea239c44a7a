//! Steps the engine runs itself: `transform` and `fail`.

use serde_json::Value;

use super::Then;
use crate::definition::{Step, Workflow};
use crate::engine::Effect;
use crate::engine::record::{self, Attempt, Failure};
use crate::run::{ErrorType, FailureClass, Run};
use crate::template;
use crate::time::Timestamp;

pub(in crate::engine) fn transform(
    wf: &Workflow,
    run: &mut Run,
    step: &Step,
    value: &Value,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    match template::render_value(value, &crate::run::TemplateView(run)) {
        Ok(output) => {
            let done = Attempt::now(run, &step.id, now);
            record::succeed_step(wf, run, done, output, now, effects);
            if run.status.is_terminal() {
                Then::Stop
            } else {
                Then::Next
            }
        }
        Err(e) => {
            record::template_failure(run, step, e, now, effects);
            Then::Stop
        }
    }
}

pub(in crate::engine) fn fail(
    run: &mut Run,
    step: &Step,
    message: &str,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    let msg = template::render_string(message, &run.template_context())
        .unwrap_or_else(|e| format!("{message} (the message template failed: {e})"));
    let failure = Failure {
        class: FailureClass::Request,
        error_type: ErrorType::FailStep,
        step_error: msg.clone(),
        run_error: msg,
    };
    let tried = Attempt::now(run, &step.id, now);
    record::fail_step(run, tried, None, failure, now, effects);
    Then::Stop
}
