//! One-time runs (`POST /v1/workflows/{id}/runs?at=…`): a run that waits `queued` until
//! its time, survives a restart, is listed and can be cancelled before it starts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tripline_tests::*;

fn workflow(stub: &Stub) -> String {
    format!(
        "id: later\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: call, type: http, method: POST, url: \"{}/later\", body: {{ n: \"{{{{ trigger.body.n }}}}\" }} }}\n",
        stub.url
    )
}

#[tokio::test]
async fn a_run_scheduled_for_later_waits_survives_a_restart_and_can_be_cancelled() {
    let stub = Stub::start().await;
    let (mut app, mut time) =
        spawn_app_with_manual_clock(Opts::default().workflow("later.yaml", &workflow(&stub))).await;
    let at = time.clock_now_plus(Duration::from_secs(3600));
    let (status, _, first) = app
        .post_json(
            &format!("/v1/workflows/later/runs?at={at}"),
            &json!({"n": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["not_before"], json!(at));
    let first = first["run_id"].as_str().expect("id").to_string();
    let (_, _, second) = app
        .post_json(
            &format!("/v1/workflows/later/runs?at={at}"),
            &json!({"n": 2}),
        )
        .await;
    let second = second["run_id"].as_str().expect("id").to_string();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, listed) = app.get("/v1/runs?workflow=later&status=queued").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(listed["items"][0]["not_before"], json!(at));
    assert_eq!(stub.requests().len(), 0, "nothing starts before its time");
    let (status, _, _) = app
        .post_json(&format!("/v1/runs/{second}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    app.restart_manual(&mut time).await;
    time.advance(Duration::from_secs(3601));
    let run = app.wait_run(&first).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, cancelled) = app.get(&format!("/v1/runs/{second}")).await;
    assert_eq!(cancelled["status"], "cancelled");
    let sent: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| r.body["n"].to_string())
        .collect();
    assert_eq!(sent, ["1"], "only the run left scheduled ran, once");
}

#[tokio::test]
async fn a_local_time_needs_its_zone_and_a_bad_or_past_time_is_refused() {
    let stub = Stub::start().await;
    let (app, time) =
        spawn_app_with_manual_clock(Opts::default().workflow("later.yaml", &workflow(&stub))).await;
    // 2040-01-15 09:00 in Paris (winter) is 08:00 UTC.
    let (status, _, body) = app
        .post_json(
            "/v1/workflows/later/runs?at=2040-01-15T09:00&timezone=Europe/Paris",
            &json!({}),
        )
        .await;
    // More than a year ahead of the test's clock: refused, with why.
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains("more than a year ahead"),
        "{body}"
    );
    let soon = time.clock_now_plus(Duration::from_secs(86_400));
    let local = &soon[..16];
    let (status, _, body) = app
        .post_json(
            &format!("/v1/workflows/later/runs?at={local}&timezone=Asia/Tokyo"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let expected = tripline_core::Timestamp::parse_rfc3339(&soon)
        .expect("time")
        .minus(Duration::from_secs(9 * 3600));
    let got = tripline_core::Timestamp::parse_rfc3339(body["not_before"].as_str().expect("time"))
        .expect("time");
    assert_eq!(
        got.millis() / 60_000,
        expected.millis() / 60_000,
        "Tokyo is UTC+9: {body}"
    );
    for (query, says) in [
        ("at=yesterday", "is not a time"),
        ("at=2020-01-01T00:00:00Z", "in the past"),
        (
            "at=2040-01-15T09:00&timezone=Mars/Olympus",
            "not an IANA time zone",
        ),
        ("timezone=Europe/Paris", "goes with `at`"),
    ] {
        let (status, _, body) = app
            .post_json(&format!("/v1/workflows/later/runs?{query}"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.to_string().contains(says), "{query}: {body}");
    }
}

fn launch(at: &str) -> String {
    format!(
        "id: launch\ntriggers:\n  - {{ type: once, id: go, at: \"{at}\", input: {{ x: 1 }} }}\nsteps:\n  - {{ id: t, type: transform, value: \"{{{{ trigger.body.x }}}}\" }}\n"
    )
}

#[tokio::test]
async fn a_once_trigger_records_one_run_at_deploy_moves_with_it_and_fires_at_its_time() {
    let (app, time) = spawn_app_with_manual_clock(Opts::default()).await;
    let first_at = time.clock_now_plus(Duration::from_secs(3600));
    let (status, body) = app.deploy("launch", &launch(&first_at)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["triggers"][0]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    assert_eq!(body["triggers"][0]["type"], "once");
    let (status, run) = app.get(&format!("/v1/runs/{first}")).await;
    assert_eq!(status, StatusCode::OK, "recorded at deploy: {run}");
    assert_eq!(run["status"], "queued");
    assert_eq!(run["trigger"]["kind"], "once");

    // Deployed again unchanged: the same run, not a second.
    let (status, _) = app.deploy("launch", &launch(&first_at)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) = app.get("/v1/runs?workflow=launch").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // Moved: the run waiting for the old time is cancelled, one for the new is recorded.
    let second_at = time.clock_now_plus(Duration::from_secs(7200));
    let (status, body) = app.deploy("launch", &launch(&second_at)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second = body["triggers"][0]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    assert_ne!(first, second);
    let (_, old) = app.get(&format!("/v1/runs/{first}")).await;
    assert_eq!(old["status"], "cancelled");

    time.advance(Duration::from_secs(7201));
    let run = app.wait_run(&second).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"], 1);

    // A time that is not one is refused at deploy, where it is written.
    let (status, body) = app
        .deploy("bad", &launch("tomorrow").replace("launch", "bad"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.to_string().contains("triggers[0].at"), "{body}");
}
