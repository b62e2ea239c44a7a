//! URL templates: a value written where the URL's path, query or fragment has begun is
//! percent-encoded as one component (everything but `A-Z a-z 0-9 - . _ ~`), so that an
//! input such as `a/../admin?x=1` stays one path segment or one query value. A value
//! written before that (the scheme and host, or a whole URL: `{{ input.callback_url }}`)
//! is written as it is, and so is one the author marks `| raw` (a path of several
//! segments, a prepared query string). Secrets' markers are kept for the caller to
//! resolve: a secret's value goes into a URL as it is stored.

use std::cell::RefCell;
use std::sync::OnceLock;

use minijinja::{Environment, Error, ErrorKind, Output, State};

use super::{Capped, TemplateError, err, explained, too_large};

thread_local! {
    /// While a URL renders on this thread: what it has written so far.
    static SO_FAR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// True once the text has passed the URL's authority (`scheme://host[:port]`).
fn past_authority(so_far: &str) -> bool {
    let rest = so_far.find("://").map_or(so_far, |i| &so_far[i + 3..]);
    rest.contains(['/', '?', '#'])
}

/// Percent-encodes `s` as one URL component (RFC 3986 unreserved characters kept).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn formatter(out: &mut Output, state: &State, value: &minijinja::Value) -> Result<(), Error> {
    let encode =
        !value.is_safe() && SO_FAR.with(|s| s.borrow().as_deref().is_some_and(past_authority));
    if !encode {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    let written = if crate::secrets::markers_in(&text).is_empty() {
        encode_component(&text)
    } else {
        text
    };
    out.write_str(&written)
        .map_err(|_| Error::new(ErrorKind::WriteFailure, "the URL could not be written"))
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = super::base_env();
        env.add_filter("raw", |v: minijinja::Value| {
            minijinja::Value::from_safe_string(v.to_string())
        });
        env.set_formatter(formatter);
        env
    })
}

/// A writer that also keeps, for the formatter, what the URL has so far.
struct Tracked(Capped);

impl std::io::Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        SO_FAR.with(|s| {
            if let Some(text) = s.borrow_mut().as_mut() {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders a URL template (see the module docs).
pub fn render_url<C: serde::Serialize + ?Sized>(
    tpl: &str,
    ctx: &C,
) -> Result<String, TemplateError> {
    if !super::is_templated(tpl) {
        return Ok(tpl.to_string());
    }
    let t = env().template_from_str(tpl).map_err(err)?;
    let mut out = Tracked(Capped(Vec::new()));
    SO_FAR.with(|s| *s.borrow_mut() = Some(String::new()));
    let rendered = t.render_captured_to(ctx, &mut out);
    SO_FAR.with(|s| *s.borrow_mut() = None);
    match rendered {
        Ok(_) => {
            String::from_utf8(out.0.0).map_err(|_| TemplateError("the output is not UTF-8".into()))
        }
        Err(e) if e.kind() == ErrorKind::WriteFailure => Err(too_large()),
        Err(e) => Err(explained(e, tpl, ctx)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn url(tpl: &str) -> String {
        let ctx = json!({
            "input": {"id": "a/../admin?x=1&y=2", "name": "Zoë Smith", "base": "https://api.example.com/v2", "path": "a/b"},
        });
        render_url(tpl, &ctx).expect("renders")
    }

    #[test]
    fn values_in_the_path_and_query_are_encoded() {
        assert_eq!(
            url("https://api.example.com/items/{{ input.id }}?q={{ input.name }}"),
            "https://api.example.com/items/a%2F..%2Fadmin%3Fx%3D1%26y%3D2?q=Zo%C3%AB%20Smith"
        );
    }

    #[test]
    fn a_value_before_the_path_or_marked_raw_is_written_as_it_is() {
        assert_eq!(
            url("{{ input.base }}/items/{{ input.path }}"),
            "https://api.example.com/v2/items/a%2Fb"
        );
        assert_eq!(
            url("{{ input.base }}/items/{{ input.path | raw }}"),
            "https://api.example.com/v2/items/a/b"
        );
        assert_eq!(
            url("https://{{ input.path | raw }}.example.com/"),
            "https://a/b.example.com/"
        );
        assert_eq!(
            url("https://api.example.com/{% if true %}x/{{ input.path }}{% endif %}"),
            "https://api.example.com/x/a%2Fb"
        );
    }

    #[test]
    fn a_secret_marker_is_kept_for_the_caller() {
        let ctx = crate::secrets::request_context(&json!({}));
        let out =
            render_url("https://api.example.com/k/{{ secrets.api_key }}", &ctx).expect("renders");
        assert_eq!(crate::secrets::markers_in(&out), ["api_key"]);
    }
}
