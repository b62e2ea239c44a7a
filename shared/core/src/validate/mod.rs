//! Loading and validating a definition. Every problem is reported at once, each with its
//! path and line/column: a definition that validates does not fail later for a reason that
//! validation could have seen.
//!
//! Where things are: `load` parses and `load_value` checks the workflow as a whole (here);
//! `shape.rs` checks each part's type and fields (read from the schema the definition
//! types generate) and types the values; `triggers.rs` and `steps.rs` check what each
//! kind needs; `templates.rs` checks every template against the roots and steps it may
//! read.

mod credentials;
mod shape;
mod steps;
mod templates;
#[cfg(test)]
mod tests;
mod triggers;

use std::fmt;

pub use self::credentials::{secret_names, warnings, without_credentials};

use serde_json::Value;

use self::shape::{field, typed};
use self::templates::{
    EXTRACT_ROOTS, STEP_ROOTS, Scope, TRIGGER_ROOTS, check_string_template, check_value_template,
};
use crate::definition::*;
use crate::source::{self, Position, Positions, index};
use crate::time::Duration;

/// One thing wrong with a definition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    /// Where in the document, like `steps[1].retry.max_attempts`; empty for the whole.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "{l}:{c}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The text's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By file name; YAML unless it ends in `.json`.
    pub fn from_path(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

pub(super) struct Collector<'a> {
    positions: &'a Positions,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    pub(super) fn at(&mut self, path: &str, message: impl Into<String>) {
        let p = self.positions.of(path);
        self.push(path, p, message.into());
    }
    pub(super) fn at_key(&mut self, path: &str, message: impl Into<String>) {
        let p = self.positions.of_key(path);
        self.push(path, p, message.into());
    }
    fn push(&mut self, path: &str, pos: Option<Position>, message: String) {
        self.problems.push(Problem {
            path: path.to_string(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            message,
        });
    }
}

/// Parses and validates a definition.
pub fn load(text: &str, format: Format) -> Result<Workflow, Vec<Problem>> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(vec![too_large(text.len())]);
    }
    let parsed = match format {
        Format::Json => source::parse_json(text),
        Format::Yaml => source::parse(text),
    };
    let (value, positions) = parsed.map_err(|e| {
        vec![Problem {
            path: String::new(),
            line: e.position.map(|p| p.line),
            column: e.position.map(|p| p.column),
            message: e.message,
        }]
    })?;
    load_value(&value, &positions)
}

/// The problem of a definition text over [`MAX_DEFINITION_BYTES`].
pub fn too_large(len: usize) -> Problem {
    Problem {
        path: String::new(),
        line: None,
        column: None,
        message: format!(
            "the definition is {len} bytes; at most {MAX_DEFINITION_BYTES} are accepted"
        ),
    }
}

