//! The callback of an ended run: `on_success` / `on_failure`, signed by the caller and
//! retried with back-off.

use std::collections::BTreeMap;

use serde_json::json;

use super::retry::{jitter_unit, retries_on};
use super::{DEFAULT_CALLBACK_TIMEOUT, Effect, Event, HttpRequest, envelope};
use crate::definition::{HttpMethod, Workflow};
use crate::run::{CallbackAttempt, CallbackCursor, Run};
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// A run has just ended: its callback, when the workflow has one for this end, gets its
/// first attempt.
pub(super) fn start(wf: &Workflow, run: &mut Run, now: Timestamp, effects: &mut Vec<Effect>) {
    if wf.callback_for(run.status).is_some() {
        run.cursor.callback = Some(CallbackCursor {
            attempt: 1,
            retry_at: None,
        });
        push_callback(wf, run, now, effects);
    }
}

/// An ended run only delivers its callback.
pub(super) fn apply_ended(
    wf: &Workflow,
    mut run: Run,
    event: Event,
    now: Timestamp,
) -> (Run, Vec<Effect>) {
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
    // A request: its templates may read `secrets` (markers the caller resolves).
    let ctx = crate::secrets::request_context(&run.template_context());
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
            url: template::render_url(&cb.url, &ctx)?,
            headers,
            query: BTreeMap::new(),
            body: Some(body),
            idempotency_key: format!("{}:callback", run.id),
            allowed_hosts: wf.allowed_hosts.clone(),
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
