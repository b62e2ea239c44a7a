//! Loading and validating a definition. Every problem is reported at once, each with its
//! path and line/column: a definition that validates does not fail later for a reason that
//! validation could have seen.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::definition::*;
use crate::source::{self, Position, Positions, index, join};
use crate::template;
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

struct Collector<'a> {
    positions: &'a Positions,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn at(&mut self, path: &str, message: impl Into<String>) {
        let p = self.positions.of(path);
        self.push(path, p, message.into());
    }
    fn at_key(&mut self, path: &str, message: impl Into<String>) {
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
    unknown_fields(&mut c, value, "", WORKFLOW_FIELDS, "workflow");

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
        if conc.limit == 0 || conc.limit > 10_000 {
            c.at(
                "concurrency.limit",
                "`limit` is how many runs may be running or waiting at once: 1 to 10000",
            );
        }
        if let Some(key) = &conc.key {
            check_string_template(
                &mut c,
                key,
                "concurrency.key",
                &Scope {
                    roots: TRIGGER_ROOTS,
                    steps_before: &[],
                    all_steps: &[],
                },
            );
        }
    }
    for key in ["on_success", "on_failure"] {
        if let Some(v) = obj.get(key) {
            unknown_fields(&mut c, v, key, CALLBACK_FIELDS, "callback");
        }
    }

    let mut triggers = Vec::new();
    match obj.get("triggers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = index("triggers", i);
                if !check_trigger_shape(&mut c, item, &path) {
                    continue;
                }
                if let Some(t) = typed::<Trigger>(&mut c, item, &path) {
                    triggers.push((path, t));
                }
            }
        }
        Some(_) => c.at("triggers", "`triggers` must be a list"),
    }
    let mut steps = Vec::new();
    match obj.get("steps") {
        None => c.at(
            "",
            "a workflow needs `steps`: a list with at least one step",
        ),
        Some(Value::Array(items)) if items.is_empty() => {
            c.at("steps", "a workflow needs at least one step")
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = index("steps", i);
                if !check_step_shape(&mut c, item, &path) {
                    continue;
                }
                if let Some(s) = typed::<Step>(&mut c, item, &path) {
                    steps.push((path, s));
                }
            }
        }
        Some(_) => c.at("steps", "`steps` must be a list"),
    }

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
    check_triggers(&mut c, &triggers);
    check_steps(&mut c, &steps, &raw_ids);
    for (key, cb) in [("on_success", &on_success), ("on_failure", &on_failure)] {
        if let Some(Some(cb)) = cb {
            check_callback(&mut c, key, cb);
        }
    }
    if let Some(Some(secret)) = &callback_secret
        && !valid_callback_secret(secret)
    {
        c.at(
            "callback_secret",
            "a callback secret is `whsec_` followed by the base64 of 24 to 64 random bytes; leave it out to have one generated",
        );
    }
    if let Some(out) = &output {
        check_value_template(
            &mut c,
            out,
            "output",
            &Scope {
                roots: STEP_ROOTS,
                steps_before: &raw_ids,
                all_steps: &raw_ids,
            },
        );
    }

    if let Some(tpl) = &state {
        check_value_template(
            &mut c,
            tpl,
            "state",
            &Scope {
                roots: EXTRACT_ROOTS,
                steps_before: &raw_ids,
                all_steps: &raw_ids,
            },
        );
        if !triggers.iter().any(|(_, t)| matches!(t, Trigger::Cron(_))) {
            c.at_key(
                "state",
                "`state` is carried between the runs of a cron trigger, and this workflow has none; add a `type: cron` trigger or remove `state`",
            );
        }
    }

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
        store_use: Default::default(),
    })
}

/// `whsec_` and the base64 of 24 to 64 bytes (the Standard Webhooks form).
pub fn valid_callback_secret(s: &str) -> bool {
    s.strip_prefix("whsec_").is_some_and(|b| {
        (32..=88).contains(&b.len())
            && b.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    })
}

