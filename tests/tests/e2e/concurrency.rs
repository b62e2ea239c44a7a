//! Concurrency limits end to end (local shape): a burst through `limit: 3` never has more
//! than 3 runs at the downstream and starts them in arrival order; a limit per key; a sync
//! webhook that could not start in its budget gets 202; and the limit holds across a
//! `kill -9` of the real server.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_tests::*;

fn limited(stub: &Stub, limit: u32, key: Option<&str>) -> String {
    let key = key.map_or(String::new(), |k| format!(", key: \"{k}\""));
    format!(
        r#"
id: limited
concurrency: {{ limit: {limit}{key} }}
triggers:
  - type: manual
  - type: webhook
    token: concurrency-token-000000000001
    response: sync
    sync_budget: 300ms
steps:
  - id: call
    type: http
    method: POST
    url: "{}/work"
    body: {{ n: "{{{{ trigger.body.n }}}}", customer: "{{{{ trigger.body.customer | default('') }}}}" }}
"#,
        stub.url
    )
}

async fn start(app: &TestApp, body: Value) -> String {
    let (status, _, resp) = app.post_json("/v1/workflows/limited/runs", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    resp["run_id"].as_str().expect("id").to_string()
}

fn ms(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| tripline_core::Timestamp::parse_rfc3339(s).ok())
        .map_or(0, |t| t.millis())
}

#[tokio::test]
async fn a_burst_of_100_through_limit_3_never_has_more_than_3_in_flight_and_starts_in_order() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(15)));
    let app = spawn_app(Opts::default().workflow("l.yaml", &limited(&stub, 3, None))).await;
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(start(&app, json!({"n": n})).await);
    }
    let mut runs = Vec::new();
    for id in &ids {
        let run = app.wait_run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        runs.push(run);
    }
    assert_eq!(stub.requests().len(), 100);
    let max = stub.max_in_flight();
    assert!(max <= 3, "{max} runs at the downstream at once");
    assert_eq!(max, 3, "the limit is used");
    // Arrival order: slots go to the waiting runs first in, first out. Runs given slots by
    // one release start at the same moment, in any order among themselves; so a run
    // never starts after a run admitted 3 (the limit) or more places later.
    let started: Vec<i64> = runs.iter().map(|r| ms(&r["started_at"])).collect();
    for i in 0..started.len() {
        for j in i + 3..started.len() {
            assert!(
                started[i] <= started[j],
                "run {i} started after run {j}: {started:?}"
            );
        }
    }
    // Nothing is left holding or waiting.
    app.stop().await;
}

#[tokio::test]
async fn a_limit_per_key_holds_for_each_key_while_keys_overlap() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(40)));
    let app = spawn_app(Opts::default().workflow(
        "l.yaml",
        &limited(&stub, 1, Some("{{ trigger.body.customer }}")),
    ))
    .await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let customer = ["ada", "grace", "linus"][n % 3];
        ids.push((
            customer,
            start(&app, json!({"n": n, "customer": customer})).await,
        ));
    }
    let mut spans: Vec<(&str, i64, i64)> = Vec::new();
    for (customer, id) in &ids {
        let run = app.wait_run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        spans.push((customer, ms(&run["started_at"]), ms(&run["finished_at"])));
    }
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.0 == b.0 {
                assert!(
                    a.2 <= b.1 || b.2 <= a.1,
                    "two runs of {} overlap: {a:?} {b:?}",
                    a.0
                );
            }
        }
    }
    assert!(
        stub.max_in_flight() >= 2,
        "different keys run at the same time"
    );
    assert!(stub.max_in_flight() <= 3);
    app.stop().await;
}

#[tokio::test]
async fn a_sync_call_that_cannot_start_within_its_budget_gets_202_and_runs_later() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(600)));
    let app = spawn_app(Opts::default().workflow("l.yaml", &limited(&stub, 1, None))).await;
    let first = start(&app, json!({"n": 1})).await;
    // Let the first take the only slot.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stub.requests().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, body) = app
        .post_json("/hooks/concurrency-token-000000000001", &json!({"n": 2}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second = body["run_id"].as_str().expect("id").to_string();
    let (_, run) = app.get(&format!("/v1/runs/{second}")).await;
    assert_eq!(run["status"], "queued", "{run}");
    assert_eq!(app.wait_run(&first).await["status"], "succeeded");
    assert_eq!(app.wait_run(&second).await["status"], "succeeded");
    assert_eq!(stub.max_in_flight(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_waiting_run_gives_up_its_place() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(300)));
    let app = spawn_app(Opts::default().workflow("l.yaml", &limited(&stub, 1, None))).await;
    let first = start(&app, json!({"n": 1})).await;
    let second = start(&app, json!({"n": 2})).await;
    let third = start(&app, json!({"n": 3})).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _, body) = app
        .post_json(&format!("/v1/runs/{second}/cancel"), &json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(app.wait_run(&first).await["status"], "succeeded");
    assert_eq!(app.wait_run(&second).await["status"], "cancelled");
    assert_eq!(app.wait_run(&third).await["status"], "succeeded");
    assert_eq!(stub.requests().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_limit_holds_across_a_kill_9_and_every_run_finishes() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(60)));
    let workflows = tempfile::tempdir().expect("tempdir");
    std::fs::write(workflows.path().join("l.yaml"), limited(&stub, 3, None)).expect("write");
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = ServeProc::start(workflows.path(), data.path(), &[]);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..30 {
        let resp: Value = http
            .post(format!("{}/v1/workflows/limited/runs", server.base))
            .json(&json!({"n": n}))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        ids.push(resp["run_id"].as_str().expect("id").to_string());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stub.requests().len() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "nothing ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    // The killed server's requests are still being answered by the downstream: nothing
    // can call them back. The restart comes once they are done, so that what the stub
    // counts is what the restarted server runs (the runs cut by the kill hold their slots
    // and run their step again).
    while stub.in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server = ServeProc::start(workflows.path(), data.path(), &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    for id in &ids {
        loop {
            let run: Value = http
                .get(format!("{}/v1/runs/{id}", server.base))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if run["status"] == "succeeded" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} is {} after the restart",
                run["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let max = stub.max_in_flight();
    assert!(max <= 3, "{max} at the downstream at once across the crash");
    // Every run reached the downstream (those cut by the kill, again after the restart).
    let mut seen: Vec<i64> = stub
        .requests()
        .iter()
        .filter_map(|r| r.body["n"].as_i64())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (0..30).collect::<Vec<i64>>());
}
