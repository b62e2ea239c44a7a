//! Idempotency keys and trigger conditions in the AWS shape: the real webhook-ingress and
//! control-api binaries, against moto's DynamoDB.

use std::time::Duration;

use serde_json::json;
use tripline_tests::shape::shape;

#[tokio::test]
async fn a_key_template_and_the_header_map_repeats_to_the_first_run() {
    let s = shape(&[]).await;
    s.deploy(
        "keyed",
        r#"
id: keyed
triggers:
  - { type: webhook, id: hook, token: aws-idempotency-token-0001, idempotency_key: "order-{{ trigger.body.order_id }}" }
  - { type: manual, condition: "trigger.body.order_id is defined" }
steps: [{ id: a, type: transform, value: "{{ trigger.body.order_id }}" }]
"#,
    )
    .await;
    let (status, _, first) = s
        .post_hook(
            "aws-idempotency-token-0001",
            &json!({"order_id": 7, "try": 1}),
        )
        .await;
    assert_eq!(status, 202, "{first}");
    let (_, _, again) = s
        .post_hook(
            "aws-idempotency-token-0001",
            &json!({"order_id": 7, "try": 2}),
        )
        .await;
    assert_eq!(first["run_id"], again["run_id"]);
    let (status, _, refused) = s
        .post_hook("aws-idempotency-token-0001", &json!({"no_order": 1}))
        .await;
    assert_eq!(status, 422, "{refused}");

    // The manual-run API: the header, and the trigger's condition.
    let run = |key: &'static str, body: serde_json::Value| {
        let s = &s;
        async move {
            s.http(
                &s.control,
                "POST",
                "/v1/workflows/keyed/runs",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    let (status, _, a) = run("k-1", json!({"order_id": 1})).await;
    assert_eq!(status, 202, "{a}");
    let (_, _, b) = run("k-1", json!({"order_id": 1})).await;
    assert_eq!(a["run_id"], b["run_id"]);
    let (status, _, c) = run("k-2", json!({"x": 1})).await;
    assert_eq!(status, 422, "{c}");
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    s.index().await;
    let (_, _, runs) = s
        .http(&s.control, "GET", "/v1/runs?workflow=keyed", &[], b"")
        .await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(2), "{runs}");
}
