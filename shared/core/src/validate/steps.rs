//! Steps: ids, `when`, timeouts and retries, what each kind needs, and the templates of
//! each with the steps it may read; and a workflow's callbacks.

use super::templates::{
    CALLBACK_ROOTS, EXTRACT_ROOTS, HTTP_ROOTS, LANE_HTTP_ROOTS, LANE_ROOTS, NOTIFY_ROOTS,
    STEP_ROOTS, Scope, WAIT_NOTIFY_ROOTS, check_expression, check_string_template,
    check_value_template,
};
use super::{Collector, valid_context_key, valid_identifier, valid_workflow_id};
use crate::definition::{
    Action, Branch, Callback, HttpAction, HttpMethod, LANE_MAX_STEPS, MAP_MAX_CONCURRENCY,
    PARALLEL_MAX_BRANCHES, Retry, Step,
};
use crate::source::{index, join};

pub(super) fn check_steps(c: &mut Collector, steps: &[(String, Step)], all: &[&str]) {
    check_sequence(c, steps, all, &[], STEP_ROOTS);
}

/// A sequence of steps: the workflow's (`outer` empty), or a lane's inside a `map` or
/// `parallel` step (`outer`: the workflow's steps before that step).
fn check_sequence(
    c: &mut Collector,
    steps: &[(String, Step)],
    all: &[&str],
    outer: &[&str],
    roots: &[&str],
) {
    for (path, step) in steps {
        // Steps before this one, as written (including any that failed to type-check).
        let pos = path
            .rsplit('[')
            .next()
            .unwrap_or_default()
            .trim_end_matches(']')
            .parse::<usize>()
            .unwrap_or(0);
        let mut before: Vec<&str> = outer.to_vec();
        before.extend(all.iter().take(pos).copied());
        let idp = join(path, "id");
        if !valid_identifier(&step.id) {
            c.at(&idp, format!("`{}` is not a valid step id: use letters, digits and `_`, starting with a letter (templates read it as `steps.{}`)", step.id, step.id));
        }
        let scope = Scope {
            roots,
            steps_before: &before,
            all_steps: all,
        };
        if let Some(when) = &step.when {
            check_expression(c, when, &join(path, "when"), &scope);
        }
        if let Some(t) = step.timeout
            && t.std().is_zero()
        {
            c.at(&join(path, "timeout"), "`timeout` must be longer than zero");
        }
        if let Some(r) = &step.retry {
            check_retry(c, &join(path, "retry"), r);
            if !matches!(step.action, Action::Http(_)) {
                c.at(
                    &join(path, "retry"),
                    format!(
                        "a `{}` step is not retried; `retry` applies to `http` steps",
                        step.action.kind()
                    ),
                );
            }
        }
        check_action(c, path, step, &scope);
        before.push(&step.id);
        let extract_scope = Scope {
            roots: EXTRACT_ROOTS,
            steps_before: &before,
            all_steps: all,
        };
        for (name, v) in &step.extract {
            let ep = join(&join(path, "extract"), name);
            if !valid_identifier(name) {
                c.at_key(
                    &ep,
                    format!("`{name}` is not a valid context key: use letters, digits and `_`"),
                );
            }
            check_value_template(c, v, &ep, &extract_scope);
        }
        for (name, v) in &step.extract_to_context {
            let ep = join(&join(path, "extract_to_context"), name);
            if let Err(why) = valid_context_key(name) {
                c.at_key(&ep, why);
            }
            check_value_template(c, v, &ep, &extract_scope);
        }
    }
}