fn check_callback(c: &mut Collector, path: &str, cb: &Callback) {
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

pub fn valid_workflow_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn valid_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// Kafka's own rule for topic names.
fn valid_topic(t: &str) -> bool {
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

const WORKFLOW_FIELDS: &[&str] = &[
    "id",
    "description",
    "triggers",
    "steps",
    "output",
    "max_duration",
    "on_success",
    "on_failure",
    "callback_secret",
    "state",
    "concurrency",
];
const CALLBACK_FIELDS: &[&str] = &["url", "headers", "retry", "timeout"];
const TRIGGER_TYPES: &[&str] = &["webhook", "manual", "cron", "kafka", "flow"];
const KAFKA_FIELDS: &[&str] = &[
    "type",
    "id",
    "topics",
    "ordering",
    "filter",
    "condition",
    "idempotency_key",
];
const CRON_FIELDS: &[&str] = &[
    "type",
    "id",
    "schedule",
    "timezone",
    "overlap",
    "catch_up",
    "condition",
    "idempotency_key",
];
const WEBHOOK_FIELDS: &[&str] = &[
    "type",
    "id",
    "token",
    "methods",
    "auth",
    "response",
    "sync_budget",
    "reply",
    "filter",
    "condition",
    "idempotency_key",
];
const MANUAL_FIELDS: &[&str] = &["type", "id", "filter", "condition", "idempotency_key"];
const FLOW_FIELDS: &[&str] = &[
    "type",
    "id",
    "workflow",
    "on",
    "for_each",
    "filter",
    "condition",
    "idempotency_key",
];
const AUTH_TYPES: &[&str] = &["none", "api_key", "basic", "standard_webhooks"];
const REPLY_FIELDS: &[&str] = &["status", "headers", "body"];
const STEP_TYPES: &[&str] = &[
    "http",
    "transform",
    "fail",
    "wait_for_webhook",
    "approval",
    "delay",
    "trigger_workflow",
];
const STEP_COMMON: &[&str] = &[
    "id",
    "type",
    "when",
    "timeout",
    "retry",
    "extract",
    "extract_to_context",
];
const HTTP_FIELDS: &[&str] = &[
    "method",
    "url",
    "headers",
    "query",
    "body",
    "success_status",
];
const TRANSFORM_FIELDS: &[&str] = &["value"];
const FAIL_FIELDS: &[&str] = &["message"];
const WAIT_FIELDS: &[&str] = &["on_timeout", "notify"];
const APPROVAL_FIELDS: &[&str] = &["summary", "on_reject", "on_timeout", "notify"];
const DELAY_FIELDS: &[&str] = &["duration", "until"];
const TRIGGER_WORKFLOW_FIELDS: &[&str] = &["workflow", "input", "wait"];
const RETRY_FIELDS: &[&str] = &["max_attempts", "backoff", "initial", "max", "jitter", "on"];

fn unknown_fields(c: &mut Collector, v: &Value, path: &str, allowed: &[&str], what: &str) {
    let Some(obj) = v.as_object() else { return };
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            let hint = suggest(k, allowed)
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("the fields of a {what} are: {}", allowed.join(", ")));
            c.at_key(
                &join(path, k),
                format!("unknown field `{k}` in a {what}; {hint}"),
            );
        }
    }
}

fn suggest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    options
        .iter()
        .map(|o| (strsim::jaro_winkler(word, o), *o))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| o)
}

/// Checks `type` and the fields allowed for it; returns the type when it is known.
fn check_type<'a>(
    c: &mut Collector,
    v: &Value,
    path: &str,
    types: &[&'a str],
    what: &str,
) -> Option<&'a str> {
    let Some(obj) = v.as_object() else {
        c.at(path, format!("a {what} must be a mapping"));
        return None;
    };
    let Some(t) = obj.get("type") else {
        c.at(
            path,
            format!("a {what} needs a `type`: one of {}", types.join(", ")),
        );
        return None;
    };
    let t = t.as_str().unwrap_or_default();
    match types.iter().find(|x| **x == t) {
        Some(found) => Some(found),
        None => {
            let hint = suggest(t, types)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            c.at(
                &join(path, "type"),
                format!(
                    "unknown {what} type `{t}`{hint}; expected one of {}",
                    types.join(", ")
                ),
            );
            None
        }
    }
}

/// Reports unknown fields; false when the type itself is unknown (nothing more to check).
fn check_trigger_shape(c: &mut Collector, v: &Value, path: &str) -> bool {
    let mut known = true;
    match check_type(c, v, path, TRIGGER_TYPES, "trigger") {
        Some("webhook") => {
            unknown_fields(c, v, path, WEBHOOK_FIELDS, "webhook trigger");
            if let Some(auth) = v.get("auth") {
                let ap = join(path, "auth");
                known &= auth.get("type").is_none()
                    || AUTH_TYPES.contains(&auth["type"].as_str().unwrap_or_default());
                if let Some(t) = check_type(c, auth, &ap, AUTH_TYPES, "webhook auth") {
                    let fields: &[&str] = match t {
                        "api_key" => &["type", "header", "keys"],
                        "standard_webhooks" => &["type", "secrets", "tolerance"],
                        "basic" => &["type", "username", "password"],
                        _ => &["type"],
                    };
                    unknown_fields(c, auth, &ap, fields, &format!("`{t}` auth"));
                }
            }
            if let Some(reply) = v.get("reply") {
                unknown_fields(c, reply, &join(path, "reply"), REPLY_FIELDS, "reply");
            }
        }
        Some("cron") => unknown_fields(c, v, path, CRON_FIELDS, "cron trigger"),
        Some("kafka") => unknown_fields(c, v, path, KAFKA_FIELDS, "kafka trigger"),
        Some("flow") => unknown_fields(c, v, path, FLOW_FIELDS, "flow trigger"),
        Some(_) => unknown_fields(c, v, path, MANUAL_FIELDS, "manual trigger"),
        None => known = false,
    }
    known
}

