//! What a template error says: for a value that is undefined, the expression, the key
//! that is missing and where (`trigger.body` has no `phone`; it has `id`, `name`), worked
//! out from the context on the error path only.

use serde_json::Value;

use super::TemplateError;

/// The dotted paths an expression reads (`trigger.body.phone`, `steps.fetch.output`),
/// root first; indexes and filters end a path.
fn paths(expr: &str) -> Vec<Vec<&str>> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i].is_ascii_alphabetic() || bytes[i] == b'_';
        let after_dot_or_word = i > 0
            && (bytes[i - 1] == b'.'
                || bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b'\''
                || bytes[i - 1] == b'"');
        if !starts || after_dot_or_word {
            i += 1;
            continue;
        }
        let mut parts = Vec::new();
        let mut j = i;
        loop {
            let k = j;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            parts.push(&expr[k..j]);
            if j + 1 < bytes.len()
                && bytes[j] == b'.'
                && (bytes[j + 1].is_ascii_alphabetic() || bytes[j + 1] == b'_')
            {
                j += 1;
            } else {
                break;
            }
        }
        out.push(parts);
        i = j.max(i + 1);
    }
    out
}

/// Why `path` is undefined in `ctx`, if it is: the first key missing along it.
fn missing(ctx: &Value, path: &[&str]) -> Option<String> {
    let mut here = ctx;
    for (n, key) in path.iter().enumerate() {
        let seen = path[..n].join(".");
        match here {
            Value::Object(map) => match map.get(*key) {
                Some(v) => here = v,
                None => {
                    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    keys.truncate(12);
                    let has = if keys.is_empty() {
                        "it is empty".to_string()
                    } else {
                        format!(
                            "it has {}",
                            keys.iter()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    return Some(if n == 0 {
                        format!("there is no `{key}` here")
                    } else {
                        format!("`{seen}` has no `{key}` ({has})")
                    });
                }
            },
            Value::Null => return Some(format!("`{seen}` is null, so it has no `{key}`")),
            other => {
                let kind = match other {
                    Value::Array(_) => "a list",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "a boolean",
                };
                return Some(format!("`{seen}` is {kind}, so it has no `{key}`"));
            }
        }
    }
    None
}

/// An undefined-value error about `expr`, with the missing key when one can be named.
pub(super) fn undefined<C: serde::Serialize + ?Sized>(expr: &str, ctx: &C) -> TemplateError {
    let expr = expr.trim();
    let why = serde_json::to_value(ctx)
        .ok()
        .and_then(|ctx| paths(expr).iter().find_map(|p| missing(&ctx, p)));
    TemplateError(match why {
        Some(why) => format!("`{expr}` is undefined: {why}"),
        None => format!("`{expr}` is undefined"),
    })
}

/// The expression an error points at: the `{{ … }}` of `src` around the error's place
/// (minijinja points at the failing attribute, `.body.nmae`), or all of `src` when it is
/// one expression.
pub(super) fn failing_part<'a>(src: &'a str, e: &minijinja::Error) -> Option<&'a str> {
    if !src.contains("{{") {
        return Some(src);
    }
    let range = e.range()?;
    let open = src.get(..range.start)?.rfind("{{")? + 2;
    let close = range.end + src.get(range.end..)?.find("}}")?;
    let inner = src.get(open..close)?;
    Some(inner.trim_start_matches('-').trim_end_matches('-').trim())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn it_names_the_expression_and_the_missing_key_with_what_is_there() {
        let ctx = json!({"trigger": {"body": {"id": 1, "name": "a"}}, "steps": {}});
        assert_eq!(
            undefined("trigger.body.phone", &ctx).0,
            "`trigger.body.phone` is undefined: `trigger.body` has no `phone` (it has `id`, `name`)"
        );
        assert_eq!(
            undefined("steps.fetch.output | upper", &ctx).0,
            "`steps.fetch.output | upper` is undefined: `steps` has no `fetch` (it is empty)"
        );
        assert_eq!(
            undefined("trigger.body.name.first", &ctx).0,
            "`trigger.body.name.first` is undefined: `trigger.body.name` is a string, so it has no `first`"
        );
        assert_eq!(
            undefined("nope", &ctx).0,
            "`nope` is undefined: there is no `nope` here"
        );
    }
}
