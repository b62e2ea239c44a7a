//! Templates (Jinja syntax, minijinja, strict undefined).
//!
//! A *value template* is any JSON value whose strings are templates: a string that is one
//! whole `{{ expression }}` yields the expression's value with its JSON type (a number stays
//! a number, an object an object); any other string with `{{`/`{%` renders to a string;
//! other values pass through. An *expression* (conditions, `when`) is written with or without
//! the surrounding `{{ }}` and is true when its value is truthy.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// How a template that ran past a bound is told apart: its message starts with this.
pub const LIMIT: &str = "template limit: ";

impl TemplateError {
    /// True when the template ran past a bound ([`FUEL`], [`MAX_RENDERED`]).
    pub fn is_limit(&self) -> bool {
        self.0.starts_with(LIMIT)
    }

    /// The error, saying which field of a request it is in.
    pub fn in_field(self, field: &str) -> Self {
        TemplateError(format!("{} (in `{field}`)", self.0))
    }
}

/// The most instructions one render may run (minijinja's fuel): loops over large inputs
/// stop here instead of holding a worker.
pub const FUEL: u64 = 100_000;

/// The largest text one render may produce, and the largest value an expression may
/// yield (as JSON).
pub const MAX_RENDERED: usize = 1024 * 1024;

mod explain;
mod url;

pub use url::{encode_component, render_url};

/// The settings every template environment shares: strict undefined, bounded recursion
/// and fuel, the calendar helpers.
fn base_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_recursion_limit(64);
    env.set_fuel(Some(FUEL));
    add_calendar(&mut env);
    env
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(base_env)
}

/// The calendar helpers: `weekday(t, zone)`, `is_weekday(t, zone)`, `local_time(t, zone)`
/// (`HH:MM`), `local_date(t, zone)` (`YYYY-MM-DD`) and `in_time_window(t, from, to, zone)`,
/// where `t` is an RFC 3339 time or Unix milliseconds and `zone` an IANA zone (default UTC).
fn add_calendar(env: &mut Environment<'static>) {
    use minijinja::{Error, ErrorKind};
    fn local(t: &minijinja::Value, zone: Option<&str>) -> Result<chrono::NaiveDateTime, Error> {
        let v = serde_json::to_value(t).unwrap_or(serde_json::Value::Null);
        let utc = crate::time::calendar::instant(&v)
            .map_err(|m| Error::new(ErrorKind::InvalidOperation, String::from(m)))?;
        crate::time::calendar::local(utc, zone.unwrap_or("UTC"))
            .map_err(|m| Error::new(ErrorKind::InvalidOperation, String::from(m)))
    }
    env.add_function("weekday", |t: minijinja::Value, zone: Option<String>| {
        local(&t, zone.as_deref()).map(|l| crate::time::calendar::weekday_name(&l))
    });
    env.add_function("is_weekday", |t: minijinja::Value, zone: Option<String>| {
        local(&t, zone.as_deref()).map(|l| {
            !matches!(
                crate::time::calendar::weekday_name(&l),
                "saturday" | "sunday"
            )
        })
    });
    env.add_function("local_time", |t: minijinja::Value, zone: Option<String>| {
        local(&t, zone.as_deref()).map(|l| l.format("%H:%M").to_string())
    });
    env.add_function("local_date", |t: minijinja::Value, zone: Option<String>| {
        local(&t, zone.as_deref()).map(|l| l.format("%Y-%m-%d").to_string())
    });
    env.add_function(
        "in_time_window",
        |t: minijinja::Value, from: String, to: String, zone: Option<String>| {
            let l = local(&t, zone.as_deref())?;
            crate::time::calendar::in_window(&l, &from, &to)
                .map_err(|m| Error::new(ErrorKind::InvalidOperation, String::from(m)))
        },
    );
}

fn err(e: minijinja::Error) -> TemplateError {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return TemplateError(format!(
            "{LIMIT}the template ran more than {FUEL} instructions (a loop over too much?)"
        ));
    }
    let mut msg = e.to_string();
    // Keep the message about the template, not the engine's internal name for it.
    msg = msg
        .replace(" (in <string>:1)", "")
        .replace(" (in <expression>:1)", "");
    TemplateError(msg)
}

/// The expression inside a string that is exactly `{{ expr }}`.
fn whole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