fn check_step_shape(c: &mut Collector, v: &Value, path: &str) -> bool {
    let t = check_type(c, v, path, STEP_TYPES, "step");
    if let Some(t) = t {
        let own = match t {
            "http" => HTTP_FIELDS,
            "transform" => TRANSFORM_FIELDS,
            "wait_for_webhook" => WAIT_FIELDS,
            "approval" => APPROVAL_FIELDS,
            "delay" => DELAY_FIELDS,
            "trigger_workflow" => TRIGGER_WORKFLOW_FIELDS,
            _ => FAIL_FIELDS,
        };
        let allowed: Vec<&str> = STEP_COMMON.iter().chain(own).copied().collect();
        unknown_fields(c, v, path, &allowed, &format!("`{t}` step"));
    }
    if let Some(r) = v.get("retry") {
        unknown_fields(c, r, &join(path, "retry"), RETRY_FIELDS, "retry policy");
    }
    if matches!(t, Some("approval" | "wait_for_webhook"))
        && let Some(n) = v.get("notify")
    {
        unknown_fields(c, n, &join(path, "notify"), HTTP_FIELDS, "notification");
    }
    t.is_some()
}

/// Deserializes one field of a mapping; `None` when it failed (the problem is recorded).
fn field<T: DeserializeOwned>(
    c: &mut Collector,
    obj: &serde_json::Map<String, Value>,
    path: &str,
    key: &str,
    required: bool,
) -> Option<T> {
    let p = join(path, key);
    match obj.get(key) {
        None if required => {
            c.at(path, format!("missing field `{key}`"));
            None
        }
        None => typed(c, &Value::Null, &p),
        Some(v) => typed(c, v, &p),
    }
}

/// Deserializes `v`, recording each type error. After an error in a field, the field is
/// left out and typing is tried again, so that one bad field does not hide the problems of
/// the others (the value returned then serves only for further checks: the definition is
/// already invalid).
fn typed<T: DeserializeOwned>(c: &mut Collector, v: &Value, path: &str) -> Option<T> {
    let mut current = v.clone();
    for _ in 0..16 {
        let err = match serde_path_to_error::deserialize::<_, T>(&current) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let inner = err.path().to_string();
        let full = if inner == "." || inner.is_empty() {
            path.to_string()
        } else if inner.starts_with('[') {
            format!("{path}{inner}")
        } else {
            join(path, &inner)
        };
        let segments: Vec<serde_path_to_error::Segment> = err.path().iter().cloned().collect();
        c.at(&full, humanize(&err.into_inner().to_string()));
        if !remove_at(&mut current, &segments) {
            return None;
        }
    }
    None
}

/// Removes the value at `segments`; false when there is nothing to remove (the error is
/// about the value itself, such as a missing field).
fn remove_at(v: &mut Value, segments: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = v;
    for seg in parents {
        node = match (seg, node) {
            (Segment::Map { key }, Value::Object(m)) => match m.get_mut(key) {
                Some(n) => n,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(a)) => match a.get_mut(*index) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Object(m)) => m.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(a)) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

/// serde's messages, in the words of a definition.
fn humanize(msg: &str) -> String {
    msg.replace("internally tagged enum Trigger", "trigger")
        .replace("internally tagged enum Action", "step")
        .replace("internally tagged enum WebhookAuth", "auth")
        .replace("variant", "value")
}

struct Scope<'a> {
    roots: &'a [&'a str],
    /// Steps whose outputs exist when this template renders.
    steps_before: &'a [&'a str],
    all_steps: &'a [&'a str],
}

