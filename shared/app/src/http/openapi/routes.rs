//! The routes the document describes, by resource: `super::super::control`,
//! `super::super::ingress` and `super::super::resume` serve these.

use serde_json::json;

use super::{Op, Schemas, any_json, context_patch, job_body, json_ok, key_name, object, page};

/// Every route.
pub(super) fn operations(s: &mut Schemas) -> Vec<Op> {
    let mut ops = workflows(s);
    ops.extend(workflow_state(s));
    ops.extend(runs(s));
    ops.extend(inbox(s));
    ops.extend(admin(s));
    ops.extend(public());
    ops.extend(waits());
    ops
}

/// An operation answering 200 with a JSON object, taking no parameters or body.
fn op(method: &'static str, path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        tag,
        summary,
        query: None,
        hide: &[],
        require: &[],
        body: Vec::new(),
        ok: json_ok("200", object()),
    }
}

fn export() -> Vec<(&'static str, Option<(&'static str, serde_json::Value)>)> {
    vec![("200", Some(("text/csv", json!({"type": "string"}))))]
}

/// `/v1/workflows…`: deploy, read, switch, start, dry-run, state and context.
fn workflows(s: &mut Schemas) -> Vec<Op> {
    use super::super::control::schema as c;
    let definition = vec![
        (
            "application/yaml",
            json!({"type": "string", "description": "a workflow definition in YAML"}),
        ),
        ("application/json", s.body::<tripline_core::Workflow>()),
    ];
    vec![
        Op {
            ok: json_ok(
                "200",
                json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"type": "object"}}}}),
            ),
            ..op(
                "get",
                "/v1/workflows",
                "workflows",
                "The deployed workflows, their triggers and switches",
            )
        },
        Op {
            query: s.query::<c::RevisionParams>(),
            ..op(
                "get",
                "/v1/workflows/{id}",
                "workflows",
                "A workflow: its definition, triggers and revisions",
            )
        },
        Op {
            body: definition.clone(),
            ok: vec![
                ("200", Some(("application/json", object()))),
                ("201", Some(("application/json", object()))),
            ],
            ..op(
                "put",
                "/v1/workflows/{id}",
                "workflows",
                "Deploy a definition (a new revision; 200 when unchanged)",
            )
        },
        Op {
            ..op(
                "delete",
                "/v1/workflows/{id}",
                "workflows",
                "Remove a workflow (a revision that marks it removed)",
            )
        },
        Op {
            query: s.query::<c::StartParams>(),
            body: any_json(),
            ok: json_ok("202", object()),
            ..op(
                "post",
                "/v1/workflows/{id}/runs",
                "workflows",
                "Start a run (manual trigger, a cron trigger now, or a one-time run with `at`)",
            )
        },
        Op {
            query: s.query::<c::DryRunParams>(),
            body: definition,
            ok: json_ok("200", s.answer::<crate::intake::dry_run::DryRun>()),
            ..op(
                "post",
                "/v1/workflows/{id}/dry-run",
                "workflows",
                "What a changed definition would do with the workflow's last inbox messages",
            )
        },
    ]
}

/// `/v1/runs…`: list, export, read, cancel, retry.
fn runs(s: &mut Schemas) -> Vec<Op> {
    use super::super::control::schema as c;
    vec![
        Op {
            query: s.query::<c::RunFilters>(),
            hide: &["format"],
            ok: json_ok("200", page()),
            ..op(
                "get",
                "/v1/runs",
                "runs",
                "Runs, newest first, filtered and searched",
            )
        },
        Op {
            query: s.query::<c::RunFilters>(),
            hide: &["limit"],
            require: &["format"],
            ok: export(),
            ..op(
                "get",
                "/v1/runs/export",
                "runs",
                "Every run the filters select, as CSV or NDJSON (format=ndjson: application/x-ndjson)",
            )
        },
        Op {
            ok: json_ok("200", s.answer::<tripline_core::Run>()),
            ..op(
                "get",
                "/v1/runs/{id}",
                "runs",
                "A run: status, step executions, output, what it waits for",
            )
        },
        op(
            "post",
            "/v1/runs/{id}/cancel",
            "runs",
            "Cancel a queued, running or waiting run",
        ),
        Op {
            query: s.query::<c::RetryParams>(),
            ok: vec![
                ("200", Some(("application/json", object()))),
                ("201", Some(("application/json", object()))),
            ],
            ..op(
                "post",
                "/v1/runs/{id}/retry",
                "runs",
                "Retry an ended run from the start or from its failed step",
            )
        },
    ]
}