/// What each kind of step needs.
fn check_action(c: &mut Collector, path: &str, step: &Step, scope: &Scope) {
    match &step.action {
        Action::Http(h) => {
            let in_lane = scope.roots.contains(&"item");
            let http_scope = Scope {
                roots: if in_lane { LANE_HTTP_ROOTS } else { HTTP_ROOTS },
                steps_before: scope.steps_before,
                all_steps: scope.all_steps,
            };
            check_http(c, path, h, &http_scope)
        }
        Action::Transform { value } => {
            check_value_template(c, value, &join(path, "value"), scope)
        }
        Action::Fail { message } => {
            check_string_template(c, message, &join(path, "message"), scope)
        }
        Action::WaitForWebhook(w) => {
            if let Some(n) = &w.notify {
                let notify_scope = Scope {
                    roots: WAIT_NOTIFY_ROOTS,
                    steps_before: scope.steps_before,
                    all_steps: scope.all_steps,
                };
                check_http(c, &join(path, "notify"), n, &notify_scope);
            }
        }
        Action::Approval(a) => {
            if let Some(s) = &a.summary {
                check_string_template(c, s, &join(path, "summary"), scope);
            }
            if let Some(n) = &a.notify {
                let notify_scope = Scope {
                    roots: NOTIFY_ROOTS,
                    steps_before: scope.steps_before,
                    all_steps: scope.all_steps,
                };
                check_http(c, &join(path, "notify"), n, &notify_scope);
            }
        }
        Action::Delay(d) => match (&d.duration, &d.until) {
            (Some(_), Some(_)) | (None, None) => c.at(
                path,
                "a `delay` step needs exactly one of `duration` (like 10m) or `until` (an RFC 3339 time template)",
            ),
            (None, Some(u)) => check_string_template(c, u, &join(path, "until"), scope),
            (Some(_), None) => {}
        },
        Action::Map(m) => {
            check_expression(c, &m.items, &join(path, "items"), scope);
            if m.concurrency == 0 || m.concurrency > MAP_MAX_CONCURRENCY {
                c.at(
                    &join(path, "concurrency"),
                    format!("`concurrency` is how many items run at the same time: 1 to {MAP_MAX_CONCURRENCY}"),
                );
            }
            check_lane(c, &join(path, "steps"), &m.steps, scope.steps_before, "map");
        }
        Action::Parallel(p) => check_branches(c, path, &p.branches, scope.steps_before),
        Action::TriggerWorkflow(t) => {
            if !valid_workflow_id(&t.workflow) {
                c.at(
                    &join(path, "workflow"),
                    format!("`{}` is not a valid workflow id", t.workflow),
                );
            }
            if let Some(input) = &t.input {
                check_value_template(c, input, &join(path, "input"), scope);
            }
        }
    }
}

/// A `parallel` step's branches: 1 to [`PARALLEL_MAX_BRANCHES`], each with its own id and
/// steps.
fn check_branches(c: &mut Collector, path: &str, branches: &[Branch], outer: &[&str]) {
    let bp = join(path, "branches");
    if branches.is_empty() || branches.len() > PARALLEL_MAX_BRANCHES {
        c.at(
            &bp,
            format!(
                "a `parallel` step has 1 to {PARALLEL_MAX_BRANCHES} branches; this one has {}",
                branches.len()
            ),
        );
    }
    for (i, b) in branches.iter().enumerate() {
        let p = index(&bp, i);
        if !valid_identifier(&b.id) {
            c.at(&join(&p, "id"), format!("`{}` is not a valid branch id: use letters, digits and `_`, starting with a letter", b.id));
        }
        if branches[..i].iter().any(|o| o.id == b.id) {
            c.at(
                &join(&p, "id"),
                format!(
                    "branch id `{}` is used twice; branch ids must be unique",
                    b.id
                ),
            );
        }
        check_lane(c, &join(&p, "steps"), &b.steps, outer, "parallel");
    }
}

