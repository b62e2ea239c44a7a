//! Steps that park the run: `wait_for_webhook`, `approval`, `delay` and a waiting
//! `trigger_workflow`; the single-use URLs they expose and the notification they send.

use serde_json::{Value, json};

use super::Then;
use crate::definition::{
    Action, ApprovalAction, DEFAULT_APPROVAL_TIMEOUT, OnReject, OnTimeout, Step, Workflow,
};
use crate::engine::record::{self, Attempt, Failure};
use crate::engine::steps::http::render_http;
use crate::engine::{Effect, HttpRequest};
use crate::run::{ErrorType, FailureClass, Run, RunStatus, WaitReason};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// A `wait_for_webhook` step parks the run until its `resume_url` is called.
pub(in crate::engine) fn start_webhook(
    run: &mut Run,
    step: &Step,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
    let expires = step.timeout.map(|t| now.plus(t.std()));
    let payload = json!({"step": step.id, "since": now, "expires_at": expires});
    park(run, step, WaitReason::Webhook, payload, expires, effects);
    Then::Stop
}

/// An `approval` step parks the run until a person decides (or its timeout).
pub(in crate::engine) fn start_approval(
    run: &mut Run,
    step: &Step,
    a: &ApprovalAction,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Then {
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
            record::template_failure(run, step, e, now, effects);
            return Then::Stop;
        }
        None => None,
    };
    let payload = json!({
        "step": step.id,
        "since": now,
        "expires_at": expires,
        "summary": summary,
    });
    park(run, step, WaitReason::Approval, payload, expires, effects);
    Then::Stop
}

/// `Resumed`: the single-use `resume_url` was called with `payload`.
pub(in crate::engine) fn resumed(
    wf: &Workflow,
    run: &mut Run,
    payload: Value,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    if waits_for(run, WaitReason::Webhook) {
        succeed_wait(wf, run, payload, now, effects);
    }
}

/// `Decided`: a person approved or rejected the waiting approval.
pub(in crate::engine) fn decided(
    wf: &Workflow,
    run: &mut Run,
    approved: bool,
    comment: Option<String>,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    if !waits_for(run, WaitReason::Approval) {
        return;
    }
    let Some(Action::Approval(a)) = wf.steps.get(run.cursor.step).map(|s| &s.action) else {
        return;
    };
    let decision = if approved { "approved" } else { "rejected" };
    let output = json!({"decision": decision, "comment": comment, "decided_at": now});
    if approved || a.on_reject == OnReject::Continue {
        return succeed_wait(wf, run, output, now, effects);
    }
    let step = wf.steps[run.cursor.step].id.clone();
    let why = comment
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    let message = format!("step `{step}` was rejected{why}");
    let failure = Failure {
        class: FailureClass::Request,
        error_type: ErrorType::Rejected,
        step_error: message.clone(),
        run_error: message,
    };
    fail_wait(run, &step, output, failure, now, effects);
}

/// The wait's step failed with `output`: the run fails.
pub(in crate::engine) fn fail_wait(
    run: &mut Run,
    step: &str,
    output: Value,
    failure: Failure,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let tried = Attempt::now(run, step, now);
    record::fail_step(run, tried, Some(output), failure, now, effects);
}

pub(in crate::engine) fn waits_for(run: &Run, reason: WaitReason) -> bool {
    run.status == RunStatus::Waiting && run.waiting_reason == Some(reason)
}

/// The step of the current wait, when the run is waiting.
pub(in crate::engine) fn waiting_step<'a>(wf: &'a Workflow, run: &Run) -> Option<&'a Step> {
    (run.status == RunStatus::Waiting)
        .then(|| wf.steps.get(run.cursor.step))
        .flatten()
}

/// Ends the wait: its URLs become used, its fields are cleared.
pub(in crate::engine) fn leave_wait(run: &mut Run) {
    let tokens = std::mem::take(&mut run.waiting_tokens);
    run.used_tokens.extend(tokens.into_values());
    run.waiting_salt = None;
    run.waiting_reason = None;
    run.waiting_payload = None;
    run.waiting_expires_at = None;
    run.cursor.delay_until = None;
}

/// The wait's step succeeded with `output`: the run is `running` again and goes on, in the
/// executor (`Continue`).
pub(in crate::engine) fn succeed_wait(
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
    let since = run.waiting_since().unwrap_or(now);
    leave_wait(run);
    run.status = RunStatus::Running;
    run.cursor.attempt = attempt;
    let done = Attempt {
        step: &id,
        attempt,
        started_at: since,
        request: None,
    };
    record::succeed_step(wf, run, done, output, now, effects);
    if !run.status.is_terminal() {
        effects.push(Effect::Continue);
    }
}

