//! The pages a person sees on the routes of parked runs (the review page, its answers),
//! rendered from templates with HTML autoescape: every value is escaped where it is put,
//! in text and in attributes.

use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, Error, Value};

const PAGE: &str = r#"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width"><meta name=referrer content=no-referrer><title>{{ title }} · Tripline</title><style>body{font:16px system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}dt{font-weight:600}dd{margin:0 0 .5rem}.summary{white-space:pre-wrap;border-left:4px solid #888;padding:.5rem 1rem;background:#f6f6f6}form{display:inline-block;margin:1rem 1rem 0 0}textarea{display:block;width:18rem;height:4rem;margin-bottom:.5rem}button{font-size:1rem;padding:.5rem 1.5rem}.approve{background:#1a7f37;color:#fff}.reject{background:#cf222e;color:#fff}</style></head><body><h1>{{ title }}</h1>{% block body %}{% endblock %}</body></html>"#;

const FACTS: &str = "<dl><dt>Workflow</dt><dd>{{ run.workflow }}</dd><dt>Run</dt><dd>{{ run.id }}</dd><dt>Status</dt><dd>{{ run.status }}</dd></dl>";

const REVIEW: &str = r#"{% extends "page.html" %}{% block body %}<dl><dt>Workflow</dt><dd>{{ run.workflow }}</dd><dt>Step</dt><dd>{{ wait.step }}</dd><dt>Run</dt><dd>{{ run.id }}</dd><dt>Waiting since</dt><dd>{{ wait.since }}</dd><dt>Expires</dt><dd>{{ wait.expires_at }}</dd></dl>{% if wait.summary %}<div class=summary>{{ wait.summary }}</div>{% else %}<p><em>No summary was given for this step.</em></p>{% endif %}<div class=buttons>{% for b in buttons %}<form method=post action="{{ b.url }}"><textarea name=comment placeholder="Comment (optional)"></textarea><button class={{ b.class }} type=submit>{{ b.label }}</button></form>{% endfor %}</div>{% endblock %}"#;

const DECIDED: &str = r#"{% extends "page.html" %}{% block body %}<p>The step was <strong>{{ word }}</strong>.</p>{% include "facts.html" %}{% endblock %}"#;

const GONE: &str = r#"{% extends "page.html" %}{% block body %}<p>{{ message }}</p>{% include "facts.html" %}{% endblock %}"#;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        environment(&[
            ("page.html", PAGE),
            ("facts.html", FACTS),
            ("review.html", REVIEW),
            ("decided.html", DECIDED),
            ("gone.html", GONE),
        ])
    })
}

/// An environment of `templates`, escaping every value put into a `.html` one (the
/// console's pages use it too).
pub(super) fn environment(templates: &[(&'static str, &'static str)]) -> Environment<'static> {
    {
        let mut env = Environment::new();
        // Templates ending in `.html` are autoescaped; this escapes the five characters
        // that matter in text and quoted attributes, and leaves `/` as it is (URLs stay
        // readable in the page's source).
        env.set_formatter(|out, state, value| {
            if state.auto_escape() == AutoEscape::Html && !value.is_safe() && !value.is_none() {
                let text = value.to_string();
                return out.write_str(&escape(&text)).map_err(Error::from);
            }
            minijinja::escape_formatter(out, state, value)
        });
        for (name, source) in templates {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a page template does not parse");
            }
        }
        env
    }
}

/// Renders the page `name` with `ctx`; a failure (a bug, not input) is a plain page that
/// says so.
pub(super) fn render(name: &str, ctx: Value) -> String {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "rendering a page failed");
            "<!doctype html><title>Tripline</title><p>This page could not be shown.</p>".into()
        })
}

/// HTML text and attribute escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;

    #[test]
    fn html_is_escaped_in_text_and_attributes() {
        assert_eq!(
            escape(r#"<b a="x">'&'</b>"#),
            "&lt;b a=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn values_put_into_a_page_are_escaped_and_urls_stay_readable() {
        let hostile = r#"<script>alert("x")</script>"#;
        let html = render(
            "review.html",
            context! {
                title => "Approval requested",
                run => context! { workflow => hostile, id => "r1" },
                wait => context! { step => "ok", summary => hostile },
                buttons => vec![context! {
                    url => "https://hooks.example.com/approve/r1.s\"x",
                    class => "approve",
                    label => "Approve",
                }],
            },
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(html.contains(r#"action="https://hooks.example.com/approve/r1.s&quot;x""#));
    }
}
