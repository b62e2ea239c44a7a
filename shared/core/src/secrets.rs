//! Secrets in definitions: a template reads one as `{{ secrets.NAME }}`, a credential field
//! names one as `"{{ secrets.NAME }}"`.
//!
//! The engine never sees a secret's value. Where a request is rendered (an `http` step, a
//! callback, a notification), `secrets.NAME` renders to a *marker*: a string that carries
//! the name and a random nonce drawn once per process, so that no input (a webhook body,
//! a downstream's answer) can forge one. The caller that sends the request swaps each
//! marker for the value at the last moment ([`resolve`]) and records the request with
//! each marker shown as `[secret:NAME]` ([`display`]); what comes back (a response that
//! echoes the request, an error that quotes the URL) is cleaned of the values that were
//! sent ([`Redactor`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::template;

/// The longest secret name.
pub const MAX_NAME: usize = 128;

/// A secret name: letters, digits and `_`, starting with a letter or `_`, so that a
/// template reads it as `secrets.NAME`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME
}

/// The name a credential field refers to, when it is exactly `{{ secrets.NAME }}`.
pub fn reference(field: &str) -> Option<&str> {
    let inner = field
        .trim()
        .strip_prefix("{{")?
        .strip_suffix("}}")?
        .trim()
        .strip_prefix("secrets.")?;
    valid_name(inner).then_some(inner)
}

/// A reference to a secret, as a credential field writes it.
pub fn reference_to(name: &str) -> String {
    format!("{{{{ secrets.{name} }}}}")
}

/// How a stored record shows a secret: `[secret:NAME]`.
pub fn placeholder(name: &str) -> String {
    format!("[secret:{name}]")
}

const OPEN: char = '\u{1}';
const CLOSE: char = '\u{2}';

/// This process's nonce: 128 bits from the standard library's randomly keyed hasher.
fn nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| {
        let mut out = String::new();
        for i in 0..2u8 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(i);
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    })
}

/// The marker a request template renders for `secrets.NAME`.
pub fn marker(name: &str) -> String {
    format!("{OPEN}{}:{name}{CLOSE}", nonce())
}

/// The names of the markers in `s`, in order.
pub fn markers_in(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let prefix = format!("{OPEN}{}:", nonce());
    let mut rest = s;
    while let Some(at) = rest.find(&prefix) {
        let after = &rest[at + prefix.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        out.push(&after[..end]);
        rest = &after[end + CLOSE.len_utf8()..];
    }
    out
}

/// True when `s` holds what is left of a marker that a filter changed (`| upper`,
/// `| urlencode`, `| replace`): the value cannot be put in its place.
pub fn mangled(s: &str) -> bool {
    let nonce = nonce();
    let lower = s.to_ascii_lowercase();
    let remnants = lower.matches(nonce).count() + lower.matches(&percent_encoded_prefix()).count();
    remnants > markers_in(s).len()
}

/// What `urlencode` makes of a marker's start.
fn percent_encoded_prefix() -> String {
    format!("%01{}", nonce())
}

/// Replaces each marker in `s` by `f(name)`.
fn replace_markers(s: &str, mut f: impl FnMut(&str) -> Option<String>) -> Option<String> {
    let prefix = format!("{OPEN}{}:", nonce());
    if !s.contains(&prefix) {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(&prefix) {
        out.push_str(&rest[..at]);
        let after = &rest[at + prefix.len()..];
        let Some(end) = after.find(CLOSE) else {
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        out.push_str(&f(&after[..end])?);
        rest = &after[end + CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    Some(out)
}

/// `s` with each marker shown as `[secret:NAME]`: how a request is recorded.
pub fn display(s: &str) -> String {
    replace_markers(s, |name| Some(placeholder(name))).unwrap_or_default()
}

/// Why a request could not be given its secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error(
        "the secret `{0}` does not exist (was it removed after the workflow was deployed?); set it with `tripline secrets set {0}` or `PUT /v1/secrets/{0}`"
    )]
    Missing(String),
    #[error(
        "a template changed a secret with a filter (`| upper`, `| urlencode`, …) before it was sent; a secret can only be used as it is, alone or inside a string"
    )]
    Mangled,
}

/// `s` with each marker replaced by its secret's value from `lookup`.
pub fn resolve(s: &str, lookup: &dyn Fn(&str) -> Option<Arc<str>>) -> Result<String, Unresolved> {
    if mangled(s) {
        return Err(Unresolved::Mangled);
    }
    let mut missing = None;
    let out = replace_markers(s, |name| match lookup(name) {
        Some(v) => Some(v.to_string()),
        None => {
            missing = Some(name.to_string());
            None
        }
    });
    match (out, missing) {
        (Some(out), None) => Ok(out),
        (_, Some(name)) => Err(Unresolved::Missing(name)),
        (None, None) => Err(Unresolved::Mangled),
    }
}

/// Applies `f` to every string of a JSON value (keys included).
pub fn map_strings(v: &Value, f: &mut dyn FnMut(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(f(s)),
        Value::Array(items) => Value::Array(items.iter().map(|i| map_strings(i, f)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (f(k), map_strings(v, f))).collect())
        }
        other => other.clone(),
    }
}

/// Every string of a JSON value, for checks.
pub fn any_string(v: &Value, f: &mut dyn FnMut(&str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().any(|i| any_string(i, f)),
        Value::Object(map) => map.iter().any(|(k, v)| f(k) || any_string(v, f)),
        _ => false,
    }
}