fn is_templated(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// A writer that refuses to grow past [`MAX_RENDERED`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED {
            return Err(std::io::Error::other("over the limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that only counts, and refuses to count past [`MAX_RENDERED`].
struct Measured(usize);

impl std::io::Write for Measured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        if self.0 > MAX_RENDERED {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn too_large() -> TemplateError {
    TemplateError(format!(
        "{LIMIT}the template produced more than {MAX_RENDERED} bytes"
    ))
}

fn to_json(v: minijinja::Value) -> Result<Value, TemplateError> {
    if v.is_undefined() {
        return Err(TemplateError("the expression is undefined".into()));
    }
    // Measured before it is built: a huge value is refused, not materialized.
    let mut sized = Capped(Vec::new());
    if serde_json::to_writer(&mut sized, &v).is_err() {
        return Err(too_large());
    }
    serde_json::from_slice(&sized.0)
        .map_err(|e| TemplateError(format!("the value cannot be JSON: {e}")))
}

/// What templates are rendered against: JSON, a run ([`crate::run::TemplateView`]), or
/// the template engine's own values (a request's context, with its secrets' markers).
pub trait Context: serde::Serialize {
    /// The value at a plain path (names joined by dots), when this context can find it
    /// without the template engine; `None`: the engine decides, and explains.
    fn find(&self, path: &str) -> Option<&Value> {
        let _ = path;
        None
    }
}

impl Context for Value {
    fn find(&self, path: &str) -> Option<&Value> {
        follow(self, path.split('.'))
    }
}

impl Context for minijinja::Value {}

/// True for a name a plain path may hold: a template identifier (`body`, `_x`, `a1`).
pub fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value at `names` under `at`, through objects only, each name plain.
pub fn follow<'a, 'n>(
    mut at: &'a Value,
    names: impl Iterator<Item = &'n str>,
) -> Option<&'a Value> {
    for name in names {
        if !plain_name(name) {
            return None;
        }
        at = at.as_object()?.get(name)?;
    }
    Some(at)
}

/// The most compiled expressions kept; past it the cache starts again (a workflow has a
/// few dozen; the bound keeps generated expressions from growing it without end).
const CACHED_EXPRESSIONS: usize = 4096;

type Compiled = std::sync::Arc<minijinja::Expression<'static, 'static>>;

/// [`compile_expression`], remembered: an expression is compiled once per process, not at
/// every evaluation (perf: compiling was most of a one-step transform's template time).
fn compiled_expression(expr: &str) -> Result<Compiled, TemplateError> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(expr).cloned()) {
        return Ok(hit);
    }
    let compiled = std::sync::Arc::new(compile_expression(expr)?);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= CACHED_EXPRESSIONS {
            c.clear();
        }
        c.insert(expr.to_string(), compiled.clone());
    }
    Ok(compiled)
}

/// The value of an expression that is a plain path (`trigger.body`, `steps.a.id`) that the
/// context can find ([`Context::find`]: JSON, a run's view), read directly: what the template engine gives, without converting
/// the whole context into its values and the result back. `None` (the engine decides, and
/// explains) for anything else: another expression, a path that is not there, a value
/// over [`MAX_RENDERED`]. The engine's maps are sorted by key, so the copy is too.
fn path_value<C: Context + ?Sized>(expr: &str, ctx: &C) -> Option<Value> {
    let at = ctx.find(expr)?;
    serde_json::to_writer(Measured(0), at).ok()?;
    Some(sorted(at))
}

/// A copy of `v` whose objects have their keys in order.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Compiles an expression. One that still holds a template delimiter after its outer
/// `{{ }}` is refused here: minijinja 2.24's expression lexer panics on `}}` (found by the
/// generated tests), and a panic would take down a process built with `panic = abort`.
fn compile_expression(
    expr: &str,
) -> Result<minijinja::Expression<'static, 'static>, TemplateError> {
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|d| expr.contains(d))
    {
        return Err(TemplateError(
            "an expression cannot contain `{{`, `}}`, `{%`, `%}`, `{#` or `#}` (write it as one expression, with or without one pair of `{{ }}` around it)".into(),
        ));
    }
    env()
        .compile_expression_owned(expr.to_string())
        .map_err(err)
}

/// Evaluates an expression to a JSON value.
pub fn eval<C: serde::Serialize + ?Sized>(expr: &str, ctx: &C) -> Result<Value, TemplateError> {
    let expr = whole_expression(expr).unwrap_or(expr);
    let compiled = compiled_expression(expr)?;
    let value = compiled.eval(ctx).map_err(|e| explained(e, expr, ctx))?;
    if value.is_undefined() {
        return Err(explain::undefined(expr, ctx));
    }
    to_json(value)
}

