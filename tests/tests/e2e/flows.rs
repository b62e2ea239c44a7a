//! Flow triggers end to end (local shape): a run's end starts the workflows that listen to
//! it, on success or on failure, one per item with `for_each`; loops are refused at
//! deploy; the runs show their parent and children.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_tests::*;

const SOURCE: &str = r#"
id: source
triggers: [{ type: manual }]
steps:
  - id: check
    type: fail
    when: "trigger.body.fail | default(false)"
    message: "source refused {{ trigger.body.n }}"
  - id: out
    type: transform
    value: "{{ trigger.body.out }}"
"#;

const DOUBLE: &str = r#"
id: double
triggers: [{ type: flow, workflow: source }]
steps:
  - { id: d, type: transform, value: "{{ trigger.body.n * 2 }}" }
"#;

const ALERT: &str = r#"
id: alert
triggers:
  - { type: flow, id: on_failure, workflow: source, on: [failed, timed_out] }
steps:
  - id: a
    type: transform
    value:
      status: "{{ trigger.status }}"
      message: "{{ trigger.error.message }}"
      parent: "{{ trigger.parent.run_id }}"
"#;

const EACH: &str = r#"
id: each
triggers:
  - type: flow
    workflow: source
    for_each: true
    condition: "trigger.body.keep"
steps:
  - { id: e, type: transform, value: { item: "{{ trigger.body.v }}", index: "{{ trigger.index }}" } }
"#;

async fn app() -> TestApp {
    spawn_app(
        Opts::default()
            .workflow("source.yaml", SOURCE)
            .workflow("double.yaml", DOUBLE)
            .workflow("alert.yaml", ALERT)
            .workflow("each.yaml", EACH),
    )
    .await
}