/// `/v1/inbox…`: list, export, read, edit, reprocess.
fn inbox(s: &mut Schemas) -> Vec<Op> {
    use super::super::control::schema as c;
    vec![
        Op {
            query: s.query::<c::InboxFilters>(),
            hide: &["format"],
            ok: json_ok("200", page()),
            ..op(
                "get",
                "/v1/inbox",
                "inbox",
                "Inbound messages as received, newest first",
            )
        },
        Op {
            query: s.query::<c::InboxFilters>(),
            hide: &["limit"],
            require: &["format"],
            ok: export(),
            ..op(
                "get",
                "/v1/inbox/export",
                "inbox",
                "Every message the filters select, as CSV or NDJSON",
            )
        },
        op(
            "get",
            "/v1/inbox/{id}",
            "inbox",
            "A message, its raw body and what became of it",
        ),
        Op {
            body: any_json(),
            ok: json_ok("201", object()),
            ..op(
                "put",
                "/v1/inbox/{id}",
                "inbox",
                "Keep an edited copy of a message, to reprocess",
            )
        },
        op(
            "post",
            "/v1/inbox/{id}/reprocess",
            "inbox",
            "Match a message again against its workflow's current revision",
        ),
    ]
}

/// Jobs, secrets, keys, the audit log, this document.
fn admin(s: &mut Schemas) -> Vec<Op> {
    use super::super::control::schema as c;
    vec![
        Op {
            body: vec![("application/json", job_body(s))],
            ok: vec![
                ("200", Some(("application/json", object()))),
                (
                    "202",
                    Some(("application/json", s.answer::<crate::jobs::Job>())),
                ),
            ],
            ..op(
                "post",
                "/v1/jobs",
                "jobs",
                "Retry, cancel or reprocess everything a filter selects (a job), or count it (dry_run)",
            )
        },
        Op {
            ok: json_ok("200", s.answer::<crate::jobs::Job>()),
            ..op(
                "get",
                "/v1/jobs/{id}",
                "jobs",
                "A job's progress and each done item's result",
            )
        },
        Op {
            ok: json_ok("200", json!({"type": "object", "required": ["items"]})),
            ..op(
                "get",
                "/v1/secrets",
                "secrets",
                "Secrets' names and when each was set; never a value",
            )
        },
        Op {
            body: vec![(
                "application/json",
                json!({"type": "object", "required": ["value"], "additionalProperties": false, "properties": {"value": {"type": "string", "minLength": 1}}}),
            )],
            ..op("put", "/v1/secrets/{name}", "secrets", "Set a secret")
        },
        Op {
            query: s.query::<c::RemoveParams>(),
            ok: vec![("204", None)],
            ..op("delete", "/v1/secrets/{name}", "secrets", "Remove a secret")
        },
        Op {
            ok: json_ok("200", json!({"type": "object", "required": ["items"]})),
            ..op(
                "get",
                "/v1/keys",
                "keys",
                "Scoped API keys' names and scopes",
            )
        },
        Op {
            body: vec![(
                "application/json",
                json!({"type": "object", "required": ["name", "scope"], "additionalProperties": false, "properties": {"name": key_name(), "scope": {"enum": ["read", "operate", "deploy", "admin"]}}}),
            )],
            ok: json_ok("201", object()),
            ..op("post", "/v1/keys", "keys", "Make a scoped key (shown once)")
        },
        Op {
            ok: vec![("204", None)],
            ..op("delete", "/v1/keys/{name}", "keys", "Remove a key")
        },
        Op {
            query: s.query::<c::AuditParams>(),
            ok: json_ok("200", page()),
            ..op("get", "/v1/audit", "keys", "The audit log, newest first")
        },
        op("get", "/v1/openapi.json", "operations", "This document"),
    ]
}

