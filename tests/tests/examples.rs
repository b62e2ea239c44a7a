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
    let app = examples_app(&Stub::start().await).await;
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

    let empty = json!({"event": "order.created", "order": {"id": "A-2", "items": []}});
    let (_, _, body) = app
        .post_json("/hooks/quickstart-orders-token-0001", &empty)
        .await;
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], "order A-2 has no items");

    let (status, _, _) = app
        .post_json(
            "/hooks/quickstart-orders-token-0001",
            &json!({"event": "order.deleted"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
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