/// Replaces the values of secrets by `[secret:NAME]` wherever they occur in a text: what
/// a downstream echoed back, an error that quotes the request.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// `(value, name)`, longest value first, so that a value inside another is not
    /// replaced first.
    pairs: Vec<(Arc<str>, String)>,
}

/// Values shorter than this are not looked for in answers: a one- or two-character
/// secret would match everywhere, and protects nothing.
const MIN_REDACTED: usize = 4;

impl Redactor {
    pub fn new(pairs: impl IntoIterator<Item = (String, Arc<str>)>) -> Self {
        let mut pairs: Vec<(Arc<str>, String)> = pairs
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_REDACTED)
            .map(|(n, v)| (v, n))
            .collect();
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.1.cmp(&b.1)));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Self { pairs }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (value, name) in &self.pairs {
            if out.contains(&**value) {
                out = out.replace(&**value, &placeholder(name));
            }
            // A JSON text that quotes the value escapes it.
            let escaped = serde_json::to_string(&**value).unwrap_or_default();
            let escaped = escaped.trim_matches('"');
            if escaped != &**value && out.contains(escaped) {
                out = out.replace(escaped, &placeholder(name));
            }
        }
        out
    }

    pub fn redact_value(&self, v: &Value) -> Value {
        if self.pairs.is_empty() {
            return v.clone();
        }
        map_strings(v, &mut |s| self.redact(s))
    }
}

/// The minijinja object a request template sees as `secrets`: every attribute is the
/// marker of that name.
#[derive(Debug)]
pub(crate) struct Markers;

impl minijinja::value::Object for Markers {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let name = key.as_str()?;
        valid_name(name).then(|| minijinja::Value::from(marker(name)))
    }
}

/// The context a request template renders in: `ctx` and `secrets`.
pub fn request_context(ctx: &Value) -> minijinja::Value {
    minijinja::context! {
        secrets => minijinja::Value::from_object(Markers),
        ..minijinja::Value::from_serialize(ctx)
    }
}

/// The names of the secrets a template reads (`secrets.NAME`), in a set.
pub fn names_in_template(tpl: &str, into: &mut BTreeSet<String>) {
    let Ok(refs) = template::check_string(tpl) else {
        return;
    };
    for r in refs {
        if let Some(name) = r.strip_prefix("secrets.") {
            let name = name.split('.').next().unwrap_or(name);
            into.insert(name.to_string());
        }
    }
}

/// The names of the secrets a value template reads.
pub fn names_in_value(v: &Value, into: &mut BTreeSet<String>) {
    any_string(v, &mut |s| {
        names_in_template(s, into);
        false
    });
}

/// The names of the secrets the values of a map of templates read (headers, query).
pub fn names_in_map(m: &BTreeMap<String, String>, into: &mut BTreeSet<String>) {
    for v in m.values() {
        names_in_template(v, into);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Arc<str>> {
        (name == "crm_token").then(|| Arc::from("s3cr3t-value"))
    }

    #[test]
    fn a_marker_resolves_to_the_value_and_displays_as_a_placeholder() {
        let s = format!("Bearer {}", marker("crm_token"));
        assert_eq!(resolve(&s, &lookup).unwrap(), "Bearer s3cr3t-value");
        assert_eq!(display(&s), "Bearer [secret:crm_token]");
        assert_eq!(markers_in(&s), vec!["crm_token"]);
    }

    #[test]
    fn a_forged_marker_without_the_nonce_is_plain_text() {
        let s = "\u{1}0000:crm_token\u{2} and [secret:crm_token]";
        assert_eq!(resolve(s, &lookup).unwrap(), s);
    }

    #[test]
    fn a_missing_or_mangled_secret_is_an_error_that_says_which() {
        let s = marker("gone");
        assert_eq!(
            resolve(&s, &lookup),
            Err(Unresolved::Missing("gone".into()))
        );
        let upper = marker("crm_token").to_uppercase();
        assert_eq!(resolve(&upper, &lookup), Err(Unresolved::Mangled));
        let encoded = marker("crm_token")
            .replace('\u{1}', "%01")
            .replace('\u{2}', "%02");
        assert_eq!(resolve(&encoded, &lookup), Err(Unresolved::Mangled));
    }

    #[test]
    fn the_redactor_replaces_values_also_inside_json_text() {
        let r = Redactor::new([
            ("a".to_string(), Arc::from("p\"w\\1234")),
            ("tiny".to_string(), Arc::from("ab")),
        ]);
        assert_eq!(r.redact("x p\"w\\1234 y"), "x [secret:a] y");
        assert_eq!(
            r.redact(r#"{"echo":"p\"w\\1234"}"#),
            r#"{"echo":"[secret:a]"}"#
        );
        assert_eq!(r.redact("ab"), "ab");
    }

    #[test]
    fn references_name_a_secret_only_when_they_are_the_whole_field() {
        assert_eq!(reference("{{ secrets.hook_key }}"), Some("hook_key"));
        assert_eq!(reference("{{secrets.k}}"), Some("k"));
        assert_eq!(reference("x {{ secrets.k }}"), None);
        assert_eq!(reference("{{ secrets.k | upper }}"), None);
        assert_eq!(reference("whsec_abc"), None);
    }

    #[test]
    fn request_templates_render_markers() {
        let ctx = serde_json::json!({"trigger": {"body": {"id": 7}}});
        let out = template::render_string(
            "Bearer {{ secrets.crm_token }} for {{ trigger.body.id }}",
            &request_context(&ctx),
        )
        .unwrap();
        assert_eq!(display(&out), "Bearer [secret:crm_token] for 7");
    }
}
