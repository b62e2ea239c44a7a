//! Retention in the local shape: records older than a workflow's `retention` (or the
//! server's) are deleted in batches; runs still waiting are kept whatever their age.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tripline_tests::*;

const KEEP_1H: &str = "id: short\nretention: 1h\ntriggers: [{type: manual}]\nsteps:\n  - {id: t, type: transform, value: 1}\n";
const WAITS: &str = "id: parked\nretention: 1h\ntriggers: [{type: manual}]\nsteps:\n  - {id: w, type: wait_for_webhook, timeout: 30d}\n";
const DEFAULT: &str =
    "id: plain\ntriggers: [{type: manual}]\nsteps:\n  - {id: t, type: transform, value: 1}\n";

async fn start(app: &TestApp, workflow: &str) -> String {
    let (status, _, body) = app
        .post_json(&format!("/v1/workflows/{workflow}/runs"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["run_id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn old_records_go_and_waiting_runs_stay() {
    let mut opts = Opts::default()
        .workflow("short.yaml", KEEP_1H)
        .workflow("parked.yaml", WAITS)
        .workflow("plain.yaml", DEFAULT);
    opts.config.retention = Some(Duration::from_secs(3 * 3600));
    let (app, time) = spawn_app_with_manual_clock(opts).await;
    let old: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(start(&app, "short").await);
        }
        ids
    };
    for id in &old {
        app.wait_run(id).await;
    }
    let parked = start(&app, "parked").await;
    app.wait_status(&parked, "waiting").await;
    let plain = start(&app, "plain").await;
    app.wait_run(&plain).await;

    time.advance(Duration::from_secs(2 * 3600));
    let recent = start(&app, "short").await;
    app.wait_run(&recent).await;
    let deleted = app.app().apply_retention().await.expect("retention");
    assert_eq!(
        deleted, 7,
        "three runs of `short` and their messages, and the message of the waiting run"
    );

    for id in &old {
        assert_eq!(
            app.get(&format!("/v1/runs/{id}")).await.0,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
    let (_, inbox) = app.get("/v1/inbox?workflow=short").await;
    assert_eq!(inbox["items"].as_array().map(Vec::len), Some(1), "{inbox}");
    assert_eq!(
        app.get(&format!("/v1/runs/{recent}")).await.0,
        StatusCode::OK
    );
    // Waiting past its workflow's retention: kept (its message is not).
    let (status, run) = app.get(&format!("/v1/runs/{parked}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "waiting");
    // The server's default (3h) has not passed for `plain`.
    assert_eq!(
        app.get(&format!("/v1/runs/{plain}")).await.0,
        StatusCode::OK
    );

    time.advance(Duration::from_secs(2 * 3600));
    app.app().apply_retention().await.expect("retention");
    assert_eq!(
        app.get(&format!("/v1/runs/{plain}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/v1/runs/{parked}")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_retention_out_of_bounds_is_refused_at_deploy_and_by_serve() {
    let app = spawn_app(Opts::default()).await;
    let (status, body) = app
        .deploy("r", "id: r\nretention: 5m\ntriggers: [{type: manual}]\nsteps: [{id: t, type: transform, value: 1}]\n")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("1h to 3650d"), "{body}");
    let out = std::process::Command::new(tripline_bin())
        .args(["serve", "--retention", "10s", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("retention is from 1h to 3650d"), "{said}");
}
