//! Webhook ingress end to end: the real server on port 0, a fresh store, a loopback stub.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_tests::*;

const TOKEN: &str = "test-token-aaaaaaaaaaaaaaaa";

fn hook(token: &str) -> String {
    format!("/hooks/{token}")
}

async fn app_with(yaml: &str) -> TestApp {
    spawn_app(Opts::default().workflow("w.yaml", yaml)).await
}

fn http_workflow(stub: &Stub, response: &str) -> String {
    format!(
        r#"
id: calls
triggers:
  - type: webhook
    token: {TOKEN}
    response: {response}
steps:
  - id: call
    type: http
    method: POST
    url: "{}/orders/{{{{ trigger.body.id }}}}"
    body: {{ id: "{{{{ trigger.body.id }}}}" }}
  - id: shape
    type: transform
    value: {{ echoed: "{{{{ steps.call.body.json.id }}}}" }}
"#,
        stub.url
    )
}

#[tokio::test]
async fn an_async_webhook_answers_202_and_its_run_calls_downstream_with_an_idempotency_key() {
    let stub = Stub::start().await;
    let app = app_with(&http_workflow(&stub, "async")).await;

    let (status, headers, body) = app.post_json(&hook(TOKEN), &json!({"id": 42})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    assert_eq!(body["status_url"], json!(format!("/v1/runs/{run_id}")));
    assert_eq!(headers["location"], format!("/v1/runs/{run_id}").as_str());

    let run = app.wait_run(&run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"], json!({"echoed": 42}));
    assert_eq!(run["step_executions"].as_array().map(Vec::len), Some(2));
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());

    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/orders/42");
    assert_eq!(reqs[0].headers["idempotency-key"], format!("{run_id}:call"));
    assert_eq!(reqs[0].body, json!({"id": 42}));
}

#[tokio::test]
async fn a_sync_webhook_answers_with_the_envelope_once_the_run_ends() {
    let stub = Stub::start().await;
    let app = app_with(&http_workflow(&stub, "sync")).await;
    let (status, _, body) = app.post_json(&hook(TOKEN), &json!({"id": "x1"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!({"echoed": "x1"}));
    assert_eq!(body["meta"]["status"], "succeeded");
    assert_eq!(body["meta"]["workflow"], "calls");
    for field in [
        "run_id",
        "inserted_at",
        "claimed_at",
        "started_at",
        "finished_at",
    ] {
        assert!(body["meta"][field].is_string(), "{field} missing: {body}");
    }
}

#[tokio::test]
async fn a_sync_run_that_fails_answers_5xx_with_the_envelope() {
    let stub = Stub::start().await;
    stub.set_default(Reply::status(400));
    let app = app_with(&http_workflow(&stub, "sync")).await;
    let (status, _, body) = app.post_json(&hook(TOKEN), &json!({"id": 1})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["meta"]["status"], "failed");
    assert_eq!(body["meta"]["error_type"], "step_failed");
    assert!(
        body["meta"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("400"),
        "{body}"
    );
}

#[tokio::test]
async fn a_sync_run_past_its_budget_answers_202_with_the_status_url() {
    let stub = Stub::start().await;
    stub.set_default(Reply {
        status: 200,
        body: json!({"json": {"id": 1}}),
        delay: Duration::from_millis(1500),
    });
    let yaml = http_workflow(&stub, "sync")
        .replace("response: sync", "response: sync\n    sync_budget: 200ms");
    let app = app_with(&yaml).await;
    let (status, _, body) = app.post_json(&hook(TOKEN), &json!({"id": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run_id = body["run_id"].as_str().expect("run id");
    assert_eq!(body["status_url"], json!(format!("/v1/runs/{run_id}")));
    let run = app.wait_run(run_id).await;
    assert_eq!(run["status"], "succeeded");
}

const PURE_SYNC: &str = r#"
id: pure
triggers:
  - type: webhook
    token: test-token-aaaaaaaaaaaaaaaa
    methods: [POST, PUT]
    response: sync
    reply:
      status: 201
      headers: { x-run: "{{ run.id }}" }
      body: { sum: "{{ output.sum }}", status: "{{ status }}" }
steps:
  - id: add
    type: transform
    value: { sum: "{{ trigger.body.a + trigger.body.b }}" }
"#;

#[tokio::test]
async fn a_custom_reply_renders_status_headers_and_body() {
    let app = app_with(PURE_SYNC).await;
    let (status, headers, body) = app.post_json(&hook(TOKEN), &json!({"a": 2, "b": 3})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"sum": 5, "status": "succeeded"}));
    let run_id = headers["x-run"].to_str().expect("header");
    let (_, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "succeeded");
}

#[tokio::test]
async fn a_method_the_trigger_does_not_accept_gets_405_with_allow() {
    let app = app_with(PURE_SYNC).await;
    let resp = app
        .client
        .get(app.url(&hook(TOKEN)))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST, PUT");
}

const FILTERED: &str = r#"
id: filtered
triggers:
  - type: webhook
    token: test-token-aaaaaaaaaaaaaaaa
    filter: { body: { event: { type: push } } }
    condition: "trigger.body.size > 1"
steps:
  - { id: t, type: transform, value: 1 }
"#;

#[tokio::test]
async fn a_filter_not_met_answers_204_and_the_inbox_says_where() {
    let app = app_with(FILTERED).await;
    let (status, headers, _) = app
        .post_json(
            &hook(TOKEN),
            &json!({"event": {"type": "issue"}, "size": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = headers["x-tripline-message-id"]
        .to_str()
        .expect("message id");
    let (_, msg) = app.get(&format!("/v1/inbox/{id}")).await;
    assert_eq!(msg["outcome"]["kind"], "filtered");
    let reason = msg["outcome"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("body.event.type") && reason.contains("\"push\""),
        "{reason}"
    );

    let (status, headers, _) = app
        .post_json(&hook(TOKEN), &json!({"event": {"type": "push"}, "size": 1}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = headers["x-tripline-message-id"]
        .to_str()
        .expect("message id");
    let (_, msg) = app.get(&format!("/v1/inbox/{id}")).await;
    assert!(
        msg["outcome"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("condition"),
        "{msg}"
    );

    let (status, _, _) = app
        .post_json(&hook(TOKEN), &json!({"event": {"type": "push"}, "size": 2}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, runs) = app.get("/v1/runs?workflow=filtered").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn an_idempotency_key_maps_repeated_requests_to_one_run() {
    let stub = Stub::start().await;
    let app = app_with(&http_workflow(&stub, "async")).await;
    let send = || async {
        let resp = app
            .client
            .post(app.url(&hook(TOKEN)))
            .header("idempotency-key", "order-7")
            .json(&json!({"id": 7}))
            .send()
            .await
            .expect("request");
        read(resp).await
    };
    let (s1, _, b1) = send().await;
    let (s2, h2, b2) = send().await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(b1["run_id"], b2["run_id"]);
    app.wait_run(b1["run_id"].as_str().expect("id")).await;
    assert_eq!(stub.requests().len(), 1);
    let id = h2["x-tripline-message-id"].to_str().expect("message id");
    let (_, msg) = app.get(&format!("/v1/inbox/{id}")).await;
    assert_eq!(
        msg["outcome"],
        json!({"kind": "duplicate", "run_id": b1["run_id"]})
    );
}

#[tokio::test]
async fn an_unknown_token_answers_404() {
    let app = app_with(PURE_SYNC).await;
    let (status, _, body) = app
        .post_json("/hooks/no-such-token-aaaaaaaaaaaaa", &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "unknown_webhook");
}

#[tokio::test]
async fn in_non_enumeration_mode_an_unknown_token_looks_like_a_known_one() {
    let mut opts = Opts::default().workflow("w.yaml", PURE_SYNC);
    opts.config.hide_unknown_tokens = true;
    let app = spawn_app(opts).await;
    let (status, _, body) = app
        .post_json("/hooks/no-such-token-aaaaaaaaaaaaa", &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"received": true}));
}

const AUTHED: &str = r#"
id: authed
triggers:
  - type: webhook
    id: by_key
    token: test-token-key-aaaaaaaaaaaaa
    auth: { type: api_key, header: x-api-key, keys: [old-key-0123456789, new-key-0123456789] }
  - type: webhook
    id: by_basic
    token: test-token-basic-aaaaaaaaaaa
    auth: { type: basic, username: hooks, password: s3cret-pass }
steps:
  - { id: t, type: transform, value: "{{ trigger.headers }}" }
"#;

#[tokio::test]
async fn api_key_auth_accepts_every_listed_key_and_refuses_others() {
    let app = app_with(AUTHED).await;
    let url = app.url("/hooks/test-token-key-aaaaaaaaaaaaa");
    for (key, want) in [
        (Some("old-key-0123456789"), 202),
        (Some("new-key-0123456789"), 202),
        (Some("wrong-key-012345678"), 401),
        (None, 401),
    ] {
        let mut req = app.client.post(&url).json(&json!({}));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status().as_u16(), want, "key {key:?}");
    }
    // The key never reaches the run or the inbox.
    let (_, runs) = app.get("/v1/runs?workflow=authed").await;
    let run_id = runs["items"][0]["run_id"].as_str().expect("run");
    let run = app.wait_run(run_id).await;
    assert_eq!(run["trigger_input"]["headers"]["x-api-key"], "[redacted]");
    assert!(!run.to_string().contains("-key-0123456789"), "{run}");
    let (_, inbox) = app.get("/v1/inbox?workflow=authed").await;
    assert!(!inbox.to_string().contains("-key-0123456789"));
}

#[tokio::test]
async fn basic_auth_checks_user_and_password() {
    let app = app_with(AUTHED).await;
    let url = app.url("/hooks/test-token-basic-aaaaaaaaaaa");
    let ok = app
        .client
        .post(&url)
        .basic_auth("hooks", Some("s3cret-pass"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status().as_u16(), 202);
    let bad = app
        .client
        .post(&url)
        .basic_auth("hooks", Some("nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status().as_u16(), 401);
    assert!(bad.headers().contains_key("www-authenticate"));
}

const ECHO_ASYNC: &str = r#"
id: echo
triggers:
  - type: webhook
    token: test-token-aaaaaaaaaaaaaaaa
steps:
  - { id: t, type: transform, value: { body: "{{ trigger.body }}", q: "{{ trigger.query }}" } }
"#;

async fn post_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = app.client.post(app.url(&hook(TOKEN))).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    read(req.send().await.expect("request")).await
}

async fn inbox_message(app: &TestApp, headers: &axum::http::HeaderMap) -> Value {
    let id = headers["x-tripline-message-id"]
        .to_str()
        .expect("message id");
    let (status, msg) = app.get(&format!("/v1/inbox/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    msg
}

#[tokio::test]
async fn malformed_json_gets_400_and_is_kept_in_the_inbox() {
    let app = app_with(ECHO_ASYNC).await;
    let (status, headers, body) =
        post_raw(&app, Some("application/json"), b"{\"id\": 1,".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_json");
    let msg = inbox_message(&app, &headers).await;
    assert_eq!(msg["outcome"]["kind"], "rejected");
    assert_eq!(msg["body"], "{\"id\": 1,");
}

#[tokio::test]
async fn invalid_utf8_text_gets_400_and_its_raw_bytes_are_kept() {
    let app = app_with(ECHO_ASYNC).await;
    let (status, headers, body) = post_raw(&app, Some("text/plain"), vec![0x66, 0xff, 0xfe]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_utf8");
    let msg = inbox_message(&app, &headers).await;
    assert_eq!(msg["body_base64"], "Zv/+");
}

#[tokio::test]
async fn an_unsupported_content_type_gets_415() {
    let app = app_with(ECHO_ASYNC).await;
    let (status, headers, body) = post_raw(&app, Some("image/png"), vec![0x89, 0x50]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("application/json")
    );
    assert_eq!(
        inbox_message(&app, &headers).await["outcome"]["kind"],
        "rejected"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_the_rejection_is_recorded() {
    let mut opts = Opts::default().workflow("w.yaml", ECHO_ASYNC);
    opts.config.max_body_bytes = 1024;
    let app = spawn_app(opts).await;
    let (status, headers, body) = post_raw(&app, Some("application/json"), vec![b' '; 4096]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let msg = inbox_message(&app, &headers).await;
    assert!(
        msg["outcome"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("1024")
    );
}

#[tokio::test]
async fn empty_form_and_text_bodies_start_runs() {
    let app = app_with(ECHO_ASYNC).await;
    let cases: Vec<(Option<&str>, &[u8], Value)> = vec![
        (Some("application/json"), b"", Value::Null),
        (None, b"", Value::Null),
        (
            Some("application/x-www-form-urlencoded"),
            b"a=1&b=two+words",
            json!({"a": "1", "b": "two words"}),
        ),
        (
            Some("text/plain; charset=utf-8"),
            b"just text",
            json!("just text"),
        ),
    ];
    for (ct, bytes, want) in cases {
        let (status, _, body) = post_raw(&app, ct, bytes.to_vec()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ct:?}: {body}");
        let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
        assert_eq!(run["final_output"]["body"], want, "{ct:?}");
    }
}

#[tokio::test]
async fn query_parameters_reach_the_trigger_input() {
    let app = app_with(ECHO_ASYNC).await;
    let (status, _, body) = app
        .post_json(&format!("{}?source=crm&x=1", hook(TOKEN)), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["final_output"]["q"], json!({"source": "crm", "x": "1"}));
}

#[tokio::test]
async fn a_repeated_idempotency_key_on_a_sync_webhook_answers_with_the_first_runs_result() {
    let stub = Stub::start().await;
    let app = app_with(&http_workflow(&stub, "sync")).await;
    let send = |id: i64| {
        let req = app
            .client
            .post(app.url(&hook(TOKEN)))
            .header("idempotency-key", "k-1")
            .json(&json!({"id": id}));
        async move { read(req.send().await.expect("request")).await }
    };
    let (s1, _, b1) = send(1).await;
    let (s2, _, b2) = send(2).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(b1["meta"]["run_id"], b2["meta"]["run_id"]);
    assert_eq!(
        b2["data"],
        json!({"echoed": 1}),
        "the first request's run answers"
    );
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn a_trigger_with_any_body_keeps_a_binary_body_as_base64() {
    const ANY: &str = r#"
id: files
triggers:
  - { type: webhook, token: files-token-0000000000000001, any_body: true }
steps:
  - { id: seen, type: transform, value: { type: "{{ trigger.body.content_type }}", bytes: "{{ trigger.body.bytes }}", data: "{{ trigger.body.base64 }}" } }
"#;
    let app = spawn_app(Opts::default().workflow("f.yaml", ANY)).await;
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x01";
    let resp = app
        .client
        .post(app.url("/hooks/files-token-0000000000000001"))
        .header("content-type", "image/png")
        .body(png.to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = resp.json().await.expect("json");
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(
        run["final_output"],
        json!({"type": "image/png", "bytes": 10, "data": "iVBORw0KGgoAAQ=="}),
        "{run}"
    );
    let (_, inbox) = app.get("/v1/inbox?workflow=files").await;
    assert_eq!(
        inbox["items"][0]["body_base64"], "iVBORw0KGgoAAQ==",
        "kept raw"
    );
}

const PURE: &str = r#"
id: pure
triggers:
  - type: webhook
    token: pure-token-aaaaaaaaaaaaaaaaa
steps:
  - id: check
    type: fail
    when: "trigger.body.fail | default(false)"
    message: "refused {{ trigger.body.n }}"
  - id: shape
    type: transform
    value: { body: "{{ trigger.body }}", seen: true }
"#;

/// An async run whose steps need no I/O runs before its admission and is written once,
/// ended: its `202` already names its end, and nothing is left for the executor.
#[tokio::test]
async fn an_async_run_of_pure_steps_has_ended_when_its_webhook_answers() {
    let app = app_with(PURE).await;
    let (status, _, body) = app
        .post_json(&hook("pure-token-aaaaaaaaaaaaaaaaa"), &json!({"n": 1}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    let run_id = body["run_id"].as_str().expect("run id");
    // Read at once, without waiting for an executor.
    let (_, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"], json!({"body": {"n": 1}, "seen": true}));
    assert!(run["finished_at"].is_string(), "{run}");

    let (status, _, body) = app
        .post_json(
            &hook("pure-token-aaaaaaaaaaaaaaaaa"),
            &json!({"n": 2, "fail": true}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "a failed run is still accepted: {body}"
    );
    assert_eq!(body["status"], "failed", "{body}");
    let (_, run) = app
        .get(&format!(
            "/v1/runs/{}",
            body["run_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused 2")),
        "{run}"
    );

    let (_, queued) = app.get("/v1/runs?status=queued").await;
    assert_eq!(queued["items"], json!([]), "nothing was queued");
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "tripline_runs_started_total{workflow=\"pure\",trigger=\"webhook\"} 2",
        "tripline_runs_ended_total{workflow=\"pure\",status=\"succeeded\"} 1",
        "tripline_runs_ended_total{workflow=\"pure\",status=\"failed\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
}

/// A pure async run whose end has effects (a flow trigger listens to it, or a step writes
/// the context store) is queued as before: those effects must not happen before the
/// message is durably recorded.
#[tokio::test]
async fn an_async_pure_run_whose_end_has_effects_goes_through_the_executor() {
    let listened = PURE
        .replace("id: pure", "id: listened")
        .replace("pure-token", "lstn-token");
    let listener = "id: listener\ntriggers: [{ type: flow, workflow: listened }]\nsteps:\n  - { id: t, type: transform, value: \"{{ trigger.body.seen }}\" }\n";
    let context = "id: context\ntriggers:\n  - { type: webhook, token: ctx-token-aaaaaaaaaaaaaaaaaa }\nsteps:\n  - { id: t, type: transform, value: 1, extract_to_context: { last: \"{{ trigger.body.n }}\" } }\n";
    let app = spawn_app(
        Opts::default()
            .workflow("listened.yaml", &listened)
            .workflow("listener.yaml", listener)
            .workflow("context.yaml", context),
    )
    .await;
    for token in [
        "lstn-token-aaaaaaaaaaaaaaaaa",
        "ctx-token-aaaaaaaaaaaaaaaaaa",
    ] {
        let (status, _, body) = app.post_json(&hook(token), &json!({"n": 3})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "queued", "{token}: {body}");
        let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let start = std::time::Instant::now();
    loop {
        let (_, runs) = app.get("/v1/runs?workflow=listener").await;
        if let Some(run) = runs["items"].as_array().and_then(|a| a.first()) {
            let run = app.wait_run(run["run_id"].as_str().expect("id")).await;
            assert_eq!(run["final_output"], json!(true), "{run}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no listener run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Once the listener listens to another workflow, nothing listens to `listened`: its
    // runs end before their admission again.
    let (status, body) = app
        .deploy(
            "listener",
            &listener.replace("workflow: listened", "workflow: context"),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, _, body) = app
        .post_json(&hook("lstn-token-aaaaaaaaaaaaaaaaa"), &json!({"n": 4}))
        .await;
    assert_eq!(body["status"], "succeeded", "{body}");
}
