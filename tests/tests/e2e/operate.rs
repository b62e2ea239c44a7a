//! Operating on runs after the fact: retry from the start or from the failed step, with
//! the current revision or the run's own.

use axum::http::StatusCode;
use serde_json::json;
use tripline_tests::*;

fn flaky(stub: &Stub, tag: &str) -> String {
    format!(
        r#"
id: retry-demo
description: {tag}
triggers:
  - type: webhook
    id: hook
steps:
  - {{ id: a, type: transform, value: {{ n: "{{{{ trigger.body.n }}}}" }} }}
  - id: b
    type: http
    url: "{}/charge/{tag}"
    method: POST
    body: {{ n: "{{{{ steps.a.n }}}}" }}
  - {{ id: c, type: transform, value: {{ charged: "{{{{ steps.b.body.json.n }}}}", rev: "{{{{ run.revision }}}}" }} }}
"#,
        stub.url
    )
}

/// A run of `retry-demo` that failed at step `b` (the stub answered 400).
async fn failed_run(app: &TestApp, stub: &Stub) -> String {
    stub.script([Reply::status(400)]);
    let (_, wf) = app.get("/v1/workflows/retry-demo").await;
    let url = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    let (status, _, body) = app.post_json(&url, &json!({"n": 7})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "failed", "{run}");
    run["run_id"]
        .as_str()
        .or(run["id"].as_str())
        .expect("id")
        .to_string()
}

#[tokio::test]
async fn a_retry_from_the_failed_step_reuses_what_succeeded_and_sends_only_the_rest() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default()).await;
    app.deploy("retry-demo", &flaky(&stub, "v1")).await;
    let id = failed_run(&app, &stub).await;
    assert_eq!(stub.requests().len(), 1);

    let (status, r) = app
        .post_with(&format!("/v1/runs/{id}/retry?from=failed_step"), &[])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(
        (r["retry_of"].as_str(), r["from"].as_str()),
        (Some(id.as_str()), Some("failed_step"))
    );
    let new_id = r["run_id"].as_str().expect("run id");
    let run = app.wait_run(new_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"]["charged"], 7);
    assert_eq!(run["retry_of"]["run_id"], id.as_str());
    assert_eq!(run["retry_of"]["step"], "b");
    // Step `a` was not run again: its execution is the original's.
    let (_, original) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(run["step_executions"][0], original["step_executions"][0]);
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 2, "only `b` was sent again");
    assert_eq!(reqs[1].headers["idempotency-key"], format!("{new_id}:b"));
    // The listing links the retry to its original.
    let (_, page) = app.get("/v1/runs?workflow=retry-demo").await;
    assert_eq!(page["items"][0]["retry_of"], id.as_str(), "{page}");
}

#[tokio::test]
async fn a_retry_runs_the_current_revision_or_the_runs_own_and_happens_once_per_key() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default()).await;
    app.deploy("retry-demo", &flaky(&stub, "v1")).await;
    let id = failed_run(&app, &stub).await;
    app.deploy("retry-demo", &flaky(&stub, "v2")).await;

    let key = [("idempotency-key", "retry-once")];
    let (status, first) = app.post_with(&format!("/v1/runs/{id}/retry"), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = app.post_with(&format!("/v1/runs/{id}/retry"), &key).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["run_id"].clone(), again["duplicate"].clone()),
        (first["run_id"].clone(), json!(true))
    );
    let run = app.wait_run(first["run_id"].as_str().expect("id")).await;
    assert_eq!(
        (run["revision"].clone(), run["final_output"]["rev"].clone()),
        (json!(2), json!(2))
    );
    assert!(stub.requests().iter().any(|r| r.path == "/charge/v2"));

    let (status, own) = app
        .post_with(&format!("/v1/runs/{id}/retry?revision=own"), &[])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let run = app.wait_run(own["run_id"].as_str().expect("id")).await;
    assert_eq!(run["revision"], 1, "{run}");
    assert_eq!(
        stub.requests().last().map(|r| r.path.clone()).as_deref(),
        Some("/charge/v1")
    );

    // Retries are recorded in the inbox (the one asked twice as a duplicate).
    let (_, inbox) = app.get("/v1/inbox?workflow=retry-demo&trigger=retry").await;
    let kinds: Vec<&str> = inbox["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["outcome"]["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["started", "duplicate", "started"], "{inbox}");
}

