//! The control API end to end: deploy with validation and revisions, manual runs, listings.

use axum::http::StatusCode;
use serde_json::json;
use tripline_tests::*;

const V1: &str = r#"
id: api-demo
description: first
triggers:
  - type: manual
  - type: webhook
    id: hook
steps:
  - { id: t, type: transform, value: { got: "{{ trigger.body }}", rev: "{{ run.revision }}" } }
"#;

#[tokio::test]
async fn deploying_makes_revisions_and_keeps_a_generated_token() {
    let app = spawn_app(Opts::default()).await;
    let (status, body) = app.deploy("api-demo", V1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["revision"], 1);
    let url1 = body["triggers"][1]["url"]
        .as_str()
        .expect("hook url")
        .to_string();
    assert!(url1.len() >= "/hooks/".len() + 22, "{url1}");

    let (status, body) = app.deploy("api-demo", V1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["revision"].clone(), body["unchanged"].clone()),
        (json!(1), json!(true))
    );

    let (status, body) = app.deploy("api-demo", &V1.replace("first", "second")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["revision"], 2);
    assert_eq!(
        body["triggers"][1]["url"],
        url1.as_str(),
        "the token survives a redeploy"
    );

    let (_, wf) = app.get("/v1/workflows/api-demo").await;
    assert_eq!(wf["revisions"].as_array().map(Vec::len), Some(2));
    assert_eq!(wf["definition"]["description"], "second");
    let (_, old) = app.get("/v1/workflows/api-demo?revision=1").await;
    assert_eq!(old["definition"]["description"], "first");

    let (status, _, body) = app.post_json(&url1, &json!({"x": 1})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["revision"], 2);
    assert_eq!(run["final_output"]["rev"], 2);
}

