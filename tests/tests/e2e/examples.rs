//! Every example in `examples/` validates and does what its comment says.

use axum::http::StatusCode;
use serde_json::json;
use tripline_app::Config;
use tripline_app::outbound::OutboundPolicy;
use tripline_tests::*;

async fn examples_app(stub: &Stub) -> TestApp {
    let opts = Opts {
        folder: Some(repo_root().join("examples")),
        config: Config {
            outbound: OutboundPolicy {
                allow_private_networks: true,
                rewrites: vec![("https://httpbin.org".into(), stub.url.clone())],
            },
            ..Config::default()
        },
        ..Opts::default()
    };
    spawn_app(opts).await
}

#[tokio::test]
async fn every_example_validates() {
    let dir = repo_root().join("examples");
    let files = tripline_local::definition_files(&dir).expect("examples");
    assert!(files.len() >= 3);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let format = tripline_core::validate::Format::from_path(&f.to_string_lossy());
        if let Err(p) = tripline_core::validate::load(&text, format) {
            panic!("{}: {p:#?}", f.display());
        }
    }
}

#[tokio::test]
async fn hello_replies_synchronously_with_a_greeting() {
    let app = examples_app(&Stub::start().await).await;
    let (status, _, body) = app
        .post_json(
            "/hooks/quickstart-hello-token-0001",
            &json!({"name": "Ada"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!({"message": "Hello, Ada!", "length": 3}));
    let resp = app
        .client
        .post(app.url("/hooks/quickstart-hello-token-0001"))
        .send()
        .await
        .expect("request");
    let (_, _, body) = read(resp).await;
    assert_eq!(body["data"]["message"], "Hello, world!");
}

#[tokio::test]
async fn orders_runs_created_orders_and_filters_the_rest() {
    let stub = Stub::start().await;
    let app = examples_app(&stub).await;
    let order = json!({"event": "order.created", "order": {"id": "A-1", "items": [{"sku": "x", "qty": 2, "price": 4.5}, {"sku": "y", "qty": 1, "price": 1.5}]}});
    let (status, _, body) = app
        .post_json("/hooks/quickstart-orders-token-0001", &order)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["final_output"],
        json!({"order": {"order_id": "A-1", "items": 2, "total": 6.0}, "accepted": true})
    );
    let accepted = run;

    let empty = json!({"event": "order.created", "order": {"id": "A-2", "items": []}});
    let (_, _, body) = app
        .post_json("/hooks/quickstart-orders-token-0001", &empty)
        .await;
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], "order A-2 has no items");
    let refused = run;

    let (status, _, _) = app
        .post_json(
            "/hooks/quickstart-orders-token-0001",
            &json!({"event": "order.deleted"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // examples/order-receipt.yaml follows each order run, succeeded or failed.
    for (order, want) in [
        (
            &accepted,
            json!({"outcome": "succeeded", "order_id": "A-1", "total": 6.0, "reason": null}),
        ),
        (
            &refused,
            json!({"outcome": "failed", "order_id": null, "total": 0, "reason": "order A-2 has no items"}),
        ),
    ] {
        let children = order["children"].as_array().cloned().unwrap_or_default();
        let mut receipt = None;
        for child in &children {
            let run = app.wait_run(child.as_str().expect("id")).await;
            if run["workflow"] == "order-receipt" {
                receipt = Some(run);
            }
        }
        let receipt = receipt.unwrap_or_else(|| panic!("no receipt run: {order}"));
        let mut want = want;
        want["order_run"] = order["id"].clone();
        assert_eq!(receipt["final_output"], want, "{receipt}");
    }
    // examples/order-failures.yaml tells the team about the refused one only.
    assert_eq!(
        refused["children"].as_array().map(Vec::len),
        Some(2),
        "{refused}"
    );
    assert_eq!(
        accepted["children"].as_array().map(Vec::len),
        Some(1),
        "{accepted}"
    );
    let notices = stub.wait_for(1).await;
    assert_eq!(notices.len(), 1, "one notice, for the failed order");
    assert_eq!(
        notices[0].body["text"],
        "order A-2 failed at `refuse_empty`: order A-2 has no items"
    );
    assert_eq!(notices[0].body["order"]["id"], "A-2");
}

#[tokio::test]
async fn quote_calls_downstream_and_replies_with_its_answer() {
    let stub = Stub::start().await;
    stub.script([Reply::status(502)]);
    let app = examples_app(&stub).await;
    let (status, _, body) = app
        .post_json("/hooks/quickstart-quote-token-0001?symbol=ACME", &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!({"symbol": "ACME", "downstream_status": 200, "echoed": {"symbol": "ACME"}})
    );
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 2, "the 502 was retried");
    assert_eq!(reqs[1].path, "/anything/quotes/ACME");
    let run_id = body["meta"]["run_id"].as_str().expect("id");
    assert_eq!(
        reqs[1].headers["idempotency-key"],
        format!("{run_id}:fetch")
    );
}

#[tokio::test]
async fn expense_approval_posts_the_review_link_and_pays_once_approved() {
    let stub = Stub::start().await;
    let app = examples_app(&stub).await;
    let (status, _, body) = app
        .post_json(
            "/hooks/quickstart-expense-token-01",
            &json!({"employee": "ada", "amount": 120, "reason": "train"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["run_id"].as_str().expect("id").to_string();
    let run = app.wait_status(&id, "waiting").await;
    let review = run["waiting_payload"]["review_url"]
        .as_str()
        .expect("review");
    assert_eq!(
        run["waiting_payload"]["summary"],
        "ada asks for 120 EUR: train"
    );
    let chat = stub.wait_for(1).await;
    assert_eq!(chat[0].path, "/post");
    assert!(
        chat[0].body["text"]
            .as_str()
            .expect("text")
            .ends_with(review),
        "{:?}",
        chat[0].body
    );
    let approve = run["waiting_payload"]["approve_url"]
        .as_str()
        .expect("approve");
    let resp = app
        .client
        .post(approve)
        .json(&json!({"comment": "ok"}))
        .send()
        .await
        .expect("approve");
    assert_eq!(resp.status().as_u16(), 200);
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["final_output"],
        json!({"paid": true, "decision": "approved"})
    );
    let paid = &stub.wait_for(2).await[1];
    assert_eq!(paid.path, "/anything/payments");
    assert_eq!(paid.body["approved_with"], "ok");
}

#[tokio::test]
async fn partner_callback_hands_out_its_resume_url_and_reports_the_result() {
    let stub = Stub::start().await;
    let app = examples_app(&stub).await;
    let (_, _, body) = app
        .post_json(
            "/hooks/quickstart-partner-token-01",
            &json!({"order": "A-1"}),
        )
        .await;
    let id = body["run_id"].as_str().expect("id").to_string();
    app.wait_status(&id, "waiting").await;
    let asked = stub.wait_for(1).await;
    assert_eq!(asked[0].path, "/anything/shipments");
    let callback = asked[0].body["callback_url"]
        .as_str()
        .expect("url")
        .to_string();
    assert!(callback.contains(&format!("/resume/{id}.")), "{callback}");
    let resp = app
        .client
        .post(&callback)
        .json(&json!({"tracking": "TRK-9"}))
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status().as_u16(), 200);
    let run = app.wait_run(&id).await;
    assert_eq!(
        run["final_output"],
        json!({"order": "A-1", "tracking": "TRK-9"})
    );
    let report = &stub.wait_for(2).await[1];
    assert_eq!(report.path, "/anything/shipped");
    assert_eq!(report.body["type"], "run.succeeded");
    assert!(report.headers["webhook-signature"].starts_with("v1,"));
}

#[tokio::test]
async fn nightly_sync_pulls_each_window_once_from_the_saved_cursor() {
    let stub = Stub::start().await;
    let app = examples_app(&stub).await;
    // The README's "run now", twice: the second window starts where the first ended.
    let (status, _, body) = app
        .post_json("/v1/workflows/nightly-sync/runs?trigger=daily", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let first = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["final_output"]["since"], "1970-01-01T00:00:00.000Z");
    let until = first["final_output"]["until"].clone();
    assert_eq!(until, first["trigger_input"]["scheduled_time"]);

    let (_, _, body) = app
        .post_json("/v1/workflows/nightly-sync/runs?trigger=daily", &json!({}))
        .await;
    let second = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(second["final_output"]["since"], until, "{second}");
    let (_, state) = app.get("/v1/workflows/nightly-sync/state").await;
    assert_eq!(state["state"]["cursor"], second["final_output"]["until"]);
    let (_, ticks) = app.get("/v1/workflows/nightly-sync/ticks").await;
    assert_eq!(ticks["items"].as_array().map(Vec::len), Some(2), "{ticks}");

    // "Start again from the beginning".
    let resp = app
        .client
        .put(app.url("/v1/workflows/nightly-sync/state"))
        .body("null")
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, _, body) = app
        .post_json("/v1/workflows/nightly-sync/runs?trigger=daily", &json!({}))
        .await;
    let third = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(third["final_output"]["since"], "1970-01-01T00:00:00.000Z");
    let queries: Vec<String> = stub.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(queries.len(), 3, "{queries:?}");
    app.stop().await;
}

#[tokio::test]
async fn nightly_sync_fires_at_eight_in_paris() {
    let stub = Stub::start().await;
    let text =
        std::fs::read_to_string(repo_root().join("examples/nightly-sync.yaml")).expect("example");
    // 2026-03-02T06:59:00Z: 07:59 in Paris (winter time, UTC+1).
    let start = tripline_core::Timestamp::parse_rfc3339("2026-03-02T06:59:00Z").expect("time");
    let opts = Opts {
        clock_start: Some(start),
        config: Config {
            outbound: OutboundPolicy {
                allow_private_networks: true,
                rewrites: vec![("https://httpbin.org".into(), stub.url.clone())],
            },
            ..Config::default()
        },
        ..Opts::default()
    }
    .workflow("nightly-sync.yaml", &text);
    let (app, time) = spawn_app_with_manual_clock(opts).await;
    time.advance(std::time::Duration::from_secs(60));
    let reqs = stub.wait_for(1).await;
    assert!(
        reqs[0]
            .query
            .contains("changed_before=2026-03-02T07%3A00%3A00.000Z"),
        "{:?}",
        reqs[0].query
    );
    let id = tripline_app::intake::cron::tick_id(
        "nightly-sync",
        "daily",
        tripline_core::Timestamp::parse_rfc3339("2026-03-02T07:00:00Z").expect("time"),
    );
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    app.stop().await;
}

#[tokio::test]
async fn the_github_push_example_checks_the_signature_and_uses_its_secrets() {
    use hmac::{Hmac, KeyInit, Mac};
    let stub = Stub::start().await;
    let opts = Opts {
        config: Config {
            outbound: OutboundPolicy {
                allow_private_networks: true,
                rewrites: vec![("https://chat.example.com".into(), stub.url.clone())],
            },
            ..Config::default()
        },
        ..Opts::default()
    };
    let app = spawn_app(opts).await;
    let text = std::fs::read_to_string(repo_root().join("examples/secrets/github-push.yaml"))
        .expect("example");
    // Its secrets must exist first: the deploy names the missing one.
    let (status, body) = app.deploy("github-push", &text).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("github_webhook_secret"), "{body}");
    for (name, value) in [
        ("github_webhook_secret", "gh-hook-secret-123"),
        ("chat_token", "chat-tok-456789"),
    ] {
        let (status, _) = app
            .put_json(&format!("/v1/secrets/{name}"), &json!({ "value": value }))
            .await;
        assert_eq!(status, 200);
    }
    let (status, body) = app.deploy("github-push", &text).await;
    assert_eq!(status, 201, "{body}");

    let push = |payload: &'static str, delivery: &'static str| {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"gh-hook-secret-123").expect("key");
        m.update(payload.as_bytes());
        let sig: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        app.client
            .post(app.url("/hooks/github-push-hook-token-01"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", format!("sha256={sig}"))
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .body(payload)
            .send()
    };
    let main = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/api"},"head_commit":{"message":"Fix"}}"#;
    let resp = push(main, "d-1").await.expect("post");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let accepted: serde_json::Value = resp.json().await.expect("json");
    let run = app.wait_run(accepted["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let sent = stub.requests();
    assert_eq!(sent[0].headers["authorization"], "Bearer chat-tok-456789");
    assert_eq!(sent[0].body["text"], "acme/api: Fix");
    assert!(
        run.to_string().contains("Bearer [secret:chat_token]"),
        "{run}"
    );
    let other = r#"{"ref":"refs/heads/dev","repository":{"full_name":"acme/api"},"head_commit":{"message":"WIP"}}"#;
    let resp = push(other, "d-2").await.expect("post");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "filtered: not main");
}

#[tokio::test]
async fn order_fanout_reserves_each_order_and_tells_two_teams() {
    let stub = Stub::start().await;
    let app = examples_app(&stub).await;
    let batch = json!({"batch": "B-7", "orders": [
        {"id": "A-1", "sku": "x", "qty": 2},
        {"id": "A-2", "sku": "y y", "qty": 1},
        {"id": "A-3", "sku": "z", "qty": 5}
    ]});
    let (status, _, body) = app
        .post_json("/hooks/quickstart-fanout-token-0001", &batch)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let want = json!([
        {"order": "A-1", "reserved": true},
        {"order": "A-2", "reserved": true},
        {"order": "A-3", "reserved": true}
    ]);
    assert_eq!(run["final_output"], json!({"batch": "B-7", "orders": want}));
    let mut paths: Vec<String> = stub.requests().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/anything/finance",
            "/anything/stock/x",
            "/anything/stock/y%20y",
            "/anything/stock/z",
            "/anything/warehouse"
        ]
    );
    let finance = stub
        .requests()
        .into_iter()
        .find(|r| r.path == "/anything/finance")
        .expect("finance");
    assert_eq!(finance.body, json!({"batch": "B-7", "count": 3}));
}
