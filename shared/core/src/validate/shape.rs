//! The shape of a definition before its meaning: each mapping's `type` and fields, and the
//! typing of values into the definition types with every error kept. The fields each
//! part allows are read from the JSON Schema the definition types generate (the schema
//! `tripline schema` prints), so they cannot drift from the serde structs.

use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Collector;
use crate::definition::Workflow;
use crate::source::{index, join};

/// The fields of each part of a definition, in the order the types declare them.
struct Fields {
    workflow: Vec<String>,
    callback: Vec<String>,
    retry: Vec<String>,
    reply: Vec<String>,
    http: Vec<String>,
    kafka_cluster: Vec<String>,
    kafka_sasl: Vec<String>,
    /// The fields every step has (`id`, `type`, `when`, …).
    step_common: Vec<String>,
    /// Each kind's own fields, by `type`, in declaration order.
    triggers: Vec<(String, Vec<String>)>,
    steps: Vec<(String, Vec<String>)>,
    auths: Vec<(String, Vec<String>)>,
}

fn fields() -> &'static Fields {
    static FIELDS: OnceLock<Fields> = OnceLock::new();
    FIELDS.get_or_init(|| {
        // One schema, the workflow's, holds every part's in its `$defs`: generated once.
        let schema = schemars::schema_for!(Workflow);
        let root = schema.as_value();
        let defs = root.get("$defs");
        let def = |name: &str| defs.and_then(|d| d.get(name));
        let properties = |name: &str| keys(def(name).and_then(|d| d.get("properties")));
        let mut step_common = properties("Step");
        step_common.insert(1.min(step_common.len()), "type".to_string());
        Fields {
            workflow: keys(root.get("properties")),
            callback: properties("Callback"),
            retry: properties("Retry"),
            reply: properties("CustomReply"),
            http: properties("HttpAction"),
            kafka_cluster: properties("KafkaCluster"),
            kafka_sasl: properties("KafkaSasl"),
            step_common,
            triggers: variants(def("Trigger"), defs),
            steps: variants(def("Step"), defs)
                .into_iter()
                .map(|(t, mut f)| {
                    f.retain(|x| x != "type");
                    (t, f)
                })
                .collect(),
            auths: variants(def("WebhookAuth"), defs),
        }
    })
}

/// The variants of an internally tagged enum's schema (`oneOf`): each `type` with its
/// fields (`type` first, then the variant's own, from its `$ref` when it has one).
fn variants(schema: Option<&Value>, defs: Option<&Value>) -> Vec<(String, Vec<String>)> {
    let Some(Value::Array(variants)) = schema.and_then(|s| s.get("oneOf")) else {
        return Vec::new();
    };
    variants
        .iter()
        .filter_map(|v| {
            let tag = v.pointer("/properties/type/const")?.as_str()?.to_string();
            let mut fields = keys(v.get("properties"));
            if let Some(name) = v
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
            {
                let target = defs.and_then(|d| d.get(name));
                fields.extend(keys(target.and_then(|t| t.get("properties"))));
            }
            Some((tag, fields))
        })
        .collect()
}

fn keys(properties: Option<&Value>) -> Vec<String> {
    properties
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn types(of: &[(String, Vec<String>)]) -> Vec<&str> {
    of.iter().map(|(t, _)| t.as_str()).collect()
}

fn own<'a>(of: &'a [(String, Vec<String>)], t: &str) -> &'a [String] {
    of.iter()
        .find(|(x, _)| x == t)
        .map_or(&[][..], |(_, f)| f.as_slice())
}

/// The top-level fields of a workflow.
pub(super) fn check_workflow_fields(c: &mut Collector, v: &Value) {
    let f = fields();
    unknown_fields(c, v, "", &f.workflow, "workflow");
    for key in ["on_success", "on_failure"] {
        if let Some(cb) = v.get(key) {
            unknown_fields(c, cb, key, &f.callback, "callback");
        }
    }
}

