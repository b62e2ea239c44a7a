//! `http` and `trigger_workflow` steps: rendered here, performed by the caller.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::definition::{Action, HttpAction, Workflow};
use crate::engine::advance::advance;
use crate::engine::record;
use crate::engine::{DEFAULT_STEP_TIMEOUT, Effect, HttpRequest, SuccessRule};
use crate::run::Run;
use crate::template::{self, TemplateError};
use crate::time::Timestamp;

/// Renders the current http step and asks for it to be performed.
pub(in crate::engine) fn issue(
    wf: &Workflow,
    run: &mut Run,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let Some(step) = wf.steps.get(run.cursor.step) else {
        advance(wf, run, now, effects);
        return;
    };
    let h = match &step.action {
        Action::Http(h) => h,
        Action::TriggerWorkflow(t) => {
            let input = match &t.input {
                Some(tpl) => template::render_value(tpl, &crate::run::TemplateView(run)),
                None => Ok(Value::Null),
            };
            match input {
                Ok(input) => effects.push(Effect::StartRun {
                    step: step.id.clone(),
                    workflow: t.workflow.clone(),
                    input,
                }),
                Err(e) => record::template_failure(run, step, e, now, effects),
            }
            return;
        }
        _ => {
            advance(wf, run, now, effects);
            return;
        }
    };
    let rendered = render_http(
        wf,
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
        Err(e) => record::template_failure(run, step, e, now, effects),
    }
}

pub(in crate::engine) fn render_http(
    wf: &Workflow,
    h: &HttpAction,
    ctx: &Value,
    idempotency_key: String,
) -> Result<HttpRequest, TemplateError> {
    // A request: its templates may read `secrets` (markers the caller resolves).
    let ctx = &crate::secrets::request_context(ctx);
    let mut headers = BTreeMap::new();
    for (k, v) in &h.headers {
        let value =
            template::render_string(v, ctx).map_err(|e| e.in_field(&format!("headers.{k}")))?;
        headers.insert(k.to_ascii_lowercase(), value);
    }
    let mut query = BTreeMap::new();
    for (k, v) in &h.query {
        let value =
            template::render_string(v, ctx).map_err(|e| e.in_field(&format!("query.{k}")))?;
        query.insert(k.clone(), value);
    }
    Ok(HttpRequest {
        method: h.method,
        url: template::render_url(&h.url, ctx).map_err(|e| e.in_field("url"))?,
        headers,
        query,
        body: h
            .body
            .as_ref()
            .map(|b| template::render_value(b, ctx).map_err(|e| e.in_field("body")))
            .transpose()?,
        idempotency_key,
        allowed_hosts: wf.allowed_hosts.clone(),
    })
}
