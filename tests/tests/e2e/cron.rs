//! Cron triggers in the local shape, on a manual clock: ticks at their times, a tick
//! delivered twice, each overlap policy, catch-up after a downtime, the state carried
//! between runs, and "run now".

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tripline_app::intake::cron::{Delivery, tick_id};
use tripline_app::ports::Outcome;
use tripline_core::Timestamp;
use tripline_tests::{ManualTime, Opts, TestApp, spawn_app_with_manual_clock};

/// 2026-03-01T00:00:00Z, a Sunday: schedules line up with it.
const T0: Timestamp = Timestamp(1_772_323_200_000);
const MIN: Duration = Duration::from_secs(60);

fn at(minutes: i64) -> Timestamp {
    Timestamp(T0.0 + minutes * 60_000)
}

async fn manual(
    workflows: &[(&str, &str)],
    config: Option<tripline_app::Config>,
) -> (TestApp, ManualTime) {
    let mut opts = Opts {
        clock_start: Some(T0),
        ..Opts::default()
    };
    if let Some(c) = config {
        opts.config = c;
    }
    for (name, yaml) in workflows {
        opts = opts.workflow(name, yaml);
    }
    spawn_app_with_manual_clock(opts).await
}

/// The ticks of a workflow's cron trigger, once there are at least `n`, oldest first.
async fn ticks(app: &TestApp, workflow: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app
            .get(&format!("/v1/workflows/{workflow}/ticks?limit=500"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            items.reverse();
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} ticks of {workflow}, have {}: {body}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outcomes(ticks: &[Value]) -> Vec<String> {
    ticks
        .iter()
        .map(|t| t["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Lets the scheduler and the executor run (real time) without moving the clock.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

const EVERY_5: &str = r#"
id: every5
triggers:
  - { type: cron, id: five, schedule: "*/5 * * * *" }
steps:
  - { id: stamp, type: transform, value: { at: "{{ trigger.scheduled_time }}", tz: "{{ trigger.timezone }}" } }
"#;

#[tokio::test]
async fn a_cron_trigger_fires_once_at_each_scheduled_time_with_that_time_as_input() {
    let (app, time) = manual(&[("w.yaml", EVERY_5)], None).await;
    time.advance(4 * MIN);
    settle().await;
    let (_, body) = app.get("/v1/workflows/every5/ticks").await;
    assert_eq!(body["items"], json!([]), "nothing is due before 00:05");

    time.advance(MIN);
    let t = ticks(&app, "every5", 1).await;
    assert_eq!(outcomes(&t), ["fired"]);
    let id = tick_id("every5", "five", at(5));
    assert_eq!(t[0]["tick"], json!(id));
    assert_eq!(t[0]["run_id"], json!(id), "the run's id is the tick's");
    assert_eq!(t[0]["scheduled_time"], json!(at(5)));
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], json!({"kind": "cron", "id": "five"}));
    assert_eq!(
        run["final_output"],
        json!({"at": at(5).to_string(), "tz": "UTC"})
    );

    time.advance(5 * MIN);
    let t = ticks(&app, "every5", 2).await;
    assert_eq!(outcomes(&t), ["fired", "fired"]);
    assert_eq!(t[1]["scheduled_time"], json!(at(10)));
    app.stop().await;
}

#[tokio::test]
async fn a_tick_delivered_twice_starts_one_run_and_is_recorded_as_a_duplicate() {
    let (app, _time) = manual(&[("w.yaml", EVERY_5)], None).await;
    let core = app.app();
    // 23:55 the day before (EventBridge Scheduler delivers after the time, like this).
    let first = core
        .cron_tick("every5", "five", at(-5), Delivery::OnTime)
        .await
        .expect("tick");
    let id = tick_id("every5", "five", at(-5));
    assert_eq!(
        first,
        Outcome::Started {
            run_ids: vec![id.clone()]
        }
    );
    app.wait_run(&id).await;
    let second = core
        .cron_tick("every5", "five", at(-5), Delivery::OnTime)
        .await
        .expect("tick again");
    assert_eq!(second, Outcome::DuplicateTick { tick: id.clone() });

    let t = ticks(&app, "every5", 2).await;
    assert_eq!(outcomes(&t), ["fired", "duplicate"]);
    assert_eq!(t[1]["duplicate_of"], json!(id));
    let (_, runs) = app.get("/v1/runs?workflow=every5").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1), "{runs}");
    // A tick is not reprocessed: the answer says how to run the trigger now.
    let (status, _, body) = app
        .post_json(&format!("/v1/inbox/{id}/reprocess"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("?trigger=five"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tick_of_a_removed_trigger_or_workflow_is_recorded_rejected_and_starts_nothing() {
    let (app, _time) = manual(&[("w.yaml", EVERY_5)], None).await;
    let core = app.app();
    let gone = core
        .cron_tick("every5", "nightly", at(5), Delivery::OnTime)
        .await
        .expect("tick");
    assert!(
        matches!(&gone, Outcome::Rejected { reason } if reason.contains("no cron trigger `nightly`")),
        "{gone:?}"
    );
    let none = core
        .cron_tick("nowhere", "five", at(5), Delivery::OnTime)
        .await
        .expect("tick");
    assert!(
        matches!(&none, Outcome::Rejected { reason } if reason.contains("not deployed")),
        "{none:?}"
    );
    let (_, runs) = app.get("/v1/runs").await;
    assert_eq!(runs["items"], json!([]));
    app.stop().await;
}

fn waiting(overlap: &str) -> String {
    format!(
        r#"
id: wait_{overlap}
triggers:
  - {{ type: cron, id: minute, schedule: "* * * * *", overlap: {overlap} }}
steps:
  - {{ id: hold, type: wait_for_webhook, timeout: 1h }}
"#
    )
}

async fn resume(app: &TestApp, run: &Value) {
    let url = run["waiting_payload"]["resume_url"]
        .as_str()
        .expect("resume_url")
        .to_string();
    let resp = app
        .client
        .post(url)
        .json(&json!({"ok": true}))
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn overlap_skip_queue_and_allow_each_do_what_they_say() {
    let (skip, queue, allow) = (waiting("skip"), waiting("queue"), waiting("allow"));
    let (app, time) = manual(
        &[("s.yaml", &skip), ("q.yaml", &queue), ("a.yaml", &allow)],
        None,
    )
    .await;
    time.advance(MIN);
    for wf in ["wait_skip", "wait_queue", "wait_allow"] {
        ticks(&app, wf, 1).await;
        app.wait_status(&tick_id(wf, "minute", at(1)), "waiting")
            .await;
    }
    time.advance(MIN);
    for wf in ["wait_skip", "wait_queue", "wait_allow"] {
        ticks(&app, wf, 2).await;
    }
    settle().await;

    // skip: the second tick is recorded and starts nothing.
    let t = ticks(&app, "wait_skip", 2).await;
    assert_eq!(outcomes(&t), ["fired", "skipped"]);
    assert!(
        t[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("overlap"),
        "{}",
        t[1]
    );
    let (status, _) = app
        .get(&format!(
            "/v1/runs/{}",
            tick_id("wait_skip", "minute", at(2))
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // queue: the second run waits `queued` until the first ends, then starts.
    let t = ticks(&app, "wait_queue", 2).await;
    assert_eq!(outcomes(&t), ["fired", "fired"]);
    let second = tick_id("wait_queue", "minute", at(2));
    let (_, run) = app.get(&format!("/v1/runs/{second}")).await;
    assert_eq!(run["status"], "queued", "{run}");
    assert_eq!(run["after"], json!(tick_id("wait_queue", "minute", at(1))));
    let first = app
        .wait_status(&tick_id("wait_queue", "minute", at(1)), "waiting")
        .await;
    resume(&app, &first).await;
    app.wait_status(&second, "waiting").await;

    // allow: both run at once.
    let t = ticks(&app, "wait_allow", 2).await;
    assert_eq!(outcomes(&t), ["fired", "fired"]);
    app.wait_status(&tick_id("wait_allow", "minute", at(1)), "waiting")
        .await;
    app.wait_status(&tick_id("wait_allow", "minute", at(2)), "waiting")
        .await;
    app.stop().await;
}

fn hourly(catch_up: &str) -> String {
    format!(
        r#"
id: hourly_{catch_up}
triggers:
  - {{ type: cron, id: hourly, schedule: "@hourly", catch_up: {catch_up} }}
steps:
  - {{ id: stamp, type: transform, value: "{{{{ trigger.scheduled_time }}}}" }}
"#
    )
}

#[tokio::test]
async fn after_a_downtime_catch_up_none_last_and_all_each_do_what_they_say() {
    let (none, last, all) = (hourly("none"), hourly("last"), hourly("all"));
    let (mut app, mut time) = manual(
        &[("n.yaml", &none), ("l.yaml", &last), ("a.yaml", &all)],
        None,
    )
    .await;
    // 00:00 to 01:00 on time: every policy fires.
    time.advance(60 * MIN);
    for wf in ["hourly_none", "hourly_last", "hourly_all"] {
        let t = ticks(&app, wf, 1).await;
        assert_eq!(outcomes(&t), ["fired"], "{wf}");
    }
    // Down from 01:00:30 to 04:30: 02:00, 03:00 and 04:00 come due meanwhile.
    time.pass(Duration::from_secs(30));
    if let Some(s) = app.server.take() {
        s.stop().await;
    }
    time.pass(209 * MIN + Duration::from_secs(30));
    app.restart_manual(&mut time).await;

    let t = ticks(&app, "hourly_none", 4).await;
    assert_eq!(outcomes(&t), ["fired", "missed", "missed", "missed"]);
    assert!(
        t[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not running"),
        "{}",
        t[1]
    );

    let t = ticks(&app, "hourly_last", 4).await;
    assert_eq!(outcomes(&t), ["fired", "missed", "missed", "fired"]);
    assert_eq!(t[3]["scheduled_time"], json!(at(240)));

    let t = ticks(&app, "hourly_all", 4).await;
    assert_eq!(outcomes(&t), ["fired", "fired", "fired", "fired"]);
    for h in [2, 3, 4] {
        let run = app
            .wait_run(&tick_id("hourly_all", "hourly", at(h * 60)))
            .await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["final_output"], json!(at(h * 60).to_string()));
    }

    // Back on schedule: 05:00 fires for every policy.
    time.advance(30 * MIN);
    for wf in ["hourly_none", "hourly_last", "hourly_all"] {
        let t = ticks(&app, wf, 5).await;
        assert_eq!(t[4]["outcome"], "fired", "{wf}");
        assert_eq!(t[4]["scheduled_time"], json!(at(300)));
    }
    app.stop().await;
}

const COUNTER: &str = r#"
id: counter
triggers:
  - { type: cron, id: minute, schedule: "* * * * *" }
steps:
  - { id: boom, type: fail, when: "'T00:03' in trigger.scheduled_time", message: "the third minute fails" }
  - { id: count, type: transform, value: { seen: "{{ state.count if state else 0 }}" } }
state:
  count: "{{ (state.count if state else 0) + 1 }}"
  last: "{{ trigger.scheduled_time }}"
"#;

async fn saved_state(app: &TestApp, wf: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/workflows/{wf}/state")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn the_state_is_carried_across_runs_and_a_failed_run_does_not_move_it() {
    let (app, time) = manual(&[("c.yaml", COUNTER)], None).await;
    assert_eq!(saved_state(&app, "counter").await["state"], Value::Null);
    let mut expected_seen = 0;
    for minute in 1..=4 {
        time.advance(MIN);
        let id = tick_id("counter", "minute", at(minute));
        ticks(&app, "counter", minute as usize).await;
        let run = app.wait_run(&id).await;
        if minute == 3 {
            assert_eq!(run["status"], "failed", "{run}");
            assert_eq!(run["state"], json!({"count": 2, "last": at(2).to_string()}));
            continue;
        }
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["final_output"], json!({"seen": expected_seen}));
        expected_seen += 1;
        let body = saved_state(&app, "counter").await;
        assert_eq!(
            body["state"],
            json!({"count": expected_seen, "last": at(minute).to_string()})
        );
        assert_eq!(body["saved_by_run"], json!(id));
    }
    assert_eq!(expected_seen, 3, "three successful runs");
    app.stop().await;
}

#[tokio::test]
async fn the_state_can_be_read_and_reset_through_the_api() {
    let (app, time) = manual(&[("c.yaml", COUNTER)], None).await;
    let resp = app
        .client
        .put(app.url("/v1/workflows/counter/state"))
        .json(&json!({"count": 41}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::OK);
    time.advance(MIN);
    ticks(&app, "counter", 1).await;
    let run = app.wait_run(&tick_id("counter", "minute", at(1))).await;
    assert_eq!(run["final_output"], json!({"seen": 41}));
    assert_eq!(saved_state(&app, "counter").await["state"]["count"], 42);

    let bad = app
        .client
        .put(app.url("/v1/workflows/counter/state"))
        .body("{not json")
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        saved_state(&app, "counter").await["state"]["count"],
        42,
        "nothing changed"
    );
    let (status, _) = app.get("/v1/workflows/nope/state").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

const BIG_STATE: &str = r#"
id: big
triggers:
  - { type: cron, id: minute, schedule: "* * * * *" }
steps:
  - { id: make, type: transform, value: { state: { blob: "{{ 'x' * (trigger.scheduled_time[15:16] | int * 100) }}" } } }
"#;

#[tokio::test]
async fn a_state_over_the_limit_is_not_saved_and_the_run_says_so() {
    let config = tripline_app::Config {
        state_limit_bytes: 450,
        ..Opts::default().config
    };
    let (app, time) = manual(&[("b.yaml", BIG_STATE)], Some(config)).await;
    // 00:01 leaves 111 bytes of JSON: saved.
    time.advance(MIN);
    ticks(&app, "big", 1).await;
    let first = app.wait_run(&tick_id("big", "minute", at(1))).await;
    assert_eq!(first["status"], "succeeded");
    assert!(first.get("warnings").is_none(), "{first}");
    let saved = saved_state(&app, "big").await;
    assert_eq!(saved["state"]["blob"].as_str().map(str::len), Some(100));
    assert_eq!(saved["limit_bytes"], 450);
    // 00:05 leaves 511 bytes of JSON: over the limit, not saved.
    for minute in 2..=5 {
        time.advance(MIN);
        ticks(&app, "big", minute).await;
        app.wait_run(&tick_id("big", "minute", at(minute as i64)))
            .await;
    }
    let run = app.wait_run(&tick_id("big", "minute", at(5))).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let warning = run["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("over the limit of 450"), "{run}");
    let saved = saved_state(&app, "big").await;
    assert_eq!(
        saved["state"]["blob"].as_str().map(str::len),
        Some(400),
        "00:04's state is kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn run_now_starts_a_run_of_the_cron_trigger_with_the_current_state() {
    let (app, _time) = manual(&[("c.yaml", COUNTER)], None).await;
    let resp = app
        .client
        .put(app.url("/v1/workflows/counter/state"))
        .json(&json!({"count": 7}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, _, body) = app
        .post_json(
            "/v1/workflows/counter/runs?trigger=minute",
            &json!({"why": "backfill"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.wait_run(body["run_id"].as_str().expect("run id")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"]["kind"], "cron");
    assert_eq!(run["trigger_input"]["run_now"], true);
    assert_eq!(run["trigger_input"]["body"], json!({"why": "backfill"}));
    assert_eq!(run["final_output"], json!({"seen": 7}));
    assert_eq!(saved_state(&app, "counter").await["state"]["count"], 8);
    let t = ticks(&app, "counter", 1).await;
    assert_eq!(t[0]["run_now"], true);

    // Without `?trigger=`, a workflow with no manual trigger says how to run it now.
    let (status, _, body) = app
        .post_json("/v1/workflows/counter/runs", &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("?trigger=minute"),
        "{body}"
    );
    let (status, _, _) = app
        .post_json("/v1/workflows/counter/runs?trigger=nope", &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_cron_expression_or_time_zone_is_refused_at_deploy_with_the_fix() {
    let (app, _time) = manual(&[], None).await;
    let (status, body) = app
        .deploy(
            "bad",
            r#"
id: bad
triggers:
  - { type: cron, schedule: "61 * * * *" }
  - { type: cron, id: other, schedule: "@daily", timezone: Mars/Olympus }
steps: [{ id: a, type: transform, value: 1 }]
"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let problems = body["problems"].to_string();
    assert!(problems.contains("triggers[0].schedule"), "{problems}");
    assert!(problems.contains("triggers[1].timezone"), "{problems}");
    assert!(problems.contains("IANA"), "{problems}");
    app.stop().await;
}

const EVERY_MINUTE_NO_CATCH_UP: &str = r#"
id: minutely
triggers:
  - { type: cron, id: minute, schedule: "0 * * * * *" }
steps:
  - { id: a, type: transform, value: 1 }
"#;

#[tokio::test]
async fn a_long_downtime_records_a_bounded_number_of_missed_ticks() {
    let (mut app, mut time) = manual(&[("m.yaml", EVERY_MINUTE_NO_CATCH_UP)], None).await;
    if let Some(s) = app.server.take() {
        s.stop().await;
    }
    // 30 days and 30 seconds: 43,200 ticks came due; the last one, 30 s ago, is on time.
    time.pass(Duration::from_secs(30 * 24 * 3600 + 30));
    let started = std::time::Instant::now();
    app.restart_manual(&mut time).await;
    let t = ticks(&app, "minutely", 101).await;
    settle().await;
    let (_, body) = app.get("/v1/workflows/minutely/ticks?limit=500").await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(101), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(t[100]["outcome"], "fired");
    assert_eq!(t[100]["scheduled_time"], json!(at(30 * 24 * 60)));
    assert!(t[..100].iter().all(|x| x["outcome"] == "missed"));
    assert!(
        t[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("earlier tick(s) came due too"),
        "{}",
        t[0]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_changed_schedule_starts_from_its_deploy_without_missed_ticks_of_the_new_one() {
    let (app, time) = manual(&[("h.yaml", &hourly("none"))], None).await;
    time.advance(60 * MIN);
    ticks(&app, "hourly_none", 1).await;
    time.advance(30 * MIN);
    let (status, body) = app
        .deploy(
            "hourly_none",
            r#"
id: hourly_none
triggers:
  - { type: cron, id: hourly, schedule: "*/10 * * * *" }
steps:
  - { id: stamp, type: transform, value: "{{ trigger.scheduled_time }}" }
"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    time.advance(10 * MIN);
    let t = ticks(&app, "hourly_none", 2).await;
    settle().await;
    let t2 = ticks(&app, "hourly_none", 2).await;
    assert_eq!(t.len(), t2.len());
    assert_eq!(outcomes(&t2), ["fired", "fired"], "{t2:?}");
    assert_eq!(t2[1]["scheduled_time"], json!(at(100)));
    app.stop().await;
}

#[tokio::test]
async fn a_removed_workflow_stops_ticking_and_deploying_it_again_restores_it() {
    let (app, time) = manual(&[("w.yaml", EVERY_5)], None).await;
    time.advance(5 * MIN);
    ticks(&app, "every5", 1).await;
    let resp = app
        .client
        .delete(app.url("/v1/workflows/every5"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, body) = app.get("/v1/workflows/every5").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("was removed"),
        "{body}"
    );
    let (_, list) = app.get("/v1/workflows").await;
    assert_eq!(list["items"], json!([]));
    let again = app
        .client
        .delete(app.url("/v1/workflows/every5"))
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    // Ten minutes pass: nothing ticks; the run of the removed workflow is still readable.
    time.advance(10 * MIN);
    settle().await;
    let t = ticks(&app, "every5", 1).await;
    assert_eq!(t.len(), 1, "{t:?}");
    let (status, _) = app
        .get(&format!("/v1/runs/{}", tick_id("every5", "five", at(5))))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Deployed again: it ticks from its new deploy on.
    let (status, body) = app.deploy("every5", EVERY_5).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["revision"], 3);
    time.advance(5 * MIN);
    let t = ticks(&app, "every5", 2).await;
    assert_eq!(outcomes(&t), ["fired", "fired"]);
    assert_eq!(t[1]["scheduled_time"], json!(at(20)));
    app.stop().await;
}

#[tokio::test]
async fn a_switched_off_cron_trigger_records_its_ticks_skipped_and_refuses_run_now() {
    let (app, time) = manual(&[("w.yaml", EVERY_5)], None).await;
    let (status, body) = app
        .post_with("/v1/workflows/every5/triggers/five/disable", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["triggers"][0]["enabled"], false, "{body}");
    time.advance(5 * MIN);
    let t = ticks(&app, "every5", 1).await;
    assert_eq!(outcomes(&t), ["skipped"]);
    assert!(t[0]["reason"].to_string().contains("switched off"), "{t:?}");
    let (status, body) = app
        .post_with("/v1/workflows/every5/runs?trigger=five", &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("trigger_disabled")),
        "{body}"
    );

    let (status, _) = app
        .post_with("/v1/workflows/every5/triggers/five/enable", &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    time.advance(5 * MIN);
    let t = ticks(&app, "every5", 2).await;
    assert_eq!(outcomes(&t), ["skipped", "fired"]);
    app.stop().await;
}
