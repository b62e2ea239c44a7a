//! Bulk jobs: retry, cancel and reprocess by a listing's filters, with progress, a dry
//! run, a restart in the middle, and items delivered twice that start nothing new.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_tests::*;

fn charging(stub: &Stub) -> String {
    format!(
        r#"
id: charge
triggers: [{{ type: webhook, id: hook }}]
steps:
  - {{ id: pay, type: http, url: "{}/pay", method: POST, body: "{{{{ trigger.body }}}}" }}
"#,
        stub.url
    )
}

async fn post_job(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let (status, _, v) = app.post_json("/v1/jobs", &body).await;
    (status, v)
}

/// Polls a job until it is done (20 s at most).
async fn job_done(app: &TestApp, id: &str) -> Value {
    let since = Instant::now();
    loop {
        let (status, job) = app.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["status"] == "done" {
            return job;
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "job not done: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` runs of `charge` that failed (the stub answered 400).
async fn failed_runs(app: &TestApp, stub: &Stub, n: usize) -> Vec<String> {
    stub.set_default(Reply::status(400));
    let (_, wf) = app.deploy("charge", &charging(stub)).await;
    let url = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    let mut ids = Vec::new();
    for i in 0..n {
        let (_, _, body) = app.post_json(&url, &json!({"n": i})).await;
        ids.push(body["run_id"].as_str().expect("id").to_string());
    }
    for id in &ids {
        assert_eq!(app.wait_run(id).await["status"], "failed");
    }
    stub.set_default(Reply::status(200));
    ids
}

#[tokio::test]
async fn a_bulk_retry_counts_first_then_retries_every_failed_run_once() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default()).await;
    let failed = failed_runs(&app, &stub, 5).await;
    let filter = json!({"workflow": "charge", "status": "failed"});
    let (status, dry) = post_job(
        &app,
        json!({"action": "retry", "filter": filter, "dry_run": true}),
    )
    .await;
    assert_eq!(
        (status, dry["total"].clone()),
        (StatusCode::OK, json!(5)),
        "{dry}"
    );
    let (_, none) = app.get("/v1/runs?workflow=charge&status=queued").await;
    assert_eq!(none["items"], json!([]), "a dry run starts nothing");

    let (status, job) = post_job(&app, json!({"action": "retry", "filter": filter})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        (job["total"].clone(), job["action"].clone()),
        (json!(5), json!("retry"))
    );
    let job = job_done(&app, job["id"].as_str().expect("id")).await;
    assert_eq!(
        (job["done"].clone(), job["failed"].clone()),
        (json!(5), json!(0)),
        "{job}"
    );
    let results = job["results"].as_array().expect("results");
    let mut retried: Vec<&str> = results
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    retried.sort();
    let mut expected: Vec<&str> = failed.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(retried, expected);
    for r in results {
        assert_eq!(r["result"], "started", "{r}");
        let run = app.wait_run(r["run_id"].as_str().expect("new run")).await;
        assert_eq!(
            (run["status"].as_str(), run["retry_of"]["run_id"].as_str()),
            (Some("succeeded"), r["id"].as_str())
        );
    }
}

#[tokio::test]
async fn an_item_done_twice_starts_nothing_new() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default()).await;
    failed_runs(&app, &stub, 60).await;
    let (status, job) = post_job(
        &app,
        json!({"action": "retry", "filter": {"workflow": "charge", "status": "failed"}}),
    )
    .await;
    assert_eq!(
        (status, job["total"].clone()),
        (StatusCode::ACCEPTED, json!(60)),
        "{job}"
    );
    let id = job["id"].as_str().expect("id").to_string();
    let job = job_done(&app, &id).await;
    assert_eq!(job["done"], 60, "{job}");

    // As if the server had died after acting on every item but before writing the
    // record: the items are done again under the job's keys, and start nothing new.
    let core = app.app();
    let (mut value, version) = core.store.job(&id).await.expect("read").expect("job");
    let first: Vec<Value> = value["results"].as_array().cloned().unwrap_or_default();
    value["results"] = json!([]);
    value["done"] = json!(0);
    value["status"] = json!("running");
    core.store
        .save_job(&id, value, version, core.clock.now())
        .await
        .expect("rewind");
    core.queue
        .send(&tripline_app::ports::WorkItem::job(&id), Duration::ZERO)
        .await
        .expect("send");
    let again = job_done(&app, &id).await;
    let second = again["results"].as_array().expect("results");
    assert_eq!(second.len(), 60);
    for (a, b) in first.iter().zip(second) {
        assert_eq!(
            (b["result"].as_str(), &b["run_id"]),
            (Some("duplicate"), &a["run_id"]),
            "{b}"
        );
    }
    let (_, runs) = app.get("/v1/runs?workflow=charge&limit=500").await;
    assert_eq!(
        runs["items"].as_array().map(Vec::len),
        Some(120),
        "nothing new"
    );
}