#[tokio::test]
async fn an_invalid_definition_is_refused_with_every_problem_and_its_line() {
    let app = spawn_app(Opts::default()).await;
    let bad = "id: api-demo\nsteps:\n  - id: a\n    type: transform\n    valeu: 1\n  - id: b\n    type: http\n    url: ftp://x\n    timeout: later\n";
    let (status, body) = app.deploy("api-demo", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problems = body["problems"].as_array().expect("problems");
    assert!(problems.len() >= 3, "{body}");
    assert!(
        problems
            .iter()
            .any(|p| p["path"] == "steps[0].valeu" && p["line"] == 5),
        "{body}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p["path"] == "steps[1].timeout" && p["line"] == 9),
        "{body}"
    );
    let (status, _) = app.get("/v1/workflows/api-demo").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was deployed");
}

#[tokio::test]
async fn a_definition_deployed_under_another_id_is_refused() {
    let app = spawn_app(Opts::default()).await;
    let (status, body) = app.deploy("other", V1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.to_string().contains("make them the same"), "{body}");
}

#[tokio::test]
async fn a_token_used_by_another_workflow_is_refused() {
    let app = spawn_app(Opts::default()).await;
    let a = "id: a\ntriggers:\n  - {type: webhook, token: shared-token-aaaaaaaaaaaaa}\nsteps:\n  - {id: t, type: transform, value: 1}\n";
    assert_eq!(app.deploy("a", a).await.0, StatusCode::CREATED);
    let (status, body) = app.deploy("b", &a.replace("id: a", "id: b")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.to_string().contains("already used by workflow `a`"),
        "{body}"
    );
}

#[tokio::test]
async fn a_manual_run_starts_with_the_posted_input_and_honours_idempotency() {
    let app = spawn_app(Opts::default()).await;
    app.deploy("api-demo", V1).await;
    let (status, _, body) = app
        .post_json("/v1/workflows/api-demo/runs", &json!({"k": "v"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["final_output"]["got"], json!({"k": "v"}));
    assert_eq!(run["trigger"], json!({"kind": "manual", "id": "manual"}));

    let post = || async {
        let resp = app
            .client
            .post(app.url("/v1/workflows/api-demo/runs"))
            .header("idempotency-key", "once")
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        read(resp).await.2
    };
    assert_eq!(post().await["run_id"], post().await["run_id"]);

    let (status, _, body) = app
        .post_json("/v1/workflows/missing/runs", &json!({}))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let resp = app
        .client
        .post(app.url("/v1/workflows/api-demo/runs"))
        .body("{nope")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn a_workflow_without_a_manual_trigger_says_how_to_add_one() {
    let app = spawn_app(Opts::default()).await;
    app.deploy("api-demo", &V1.replace("  - type: manual\n", ""))
        .await;
    let (status, _, body) = app
        .post_json("/v1/workflows/api-demo/runs", &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("type: manual")
    );
}

#[tokio::test]
async fn runs_and_inbox_list_newest_first_with_filters_and_pages() {
    let app = spawn_app(Opts::default()).await;
    app.deploy("api-demo", V1).await;
    let fail =
        "id: failing\ntriggers:\n  - type: manual\nsteps:\n  - {id: f, type: fail, message: no}\n";
    app.deploy("failing", fail).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, _, b) = app
            .post_json("/v1/workflows/api-demo/runs", &json!({"i": i}))
            .await;
        ids.push(b["run_id"].as_str().expect("id").to_string());
    }
    let (_, _, f) = app
        .post_json("/v1/workflows/failing/runs", &json!({}))
        .await;
    for id in &ids {
        app.wait_run(id).await;
    }
    app.wait_run(f["run_id"].as_str().expect("id")).await;

    let (_, page1) = app.get("/v1/runs?workflow=api-demo&limit=3").await;
    let got: Vec<&str> = page1["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(got, vec![ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]);
    let cursor = page1["next_cursor"].as_str().expect("cursor");
    let (_, page2) = app
        .get(&format!(
            "/v1/runs?workflow=api-demo&limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(2));
    assert!(page2["next_cursor"].is_null());

    let (_, failed) = app.get("/v1/runs?status=failed").await;
    assert_eq!(failed["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(failed["items"][0]["error_type"], "fail_step");
    let (_, none) = app.get("/v1/runs?since=2999-01-01T00:00:00Z").await;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));

    let (status, body) = app.get("/v1/runs?status=done").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("succeeded")
    );
    let (status, _) = app.get("/v1/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/v1/runs?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, inbox) = app
        .get("/v1/inbox?workflow=api-demo&outcome=started&limit=2")
        .await;
    assert_eq!(inbox["items"].as_array().map(Vec::len), Some(2));
    assert!(inbox["next_cursor"].is_string());
    let (status, _) = app.get("/v1/inbox/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/runs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_an_api_key_the_control_api_refuses_callers_without_it() {
    let mut opts = Opts::default();
    opts.config.api_key = Some("control-key-123".into());
    let app = spawn_app(opts).await;
    let (status, _) = app.get("/v1/runs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .get(app.url("/v1/runs"))
        .bearer_auth("control-key-123")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn workflows_deployed_through_the_api_and_their_runs_survive_a_restart() {
    let mut app = spawn_app(Opts::default()).await;
    let (_, body) = app.deploy("api-demo", V1).await;
    let hook = body["triggers"][1]["url"]
        .as_str()
        .expect("hook")
        .to_string();
    let (_, _, first) = app
        .post_json("/v1/workflows/api-demo/runs", &json!({"before": true}))
        .await;
    let first_id = first["run_id"].as_str().expect("id").to_string();
    app.wait_run(&first_id).await;

    app.restart().await;

    let (status, wf) = app.get("/v1/workflows/api-demo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(wf["revision"], 1);
    let (status, _, body) = app.post_json(&hook, &json!({"after": true})).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the generated token still works: {body}"
    );
    app.wait_run(body["run_id"].as_str().expect("id")).await;
    let (_, old) = app.get(&format!("/v1/runs/{first_id}")).await;
    assert_eq!(old["final_output"]["got"], json!({"before": true}));
}

#[tokio::test]
async fn ids_made_in_the_same_millisecond_sort_in_the_order_they_were_made() {
    let (app, _time) = tripline_tests::spawn_app_with_manual_clock(Opts::default()).await;
    let core = app.app();
    let ids: Vec<String> = (0..500).map(|_| core.new_id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "the clock did not move, the order holds");
    app.stop().await;
}

#[tokio::test]
async fn a_filtered_webhook_message_is_reprocessed_against_the_fixed_workflow() {
    const HOOK: &str = r#"
id: picky
triggers:
  - { type: webhook, token: picky-token-000000000000001, filter: { body: { kind: a } } }
steps:
  - { id: echo, type: transform, value: "{{ trigger.body.kind }}" }
"#;
    let app = spawn_app(Opts::default().workflow("p.yaml", HOOK)).await;
    let resp = app
        .client
        .post(app.url("/hooks/picky-token-000000000000001"))
        .json(&json!({"kind": "b"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 204);
    let id = resp.headers()["x-tripline-message-id"]
        .to_str()
        .expect("id")
        .to_string();
    // Reprocessed unchanged: filtered again, and recorded as such.
    let (status, _, body) = app
        .post_json(&format!("/v1/inbox/{id}/reprocess"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["outcome"]["kind"], "filtered", "{body}");
    // After the fix it starts a run with the message as it came.
    let (status, _) = app
        .deploy("picky", &HOOK.replace("kind: a", "kind: b"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = app
        .post_json(&format!("/v1/inbox/{id}/reprocess"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.wait_run(body["run_id"].as_str().expect("run")).await;
    assert_eq!(run["final_output"], "b");
    assert_eq!(run["trigger"]["kind"], "webhook");
    app.stop().await;
}

#[tokio::test]
async fn a_bad_query_parameter_is_a_400_that_names_it_and_what_to_use() {
    let app = spawn_app(Opts::default()).await;
    let message =
        |body: &serde_json::Value| body["detail"].as_str().unwrap_or_default().to_string();
    let (status, body) = app.get("/v1/runs?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("`colour`"), "{body}");
    assert!(message(&body).contains("`workflow`"), "{body}");
    for limit in ["0", "501", "ten"] {
        let (status, body) = app.get(&format!("/v1/inbox?limit={limit}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{limit}");
        assert!(message(&body).contains("1 to 500"), "{body}");
    }
    let (status, body) = app.get("/v1/inbox?outcome=lost").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("filtered"), "{body}");
    let (status, body) = app.get("/v1/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("RFC 3339"), "{body}");
    let (status, _) = app.get("/v1/runs?limit=500&status=failed").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn reprocessing_applies_every_gate_to_manual_and_flow_messages() {
    const GATED: &str = r#"
id: gated
triggers:
  - { type: manual, condition: "trigger.body.n > 1", idempotency_key: "{{ trigger.body.n }}" }
steps:
  - { id: out, type: transform, value: "{{ trigger.body.n }}" }
"#;
    const AFTER: &str = r#"
id: after
triggers: [{ type: flow, workflow: gated }]
steps:
  - { id: seen, type: transform, value: "{{ trigger.body }}" }
"#;
    let app = spawn_app(
        Opts::default()
            .workflow("g.yaml", GATED)
            .workflow("a.yaml", AFTER),
    )
    .await;
    // A manual input its condition refuses: 422, and reprocessing it starts nothing.
    let (status, headers, _) = app
        .post_json("/v1/workflows/gated/runs", &json!({"n": 1}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let refused = headers["x-tripline-message-id"]
        .to_str()
        .expect("id")
        .to_string();
    let (status, _, body) = app
        .post_json(&format!("/v1/inbox/{refused}/reprocess"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["outcome"]["kind"], "filtered",
        "the condition applies: {body}"
    );
    assert!(body["run_id"].is_null());

    // An accepted one, reprocessed: its idempotency key is taken, so it is a duplicate.
    let (status, headers, started) = app
        .post_json("/v1/workflows/gated/runs", &json!({"n": 2}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let first_run = started["run_id"].as_str().expect("run").to_string();
    let ended = app.wait_run(&first_run).await;
    let message = ended["message_id"].as_str().expect("message").to_string();
    assert_eq!(
        headers["x-tripline-message-id"].to_str().ok(),
        Some(message.as_str()),
        "a 202 names its inbox message too"
    );
    let (_, _, body) = app
        .post_json(&format!("/v1/inbox/{message}/reprocess"), &json!({}))
        .await;
    assert_eq!(body["outcome"]["kind"], "duplicate", "{body}");
    assert_eq!(body["outcome"]["run_id"], json!(first_run));

    // The flow message its end made is reprocessed like any other: a new run of `after`.
    let child = ended["children"][0]
        .as_str()
        .expect("flow child")
        .to_string();
    let child_run = app.wait_run(&child).await;
    let flow_message = child_run["message_id"]
        .as_str()
        .expect("message")
        .to_string();
    let (status, _, body) = app
        .post_json(&format!("/v1/inbox/{flow_message}/reprocess"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["outcome"]["kind"], "started", "{body}");
    let again = app.wait_run(body["run_id"].as_str().expect("run")).await;
    assert_eq!(again["trigger"]["kind"], "flow");
    assert_eq!(again["final_output"], child_run["final_output"]);
    app.stop().await;
}

#[tokio::test]
async fn an_edited_message_is_kept_beside_the_original_and_reprocessed() {
    const HOOK: &str = r#"
id: picky
triggers:
  - { type: webhook, token: picky-token-000000000000002, filter: { body: { kind: a } } }
steps:
  - { id: echo, type: transform, value: "{{ trigger.body.kind }}" }
"#;
    let app = spawn_app(Opts::default().workflow("p.yaml", HOOK)).await;
    let resp = app
        .client
        .post(app.url("/hooks/picky-token-000000000000002"))
        .json(&json!({"kind": "b"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 204, "filtered");
    let id = resp.headers()["x-tripline-message-id"]
        .to_str()
        .expect("id")
        .to_string();
    let edit = app
        .client
        .put(app.url(&format!("/v1/inbox/{id}")))
        .header("content-type", "application/json")
        .body(r#"{"kind": "a"}"#)
        .send()
        .await
        .expect("put");
    assert_eq!(edit.status(), StatusCode::CREATED);
    let edit: serde_json::Value = edit.json().await.expect("json");
    let edited = edit["message_id"].as_str().expect("id").to_string();

    let (_, original) = app.get(&format!("/v1/inbox/{id}")).await;
    assert_eq!(
        original["body"], r#"{"kind":"b"}"#,
        "the original never changes"
    );
    assert_eq!(original["outcome"]["kind"], "filtered");
    assert_eq!(original["edited_as"], json!(edited));
    let (_, copy) = app.get(&format!("/v1/inbox/{edited}")).await;
    assert_eq!(copy["outcome"], json!({"kind": "edited", "of": id}));
    assert_eq!(copy["body"], r#"{"kind": "a"}"#);

    let (status, _, body) = app
        .post_json(&format!("/v1/inbox/{edited}/reprocess"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.wait_run(body["run_id"].as_str().expect("run")).await;
    assert_eq!(run["final_output"], "a");
    // An unknown message is 404.
    let (status, _) = app.put_json("/v1/inbox/nope", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}