#[tokio::test]
async fn a_retry_that_cannot_be_made_says_why() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default()).await;
    app.deploy("retry-demo", &flaky(&stub, "v1")).await;
    let id = failed_run(&app, &stub).await;
    let (status, body) = app.post_with("/v1/runs/nope/retry", &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = app
        .post_with(&format!("/v1/runs/{id}/retry?from=middle"), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "from", "{body}");
    // A new revision without the failed step: from the failed step is refused, and why.
    let renamed = flaky(&stub, "v2")
        .replace("id: b", "id: pay")
        .replace("steps.b", "steps.pay");
    app.deploy("retry-demo", &renamed).await;
    let (status, body) = app
        .post_with(&format!("/v1/runs/{id}/retry?from=failed_step"), &[])
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["type"], "urn:tripline:problem:not_retryable");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("`b` is not in this revision"),
        "{body}"
    );
}

const SWITCHED: &str = r#"
id: switched
triggers:
  - type: webhook
    id: hook
  - type: manual
steps:
  - { id: t, type: transform, value: "{{ trigger.body }}" }
"#;

const LISTENER: &str = r#"
id: listener
triggers:
  - { type: flow, id: after, workflow: switched, on: [succeeded] }
steps:
  - { id: t, type: transform, value: 1 }
"#;

