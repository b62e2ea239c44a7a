//! The context store end to end (local shape): steps write it with `extract_to_context`,
//! templates read it as `store`, `GET`/`PATCH /v1/workflows/{id}/context` read and change
//! it, and writers of different keys never undo each other.

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_tests::*;

const COUNTER: &str = r#"
id: counter
triggers: [{ type: manual }]
steps:
  - id: count
    type: transform
    value: "{{ (store.count | default('0')) | int + 1 }}"
    extract_to_context:
      count: "{{ output }}"
      last_by: "{{ trigger.body.who }}"
      scratch: null
  - id: report
    type: transform
    value: { count: "{{ store.count }}", greeting: "{{ store.greeting | default('none') }}" }
"#;

const PARKED: &str = r#"
id: parked
triggers: [{ type: manual }]
steps:
  - { id: seen, type: transform, value: "{{ store.b | default('unset') }}" }
  - { id: callback, type: wait_for_webhook, timeout: 10m, extract_to_context: { a: "{{ output.a }}" } }
"#;

async fn start(app: &TestApp, workflow: &str, input: Value) -> Value {
    let (status, _, body) = app
        .post_json(&format!("/v1/workflows/{workflow}/runs"), &input)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_run(body["run_id"].as_str().expect("id")).await
}

async fn patch(app: &TestApp, workflow: &str, body: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .patch(app.url(&format!("/v1/workflows/{workflow}/context")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("patch");
    let (status, _, body) = read(resp).await;
    (status, body)
}

#[tokio::test]
async fn runs_carry_a_count_in_the_store_and_the_api_reads_and_changes_it() {
    let app = spawn_app(Opts::default().workflow("c.yaml", COUNTER)).await;
    let (status, body) = patch(&app, "counter", r#"{"greeting": "hello", "scratch": "x"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for who in ["ada", "grace", "linus"] {
        let run = start(&app, "counter", json!({"who": who})).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let (_, ctx) = app.get("/v1/workflows/counter/context").await;
    assert_eq!(
        ctx["context"],
        json!({"count": "3", "last_by": "linus", "greeting": "hello"}),
        "`null` deleted `scratch`; the patched key stayed"
    );
    let run = start(&app, "counter", json!({"who": "x"})).await;
    assert_eq!(
        run["final_output"],
        json!({"count": "4", "greeting": "hello"}),
        "a later step sees the earlier step's write"
    );

    // A null deletes; keys not named are kept.
    let (status, body) = patch(&app, "counter", r#"{"count": null}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["context"],
        json!({"last_by": "x", "greeting": "hello"})
    );
    let run = start(&app, "counter", json!({"who": "y"})).await;
    assert_eq!(
        run["final_output"]["count"], "1",
        "counting again from nothing"
    );

    // Bad input is refused with what to do, and changes nothing.
    let (status, body) = patch(&app, "counter", r#"{"count": 5, "other": "ok"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|m| m.contains("`count` is 5, not a string")),
        "{body}"
    );
    let (status, _) = patch(&app, "counter", "[1]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = patch(&app, "counter", r#"{"": "x"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let big = format!(r#"{{"big": "{}"}}"#, "x".repeat(40 * 1024));
    let (status, _) = patch(&app, "counter", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, ctx) = app.get("/v1/workflows/counter/context").await;
    assert_eq!(ctx["context"]["count"], "1");
    assert!(ctx["context"].get("other").is_none());
    let (status, _) = patch(&app, "nobody", r#"{"a": "b"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn writers_of_different_keys_keep_each_others_changes() {
    let app = spawn_app(
        Opts::default()
            .workflow("p.yaml", PARKED)
            .workflow("c.yaml", COUNTER),
    )
    .await;
    // A run reads the store, then parks; meanwhile `b` is written; its write of `a` keeps `b`.
    let (_, _, body) = app.post_json("/v1/workflows/parked/runs", &json!({})).await;
    let id = body["run_id"].as_str().expect("id").to_string();
    let run = app.wait_status(&id, "waiting").await;
    let resume = run["waiting_payload"]["resume_url"]
        .as_str()
        .expect("resume url")
        .to_string();
    let (status, _) = patch(&app, "parked", r#"{"b": "from the API"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let resp = app
        .client
        .post(&resume)
        .json(&json!({"a": "from the run"}))
        .send()
        .await
        .expect("resume");
    assert!(resp.status().is_success());
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["step_executions"][0]["output"], "unset");
    let (_, ctx) = app.get("/v1/workflows/parked/context").await;
    assert_eq!(
        ctx["context"],
        json!({"a": "from the run", "b": "from the API"})
    );

    // 20 patches of different keys and 10 runs writing theirs, all at once: every key is kept.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = app.client.clone();
        let url = app.url("/v1/workflows/counter/context");
        tasks.push(tokio::spawn(async move {
            let resp = client
                .patch(url)
                .json(&json!({ format!("k{i}"): format!("v{i}") }))
                .send()
                .await
                .expect("patch");
            assert!(resp.status().is_success());
        }));
    }
    let mut runs = Vec::new();
    for i in 0..10 {
        let (_, _, body) = app
            .post_json(
                "/v1/workflows/counter/runs",
                &json!({"who": format!("w{i}")}),
            )
            .await;
        runs.push(body["run_id"].as_str().expect("id").to_string());
    }
    for t in tasks {
        t.await.expect("task");
    }
    for r in &runs {
        assert_eq!(app.wait_run(r).await["status"], "succeeded");
    }
    let (_, ctx) = app.get("/v1/workflows/counter/context").await;
    for i in 0..20 {
        assert_eq!(ctx["context"][format!("k{i}")], format!("v{i}"), "{ctx}");
    }
    assert!(ctx["context"]["count"].is_string(), "{ctx}");
    assert!(ctx["context"]["last_by"].is_string(), "{ctx}");
    app.stop().await;
}

#[tokio::test]
async fn a_bad_context_key_or_store_template_is_refused_at_deploy() {
    let app = spawn_app(Opts::default()).await;
    let bad = "id: bad\ntriggers: [{type: manual}]\nsteps: [{id: a, type: transform, value: 1, extract_to_context: {'': '{{ output }}', ok: '{{ stor.x }}'}}]\n";
    let (status, body) = app.deploy("bad", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let text = body.to_string();
    assert!(text.contains("is not a context store key"), "{body}");
    assert!(text.contains("`stor`"), "{body}");
    app.stop().await;
}