/// `Continue` for a waiting run: a wait whose time is up ends; otherwise the timer is set
/// again (it fired early, or the delivery was a duplicate).
pub(in crate::engine) fn continue_waiting(
    wf: &Workflow,
    run: &mut Run,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let Some(step) = waiting_step(wf, run) else {
        return;
    };
    let Some(reason) = run.waiting_reason else {
        return;
    };
    if reason == WaitReason::Workflow {
        // The child's end wakes the run (the caller turns that delivery into `ChildEnded`);
        // this timer is the fallback should that wake-up be lost in a crash.
        effects.push(Effect::ScheduleTimer {
            at: child_check(run, now),
        });
        return;
    }
    if reason == WaitReason::Delay {
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
            let output = if reason == WaitReason::Approval {
                json!({"decision": "timed_out", "comment": null, "decided_at": now})
            } else {
                Value::Null
            };
            succeed_wait(wf, run, output, now, effects);
        } else {
            let what = if reason == WaitReason::Approval {
                "no decision"
            } else {
                "no callback"
            };
            let message = format!("step `{id}`: {what} before the wait's timeout");
            let failure = Failure {
                class: FailureClass::Timeout,
                error_type: ErrorType::WaitTimedOut,
                step_error: message.clone(),
                run_error: message,
            };
            fail_wait(run, &id, Value::Null, failure, now, effects);
        }
        return;
    }
    if let Some(at) = wait_timer(run) {
        effects.push(Effect::ScheduleTimer { at });
    }
}

/// How often a run waiting for a child run looks at it, in case the child's wake-up was
/// lost (a crash between the child's last write and the message to its parent).
pub const CHILD_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The next look at a waiting child run: at the check interval, or the deadline if sooner.
pub(in crate::engine) fn child_check(run: &Run, now: Timestamp) -> Timestamp {
    let check = now.plus(CHILD_CHECK_INTERVAL);
    run.cursor.deadline.map_or(check, |d| d.min(check))
}

/// When a waiting run must be looked at again: the wait's end or the run's deadline.
pub(in crate::engine) fn wait_timer(run: &Run) -> Option<Timestamp> {
    let end = run.cursor.delay_until.or(run.waiting_expires_at);
    match (end, run.cursor.deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parks the run at its current (parking) step.
pub(in crate::engine) fn park(
    run: &mut Run,
    step: &Step,
    reason: WaitReason,
    payload: Value,
    expires_at: Option<Timestamp>,
    effects: &mut Vec<Effect>,
) {
    run.status = RunStatus::Waiting;
    run.cursor.attempt = 1;
    run.waiting_reason = Some(reason);
    run.waiting_payload = Some(payload);
    run.waiting_expires_at = expires_at;
    if !reason.url_purposes().is_empty() {
        effects.push(Effect::Expose);
    }
    effects.push(Effect::Park {
        step: step.id.clone(),
        reason,
        until: wait_timer(run),
    });
    let notifies = match &step.action {
        Action::Approval(a) => a.notify.is_some(),
        Action::WaitForWebhook(w) => w.notify.is_some(),
        _ => false,
    };
    if notifies {
        effects.push(Effect::Notify {
            step: step.id.clone(),
        });
    }
}

/// The hash a run keeps of a single-use URL's secret: `sha256:` and its hex.
pub fn token_hash(secret: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Makes the single-use URLs of a parked `webhook` or `approval` wait: one secret per
/// purpose, `secret(purpose)` (≥ 128 bits, derived by the caller from `salt` under a key
/// of its own), of which the run keeps only the hash (`waiting_tokens`) and the salt.
/// Does nothing for other waits or when the URLs exist already.
pub fn expose(run: &mut Run, salt: String, secret: impl Fn(&str) -> String) {
    let Some(purposes) = run.waiting_reason.map(WaitReason::url_purposes) else {
        return;
    };
    if purposes.is_empty() || !run.waiting_tokens.is_empty() {
        return;
    }
    for purpose in purposes {
        run.waiting_tokens
            .insert((*purpose).to_string(), token_hash(&secret(purpose)));
    }
    run.waiting_salt = Some(salt);
}

/// The wait's URLs (`{base_url}/{purpose}/{run_id}.{secret}`), put into its
/// `waiting_payload` as `{purpose}_url`, for a notification or an answer: `secret`
/// derives each again from the run's salt.
pub fn show_urls(run: &mut Run, base_url: &str, secret: impl Fn(&str, &str) -> String) {
    let (Some(reason), Some(salt)) = (run.waiting_reason, run.waiting_salt.clone()) else {
        return;
    };
    let base = base_url.trim_end_matches('/');
    let mut payload = run.waiting_payload.take().unwrap_or_else(|| json!({}));
    for purpose in reason.url_purposes() {
        let s = secret(purpose, &salt);
        payload[format!("{purpose}_url")] = json!(format!("{base}/{purpose}/{}.{s}", run.id));
    }
    run.waiting_payload = Some(payload);
}

/// The notification request of a parked `wait_for_webhook` or `approval` step (after
/// [`expose`], on a run whose URLs [`show_urls`] put in): its templates see `wait` (`resume_url`, `expires_at`) or `approval`
/// (`review_url`, `approve_url`, `reject_url`, `expires_at`, `summary`).
pub fn wait_notification(wf: &Workflow, run: &Run) -> Option<Result<HttpRequest, TemplateError>> {
    if run.status != RunStatus::Waiting {
        return None;
    }
    let step = wf.steps.get(run.cursor.step)?;
    let (root, notify) = match (&step.action, run.waiting_reason) {
        (Action::Approval(a), Some(WaitReason::Approval)) => ("approval", a.notify.as_ref()?),
        (Action::WaitForWebhook(w), Some(WaitReason::Webhook)) => ("wait", w.notify.as_ref()?),
        _ => return None,
    };
    let mut ctx = run.template_context();
    ctx[root] = run.waiting_payload.clone().unwrap_or(Value::Null);
    Some(render_http(
        wf,
        notify,
        &ctx,
        format!("{}:{}:notify", run.id, step.id),
    ))
}
