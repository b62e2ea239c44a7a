//! `map` and `parallel` steps end to end: the real server and a downstream on loopback;
//! the bound on items out at once, outputs in order, each item's idempotency key, failure
//! policies, a `kill -9` mid-map, an invocation's deadline mid-map, and the AWS shape.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_app::executor::DEADLINE_MARGIN;
use tripline_core::RunStatus;
use tripline_tests::shape::shape;
use tripline_tests::*;

use crate::executor_deadline::{app_with, start_with, take_item};

fn map_workflow(stub: &Stub, concurrency: u32, on_failure: &str) -> String {
    format!(
        r#"
id: fan
triggers:
  - type: manual
steps:
  - id: each
    type: map
    items: trigger.body.orders
    concurrency: {concurrency}
    on_failure: {on_failure}
    steps:
      - id: get
        type: http
        method: POST
        url: "{url}/orders/{{{{ item.id }}}}"
        body: {{ n: "{{{{ index }}}}" }}
      - id: shape
        type: transform
        value: {{ id: "{{{{ item.id }}}}", status: "{{{{ steps.get.status }}}}" }}
  - id: count
    type: transform
    value: {{ items: "{{{{ steps.each }}}}", n: "{{{{ steps.each | length }}}}" }}
"#,
        url = stub.url
    )
}

fn orders(n: usize) -> Value {
    json!({ "orders": (0..n).map(|i| json!({"id": format!("o{i}")})).collect::<Vec<_>>() })
}