const STEP_ROOTS: &[&str] = &["trigger", "steps", "context", "store", "run", "state"];
const EXTRACT_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "output",
];
const TRIGGER_ROOTS: &[&str] = &["trigger"];
const REPLY_ROOTS: &[&str] = &["trigger", "run", "output", "status"];
const NOTIFY_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "approval",
];
const WAIT_NOTIFY_ROOTS: &[&str] = &[
    "trigger", "steps", "context", "store", "run", "state", "wait",
];
const CALLBACK_ROOTS: &[&str] = &["trigger", "context", "run"];

fn check_refs(c: &mut Collector, path: &str, refs: &BTreeSet<String>, scope: &Scope) {
    for r in refs {
        let mut parts = r.split('.');
        let root = parts.next().unwrap_or_default();
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

fn check_string_template(c: &mut Collector, tpl: &str, path: &str, scope: &Scope) {
    match template::check_string(tpl) {
        Ok(refs) => check_refs(c, path, &refs, scope),
        Err(e) => c.at(path, format!("the template does not parse: {e}")),
    }
}

fn check_expression(c: &mut Collector, expr: &str, path: &str, scope: &Scope) {
    match template::check_expression(expr) {
        Ok(refs) => check_refs(c, path, &refs, scope),
        Err(e) => c.at(path, format!("the expression does not parse: {e}")),
    }
}

fn check_value_template(c: &mut Collector, tpl: &Value, path: &str, scope: &Scope) {
    for (suffix, res) in template::check_value(tpl) {
        let p = format!("{path}{suffix}");
        match res {
            Ok(refs) => check_refs(c, &p, &refs, scope),
            Err(e) => c.at(&p, format!("the template does not parse: {e}")),
        }
    }
}

fn check_triggers(c: &mut Collector, triggers: &[(String, Trigger)]) {
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    let trigger_scope = Scope {
        roots: TRIGGER_ROOTS,
        steps_before: &[],
        all_steps: &[],
    };
    for (path, t) in triggers {
        if !ids.insert(t.id().to_string()) {
            c.at(
                &join(path, "id"),
                format!(
                    "trigger id `{}` is used twice; give each trigger its own `id`",
                    t.id()
                ),
            );
        }
        if !valid_identifier(t.id()) {
            c.at(
                &join(path, "id"),
                format!(
                    "`{}` is not a valid trigger id: use letters, digits and `_`",
                    t.id()
                ),
            );
        }
        if let Some(cond) = t.condition() {
            check_expression(c, cond, &join(path, "condition"), &trigger_scope);
        }
        if let Some(key) = t.idempotency_key() {
            check_string_template(c, key, &join(path, "idempotency_key"), &trigger_scope);
        }
        if let Trigger::Kafka(k) = t {
            if k.topics.is_empty() {
                c.at(
                    &join(path, "topics"),
                    "`topics` must name at least one topic",
                );
            }
            for (i, topic) in k.topics.iter().enumerate() {
                if !valid_topic(topic) {
                    c.at(
                        &format!("{}[{i}]", join(path, "topics")),
                        format!(
                            "`{topic}` is not a Kafka topic name: use 1 to 249 of a-z A-Z 0-9 . _ -"
                        ),
                    );
                }
            }
            continue;
        }
        if let Trigger::Flow(f) = t {
            if !valid_workflow_id(&f.workflow) {
                c.at(
                    &join(path, "workflow"),
                    format!("`{}` is not a workflow id", f.workflow),
                );
            }
            if f.on.is_empty() {
                c.at(
                    &join(path, "on"),
                    "`on` must name at least one of succeeded, failed, timed_out, cancelled",
                );
            }
            continue;
        }
        if let Trigger::Cron(cron) = t {
            if let Err(e) = cron.parsed() {
                let field = if e.contains("time zone") {
                    "timezone"
                } else {
                    "schedule"
                };
                c.at(&join(path, field), e);
            }
            continue;
        }
        let Trigger::Webhook(w) = t else { continue };
        if let Some(token) = &w.token {
            if !valid_token(token) {
                c.at(&join(path, "token"), "a webhook token needs 22 to 128 characters of A-Z a-z 0-9 - _ (at least 128 random bits); leave it out to have one generated");
            } else if !tokens.insert(token.clone()) {
                c.at(
                    &join(path, "token"),
                    "this token is used by another trigger of the workflow",
                );
            }
        }
        if w.methods.is_empty() {
            c.at(
                &join(path, "methods"),
                "`methods` must name at least one HTTP method",
            );
        }
        match &w.auth {
            WebhookAuth::ApiKey { header, keys } => {
                if keys.is_empty() || keys.iter().any(|k| k.len() < 16) {
                    c.at(
                        &join(path, "auth.keys"),
                        "`keys` needs at least one key of 16 characters or more",
                    );
                }
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    c.at(
                        &join(path, "auth.header"),
                        format!("`{header}` is not a valid header name"),
                    );
                }
            }
            WebhookAuth::Basic { username, password } => {
                if username.is_empty() || username.contains(':') || password.len() < 8 {
                    c.at(&join(path, "auth"), "basic auth needs a username without `:` and a password of 8 characters or more");
                }
            }
            WebhookAuth::StandardWebhooks { secrets, tolerance } => {
                if secrets.is_empty() {
                    c.at(
                        &join(path, "auth.secrets"),
                        "`secrets` needs at least one `whsec_…` secret",
                    );
                }
                for (i, s) in secrets.iter().enumerate() {
                    if !valid_callback_secret(s) {
                        c.at(
                            &format!("{}[{i}]", join(path, "auth.secrets")),
                            "a signing secret is `whsec_` followed by the base64 of 24 to 64 random bytes",
                        );
                    }
                }
                if tolerance.std().is_zero() {
                    c.at(
                        &join(path, "auth.tolerance"),
                        "`tolerance` must be longer than zero",
                    );
                }
            }
            WebhookAuth::None => {}
        }
        if let Some(reply) = &w.reply {
            let rp = join(path, "reply");
            if let Some(s) = reply.status
                && !(100..=599).contains(&s)
            {
                c.at(&join(&rp, "status"), format!("{s} is not an HTTP status"));
            }
            let reply_scope = Scope {
                roots: REPLY_ROOTS,
                steps_before: &[],
                all_steps: &[],
            };
            for (name, v) in &reply.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    c.at(
                        &join(&join(&rp, "headers"), name),
                        format!("`{name}` is not a valid header name"),
                    );
                }
                check_string_template(c, v, &join(&join(&rp, "headers"), name), &reply_scope);
            }
            if let Some(body) = &reply.body {
                check_value_template(c, body, &join(&rp, "body"), &reply_scope);
            }
        }
    }
}