/// The steps of a `map` item or a `parallel` branch: only `http`, `transform` and `fail`
/// steps, without extracts (lanes run side by side; the step's own `extract` reads their
/// joined output); their templates also see `item`, `index` and `branch`.
fn check_lane(c: &mut Collector, path: &str, steps: &[Step], outer: &[&str], kind: &str) {
    if steps.is_empty() || steps.len() > LANE_MAX_STEPS {
        c.at(
            path,
            format!(
                "a `{kind}` step runs 1 to {LANE_MAX_STEPS} steps in each lane; this one has {}",
                steps.len()
            ),
        );
    }
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    let mut typed = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let sp = index(path, i);
        if ids[..i].contains(&s.id.as_str()) {
            c.at(
                &join(&sp, "id"),
                format!("step id `{}` is used twice in this lane", s.id),
            );
        }
        if !matches!(
            s.action,
            Action::Http(_) | Action::Transform { .. } | Action::Fail { .. }
        ) {
            c.at(
                &join(&sp, "type"),
                format!("`{}` steps cannot run inside a `{kind}` step: only `http`, `transform` and `fail` steps can; put it before or after the `{kind}` step", s.action.kind()),
            );
            continue;
        }
        if !s.extract.is_empty() || !s.extract_to_context.is_empty() {
            c.at(
                &sp,
                format!("the steps inside a `{kind}` step have no `extract` or `extract_to_context` (they run side by side); extract from the `{kind}` step's output instead"),
            );
        }
        typed.push((sp, s.clone()));
    }
    check_sequence(c, &typed, &ids, outer, LANE_ROOTS);
}

fn check_http(c: &mut Collector, path: &str, h: &HttpAction, scope: &Scope) {
    check_string_template(c, &h.url, &join(path, "url"), scope);
    if !(h.url.contains("{{") || h.url.starts_with("http://") || h.url.starts_with("https://")) {
        c.at(
            &join(path, "url"),
            format!("`{}` is not an http:// or https:// URL", h.url),
        );
    }
    for (name, v) in &h.headers {
        let hp = join(&join(path, "headers"), name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.at(&hp, format!("`{name}` is not a valid header name"));
        }
        check_string_template(c, v, &hp, scope);
    }
    for (name, v) in &h.query {
        check_string_template(c, v, &join(&join(path, "query"), name), scope);
    }
    if let Some(body) = &h.body {
        if matches!(h.method, HttpMethod::Get) {
            c.at(
                &join(path, "body"),
                "a GET request cannot have a body; use `query`, or another method",
            );
        }
        check_value_template(c, body, &join(path, "body"), scope);
    }
    for (i, s) in h.success_status.iter().flatten().enumerate() {
        if !s.is_valid() {
            c.at(
                &index(&join(path, "success_status"), i),
                "a success status is a number from 100 to 599 or a class such as `2xx`",
            );
        }
    }
}

fn check_retry(c: &mut Collector, rp: &str, r: &Retry) {
    if r.max_attempts == 0 || r.max_attempts > 100 {
        c.at(
            &join(rp, "max_attempts"),
            "`max_attempts` counts every attempt, the first included: 1 to 100",
        );
    }
    if r.initial > r.max {
        c.at(
            &join(rp, "initial"),
            format!("`initial` ({}) is longer than `max` ({})", r.initial, r.max),
        );
    }
    if r.on.is_empty() {
        c.at(&join(rp, "on"), "`on` must name at least one failure class");
    }
}

pub(super) fn check_callback(c: &mut Collector, path: &str, cb: &Callback) {
    let scope = Scope {
        roots: CALLBACK_ROOTS,
        steps_before: &[],
        all_steps: &[],
    };
    check_string_template(c, &cb.url, &join(path, "url"), &scope);
    if !(cb.url.contains("{{") || cb.url.starts_with("http://") || cb.url.starts_with("https://")) {
        c.at(
            &join(path, "url"),
            format!("`{}` is not an http:// or https:// URL", cb.url),
        );
    }
    for (name, v) in &cb.headers {
        let hp = join(&join(path, "headers"), name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.at(&hp, format!("`{name}` is not a valid header name"));
        }
        check_string_template(c, v, &hp, &scope);
    }
    if let Some(r) = &cb.retry {
        check_retry(c, &join(path, "retry"), r);
    }
}