/// What is not under `/v1`: metrics, liveness, webhooks and the single-use URLs of waits.
fn public() -> Vec<Op> {
    vec![
        Op {
            ok: vec![("200", Some(("text/plain", json!({"type": "string"}))))],
            ..op(
                "get",
                "/metrics",
                "operations",
                "Metrics in the Prometheus text format (local)",
            )
        },
        op("get", "/healthz", "operations", "Liveness"),
        Op {
            body: any_json(),
            ok: vec![
                ("200", Some(("application/json", object()))),
                ("202", Some(("application/json", object()))),
                ("204", None),
            ],
            ..op(
                "post",
                "/hooks/{token}",
                "webhooks",
                "A webhook trigger (the methods it accepts are its trigger's)",
            )
        },
        Op {
            ok: vec![
                ("200", Some(("application/json", object()))),
                ("202", Some(("application/json", object()))),
                ("204", None),
            ],
            ..op(
                "get",
                "/hooks/{token}",
                "webhooks",
                "A webhook trigger called with GET",
            )
        },
    ]
}

/// `/v1/workflows/{id}/…`: switches, ticks, state and context.
fn workflow_state(s: &mut Schemas) -> Vec<Op> {
    use super::super::control::schema as c;
    vec![
        op(
            "post",
            "/v1/workflows/{id}/enable",
            "workflows",
            "Switch a workflow on",
        ),
        op(
            "post",
            "/v1/workflows/{id}/disable",
            "workflows",
            "Switch a workflow off without removing it",
        ),
        op(
            "post",
            "/v1/workflows/{id}/triggers/{trigger}/enable",
            "workflows",
            "Switch one trigger on",
        ),
        op(
            "post",
            "/v1/workflows/{id}/triggers/{trigger}/disable",
            "workflows",
            "Switch one trigger off",
        ),
        Op {
            query: s.query::<c::TicksParams>(),
            ok: json_ok("200", page()),
            ..op(
                "get",
                "/v1/workflows/{id}/ticks",
                "workflows",
                "A cron trigger's ticks, newest first",
            )
        },
        op(
            "get",
            "/v1/workflows/{id}/state",
            "workflows",
            "The state cron runs carry from one to the next",
        ),
        Op {
            body: any_json(),
            ..op(
                "put",
                "/v1/workflows/{id}/state",
                "workflows",
                "Replace the cron state (null clears it)",
            )
        },
        op(
            "get",
            "/v1/workflows/{id}/context",
            "workflows",
            "The workflow's context store",
        ),
        Op {
            body: vec![("application/json", context_patch())],
            ..op(
                "patch",
                "/v1/workflows/{id}/context",
                "workflows",
                "Set keys of the context store (null deletes)",
            )
        },
    ]
}

/// The single-use URLs of waiting runs.
fn waits() -> Vec<Op> {
    vec![
        Op {
            body: any_json(),
            ..op(
                "post",
                "/resume/{token}",
                "waits",
                "Resume a run waiting for a callback (single use)",
            )
        },
        Op {
            ok: vec![("200", Some(("text/html", json!({"type": "string"}))))],
            ..op(
                "get",
                "/review/{token}",
                "waits",
                "An approval's review page",
            )
        },
        Op {
            ok: vec![("200", Some(("text/html", json!({"type": "string"}))))],
            ..op(
                "get",
                "/approve/{token}",
                "waits",
                "Confirm approving (a page)",
            )
        },
        Op {
            body: any_json(),
            ..op(
                "post",
                "/approve/{token}",
                "waits",
                "Approve (single use), with an optional comment",
            )
        },
        Op {
            ok: vec![("200", Some(("text/html", json!({"type": "string"}))))],
            ..op(
                "get",
                "/reject/{token}",
                "waits",
                "Confirm rejecting (a page)",
            )
        },
        Op {
            body: any_json(),
            ..op(
                "post",
                "/reject/{token}",
                "waits",
                "Reject (single use), with an optional comment",
            )
        },
    ]
}