fn check_steps(c: &mut Collector, steps: &[(String, Step)], all: &[&str]) {
    for (path, step) in steps {
        // Steps before this one, as written (including any that failed to type-check).
        let pos = path
            .trim_start_matches("steps[")
            .trim_end_matches(']')
            .parse::<usize>()
            .unwrap_or(0);
        let mut before: Vec<&str> = all.iter().take(pos).copied().collect();
        let idp = join(path, "id");
        if !valid_identifier(&step.id) {
            c.at(&idp, format!("`{}` is not a valid step id: use letters, digits and `_`, starting with a letter (templates read it as `steps.{}`)", step.id, step.id));
        }
        let scope = Scope {
            roots: STEP_ROOTS,
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
        match &step.action {
            Action::Http(h) => check_http(c, path, h, &scope),
            Action::Transform { value } => {
                check_value_template(c, value, &join(path, "value"), &scope)
            }
            Action::Fail { message } => {
                check_string_template(c, message, &join(path, "message"), &scope)
            }
            Action::WaitForWebhook(w) => {
                if let Some(n) = &w.notify {
                    let notify_scope = Scope {
                        roots: WAIT_NOTIFY_ROOTS,
                        steps_before: &before,
                        all_steps: all,
                    };
                    check_http(c, &join(path, "notify"), n, &notify_scope);
                }
            }
            Action::Approval(a) => {
                if let Some(s) = &a.summary {
                    check_string_template(c, s, &join(path, "summary"), &scope);
                }
                if let Some(n) = &a.notify {
                    let notify_scope = Scope {
                        roots: NOTIFY_ROOTS,
                        steps_before: &before,
                        all_steps: all,
                    };
                    check_http(c, &join(path, "notify"), n, &notify_scope);
                }
            }
            Action::Delay(d) => match (&d.duration, &d.until) {
                (Some(_), Some(_)) | (None, None) => c.at(
                    path,
                    "a `delay` step needs exactly one of `duration` (like 10m) or `until` (an RFC 3339 time template)",
                ),
                (None, Some(u)) => check_string_template(c, u, &join(path, "until"), &scope),
                (Some(_), None) => {}
            },
            Action::TriggerWorkflow(t) => {
                if !valid_workflow_id(&t.workflow) {
                    c.at(
                        &join(path, "workflow"),
                        format!("`{}` is not a valid workflow id", t.workflow),
                    );
                }
                if let Some(input) = &t.input {
                    check_value_template(c, input, &join(path, "input"), &scope);
                }
            }
        }
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

/// A context store key: 1 to 200 characters, none of them a control character.
pub fn valid_context_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > 200 {
        return Err(format!(
            "`{key}` is not a context store key: use 1 to 200 characters"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(format!(
            "{key:?} is not a context store key: it holds a control character"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        load(text, Format::Yaml).expect_err("should not validate")
    }

    const GOOD: &str = r#"
id: orders
triggers:
  - type: webhook
    token: aaaaaaaaaaaaaaaaaaaaaaaa
    response: sync
  - type: manual
steps:
  - id: fetch
    type: http
    method: POST
    url: "https://example.com/orders/{{ trigger.body.id }}"
    body: { id: "{{ trigger.body.id }}" }
    retry: { max_attempts: 3, backoff: exponential, initial: 200ms }
    extract: { status: "{{ output.status }}" }
  - id: shape
    type: transform
    value: { n: "{{ steps.fetch.body.count }}", s: "{{ context.status }}" }
output: "{{ steps.shape }}"
max_duration: 5m
"#;

    #[test]
    fn a_good_definition_loads() {
        let wf = load(GOOD, Format::Yaml).expect("valid");
        assert_eq!(wf.steps.len(), 2);
        assert_eq!(wf.triggers[1].id(), "manual");
        assert_eq!(wf.steps[0].retry.as_ref().unwrap().max_attempts, 3);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_line() {
        let text = r#"
id: Bad Id
steps:
  - id: a
    type: transform
    value: "{{ steps.b.x }}"
    tiemout: 5s
  - id: b
    type: http
    url: "{{ steps.nope.url }}"
    timeout: soon
  - id: a
    type: fail
    message: "{{ trigger.body. }}"
"#;
        let ps = problems(text);
        let has = |path: &str, needle: &str| {
            ps.iter()
                .any(|p| p.path == path && p.message.contains(needle))
        };
        assert!(has("id", "not a valid workflow id"), "{ps:#?}");
        assert!(has("steps[0].value", "has not run yet"), "{ps:#?}");
        assert!(has("steps[0].tiemout", "did you mean `timeout`"), "{ps:#?}");
        assert!(has("steps[1].timeout", "not a duration"), "{ps:#?}");
        assert!(has("steps[2].message", "does not parse"), "{ps:#?}");
        let tiemout = ps.iter().find(|p| p.path == "steps[0].tiemout").unwrap();
        assert_eq!((tiemout.line, tiemout.column), (Some(7), Some(5)));
    }

    #[test]
    fn a_bad_field_does_not_hide_the_problems_of_the_others() {
        let ps = problems(
            "id: x\nsteps:\n  - id: a\n    type: http\n    url: '{{ steps.zz }}'\n    timeout: soon\n    retry: {max_attempts: many}\n",
        );
        assert!(ps.iter().any(|p| p.path == "steps[0].timeout"), "{ps:#?}");
        assert!(
            ps.iter().any(|p| p.path == "steps[0].retry.max_attempts"),
            "{ps:#?}"
        );
        assert!(
            ps.iter()
                .any(|p| p.path == "steps[0].url" && p.message.contains("does not exist")),
            "{ps:#?}"
        );
    }

    #[test]
    fn duplicate_and_unknown_step_references_are_named() {
        let ps = problems(
            "id: x\nsteps:\n  - {id: a, type: transform, value: 1}\n  - {id: a, type: transform, value: '{{ steps.zzz }}'}\n",
        );
        assert!(
            ps.iter().any(|p| p.message.contains("used twice")),
            "{ps:#?}"
        );
        assert!(
            ps.iter().any(|p| p.message.contains("does not exist")),
            "{ps:#?}"
        );
    }

    #[test]
    fn an_unknown_step_type_suggests_the_nearest() {
        let ps = problems("id: x\nsteps:\n  - {id: a, type: transfrom, value: 1}\n");
        assert!(
            ps[0].message.contains("did you mean `transform`"),
            "{ps:#?}"
        );
    }

    #[test]
    fn templates_may_only_read_known_roots() {
        let ps =
            problems("id: x\nsteps:\n  - {id: a, type: transform, value: '{{ secretz.k }}'}\n");
        assert!(
            ps[0].message.contains("`secretz` is not available"),
            "{ps:#?}"
        );
    }

    #[test]
    fn a_trigger_condition_cannot_read_steps() {
        let ps = problems(
            "id: x\ntriggers:\n  - {type: webhook, condition: 'steps.a'}\nsteps:\n  - {id: a, type: transform, value: 1}\n",
        );
        assert!(
            ps[0].message.contains("`steps` is not available"),
            "{ps:#?}"
        );
    }

    #[test]
    fn a_short_token_is_refused() {
        let ps = problems(
            "id: x\ntriggers:\n  - {type: webhook, token: short}\nsteps:\n  - {id: a, type: transform, value: 1}\n",
        );
        assert!(ps[0].message.contains("128"), "{ps:#?}");
    }

    #[test]
    fn a_missing_field_is_named() {
        let ps = problems("id: x\nsteps:\n  - {id: a, type: http}\n");
        assert!(
            ps.iter().any(|p| p.message.contains("missing field `url`")),
            "{ps:#?}"
        );
    }

    #[test]
    fn json_definitions_get_line_numbers() {
        let ps = load("{\n \"id\": \"x\",\n \"steps\": [\n  {\"id\": \"a\", \"type\": \"transform\", \"valu\": 1}\n ]\n}", Format::Json)
            .expect_err("bad");
        assert!(
            ps.iter()
                .any(|p| p.line == Some(4) && p.message.contains("unknown field `valu`")),
            "{ps:#?}"
        );
    }

    #[test]
    fn a_syntax_error_is_one_problem_with_a_position() {
        let ps = load("id: [", Format::Yaml).expect_err("bad");
        assert_eq!(ps.len(), 1);
        assert!(ps[0].line.is_some());
    }

    #[test]
    fn parking_steps_and_callbacks_are_checked() {
        let ps = problems(
            r#"
id: w
on_success: { url: "ftp://x", retries: 3 }
callback_secret: nope
steps:
  - { id: d, type: delay }
  - { id: w, type: wait_for_webhook, retry: { max_attempts: 2 } }
  - id: a
    type: approval
    summary: "{{ approval.review_url }}"
    notify: { url: "https://chat/{{ approval.review_url }}", body: { x: "{{ steps.later.x }}" } }
  - { id: t, type: trigger_workflow, workflow: "Not Valid" }
  - { id: later, type: transform, value: 1 }
"#,
        );
        let text: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "no `{needle}` in {text:#?}"
            )
        };
        has("on_success.url: `ftp://x` is not an http");
        has("unknown field `retries` in a callback");
        has("callback_secret: a callback secret is `whsec_`");
        has("exactly one of `duration`");
        has("a `wait_for_webhook` step is not retried");
        has("steps[2].summary: the template reads `approval.review_url`");
        has("steps.later`, which has not run yet");
        has("`Not Valid` is not a valid workflow id");
        assert!(!text.iter().any(|t| t.contains("notify.url")), "{text:#?}");
    }

    #[test]
    fn cron_triggers_are_checked_with_the_fix_named() {
        let ps = problems(
            r#"
id: x
triggers:
  - { type: cron, schedule: "0 25 * * *" }
  - { type: cron, id: b, schedule: "@fortnightly" }
  - { type: cron, id: c, schedule: "0 8 * * *", timezone: Europe/Pariss }
  - { type: cron, id: d, schedul: "0 8 * * *" }
  - { type: cron, id: e, schedule: "0 8 * * *", overlap: wait }
steps: [{ id: a, type: transform, value: 1 }]
"#,
        );
        let at = |path: &str| {
            ps.iter()
                .find(|p| p.path == path)
                .unwrap_or_else(|| panic!("no problem at {path}: {ps:#?}"))
                .message
                .clone()
        };
        assert!(at("triggers[0].schedule").contains("hour 0-23"));
        assert!(at("triggers[1].schedule").contains("@hourly, @daily"));
        assert!(at("triggers[2].timezone").contains("IANA"));
        assert!(at("triggers[3].schedul").contains("did you mean `schedule`?"));
        assert!(
            at("triggers[4]").contains("`skip`, `queue`, `allow`"),
            "{ps:#?}"
        );
        for p in &ps {
            assert!(p.line.is_some(), "every problem has its line: {p:?}");
        }
    }

    #[test]
    fn a_good_cron_trigger_loads_with_its_defaults() {
        let wf = load(
            r#"
id: x
triggers:
  - { type: cron, schedule: "*/10 * * * * *" }
  - { type: cron, id: daily, schedule: "@daily", timezone: America/New_York, overlap: queue, catch_up: all }
steps: [{ id: a, type: transform, value: "{{ state.cursor if state else 0 }}" }]
state: { cursor: "{{ output }}" }
"#,
            Format::Yaml,
        )
        .expect("valid");
        let Trigger::Cron(first) = &wf.triggers[0] else {
            panic!("a cron trigger")
        };
        assert_eq!(first.id, "cron");
        assert_eq!(first.overlap, crate::definition::Overlap::Skip);
        assert_eq!(first.catch_up, crate::definition::CatchUp::None);
        assert!(first.parsed().expect("parses").has_seconds());
        let Trigger::Cron(daily) = &wf.triggers[1] else {
            panic!("a cron trigger")
        };
        assert_eq!(daily.overlap, crate::definition::Overlap::Queue);
        assert_eq!(daily.catch_up, crate::definition::CatchUp::All);
    }

    #[test]
    fn a_state_template_needs_a_cron_trigger_and_known_roots() {
        let ps = problems(
            "id: x\ntriggers: [{type: manual}]\nsteps: [{id: a, type: transform, value: 1}]\nstate: '{{ output }}'\n",
        );
        assert!(
            ps[0].message.contains("add a `type: cron` trigger"),
            "{ps:#?}"
        );
        let ps = problems(
            "id: x\ntriggers: [{type: cron, schedule: '@daily'}]\nsteps: [{id: a, type: transform, value: 1}]\nstate: '{{ approval.comment }}'\n",
        );
        assert!(
            ps[0].message.contains("`approval` is not available"),
            "{ps:#?}"
        );
    }

    #[test]
    fn flow_triggers_are_checked() {
        let text = r#"id: x
triggers:
  - { type: flow, workflow: "not an id", on: [] }
  - { type: flow, id: b, workflow: y, condition: "steps.a.x", after: z }
steps: [{id: a, type: transform, value: 1}]
"#;
        let ps = load(text, Format::Yaml).expect_err("invalid");
        let text = format!("{ps:#?}");
        assert!(text.contains("triggers[0].workflow"), "{text}");
        assert!(text.contains("`not an id` is not a workflow id"), "{text}");
        assert!(text.contains("triggers[0].on"), "{text}");
        assert!(text.contains("triggers[1].condition"), "{text}");
        assert!(text.contains("triggers[1].after"), "{text}");
        let ps = load(
            "id: x\ntriggers: [{type: flow, workflow: y, on: [done]}]\nsteps: [{id: a, type: transform, value: 1}]\n",
            Format::Yaml,
        )
        .expect_err("unknown status");
        assert!(format!("{ps:#?}").contains("done"), "{ps:#?}");
        let wf = load(
            "id: x\ntriggers: [{type: flow, workflow: y}]\nsteps: [{id: a, type: transform, value: '{{ trigger.body }}'}]\n",
            Format::Yaml,
        )
        .expect("valid");
        let Trigger::Flow(f) = &wf.triggers[0] else {
            panic!("a flow trigger")
        };
        assert_eq!(f.id, "flow");
        assert_eq!(f.on, vec![crate::definition::FlowOn::Succeeded]);
        assert!(!f.for_each);
    }

    #[test]
    fn kafka_triggers_are_checked() {
        let ps = problems(
            r#"
id: x
triggers:
  - { type: kafka, topics: [] }
  - { type: kafka, id: b, topics: ["bad topic!"], ordering: keys }
  - { type: kafka, id: c, topics: [ok], condition: "steps.a.x" }
steps: [{ id: a, type: transform, value: 1 }]
"#,
        );
        let text = format!("{ps:#?}");
        assert!(text.contains("triggers[0].topics"), "{text}");
        assert!(
            text.contains("`topics` must name at least one topic"),
            "{text}"
        );
        assert!(text.contains("expected `none` or `key`"), "{text}");
        let wf = load(
            "id: x\ntriggers: [{type: kafka, topics: [orders.v1, refunds], ordering: key, filter: {body: {type: created}}}]\nsteps: [{id: a, type: transform, value: '{{ trigger.key }}'}]\n",
            Format::Yaml,
        )
        .expect("valid");
        let Trigger::Kafka(k) = &wf.triggers[0] else {
            panic!("a kafka trigger")
        };
        assert_eq!(k.id, "kafka");
        assert_eq!(k.ordering, crate::definition::KafkaOrdering::Key);
        let ps = problems(
            "id: x\ntriggers: [{type: kafka, topics: [ok], condition: 'steps.a.x'}]\nsteps: [{id: a, type: transform, value: 1}]\n",
        );
        assert!(
            ps[0].message.contains("`steps` is not available"),
            "{ps:#?}"
        );
        let ps = problems(
            "id: x\ntriggers: [{type: kafka, topics: ['bad topic!']}]\nsteps: [{id: a, type: transform, value: 1}]\n",
        );
        assert_eq!(ps[0].path, "triggers[0].topics[0]", "{ps:#?}");
    }
}
