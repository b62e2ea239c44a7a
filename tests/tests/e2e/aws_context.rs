//! The context store in the AWS shape: the real step-executor writes `extract_to_context`
//! to DynamoDB and the next runs read it as `store`; the control-api binary reads and
//! patches it, and concurrent patches of different keys all stay.

use std::time::Duration;

use serde_json::json;
use tripline_tests::shape::shape;

#[tokio::test]
async fn runs_and_the_api_share_the_store_in_dynamodb() {
    let s = shape(&[]).await;
    s.deploy(
        "counter",
        r#"
id: counter
triggers: [{ type: webhook, id: hook, token: aws-context-token-000000001 }]
steps:
  - id: count
    type: transform
    value: "{{ (store.count | default('0')) | int + 1 }}"
    extract_to_context: { count: "{{ output }}", seen: "{{ store.greeting | default('none') }}" }
"#,
    )
    .await;
    let (status, _, body) = s
        .http(
            &s.control,
            "PATCH",
            "/v1/workflows/counter/context",
            &[("content-type", "application/json")],
            br#"{"greeting": "hello"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        let (status, _, body) = s.post_hook("aws-context-token-000000001", &json!({})).await;
        assert_eq!(status, 202, "{body}");
        s.pump.drain(&s.executor, Duration::from_secs(30)).await;
        let run = s.run(body["run_id"].as_str().expect("id")).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let (_, _, ctx) = s
        .http(&s.control, "GET", "/v1/workflows/counter/context", &[], b"")
        .await;
    assert_eq!(
        ctx["context"],
        json!({"count": "3", "seen": "hello", "greeting": "hello"}),
        "{ctx}"
    );

    // Concurrent patches of different keys through the control API: each is kept.
    let patches = (0..12).map(|i| {
        let body = json!({ format!("k{i}"): format!("v{i}") }).to_string();
        let s = &s;
        async move {
            let (status, _, resp) = s
                .http(
                    &s.control,
                    "PATCH",
                    "/v1/workflows/counter/context",
                    &[("content-type", "application/json")],
                    body.as_bytes(),
                )
                .await;
            assert_eq!(status, 200, "{resp}");
        }
    });
    futures::future::join_all(patches).await;
    let (_, _, ctx) = s
        .http(&s.control, "GET", "/v1/workflows/counter/context", &[], b"")
        .await;
    for i in 0..12 {
        assert_eq!(ctx["context"][format!("k{i}")], format!("v{i}"), "{ctx}");
    }
    let (status, _, body) = s
        .http(
            &s.control,
            "PATCH",
            "/v1/workflows/counter/context",
            &[("content-type", "application/json")],
            br#"{"count": null, "k0": null}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["context"].get("count").is_none(), "{body}");
    assert!(body["context"].get("k0").is_none(), "{body}");
    assert_eq!(body["context"]["k1"], "v1");
}