/// A template error, with an undefined value explained (the expression, the missing key).
fn explained<C: serde::Serialize + ?Sized>(
    e: minijinja::Error,
    src: &str,
    ctx: &C,
) -> TemplateError {
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        let part = explain::failing_part(src, &e).unwrap_or(src);
        return explain::undefined(part, ctx);
    }
    err(e)
}

/// Evaluates a condition: true when the expression's value is truthy.
pub fn eval_condition(expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
    let expr = whole_expression(expr).unwrap_or(expr);
    let compiled = compiled_expression(expr)?;
    let v = compiled.eval(ctx).map_err(|e| explained(e, expr, ctx))?;
    Ok(v.is_true())
}

/// Renders a string template to a string.
pub fn render_string<C: serde::Serialize + ?Sized>(
    tpl: &str,
    ctx: &C,
) -> Result<String, TemplateError> {
    if !is_templated(tpl) {
        return Ok(tpl.to_string());
    }
    let t = env().template_from_str(tpl).map_err(err)?;
    let mut out = Capped(Vec::new());
    match t.render_captured_to(ctx, &mut out) {
        Ok(_) => {
            String::from_utf8(out.0).map_err(|_| TemplateError("the output is not UTF-8".into()))
        }
        Err(e) if e.kind() == minijinja::ErrorKind::WriteFailure => Err(too_large()),
        Err(e) => Err(explained(e, tpl, ctx)),
    }
}