/// The real binary, killed (SIGKILL) while a job of 300 retries is under way: started
/// again on its data, it finishes the job, one retry per run.
#[tokio::test]
async fn a_job_killed_midway_goes_on_after_a_restart() {
    let stub = Stub::start().await;
    stub.set_default(Reply::status(400));
    let dir = tempfile::tempdir().expect("tmp");
    let (wf, data) = (dir.path().join("wf"), dir.path().join("data"));
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(wf.join("charge.yaml"), charging(&stub)).expect("write");
    let client = reqwest::Client::new();
    let mut server = ServeProc::start(&wf, &data, &[]);
    let get = |base: String, path: String| {
        let client = client.clone();
        async move {
            let resp = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("get");
            resp.json::<Value>().await.expect("json")
        }
    };
    let wf_json = get(server.base.clone(), "/v1/workflows/charge".into()).await;
    let hook = wf_json["triggers"][0]["url"]
        .as_str()
        .expect("url")
        .to_string();
    for i in 0..300 {
        let resp = client
            .post(format!("{}{hook}", server.base))
            .json(&json!({"n": i}))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let since = Instant::now();
    loop {
        let failed = get(
            server.base.clone(),
            "/v1/runs?workflow=charge&status=failed&limit=500".into(),
        )
        .await;
        if failed["items"].as_array().map(Vec::len) == Some(300) {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the runs did not all fail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stub.set_default(Reply::status(200));
    let job: Value = client
        .post(format!("{}/v1/jobs", server.base))
        .json(&json!({"action": "retry", "filter": {"workflow": "charge", "status": "failed"}}))
        .send()
        .await
        .expect("job")
        .json()
        .await
        .expect("json");
    let id = job["id"].as_str().expect("job id").to_string();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let midway = get(server.base.clone(), format!("/v1/jobs/{id}")).await;
    server.kill9();
    assert_eq!(
        midway["status"], "running",
        "the job was over before the kill; make it longer: {midway}"
    );

    let server = ServeProc::start(&wf, &data, &[]);
    let since = Instant::now();
    let done = loop {
        let job = get(server.base.clone(), format!("/v1/jobs/{id}")).await;
        if job["status"] == "done" {
            break job;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the job did not go on: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (done["done"].clone(), done["failed"].clone()),
        (json!(300), json!(0))
    );
    let all = get(
        server.base.clone(),
        "/v1/runs?workflow=charge&limit=500".into(),
    )
    .await;
    let mut count = all["items"].as_array().map_or(0, Vec::len);
    let mut cursor = all["next_cursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let page = get(
            server.base.clone(),
            format!("/v1/runs?workflow=charge&limit=500&cursor={c}"),
        )
        .await;
        count += page["items"].as_array().map_or(0, Vec::len);
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(count, 600, "one retry for each of the 300 runs, none twice");
}

const PICKY: &str = r#"
id: picky
triggers:
  - { type: webhook, id: hook, filter: { body: { kind: order } } }
  - { type: manual }
steps:
  - { id: wait, type: wait_for_webhook, timeout: 1h }
"#;

#[tokio::test]
async fn bulk_reprocess_after_a_filter_fix_and_bulk_cancel_of_waiting_runs() {
    let app = spawn_app(Opts::default()).await;
    let (_, wf) = app.deploy("picky", PICKY).await;
    let url = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    for _ in 0..3 {
        let (status, _, _) = app.post_json(&url, &json!({"kind": "Order"})).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    app.deploy("picky", &PICKY.replace("kind: order", "kind: Order"))
        .await;
    let reprocess =
        json!({"action": "reprocess", "filter": {"workflow": "picky", "outcome": "filtered"}});
    let (status, job) = post_job(&app, reprocess).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = job_done(&app, job["id"].as_str().expect("id")).await;
    assert_eq!(
        (job["done"].clone(), job["items"].clone()),
        (json!(3), json!("messages")),
        "{job}"
    );
    let mut waiting = Vec::new();
    for r in job["results"].as_array().expect("results") {
        assert_eq!(r["result"], "started", "{r}");
        waiting.push(
            app.wait_status(r["run_id"].as_str().expect("run"), "waiting")
                .await,
        );
    }

    let cancel = json!({"action": "cancel", "filter": {"workflow": "picky", "status": "waiting"}});
    let (_, job) = post_job(&app, cancel).await;
    let job = job_done(&app, job["id"].as_str().expect("id")).await;
    assert_eq!(job["done"], 3, "{job}");
    for run in waiting {
        let (_, run) = app
            .get(&format!("/v1/runs/{}", run["id"].as_str().expect("id")))
            .await;
        assert_eq!(run["status"], "cancelled");
    }
}

#[tokio::test]
async fn a_job_that_cannot_be_made_says_why() {
    let app = spawn_app(Opts::default()).await;
    let (status, body) = post_job(
        &app,
        json!({"action": "retry", "filter": {"status": "broken"}}),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("filter.status")),
        "{body}"
    );
    let (status, body) = post_job(&app, json!({"action": "explode"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) =
        post_job(&app, json!({"action": "cancel", "filter": {"limit": "5"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post_job(
        &app,
        json!({"action": "cancel", "filter": {"workflow": "nothing"}}),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str(), body["total"].as_u64()),
        (StatusCode::ACCEPTED, Some("done"), Some(0)),
        "nothing selected: a job done as it is made {body}"
    );
    let (status, _) = app.get("/v1/jobs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
