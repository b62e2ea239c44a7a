//! The console's page templates: server-rendered HTML, every value escaped where it is
//! put; no script is needed to read or act (the run page reloads itself while the run
//! goes on).

use std::sync::OnceLock;

use minijinja::{Environment, Value};

const LAYOUT: &str = r##"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1"><meta name=referrer content=no-referrer>{% if refresh %}<meta http-equiv=refresh content=2>{% endif %}<title>{{ title }} · Tripline</title><style>
body{font:15px system-ui,sans-serif;margin:0;color:#1f2328;background:#fff}header{background:#24292f;color:#fff;padding:.5rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}header a{color:#fff}main{padding:1rem;max-width:72rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #d0d7de;vertical-align:top}th{background:#f6f8fa}
.succeeded{color:#1a7f37}.failed,.timed_out{color:#cf222e}.cancelled{color:#57606a}.waiting,.running,.queued{color:#9a6700}
button{font:inherit;padding:.3rem .9rem;cursor:pointer}form.inline{display:inline}label{margin-right:.5rem}input,select{font:inherit;padding:.2rem}
.bar{fill:#0969da}.bar.failed{fill:#cf222e}.bar.skipped{fill:#8c959f}pre{background:#f6f8fa;padding:.5rem;overflow:auto;max-height:20rem}a:focus,button:focus,input:focus,select:focus{outline:3px solid #0969da}
</style></head><body><header><strong>Tripline</strong>{% if who %}<nav><a href="/">Overview</a> · <a href="/runs">Runs</a> · <a href="/workflows">Workflows</a></nav><span>{{ who.name }} ({{ who.scope }})</span><form class=inline method=post action="/logout"><input type=hidden name=token value="{{ token }}"><button type=submit>Sign out</button></form>{% endif %}</header><main><h1>{{ title }}</h1>{% if notice %}<p role=status>{{ notice }}</p>{% endif %}{% block body %}{% endblock %}</main></body></html>"##;

const LOGIN: &str = r#"{% extends "layout.html" %}{% block body %}{% if error %}<p role=alert>{{ error }}</p>{% endif %}<form method=post action="/login"><label for=key>API key</label><input id=key name=key type=password autocomplete=off required><button type=submit>Sign in</button></form><p>A read-only key shows everything and changes nothing.</p>{% endblock %}"#;

const OVERVIEW: &str = r#"{% extends "layout.html" %}{% block body %}<h2>Runs per hour, last 24 hours</h2><svg role=img aria-label="runs per hour by status" width="100%" viewBox="0 0 480 120" preserveAspectRatio="none">{% for b in bars %}<rect class="bar {{ b.class }}" x="{{ b.x }}" y="{{ b.y }}" width="18" height="{{ b.h }}"><title>{{ b.label }}</title></rect>{% endfor %}</svg><p>{{ total }} runs: {{ succeeded }} succeeded, {{ failed }} failed, {{ active }} queued, running or waiting.</p><h2>Failing most</h2>{% if failing %}<ul>{% for f in failing %}<li><a href="/runs?workflow={{ f.workflow }}&status=failed">{{ f.workflow }}</a>: {{ f.count }}</li>{% endfor %}</ul>{% else %}<p>No failed runs in the last day.</p>{% endif %}<h2>Now</h2><ul><li>{{ waiting }} runs waiting (approvals, callbacks, delays)</li>{% if queue is not none %}<li>queue: {{ queue }} work items ready, the oldest {{ oldest }} s old</li>{% endif %}</ul>{% endblock %}"#;

const RUNS: &str = r#"{% extends "layout.html" %}{% block body %}<form method=get action="/runs"><label>Workflow <input name=workflow value="{{ q.workflow }}"></label><label>Status <select name=status><option value="">any</option>{% for s in statuses %}<option{% if s == q.status %} selected{% endif %}>{{ s }}</option>{% endfor %}</select></label><label>Text <input name=text value="{{ q.text }}"></label><button type=submit>Search</button></form>{% if can_operate %}<form method=post action="/runs/bulk"><input type=hidden name=token value="{{ token }}">{% endif %}<table><thead><tr>{% if can_operate %}<th><span class=sr>Select</span></th>{% endif %}<th>Run</th><th>Workflow</th><th>Trigger</th><th>Status</th><th>Started</th><th>Error</th></tr></thead><tbody>{% for r in runs %}<tr>{% if can_operate %}<td><input type=checkbox name=run value="{{ r.id }}" aria-label="select {{ r.id }}"></td>{% endif %}<td><a href="/runs/{{ r.id }}">{{ r.id }}</a></td><td>{{ r.workflow }}</td><td>{{ r.trigger }}</td><td class="{{ r.status }}">{{ r.status }}</td><td>{{ r.inserted_at }}</td><td>{{ r.error }}</td></tr>{% else %}<tr><td colspan=7>No runs.</td></tr>{% endfor %}</tbody></table>{% if can_operate %}<p><button type=submit name=action value=retry>Retry selected</button> <button type=submit name=action value=cancel>Cancel selected</button></p></form>{% endif %}{% if next %}<p><a href="{{ next }}">Older runs</a></p>{% endif %}{% endblock %}"#;

const RUN: &str = r#"{% extends "layout.html" %}{% block body %}<dl><dt>Workflow</dt><dd>{{ run.workflow }} (revision {{ run.revision }})</dd><dt>Status</dt><dd class="{{ run.status }}">{{ run.status }}{% if run.error %}: {{ run.error }}{% endif %}</dd><dt>Trigger</dt><dd>{{ run.trigger.kind }} {{ run.trigger.id }}</dd>{% if run.retry_of %}<dt>Retry of</dt><dd><a href="/runs/{{ run.retry_of.run_id }}">{{ run.retry_of.run_id }}</a></dd>{% endif %}{% if run.parent %}<dt>Parent</dt><dd><a href="/runs/{{ run.parent.run_id }}">{{ run.parent.run_id }}</a></dd>{% endif %}{% for c in run.children %}<dt>Child</dt><dd><a href="/runs/{{ c }}">{{ c }}</a></dd>{% endfor %}</dl>{% if can_operate %}<p>{% if ended %}<form class=inline method=post action="/runs/{{ run.id }}/retry"><input type=hidden name=token value="{{ token }}"><button type=submit>Retry</button></form> {% if run.status == "failed" %}<form class=inline method=post action="/runs/{{ run.id }}/retry"><input type=hidden name=token value="{{ token }}"><input type=hidden name=from value=failed_step><button type=submit>Retry from the failed step</button></form>{% endif %}{% else %}<form class=inline method=post action="/runs/{{ run.id }}/cancel"><input type=hidden name=token value="{{ token }}"><button type=submit>Cancel</button></form>{% endif %}</p>{% endif %}<h2>Timeline</h2><svg role=img aria-label="step attempts to scale" width="100%" viewBox="0 0 600 {{ height }}">{% for b in bars %}<rect class="bar {{ b.class }}" x="{{ b.x }}" y="{{ b.y }}" width="{{ b.w }}" height="14"><title>{{ b.label }}</title></rect><text x="2" y="{{ b.y + 11 }}" font-size="10">{{ b.step }}</text>{% endfor %}</svg><h2>Steps</h2><table><thead><tr><th>Step</th><th>Attempt</th><th>Result</th><th>Took</th><th>Request, output or error</th></tr></thead><tbody>{% for e in run.step_executions %}<tr><td>{{ e.step_id }}</td><td>{{ e.attempt }}</td><td class="{{ e.status }}">{{ e.status }}</td><td>{{ e.duration_ms }} ms</td><td>{% if e.request %}<pre>{{ e.request | tojson(indent=2) }}</pre>{% endif %}{% if e.error %}<pre>{{ e.error.message }}</pre>{% elif e.output is defined %}<pre>{{ e.output | tojson(indent=2) }}</pre>{% endif %}</td></tr>{% endfor %}</tbody></table>{% if run.waiting_payload %}<h2>Waiting for</h2><pre>{{ run.waiting_payload | tojson(indent=2) }}</pre>{% endif %}{% endblock %}"#;

const WORKFLOWS: &str = r#"{% extends "layout.html" %}{% block body %}<table><thead><tr><th>Workflow</th><th>Revision</th><th>Triggers</th><th>On</th></tr></thead><tbody>{% for w in workflows %}<tr><td><a href="/runs?workflow={{ w.id }}">{{ w.id }}</a></td><td>{{ w.revision }}</td><td><ul>{% for t in w.triggers %}<li>{{ t.type }} <code>{{ t.trigger }}</code>{% if t.url %} <code>{{ t.url }}</code>{% endif %}{% if t.schedule %} <code>{{ t.schedule }}</code>{% endif %} — {% if t.enabled %}on{% else %}<strong>off</strong>{% endif %}{% if can_operate %} <form class=inline method=post action="/workflows/{{ w.id }}/triggers/{{ t.trigger }}/{% if t.enabled %}disable{% else %}enable{% endif %}"><input type=hidden name=token value="{{ token }}"><button type=submit>{% if t.enabled %}Turn off{% else %}Turn on{% endif %}</button></form>{% endif %}</li>{% endfor %}</ul></td><td>{% if w.enabled %}on{% else %}<strong>off</strong>{% endif %}{% if can_operate %} <form class=inline method=post action="/workflows/{{ w.id }}/{% if w.enabled %}disable{% else %}enable{% endif %}"><input type=hidden name=token value="{{ token }}"><button type=submit>{% if w.enabled %}Turn off{% else %}Turn on{% endif %}</button></form>{% endif %}</td></tr>{% else %}<tr><td colspan=4>No workflows deployed.</td></tr>{% endfor %}</tbody></table>{% endblock %}"#;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        super::super::pages::environment(&[
            ("layout.html", LAYOUT),
            ("login.html", LOGIN),
            ("overview.html", OVERVIEW),
            ("runs.html", RUNS),
            ("run.html", RUN),
            ("workflows.html", WORKFLOWS),
        ])
    })
}

/// Renders a console page; a template failure (a bug, not input) says so.
pub fn render(name: &str, ctx: Value) -> String {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "rendering a console page failed");
            "<!doctype html><title>Tripline</title><p>This page could not be shown.</p>".into()
        })
}
