//! Templates in a definition: each parses, and reads only the roots available where it
//! renders (and only the steps that ran before it).

use std::collections::BTreeSet;

use serde_json::Value;

use super::Collector;
use crate::template;

pub(super) struct Scope<'a> {
    pub roots: &'a [&'a str],
    /// Steps whose outputs exist when this template renders.
    pub steps_before: &'a [&'a str],
    pub all_steps: &'a [&'a str],
}

pub(super) const STEP_ROOTS: &[&str] = &["trigger", "steps", "context", "store", "run", "state"];

/// Where a request is rendered (an `http` step), `secrets` too.
pub(super) const HTTP_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "secrets",
];

/// Inside a `map` or `parallel` step's lanes: `item`, `index` and `branch` too.
pub(super) const LANE_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "item", "index", "branch",
];

pub(super) const LANE_HTTP_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "secrets", "item", "index", "branch",
];

pub(super) const EXTRACT_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "output",
];

pub(super) const TRIGGER_ROOTS: &[&str] = &["trigger"];

pub(super) const REPLY_ROOTS: &[&str] = &["trigger", "run", "output", "status"];

pub(super) const NOTIFY_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "approval", "secrets",
];

pub(super) const WAIT_NOTIFY_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "wait", "secrets",
];

pub(super) const CALLBACK_ROOTS: &[&str] = &["trigger", "context", "run", "secrets"];

pub(super) fn check_refs(c: &mut Collector, path: &str, refs: &BTreeSet<String>, scope: &Scope) {
    for r in refs {
        let mut parts = r.split('.');
        let root = parts.next().unwrap_or_default();
        if root == "secrets" {
            if !scope.roots.contains(&root) {
                c.at(
                    path,
                    format!("the template reads `{r}`, but secrets are only read where a request is rendered (an `http` step's url, headers, query and body; a notification; a callback), so that a value never lands in a run's record"),
                );
            } else if !parts.next().is_some_and(crate::secrets::valid_name) {
                c.at(
                    path,
                    "name the secret: `secrets.NAME`, with a name of letters, digits and `_`",
                );
            }
            continue;
        }
        if !scope.roots.contains(&root) {
            // Jinja's own globals (loop, range, namespace...) are not reads of run data.
            if matches!(
                root,
                "loop" | "range" | "namespace" | "dict" | "lipsum" | "cycler" | "joiner" | "debug"
            ) {
                continue;
            }
            c.at(
                path,
                format!(
                    "the template reads `{r}`, but `{root}` is not available here; use one of: {}",
                    scope.roots.join(", ")
                ),
            );
            continue;
        }
        if root == "steps"
            && let Some(step) = parts.next()
            && !scope.steps_before.contains(&step)
        {
            let why = if scope.all_steps.contains(&step) {
                "which has not run yet at this point (a step can only read the steps before it)"
            } else {
                "which does not exist"
            };
            c.at(path, format!("the template reads `steps.{step}`, {why}"));
        }
    }
}

pub(super) fn check_string_template(c: &mut Collector, tpl: &str, path: &str, scope: &Scope) {
    match template::check_string(tpl) {
        Ok(refs) => check_refs(c, path, &refs, scope),
        Err(e) => c.at(path, format!("the template does not parse: {e}")),
    }
}

pub(super) fn check_expression(c: &mut Collector, expr: &str, path: &str, scope: &Scope) {
    match template::check_expression(expr) {
        Ok(refs) => check_refs(c, path, &refs, scope),
        Err(e) => c.at(path, format!("the expression does not parse: {e}")),
    }
}

pub(super) fn check_value_template(c: &mut Collector, tpl: &Value, path: &str, scope: &Scope) {
    for (suffix, res) in template::check_value(tpl) {
        let p = format!("{path}{suffix}");
        match res {
            Ok(refs) => check_refs(c, &p, &refs, scope),
            Err(e) => c.at(&p, format!("the template does not parse: {e}")),
        }
    }
}