/// Validates a definition that is already a JSON value (positions may be empty).
pub fn load_value(value: &Value, positions: &Positions) -> Result<Workflow, Vec<Problem>> {
    let mut c = Collector {
        positions,
        problems: Vec::new(),
    };
    let Some(obj) = value.as_object() else {
        c.at(
            "",
            "a workflow definition must be a mapping with `id`, `triggers` and `steps`",
        );
        return Err(c.problems);
    };
    shape::check_workflow_fields(&mut c, value);

    let id: Option<String> = field(&mut c, obj, "", "id", true);
    let description: Option<Option<String>> = field(&mut c, obj, "", "description", false);
    let max_duration: Option<Option<Duration>> = field(&mut c, obj, "", "max_duration", false);
    let output = obj.get("output").cloned();
    let on_success: Option<Option<Callback>> = field(&mut c, obj, "", "on_success", false);
    let on_failure: Option<Option<Callback>> = field(&mut c, obj, "", "on_failure", false);
    let callback_secret: Option<Option<String>> = field(&mut c, obj, "", "callback_secret", false);
    let state = obj.get("state").cloned();
    let concurrency: Option<Option<Concurrency>> = field(&mut c, obj, "", "concurrency", false);
    if let Some(Some(conc)) = &concurrency {
        check_concurrency(&mut c, conc);
    }
    let allowed_hosts: Option<Option<Vec<String>>> = field(&mut c, obj, "", "allowed_hosts", false);
    let allowed_hosts = allowed_hosts.flatten().unwrap_or_default();
    check_hosts(&mut c, &allowed_hosts);
    let retention: Option<Option<Duration>> = field(&mut c, obj, "", "retention", false);
    if let Some(Some(r)) = &retention
        && !(MIN_RETENTION..=MAX_RETENTION).contains(&r.std())
    {
        c.at(
            "retention",
            "`retention` is how long runs and messages are kept: from 1h to 3650d",
        );
    }
    let triggers = typed_triggers(&mut c, obj.get("triggers"));
    let steps = typed_steps(&mut c, obj.get("steps"));

    if let Some(id) = &id
        && !valid_workflow_id(id)
    {
        c.at("id", format!("`{id}` is not a valid workflow id: use 1 to 64 lowercase letters, digits, `-` or `_`, starting with a letter or digit"));
    }
    if let Some(Some(d)) = &max_duration
        && d.std().is_zero()
    {
        c.at("max_duration", "`max_duration` must be longer than zero");
    }
    // Step ids as written, so that a step that failed to type-check still counts as existing.
    let raw_ids = raw_step_ids(&mut c, obj);
    triggers::check_triggers(&mut c, &triggers);
    steps::check_steps(&mut c, &steps, &raw_ids);
    for (key, cb) in [("on_success", &on_success), ("on_failure", &on_failure)] {
        if let Some(Some(cb)) = cb {
            steps::check_callback(&mut c, key, cb);
        }
    }
    if let Some(Some(secret)) = &callback_secret
        && crate::secrets::reference(secret).is_none()
        && !valid_callback_secret(secret)
    {
        c.at(
            "callback_secret",
            "a callback secret is `{{ secrets.NAME }}` naming a secret that holds `whsec_` followed by the base64 of 24 to 64 random bytes; leave it out to have one generated",
        );
    }
    let has_cron = triggers.iter().any(|(_, t)| matches!(t, Trigger::Cron(_)));
    check_output_and_state(&mut c, output.as_ref(), state.as_ref(), &raw_ids, has_cron);

    if !c.problems.is_empty() {
        c.problems
            .sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
        return Err(c.problems);
    }
    Ok(Workflow {
        id: id.unwrap_or_default(),
        description: description.flatten(),
        triggers: triggers.into_iter().map(|(_, t)| t).collect(),
        steps: steps.into_iter().map(|(_, s)| s).collect(),
        output,
        max_duration: max_duration.flatten(),
        on_success: on_success.flatten(),
        on_failure: on_failure.flatten(),
        callback_secret: callback_secret.flatten(),
        state,
        concurrency: concurrency.flatten(),
        allowed_hosts,
        retention: retention.flatten(),
        store_use: Default::default(),
    })
}

/// The shortest and longest `retention`.
pub const MIN_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);
pub const MAX_RETENTION: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// Each `allowed_hosts` entry is a host name, or `*.` and a domain.
fn check_hosts(c: &mut Collector, hosts: &[String]) {
    for (i, h) in hosts.iter().enumerate() {
        let name = h.strip_prefix("*.").unwrap_or(h);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty() && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            });
        if !ok {
            c.at(
                &format!("allowed_hosts[{i}]"),
                format!("`{h}` is not a host name: write `api.example.com`, or `*.example.com` for its subdomains (no scheme, port or path)"),
            );
        }
    }
}

fn check_concurrency(c: &mut Collector, conc: &Concurrency) {
    if conc.limit == 0 || conc.limit > 10_000 {
        c.at(
            "concurrency.limit",
            "`limit` is how many runs may be running or waiting at once: 1 to 10000",
        );
    }
    if let Some(key) = &conc.key {
        let scope = Scope {
            roots: TRIGGER_ROOTS,
            steps_before: &[],
            all_steps: &[],
        };
        check_string_template(c, key, "concurrency.key", &scope);
    }
}

/// The triggers that have a known shape and type-check, with their paths.
/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 200;
/// The most triggers a workflow may have.
pub const MAX_TRIGGERS: usize = 50;
/// The largest definition text, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 512 * 1024;