async fn run_manual(app: &TestApp, body: &Value) -> Value {
    let (status, _, started) = app.post_json("/v1/workflows/fan/runs", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    app.wait_run(started["run_id"].as_str().expect("id")).await
}

#[tokio::test]
async fn a_map_runs_its_items_within_the_bound_and_joins_them_in_order() {
    let stub = Stub::start().await;
    stub.set_default(Reply {
        status: 200,
        body: json!({"status": "paid"}),
        delay: Duration::from_millis(60),
    });
    let app =
        spawn_app(Opts::default().workflow("f.yaml", &map_workflow(&stub, 3, "fail_fast"))).await;
    let run = run_manual(&app, &orders(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let items = run["final_output"]["items"]
        .as_array()
        .expect("items")
        .clone();
    assert_eq!(run["final_output"]["n"], 10);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(
            item["body"]["status"].as_str(),
            None,
            "the last step's output: {item}"
        );
        assert_eq!(
            item["id"],
            format!("o{i}"),
            "in the items' order: {items:?}"
        );
        assert_eq!(item["status"], 200);
    }
    assert_eq!(stub.max_in_flight(), 3, "three items at a time");
    let run_id = run["id"].as_str().expect("id");
    let mut keys: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| {
            let key = r.headers["idempotency-key"].clone();
            let i: usize = r.body["n"].as_u64().expect("n") as usize;
            assert_eq!(r.path, format!("/orders/o{i}"));
            assert_eq!(key, format!("{run_id}:each[{i}].get"));
            key
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 10, "one key per item");
    let names: Vec<&str> = run["step_executions"]
        .as_array()
        .expect("executions")
        .iter()
        .filter_map(|e| e["step_id"].as_str())
        .collect();
    assert!(
        names.contains(&"each[9].get")
            && names.contains(&"each[9].shape")
            && names.contains(&"each"),
        "{names:?}"
    );
}

#[tokio::test]
async fn fail_fast_ends_the_run_at_the_first_failed_item_and_collect_keeps_every_result() {
    let stub = Stub::start().await;
    stub.set_default(Reply::status(200));
    stub.script([Reply::status(200), Reply::status(404)]);
    let app = spawn_app(
        Opts::default()
            .workflow("f.yaml", &map_workflow(&stub, 1, "fail_fast"))
            .workflow(
                "g.yaml",
                &map_workflow(&stub, 1, "collect").replace("id: fan\n", "id: gather\n"),
            ),
    )
    .await;
    let run = run_manual(&app, &orders(4)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_type"], "step_failed");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("step `each`, item 1, step `get`: failed: "),
        "{error}"
    );
    assert_eq!(
        stub.requests().len(),
        2,
        "items after the failure never started"
    );

    stub.script([Reply::status(404)]);
    let (status, _, started) = app.post_json("/v1/workflows/gather/runs", &orders(3)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = app.wait_run(started["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let items = &run["final_output"]["items"];
    assert_eq!(items[0]["error"]["step"], "get", "{items}");
    assert_eq!(items[0]["error"]["type"], "step_failed");
    assert_eq!(items[1]["id"], "o1");
    assert_eq!(items[2]["id"], "o2");
}

#[tokio::test]
async fn parallel_branches_are_out_at_the_same_time_and_join_by_id() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(200)));
    let yaml = format!(
        r#"
id: fan
triggers: [{{ type: manual }}]
steps:
  - id: notify
    type: parallel
    branches:
      - id: slack
        steps: [{{ id: post, type: http, method: POST, url: "{url}/slack", body: {{ b: "{{{{ branch }}}}" }} }}]
      - id: email
        steps: [{{ id: post, type: http, method: POST, url: "{url}/email", body: {{ b: "{{{{ branch }}}}" }} }}]
      - id: note
        steps: [{{ id: t, type: transform, value: "{{{{ trigger.body.msg }}}}" }}]
"#,
        url = stub.url
    );
    let app = spawn_app(Opts::default().workflow("f.yaml", &yaml)).await;
    let run = run_manual(&app, &json!({"msg": "hello"})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(stub.max_in_flight(), 2, "both requests were out together");
    let out = &run["final_output"];
    assert_eq!(out["note"], "hello");
    assert_eq!(out["slack"]["status"], 200);
    assert_eq!(out["email"]["body"]["slow"], true);
    let mut bodies: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| r.body["b"].to_string())
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec!["\"email\"", "\"slack\""]);
}

/// A `kill -9` in the middle of a map: after a restart the run ends with every item, each
/// key seen, and only the work since the last checkpoint done again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_map_repeats_only_the_items_since_the_last_checkpoint() {
    let stub = Stub::start().await;
    stub.set_default(Reply {
        status: 200,
        body: json!({"ok": true}),
        delay: Duration::from_millis(200),
    });
    let wf = tempfile::TempDir::new().expect("dir");
    let data = tempfile::TempDir::new().expect("dir");
    std::fs::write(
        wf.path().join("f.yaml"),
        map_workflow(&stub, 2, "fail_fast"),
    )
    .expect("write");
    let mut proc = ServeProc::start(wf.path(), data.path(), &[]);
    let client = reqwest::Client::new();
    let started: Value = client
        .post(format!("{}/v1/workflows/fan/runs", proc.base))
        .json(&orders(30))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let run_id = started["run_id"].as_str().expect("id").to_string();
    // Past two checkpoints (one a second), well before the 3 s the map takes.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    proc.kill9();
    let before: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert!(
        before.len() >= 10 && before.len() < 30,
        "{} items had started at the kill",
        before.len()
    );

    let proc = ServeProc::start(wf.path(), data.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run: Value = client
            .get(format!("{}/v1/runs/{run_id}", proc.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if run["status"] != "running" && run["status"] != "queued" {
            break run;
        }
        assert!(Instant::now() < deadline, "the map never finished: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"]["n"], 30);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in stub.requests() {
        *seen
            .entry(r.headers["idempotency-key"].clone())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 30, "every item's key reached the downstream");
    let repeated = seen.values().filter(|n| **n > 1).count();
    assert!(
        repeated < before.len() / 2,
        "{repeated} of the {} items started before the kill were sent again: the checkpoints kept the rest",
        before.len()
    );
}

/// In an invocation with a deadline (AWS Lambda), items that no longer fit wait for the
/// next invocation; the items done are written and not repeated.
#[tokio::test]
async fn items_that_no_longer_fit_an_invocation_continue_in_the_next() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(500)));
    let yaml = map_workflow(&stub, 1, "fail_fast")
        .replace("        body:", "        timeout: 1s\n        body:");
    let (app, queue, _dir) = app_with(&yaml).await;
    let run_id = start_with(&app, "fan", &orders(3).to_string()).await;
    assert_eq!(take_item(&queue).await, vec![run_id.clone()]);
    // Time for one item (1 s timeout), not for the second after the first took 0.5 s.
    let deadline = tokio::time::Instant::now() + DEADLINE_MARGIN + Duration::from_millis(1300);
    app.advance_run_until(&run_id, Some(deadline))
        .await
        .expect("advance");
    let run = app.store.run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(stub.requests().len(), 1);
    assert!(
        run.cursor.fan.as_ref().expect("fan").lanes[0]
            .result
            .is_some(),
        "the first item is written as done"
    );
    assert_eq!(
        take_item(&queue).await,
        vec![run_id.clone()],
        "enqueued to continue"
    );
    app.advance_run_until(
        &run_id,
        Some(tokio::time::Instant::now() + Duration::from_secs(60)),
    )
    .await
    .expect("advance");
    let run = app.store.run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let paths: Vec<String> = stub.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec!["/orders/o0", "/orders/o1", "/orders/o2"],
        "no item twice"
    );
}

/// The AWS shape: the real step-executor binary runs a map's items in its invocation
/// against DynamoDB and SQS on moto.
#[tokio::test]
async fn a_map_runs_in_the_aws_shape() {
    let s = shape(&[]).await;
    let yaml = map_workflow(&s.stub, 4, "collect").replace(
        "  - type: manual\n",
        "  - { type: webhook, id: hook, token: aws-fanout-token-000000001 }\n",
    );
    s.deploy("fan", &yaml).await;
    s.stub.script([Reply::status(500)]);
    let (status, _, body) = s.post_hook("aws-fanout-token-000000001", &orders(6)).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    let run = s.run(&run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let items = run["final_output"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 6);
    assert_eq!(
        items.iter().filter(|i| i.get("error").is_some()).count(),
        1,
        "{items:?}"
    );
    let mut keys: Vec<String> = s
        .stub
        .requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6);
    assert!(
        keys.iter()
            .all(|k| k.starts_with(&format!("{run_id}:each["))),
        "{keys:?}"
    );
}