#[tokio::test]
async fn a_switched_off_webhook_answers_503_and_records_nothing_and_a_switch_outlives_a_deploy() {
    let app = spawn_app(Opts::default()).await;
    let (_, wf) = app.deploy("switched", SWITCHED).await;
    let url = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    let (status, body) = app
        .post_with("/v1/workflows/switched/triggers/hook/disable", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["revision"].clone(), body["enabled"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(body["triggers"][0]["enabled"], false, "{body}");
    assert_eq!(body["triggers"][1]["enabled"], true, "{body}");
    // Asked again: nothing changes, no new revision.
    let (_, again) = app
        .post_with("/v1/workflows/switched/triggers/hook/disable", &[])
        .await;
    assert_eq!(again["revision"], 2);

    let (status, headers, body) = app.post_json(&url, &json!({"n": 1})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "60");
    assert_eq!(body["code"], "trigger_disabled");
    let (_, inbox) = app.get("/v1/inbox?workflow=switched").await;
    assert_eq!(inbox["items"], json!([]), "nothing recorded");
    // The manual trigger is still on.
    let (status, _, body) = app
        .post_json("/v1/workflows/switched/runs", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // A deploy keeps the switch (the definition says nothing of it).
    let (status, wf) = app
        .deploy(
            "switched",
            &SWITCHED.replace("value: \"{{ trigger.body }}\"", "value: 2"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    assert_eq!(wf["triggers"][0]["enabled"], false, "{wf}");
    let (status, _, _) = app.post_json(&url, &json!({"n": 2})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let (status, _) = app
        .post_with("/v1/workflows/switched/triggers/hook/enable", &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = app.post_json(&url, &json!({"n": 3})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let (status, body) = app
        .post_with("/v1/workflows/switched/triggers/nope/disable", &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("it has hook, manual"),
        "{body}"
    );
}

#[tokio::test]
async fn a_switched_off_workflow_starts_nothing_from_any_trigger_and_its_flow_ends_are_kept_skipped()
 {
    let app = spawn_app(Opts::default()).await;
    app.deploy("switched", SWITCHED).await;
    app.deploy("listener", LISTENER).await;
    let (status, body) = app.post_with("/v1/workflows/listener/disable", &[]).await;
    assert_eq!(
        (status, body["enabled"].clone()),
        (StatusCode::OK, json!(false)),
        "{body}"
    );
    let (_, _, started) = app
        .post_json("/v1/workflows/switched/runs", &json!({}))
        .await;
    let ended = app.wait_run(started["run_id"].as_str().expect("id")).await;
    assert_eq!(ended["status"], "succeeded");
    let (_, inbox) = app.get("/v1/inbox?workflow=listener").await;
    assert_eq!(inbox["items"][0]["outcome"]["kind"], "skipped", "{inbox}");
    let reason = inbox["items"][0]["outcome"]["reason"]
        .as_str()
        .expect("reason");
    assert!(
        reason.contains("workflow `listener` is switched off"),
        "{reason}"
    );
    let message = inbox["items"][0]["id"].as_str().expect("id").to_string();

    let (status, body) = app.post_with("/v1/workflows/switched/disable", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = app
        .post_json("/v1/workflows/switched/runs", &json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("trigger_disabled")),
        "{body}"
    );
    let (status, body) = app
        .post_with(
            &format!("/v1/runs/{}/retry", ended["id"].as_str().expect("id")),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // On again, the kept end is reprocessed into a run.
    app.post_with("/v1/workflows/listener/enable", &[]).await;
    let (status, body) = app
        .post_with(&format!("/v1/inbox/{message}/reprocess"), &[])
        .await;
    assert!(status.is_success(), "{body}");
    let (_, runs) = app.get("/v1/runs?workflow=listener").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1), "{runs}");
}

/// One sample of `/metrics`: the value of the line that starts with `series `.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_webhooks_runs_steps_and_measure_the_queue_and_waiting_runs() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default()).await;
    app.deploy("retry-demo", &flaky(&stub, "v1")).await;
    failed_run(&app, &stub).await;
    let (_, wf) = app.get("/v1/workflows/retry-demo").await;
    let url = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    let (_, _, ok) = app.post_json(&url, &json!({"n": 2})).await;
    app.wait_run(ok["run_id"].as_str().expect("id")).await;
    app.deploy("parked", "id: parked\ntriggers: [{ type: manual }]\nsteps:\n  - { id: w, type: wait_for_webhook, timeout: 1h }\n").await;
    let (_, _, parked) = app.post_json("/v1/workflows/parked/runs", &json!({})).await;
    app.wait_status(parked["run_id"].as_str().expect("id"), "waiting")
        .await;

    let resp = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.expect("text");
    let at =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        at(r#"tripline_webhooks_total{workflow="retry-demo",outcome="accepted"}"#),
        2.0
    );
    assert_eq!(
        at(r#"tripline_runs_started_total{workflow="retry-demo",trigger="webhook"}"#),
        2.0
    );
    assert_eq!(
        at(r#"tripline_runs_ended_total{workflow="retry-demo",status="failed"}"#),
        1.0
    );
    assert_eq!(
        at(r#"tripline_runs_ended_total{workflow="retry-demo",status="succeeded"}"#),
        1.0
    );
    // The failed run: `a` succeeded, `b` failed; the other: `a`, `b`, `c` succeeded.
    assert_eq!(
        at(r#"tripline_step_duration_seconds_count{workflow="retry-demo",result="succeeded"}"#),
        4.0
    );
    assert_eq!(
        at(r#"tripline_step_duration_seconds_count{workflow="retry-demo",result="failed"}"#),
        1.0
    );
    assert_eq!(
        at(r#"tripline_step_attempts_bucket{workflow="retry-demo",le="1"}"#),
        4.0
    );
    assert_eq!(at("tripline_runs_waiting"), 1.0);
    assert!(at("tripline_queue_depth") >= 0.0);
    assert!(at("tripline_queue_oldest_age_seconds") >= 0.0);
}

const ORDERS: &str = r#"
id: orders
triggers:
  - type: webhook
    id: hook
    filter: { body: { type: order } }
  - type: manual
    condition: "{{ trigger.body.ok }}"
steps:
  - { id: t, type: transform, value: 1 }
"#;

#[tokio::test]
async fn a_dry_run_says_which_recent_messages_a_changed_definition_would_start_and_why_not() {
    let app = spawn_app(Opts::default()).await;
    let (_, wf) = app.deploy("orders", ORDERS).await;
    let url = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    for kind in ["order", "refund", "order"] {
        app.post_json(&url, &json!({"type": kind})).await;
    }
    app.post_json("/v1/workflows/orders/runs", &json!({"ok": true}))
        .await;

    let changed = ORDERS
        .replace("type: order", "type: refund")
        .replace("trigger.body.ok", "trigger.body.ok and false");
    let resp = app
        .client
        .post(app.url("/v1/workflows/orders/dry-run?limit=10"))
        .header("content-type", "application/yaml")
        .body(changed)
        .send()
        .await
        .expect("dry run");
    let (status, _, report) = read(resp).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (
            report["checked"].clone(),
            report["would_start"].clone(),
            report["changed"].clone()
        ),
        (json!(4), json!(1), json!(4)),
        "{report}"
    );
    // Newest first: the manual run, then order, refund, order.
    let items = report["items"].as_array().expect("items");
    let fate: Vec<(&str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["was"].as_str().unwrap_or("?"),
                i["now"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        fate,
        [
            ("started", "filtered"),
            ("started", "filtered"),
            ("filtered", "starts"),
            ("started", "filtered")
        ]
    );
    assert!(
        items[1]["reason"]
            .as_str()
            .expect("reason")
            .contains("trigger `hook`"),
        "{report}"
    );
    assert!(
        items[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("condition"),
        "{report}"
    );

    // Nothing was deployed or recorded.
    let (_, wf) = app.get("/v1/workflows/orders").await;
    assert_eq!(wf["revision"], 1);
    let (_, inbox) = app.get("/v1/inbox?workflow=orders").await;
    assert_eq!(inbox["items"].as_array().map(Vec::len), Some(4));

    let resp = app
        .client
        .post(app.url("/v1/workflows/orders/dry-run"))
        .header("content-type", "application/yaml")
        .body("id: other\nsteps: []\n")
        .send()
        .await
        .expect("dry run");
    let (status, _, body) = read(resp).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_definition");
}