/// Renders a value template (see the module docs).
pub fn render_value<C: Context + ?Sized>(tpl: &Value, ctx: &C) -> Result<Value, TemplateError> {
    Ok(match tpl {
        Value::String(s) => match whole_expression(s) {
            Some(expr) => match path_value(expr, ctx) {
                Some(v) => v,
                None => eval(expr, ctx)?,
            },
            None if is_templated(s) => Value::String(render_string(s, ctx)?),
            None => tpl.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_value(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), render_value(v, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Parses a string template and returns the variable paths it reads (`trigger.body.id`,
/// `steps.fetch.body`), for validation.
pub fn check_string(tpl: &str) -> Result<BTreeSet<String>, TemplateError> {
    if let Some(expr) = whole_expression(tpl) {
        return check_expression(expr);
    }
    if !is_templated(tpl) {
        return Ok(BTreeSet::new());
    }
    let t = env().template_from_str(tpl).map_err(err)?;
    Ok(without_helpers(t.undeclared_variables(true)))
}

/// The helper functions are not variables the template reads.
fn without_helpers(names: std::collections::HashSet<String>) -> BTreeSet<String> {
    names
        .into_iter()
        .filter(|n| !HELPERS.contains(&n.as_str()))
        .collect()
}

/// The functions `add_calendar` gives templates.
pub const HELPERS: &[&str] = &[
    "weekday",
    "is_weekday",
    "local_time",
    "local_date",
    "in_time_window",
];

/// Parses an expression and returns the variable paths it reads.
pub fn check_expression(expr: &str) -> Result<BTreeSet<String>, TemplateError> {
    let expr = whole_expression(expr).unwrap_or(expr);
    let e = compile_expression(expr)?;
    Ok(without_helpers(e.undeclared_variables(true)))
}

/// Checks every string of a value template; returns `(json path suffix, result)` pairs.
pub fn check_value(tpl: &Value) -> Vec<(String, Result<BTreeSet<String>, TemplateError>)> {
    let mut out = Vec::new();
    walk(tpl, String::new(), &mut out);
    out
}

fn walk(v: &Value, path: String, out: &mut Vec<(String, Result<BTreeSet<String>, TemplateError>)>) {
    match v {
        Value::String(s) if is_templated(s) => out.push((path, check_string(s))),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                walk(item, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Any JSON, with keys often from a small alphabet so that generated paths find them.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-c]|[A-Za-z_][A-Za-z0-9_]{0,4}|\\PC{0,4}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A plain path read directly gives exactly what the template engine gives (the
        /// same JSON text: values, numbers and the order of keys), and where it gives
        /// nothing the engine is asked.
        #[test]
        fn a_plain_path_reads_what_the_template_engine_gives(
            body in json_value(),
            path in prop::collection::vec("[a-c]|[a-z_][a-z0-9_]{0,2}|0|a-b", 0..4),
        ) {
            let ctx = json!({"trigger": {"body": body}, "run": {"id": "r1"}});
            let expr = ["trigger", "body"].iter().map(|s| s.to_string()).chain(path).collect::<Vec<_>>().join(".");
            let direct = path_value(&expr, &ctx);
            if let Some(direct) = direct {
                let engine = eval(&expr, &ctx);
                prop_assert!(engine.is_ok(), "{expr}: read directly, refused by the engine: {engine:?}");
                prop_assert_eq!(
                    serde_json::to_string(&direct).unwrap_or_default(),
                    serde_json::to_string(&engine.unwrap_or_default()).unwrap_or_default(),
                    "{}", expr
                );
            }
        }
    }

    #[test]
    fn only_plain_paths_present_and_in_bounds_are_read_directly() {
        let big = "x".repeat(MAX_RENDERED + 1);
        let ctx = json!({"trigger": {"body": {"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": null}, "big": big}}});
        let got = path_value("trigger.body", &ctx).map(|v| v.to_string());
        assert_eq!(
            got, None,
            "over the bound: the engine refuses it, with its message"
        );
        assert_eq!(
            path_value("trigger.body.a", &ctx).map(|v| v.to_string()),
            Some(r#"{"c":null,"d":[{"y":2,"z":1}]}"#.to_string()),
            "keys in order, as the engine gives them"
        );
        for not_direct in [
            "trigger.body.missing",
            "trigger.body.b * 2",
            "trigger.body['a']",
            "trigger.body.a.d.0",
            "",
            "trigger..body",
        ] {
            assert_eq!(path_value(not_direct, &ctx), None, "{not_direct}");
        }
        let err = render_value(&json!("{{ trigger.body.missing }}"), &ctx).expect_err("undefined");
        assert!(err.0.contains("missing"), "the engine explains: {}", err.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({"trigger": {"body": {"n": 2, "name": "Ada", "tags": ["a", "b"]}}})
    }

    #[test]
    fn a_whole_expression_keeps_its_json_type() {
        let out = render_value(
            &json!({"n": "{{ trigger.body.n + 1 }}", "tags": "{{ trigger.body.tags }}"}),
            &ctx(),
        );
        assert_eq!(out.unwrap(), json!({"n": 3, "tags": ["a", "b"]}));
    }

    #[test]
    fn mixed_text_renders_to_a_string() {
        let out = render_value(&json!("Hello {{ trigger.body.name }}!"), &ctx()).unwrap();
        assert_eq!(out, json!("Hello Ada!"));
    }

    #[test]
    fn plain_values_pass_through() {
        assert_eq!(
            render_value(&json!([1, "x", null]), &ctx()).unwrap(),
            json!([1, "x", null])
        );
    }

    #[test]
    fn strict_undefined_is_an_error_not_an_empty_string() {
        let e = render_value(&json!("{{ trigger.body.missing.deeper }}"), &ctx()).unwrap_err();
        assert!(e.0.contains("undefined"), "{e}");
    }

    #[test]
    fn conditions_accept_braces_or_bare_expressions() {
        assert!(eval_condition("trigger.body.n > 1", &ctx()).unwrap());
        assert!(!eval_condition("{{ trigger.body.n > 5 }}", &ctx()).unwrap());
    }

    #[test]
    fn checking_reports_the_paths_a_template_reads() {
        let refs = check_string("{{ steps.fetch.body.id }} and {{ trigger.query }}").unwrap();
        assert!(refs.contains("steps.fetch.body.id"), "{refs:?}");
        assert!(refs.contains("trigger.query"), "{refs:?}");
    }

    #[test]
    fn a_template_that_runs_too_long_or_too_large_stops_with_a_limit_error() {
        let ctx = json!({});
        let e = render_string(
            "{% for i in range(100000) %}{% for j in range(100) %}x{% endfor %}{% endfor %}",
            &ctx,
        )
        .unwrap_err();
        assert!(e.is_limit(), "{e}");
        let e = render_string(
            "{% for i in range(1000) %}{{ 'x' * 10000 }}{% endfor %}",
            &ctx,
        )
        .unwrap_err();
        assert!(e.is_limit() && e.0.contains("bytes"), "{e}");
        let e = eval("'x' * 2000000", &ctx).unwrap_err();
        assert!(e.is_limit(), "{e}");
        assert_eq!(render_string("{{ 'ok' }}", &ctx).unwrap(), "ok");
    }

    #[test]
    fn checking_reports_syntax_errors() {
        assert!(check_string("{{ trigger.body. }}").is_err());
        assert!(check_expression("a ==").is_err());
    }
}