fn unknown_fields(c: &mut Collector, v: &Value, path: &str, allowed: &[String], what: &str) {
    let Some(obj) = v.as_object() else { return };
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            let hint = suggest(k, &allowed)
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
pub(super) fn check_trigger_shape(c: &mut Collector, v: &Value, path: &str) -> bool {
    let f = fields();
    let Some(t) = check_type(c, v, path, &types(&f.triggers), "trigger") else {
        return false;
    };
    unknown_fields(c, v, path, own(&f.triggers, t), &format!("{t} trigger"));
    if t == "kafka"
        && let Some(cluster) = v.get("cluster")
    {
        let cp = join(path, "cluster");
        unknown_fields(c, cluster, &cp, &f.kafka_cluster, "Kafka cluster");
        if let Some(sasl) = cluster.get("sasl") {
            unknown_fields(c, sasl, &join(&cp, "sasl"), &f.kafka_sasl, "SASL setting");
        }
    }
    if t != "webhook" {
        return true;
    }
    let mut known = true;
    if let Some(auth) = v.get("auth") {
        let ap = join(path, "auth");
        let auth_types = types(&f.auths);
        known &= auth.get("type").is_none()
            || auth_types.contains(&auth["type"].as_str().unwrap_or_default());
        if let Some(t) = check_type(c, auth, &ap, &auth_types, "webhook auth") {
            unknown_fields(c, auth, &ap, own(&f.auths, t), &format!("`{t}` auth"));
        }
    }
    if let Some(reply) = v.get("reply") {
        unknown_fields(c, reply, &join(path, "reply"), &f.reply, "reply");
    }
    known
}

pub(super) fn check_step_shape(c: &mut Collector, v: &Value, path: &str) -> bool {
    let known = check_one_step_shape(c, v, path);
    let kind = v.get("type").and_then(Value::as_str);
    if !matches!(kind, Some("map" | "parallel")) {
        return known;
    }
    // The steps inside a `map` or `parallel` step (one level: lanes hold no lanes).
    if let Some(Value::Array(steps)) = v.get("steps") {
        for (i, inner) in steps.iter().enumerate() {
            check_one_step_shape(c, inner, &index(&join(path, "steps"), i));
        }
    }
    if let Some(Value::Array(branches)) = v.get("branches") {
        let allowed = ["id".to_string(), "steps".to_string()];
        for (b, branch) in branches.iter().enumerate() {
            let bp = index(&join(path, "branches"), b);
            unknown_fields(c, branch, &bp, &allowed, "branch");
            if let Some(Value::Array(steps)) = branch.get("steps") {
                for (i, inner) in steps.iter().enumerate() {
                    check_one_step_shape(c, inner, &index(&join(&bp, "steps"), i));
                }
            }
        }
    }
    known
}

fn check_one_step_shape(c: &mut Collector, v: &Value, path: &str) -> bool {
    let f = fields();
    let t = check_type(c, v, path, &types(&f.steps), "step");
    if let Some(t) = t {
        let allowed: Vec<String> = f
            .step_common
            .iter()
            .chain(own(&f.steps, t))
            .cloned()
            .collect();
        unknown_fields(c, v, path, &allowed, &format!("`{t}` step"));
    }
    if let Some(r) = v.get("retry") {
        unknown_fields(c, r, &join(path, "retry"), &f.retry, "retry policy");
    }
    if matches!(t, Some("approval" | "wait_for_webhook"))
        && let Some(n) = v.get("notify")
    {
        unknown_fields(c, n, &join(path, "notify"), &f.http, "notification");
    }
    t.is_some()
}

/// Deserializes one field of a mapping; `None` when it failed (the problem is recorded).
pub(super) fn field<T: DeserializeOwned>(
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
pub(super) fn typed<T: DeserializeOwned>(c: &mut Collector, v: &Value, path: &str) -> Option<T> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(of: &[(String, Vec<String>)], t: &str) -> Vec<String> {
        own(of, t).to_vec()
    }

    #[test]
    fn the_fields_each_part_allows_are_read_from_the_schema_of_its_type() {
        let f = fields();
        assert_eq!(
            types(&f.triggers),
            ["webhook", "manual", "cron", "kafka", "flow", "once"]
        );
        assert_eq!(
            names(&f.triggers, "once"),
            ["type", "id", "at", "timezone", "input"]
        );
        assert_eq!(
            names(&f.triggers, "cron"),
            [
                "type",
                "id",
                "schedule",
                "timezone",
                "overlap",
                "catch_up",
                "condition",
                "idempotency_key"
            ]
        );
        assert_eq!(
            names(&f.triggers, "manual"),
            ["type", "id", "filter", "condition", "idempotency_key"]
        );
        assert_eq!(names(&f.auths, "api_key"), ["type", "header", "keys"]);
        assert_eq!(
            types(&f.steps),
            [
                "http",
                "transform",
                "fail",
                "wait_for_webhook",
                "approval",
                "delay",
                "trigger_workflow",
                "map",
                "parallel"
            ]
        );
        assert_eq!(names(&f.steps, "transform"), ["value"]);
        assert_eq!(
            names(&f.steps, "approval"),
            ["summary", "on_reject", "on_timeout", "notify"]
        );
        assert_eq!(
            f.step_common,
            [
                "id",
                "type",
                "when",
                "timeout",
                "retry",
                "extract",
                "extract_to_context"
            ]
        );
        assert_eq!(
            f.retry,
            ["max_attempts", "backoff", "initial", "max", "jitter", "on"]
        );
        assert!(f.workflow.contains(&"concurrency".to_string()));
        assert!(!f.workflow.contains(&"store_use".to_string()));
    }

    #[test]
    fn a_misspelt_field_is_named_with_the_closest_one() {
        let text = "id: w\nsteps:\n  - { id: a, type: transform, valeu: 1, value: 2 }\n";
        let problems = super::super::load(text, super::super::Format::Yaml)
            .expect_err("an unknown field is a problem");
        assert!(
            problems
                .iter()
                .any(|p| p.path == "steps[0].valeu" && p.message.contains("did you mean `value`?")),
            "{problems:?}"
        );
    }
}