fn typed_triggers(c: &mut Collector, v: Option<&Value>) -> Vec<(String, Trigger)> {
    let mut triggers = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.len() > MAX_TRIGGERS => c.at(
            "triggers",
            format!(
                "a workflow has at most {MAX_TRIGGERS} triggers; this one has {}",
                items.len()
            ),
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = index("triggers", i);
                if !shape::check_trigger_shape(c, item, &path) {
                    continue;
                }
                if let Some(t) = typed::<Trigger>(c, item, &path) {
                    triggers.push((path, t));
                }
            }
        }
        Some(_) => c.at("triggers", "`triggers` must be a list"),
    }
    triggers
}

/// The steps that have a known shape and type-check, with their paths.
fn typed_steps(c: &mut Collector, v: Option<&Value>) -> Vec<(String, Step)> {
    let mut steps = Vec::new();
    match v {
        None => c.at(
            "",
            "a workflow needs `steps`: a list with at least one step",
        ),
        Some(Value::Array(items)) if items.is_empty() => {
            c.at("steps", "a workflow needs at least one step")
        }
        Some(Value::Array(items)) if items.len() > MAX_STEPS => c.at(
            "steps",
            format!("a workflow has at most {MAX_STEPS} steps; this one has {}: split it, e.g. with `trigger_workflow` steps", items.len()),
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = index("steps", i);
                if !shape::check_step_shape(c, item, &path) {
                    continue;
                }
                if let Some(s) = typed::<Step>(c, item, &path) {
                    steps.push((path, s));
                }
            }
        }
        Some(_) => c.at("steps", "`steps` must be a list"),
    }
    steps
}

/// The step ids as written (a step that failed to type-check still counts as existing);
/// an id used twice is a problem.
fn raw_step_ids<'a>(c: &mut Collector, obj: &'a serde_json::Map<String, Value>) -> Vec<&'a str> {
    let raw_ids: Vec<&str> = obj
        .get("steps")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    for (i, id) in raw_ids.iter().enumerate() {
        if raw_ids[..i].contains(id) {
            c.at(
                &format!("steps[{i}].id"),
                format!("step id `{id}` is used twice; step ids must be unique"),
            );
        }
    }
    raw_ids
}

/// The workflow's `output` template, and its `state` template (only with a cron trigger).
fn check_output_and_state(
    c: &mut Collector,
    output: Option<&Value>,
    state: Option<&Value>,
    raw_ids: &[&str],
    has_cron: bool,
) {
    if let Some(out) = output {
        let scope = Scope {
            roots: STEP_ROOTS,
            steps_before: raw_ids,
            all_steps: raw_ids,
        };
        check_value_template(c, out, "output", &scope);
    }
    if let Some(tpl) = state {
        let scope = Scope {
            roots: EXTRACT_ROOTS,
            steps_before: raw_ids,
            all_steps: raw_ids,
        };
        check_value_template(c, tpl, "state", &scope);
        if !has_cron {
            c.at_key(
                "state",
                "`state` is carried between the runs of a cron trigger, and this workflow has none; add a `type: cron` trigger or remove `state`",
            );
        }
    }
}

/// `whsec_` and the base64 of 24 to 64 bytes (the Standard Webhooks form).
pub fn valid_callback_secret(s: &str) -> bool {
    s.strip_prefix("whsec_").is_some_and(|b| {
        (32..=88).contains(&b.len())
            && b.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    })
}

pub fn valid_workflow_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

pub(super) fn valid_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// Kafka's own rule for topic names.
pub(super) fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A webhook token must be long enough to carry 128 random bits.
pub fn valid_token(t: &str) -> bool {
    t.len() >= 22
        && t.len() <= 128
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A key the context store refuses; the message says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadContextKey(String);

impl From<BadContextKey> for String {
    fn from(e: BadContextKey) -> Self {
        e.0
    }
}

/// A context store key: 1 to 200 characters, none of them a control character.
pub fn valid_context_key(key: &str) -> Result<(), BadContextKey> {
    if key.is_empty() || key.chars().count() > 200 {
        return Err(BadContextKey(format!(
            "`{key}` is not a context store key: use 1 to 200 characters"
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(BadContextKey(format!(
            "{key:?} is not a context store key: it holds a control character"
        )));
    }
    Ok(())
}
