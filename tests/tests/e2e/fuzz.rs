//! Hostile requests, generated (proptest), through the real server: the webhook route
//! (bodies, content types, headers, methods) and the resume and approval routes. No
//! answer is a 5xx other than the documented 503, and every request the server says it
//! recorded (`x-tripline-message-id`) is in the inbox.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tripline_tests::*;

const HOOK: &str = r#"
id: fuzzed
triggers:
  - type: webhook
    token: fuzztokenaaaaaaaaaaaaaaa
    methods: [POST, PUT, GET]
    filter: { body: { kind: order } }
    condition: "trigger.body.total is not defined or trigger.body.total > 0"
    idempotency_key: "{{ trigger.body.id | default('none') }}-{{ trigger.query.k | default('') }}"
  - type: webhook
    id: sync
    token: fuzzsynctokenaaaaaaaaaaa
    response: sync
steps:
  - { id: t, type: transform, value: { got: "{{ trigger.body }}" } }
"#;

fn body() -> impl Strategy<Value = Vec<u8>> {
    let json_like = prop::collection::vec(
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"kind\"",
            "\"order\"",
            "\"total\"",
            "-1",
            "1e999",
            "\"id\"",
            "null",
            "true",
            "\"\\u0000\"",
            "\"é\"",
            "\\",
            "\"",
            " ",
        ]),
        0..30,
    )
    .prop_map(|p| p.concat().into_bytes());
    prop_oneof![
        json_like,
        prop::collection::vec(any::<u8>(), 0..200),
        Just(br#"{"kind": "order", "id": 1, "total": 5}"#.to_vec()),
        Just(b"kind=order&id=2".to_vec()),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec![
            "application/json",
            "application/json; charset=latin1",
            "application/x-www-form-urlencoded",
            "text/plain",
            "text/plain; charset=utf-16",
            "multipart/form-data; boundary=zz",
            "application/octet-stream",
            "application/vnd.api+json",
            "",
            ";;;",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,40}",
    ])
}

#[test]
fn generated_webhook_and_resume_requests_never_get_a_5xx_and_are_recorded() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let app = rt.block_on(spawn_app(Opts::default().workflow("w.yaml", HOOK)));
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 400,
        ..RunnerConfig::default()
    });
    let strategy = (
        prop::sample::select(vec!["POST", "PUT", "GET", "PATCH", "DELETE"]),
        prop::sample::select(vec![
            "/hooks/fuzztokenaaaaaaaaaaaaaaa",
            "/hooks/fuzzsynctokenaaaaaaaaaaa",
            "/hooks/fuzztokenaaaaaaaaaaaaaaa?k=%ff%fe&k=2",
            "/resume/01ARZ3NDEKTSV4RRFFQ69G5FAV.aaaaaaaaaaaaaaaaaaaa",
            "/approve/x.y",
            "/review/..",
        ]),
        content_type(),
        body(),
        prop::collection::vec(("x-[a-z]{1,8}", "[ -~]{0,30}"), 0..4),
    );
    let seen = std::sync::Mutex::new(Vec::new());
    runner
        .run(&strategy, |(method, path, ct, body, headers)| {
            rt.block_on(async {
                let mut req = app.client.request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    app.url(path),
                );
                if let Some(ct) = &ct {
                    req = req.header("content-type", ct.as_str());
                }
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let resp = req.body(body.clone()).send().await.expect("an answer");
                let status = resp.status().as_u16();
                let id = resp
                    .headers()
                    .get("x-tripline-message-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let text = resp.text().await.unwrap_or_default();
                seen.lock().expect("seen").push(status);
                prop_assert!(
                    status < 500 || status == 503,
                    "{method} {path} {ct:?} {body:?}: {status} {text}"
                );
                if let Some(id) = id {
                    let (s, message) = app.get(&format!("/v1/inbox/{id}")).await;
                    prop_assert_eq!(s.as_u16(), 200, "{} recorded: {}", id, message);
                }
                Ok(())
            })
        })
        .expect("no generated request breaks a promise");
    // The cases reached every kind of answer, accepted ones included.
    let seen = seen.into_inner().expect("seen");
    assert!(seen.len() >= 400, "{}", seen.len());
    assert!(seen.iter().any(|s| (200..300).contains(s)), "{seen:?}");
    assert!(seen.iter().any(|s| (400..500).contains(s)), "{seen:?}");
}