async fn start(app: &TestApp, body: Value) -> Value {
    let (status, _, resp) = app.post_json("/v1/workflows/source/runs", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    app.wait_run(resp["run_id"].as_str().expect("id")).await
}

/// The runs of `workflow` once there are `n` of them, all ended.
async fn ended_runs(app: &TestApp, workflow: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = app
            .get(&format!("/v1/runs?workflow={workflow}&limit=100"))
            .await;
        let mut runs = Vec::new();
        for r in body["items"].as_array().cloned().unwrap_or_default() {
            let (_, full) = app.get(r["url"].as_str().unwrap_or_default()).await;
            runs.push(full);
        }
        let done = runs.iter().all(|r| {
            ["succeeded", "failed", "cancelled", "timed_out"]
                .contains(&r["status"].as_str().unwrap_or_default())
        });
        if runs.len() >= n && done {
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workflow}: {} runs: {runs:?}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_successful_run_starts_its_listeners_with_its_output_and_both_record_the_link() {
    let app = app().await;
    let parent = start(&app, json!({"out": {"n": 21}})).await;
    assert_eq!(parent["status"], "succeeded", "{parent}");
    let doubles = ended_runs(&app, "double", 1).await;
    let child = &doubles[0];
    assert_eq!(child["status"], "succeeded", "{child}");
    assert_eq!(child["final_output"], 42);
    assert_eq!(child["trigger"]["kind"], "flow");
    assert_eq!(child["trigger_input"]["parent"]["workflow"], "source");
    assert_eq!(child["parent"]["run_id"], parent["id"]);
    assert_eq!(child["parent"]["flow"], "flow");
    let children: Vec<&str> = parent["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        children.contains(&child["id"].as_str().unwrap_or("?")),
        "{parent}"
    );
    // `on` defaults to succeeded: the failure listener did not start.
    let (_, alerts) = app.get("/v1/runs?workflow=alert").await;
    assert_eq!(
        alerts["items"].as_array().map(Vec::len),
        Some(0),
        "{alerts}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_run_starts_the_failure_listener_with_its_error() {
    let app = app().await;
    let parent = start(&app, json!({"fail": true, "n": 7})).await;
    assert_eq!(parent["status"], "failed", "{parent}");
    let alerts = ended_runs(&app, "alert", 1).await;
    let out = &alerts[0]["final_output"];
    assert_eq!(out["status"], "failed", "{}", alerts[0]);
    assert_eq!(out["message"], "source refused 7");
    assert_eq!(out["parent"], parent["id"]);
    assert_eq!(parent["children"], json!([alerts[0]["id"]]));
    // Neither success listener started.
    let (_, doubles) = app.get("/v1/runs?workflow=double").await;
    assert_eq!(doubles["items"].as_array().map(Vec::len), Some(0));
    app.stop().await;
}

#[tokio::test]
async fn for_each_starts_one_run_per_item_and_keeps_the_items_its_condition_refuses() {
    let app = app().await;
    let items = json!([
        {"v": "a", "keep": true},
        {"v": "b", "keep": false},
        {"v": "c", "keep": true},
    ]);
    let parent = start(&app, json!({"out": items})).await;
    assert_eq!(parent["status"], "succeeded", "{parent}");
    let runs = ended_runs(&app, "each", 2).await;
    let mut got: Vec<(String, i64)> = runs
        .iter()
        .map(|r| {
            (
                r["final_output"]["item"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["final_output"]["index"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![("a".into(), 0), ("c".into(), 2)]);
    // The refused item is in the inbox, filtered, with the reason.
    let (_, inbox) = app.get("/v1/inbox?workflow=each&outcome=filtered").await;
    let items = inbox["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{inbox}");
    assert!(
        items[0]["outcome"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("condition `trigger.body.keep` is false")),
        "{inbox}"
    );
    // `double` ran too (its input is the whole array, whose `n` is undefined: it fails).
    let doubles = ended_runs(&app, "double", 1).await;
    assert_eq!(doubles.len(), 1);
    // 2 from `each` and 1 from `double` are the parent's children.
    assert_eq!(
        parent["children"].as_array().map(Vec::len),
        Some(3),
        "{parent}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flow_that_loops_back_is_refused_at_deploy_with_the_loop() {
    let app = app().await;
    // source → double already; double → source would close it.
    let looping = "id: source\ntriggers: [{type: flow, workflow: double}]\nsteps: [{id: a, type: transform, value: 1}]\n";
    let (status, body) = app.deploy("source", looping).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let p = &body["problems"][0];
    assert_eq!(p["path"], "triggers[0].workflow", "{body}");
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("(source → double → source)")),
        "{body}"
    );
    let own = "id: selfish\ntriggers: [{type: flow, workflow: selfish}]\nsteps: [{id: a, type: transform, value: 1}]\n";
    let (status, body) = app.deploy("selfish", own).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("selfish → selfish"), "{body}");
    // A chain that does not loop deploys.
    let chain = "id: third\ntriggers: [{type: flow, workflow: double}]\nsteps: [{id: a, type: transform, value: 1}]\n";
    let (status, body) = app.deploy("third", chain).await;
    assert!(status.is_success(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_run_starts_only_listeners_on_cancelled() {
    let app = spawn_app(
        Opts::default()
            .workflow(
                "waiter.yaml",
                "id: waiter\ntriggers: [{type: manual}]\nsteps: [{id: w, type: wait_for_webhook, timeout: 1h}]\n",
            )
            .workflow(
                "cleanup.yaml",
                "id: cleanup\ntriggers: [{type: flow, workflow: waiter, on: [cancelled]}]\nsteps: [{id: c, type: transform, value: '{{ trigger.status }}'}]\n",
            ),
    )
    .await;
    let (_, _, resp) = app.post_json("/v1/workflows/waiter/runs", &json!({})).await;
    let id = resp["run_id"].as_str().expect("id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, run) = app.get(&format!("/v1/runs/{id}")).await;
        if run["status"] == "waiting" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = app
        .post_json(&format!("/v1/runs/{id}/cancel"), &json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    let runs = ended_runs(&app, "cleanup", 1).await;
    assert_eq!(runs[0]["final_output"], "cancelled");
    let (_, parent) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(parent["children"], json!([runs[0]["id"]]));
    app.stop().await;
}

#[tokio::test]
async fn a_failure_handler_sees_the_failed_runs_input_context_step_and_response() {
    let stub = Stub::start().await;
    stub.script([Reply {
        status: 422,
        body: json!({"error": "phone number is invalid"}),
        delay: Duration::ZERO,
    }]);
    let sender = format!(
        "id: sender\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: remember, type: transform, value: 1, extract: {{ customer: \"{{{{ trigger.body.customer }}}}\" }} }}\n  - {{ id: sms, type: http, method: POST, url: \"{}/sms\", body: {{ to: \"{{{{ trigger.body.phone }}}}\" }} }}\n",
        stub.url
    );
    let notify = r#"
id: notify
triggers: [{ type: flow, workflow: sender, on: [failed] }]
steps:
  - id: tell
    type: transform
    value:
      phone: "{{ trigger.input.body.phone }}"
      customer: "{{ trigger.context.customer }}"
      step: "{{ trigger.failed_step.id }}"
      class: "{{ trigger.failed_step.error.class }}"
      said: "{{ trigger.failed_step.response.body.error }}"
      why: "{{ trigger.error.message }}"
"#;
    let app = spawn_app(
        Opts::default()
            .workflow("sender.yaml", &sender)
            .workflow("notify.yaml", notify),
    )
    .await;
    let (status, _, body) = app
        .post_json(
            "/v1/workflows/sender/runs",
            &json!({"phone": "+1 555", "customer": "ana"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let failed = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let child = failed["children"][0]
        .as_str()
        .expect("the handler ran")
        .to_string();
    let handled = app.wait_run(&child).await;
    assert_eq!(handled["status"], "succeeded", "{handled}");
    let out = &handled["final_output"];
    assert_eq!(out["phone"], "+1 555");
    assert_eq!(out["customer"], "ana");
    assert_eq!(out["step"], "sms");
    assert_eq!(out["class"], "status4xx");
    assert_eq!(out["said"], "phone number is invalid", "{handled}");
    assert!(
        out["why"].as_str().unwrap_or_default().contains("422"),
        "{out}"
    );
}

#[tokio::test]
async fn a_template_error_names_the_expression_the_missing_key_and_the_field() {
    let stub = Stub::start().await;
    let yaml = format!(
        "id: sms\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: send, type: http, method: POST, url: \"{}/sms\", body: {{ text: \"Hi {{{{ trigger.body.nmae }}}}\" }} }}\n",
        stub.url
    );
    let app = spawn_app(Opts::default().workflow("sms.yaml", &yaml)).await;
    let (_, _, body) = app
        .post_json(
            "/v1/workflows/sms/runs",
            &json!({"name": "Ana", "phone": "1"}),
        )
        .await;
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["error_type"], "template_error", "{run}");
    let said = run["error"].as_str().unwrap_or_default();
    assert!(said.contains("step `send`"), "{said}");
    assert!(said.contains("`trigger.body.nmae` is undefined"), "{said}");
    assert!(said.contains("`trigger.body` has no `nmae`"), "{said}");
    assert!(
        said.contains("`name`") && said.contains("(in `body`)"),
        "{said}"
    );
    assert_eq!(stub.requests().len(), 0);
}
