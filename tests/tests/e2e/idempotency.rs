//! Idempotency keys on every kind of trigger (an `idempotency_key` template, the
//! `Idempotency-Key` header of webhooks and of the manual-run API): a second input with the
//! same key starts nothing and answers with the first run. And conditions on the triggers
//! that had none (manual, cron).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_app::ports::KafkaRecord;
use tripline_core::Timestamp;
use tripline_tests::*;

const HOOK: &str = r#"
id: keyed
triggers:
  - type: webhook
    id: hook
    token: idempotency-hook-token-0001
    idempotency_key: "order-{{ trigger.body.order_id }}"
  - type: manual
    idempotency_key: "{{ trigger.body.order_id }}"
    condition: "trigger.body.order_id is defined"
steps:
  - { id: a, type: transform, value: "{{ trigger.body.order_id }}" }
"#;

/// A workflow's ticks once there are at least `n`.
async fn ticks(app: &TestApp, workflow: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = app.get(&format!("/v1/workflows/{workflow}/ticks")).await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(app: &TestApp, path: &str, body: Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = app.client.post(app.url(path)).json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let (status, _, body) = read(req.send().await.expect("post")).await;
    (status, body)
}

#[tokio::test]
async fn a_webhook_key_template_maps_a_repeated_input_to_its_first_run() {
    let app = spawn_app(Opts::default().workflow("k.yaml", HOOK)).await;
    let hook = "/hooks/idempotency-hook-token-0001";
    let (s1, first) = post(&app, hook, json!({"order_id": 7, "try": 1}), None).await;
    let (s2, second) = post(&app, hook, json!({"order_id": 7, "try": 2}), None).await;
    let (_, other) = post(&app, hook, json!({"order_id": 8}), None).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["run_id"], second["run_id"], "{first} {second}");
    assert_ne!(first["run_id"], other["run_id"]);
    let (_, runs) = app.get("/v1/runs?workflow=keyed").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(2), "{runs}");
    let (_, dups) = app.get("/v1/inbox?workflow=keyed&outcome=duplicate").await;
    assert_eq!(dups["items"].as_array().map(Vec::len), Some(1), "{dups}");

    // The template wins over the header; an input it cannot render is refused and kept.
    let (_, third) = post(&app, hook, json!({"order_id": 7}), Some("something-else")).await;
    assert_eq!(third["run_id"], first["run_id"]);
    let (status, body) = post(&app, hook, json!({"no_order": true}), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|m| m.contains("idempotency_key")),
        "{body}"
    );
    let (_, rejected) = app.get("/v1/inbox?workflow=keyed&outcome=rejected").await;
    assert_eq!(
        rejected["items"].as_array().map(Vec::len),
        Some(1),
        "{rejected}"
    );
    app.stop().await;
}

#[tokio::test]
async fn manual_runs_take_the_header_or_the_template_and_their_condition() {
    let app = spawn_app(Opts::default().workflow("k.yaml", HOOK).workflow(
        "p.yaml",
        "id: plain\ntriggers: [{type: manual}]\nsteps: [{id: a, type: transform, value: 1}]\n",
    ))
    .await;
    // The manual-run API's header, on a trigger without a template.
    let (s, a) = post(&app, "/v1/workflows/plain/runs", json!({}), Some("k-1")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    let (_, b) = post(&app, "/v1/workflows/plain/runs", json!({}), Some("k-1")).await;
    let (_, c) = post(&app, "/v1/workflows/plain/runs", json!({}), Some("k-2")).await;
    assert_eq!(a["run_id"], b["run_id"]);
    assert_ne!(a["run_id"], c["run_id"]);
    // The trigger's template.
    let (_, a) = post(
        &app,
        "/v1/workflows/keyed/runs",
        json!({"order_id": 1}),
        None,
    )
    .await;
    let (_, b) = post(
        &app,
        "/v1/workflows/keyed/runs",
        json!({"order_id": 1}),
        None,
    )
    .await;
    assert_eq!(a["run_id"], b["run_id"]);
    // The manual trigger's condition: refused with the reason, kept in the inbox.
    let (status, body) = post(&app, "/v1/workflows/keyed/runs", json!({"x": 1}), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|m| m.contains("is false")),
        "{body}"
    );
    let (_, filtered) = app.get("/v1/inbox?workflow=keyed&outcome=filtered").await;
    assert_eq!(
        filtered["items"].as_array().map(Vec::len),
        Some(1),
        "{filtered}"
    );
    app.stop().await;
}

#[tokio::test]
async fn kafka_records_with_the_same_key_start_one_run() {
    let app = spawn_app(Opts::default().workflow(
        "k.yaml",
        "id: events\ntriggers: [{type: kafka, topics: [events], idempotency_key: '{{ trigger.body.event_id }}'}]\nsteps: [{id: a, type: transform, value: '{{ trigger.offset }}'}]\n",
    ))
    .await;
    let rec = |offset: i64, event: &str| KafkaRecord {
        topic: "events".into(),
        partition: 0,
        offset,
        timestamp: Timestamp(1_800_000_000_000 + offset),
        key: None,
        value: Some(json!({"event_id": event}).to_string().into_bytes()),
        headers: vec![],
        source: None,
    };
    // The producer sent event e-1 twice (at offsets 1 and 3).
    let report = app
        .app()
        .kafka_intake(vec![rec(1, "e-1"), rec(2, "e-2"), rec(3, "e-1")])
        .await
        .expect("intake");
    assert_eq!((report.recorded, report.runs_started), (3, 2));
    let (_, runs) = app.get("/v1/runs?workflow=events").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(2), "{runs}");
    let (_, inbox) = app.get("/v1/inbox?workflow=events&outcome=duplicate").await;
    assert_eq!(inbox["items"].as_array().map(Vec::len), Some(1), "{inbox}");
    app.stop().await;
}

#[tokio::test]
async fn flow_runs_with_the_same_key_start_once() {
    let app = spawn_app(
        Opts::default()
            .workflow(
                "s.yaml",
                "id: source\ntriggers: [{type: manual}]\nsteps: [{id: a, type: transform, value: {order: '{{ trigger.body.order }}'}}]\n",
            )
            .workflow(
                "f.yaml",
                "id: once-per-order\ntriggers: [{type: flow, workflow: source, idempotency_key: '{{ trigger.body.order }}'}]\nsteps: [{id: a, type: transform, value: '{{ trigger.body.order }}'}]\n",
            ),
    )
    .await;
    let mut parents = Vec::new();
    for order in ["A", "A", "B"] {
        let (_, r) = post(
            &app,
            "/v1/workflows/source/runs",
            json!({"order": order}),
            None,
        )
        .await;
        parents.push(app.wait_run(r["run_id"].as_str().expect("id")).await);
    }
    assert_eq!(
        parents[0]["children"], parents[1]["children"],
        "the second A gets the first's run"
    );
    assert_ne!(parents[0]["children"], parents[2]["children"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, runs) = app.get("/v1/runs?workflow=once-per-order").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(2), "{runs}");
    app.stop().await;
}

#[tokio::test]
async fn a_cron_condition_skips_the_ticks_it_refuses_and_says_why() {
    // 2026-03-01T00:00:00Z; every minute; only even minutes run.
    let start = Timestamp(1_772_323_200_000);
    let (app, time) = spawn_app_with_manual_clock(
        Opts {
            clock_start: Some(start),
            ..Opts::default()
        }
        .workflow(
            "c.yaml",
            "id: even\ntriggers: [{type: cron, schedule: '* * * * *', condition: \"(trigger.scheduled_time[14:16] | int) % 2 == 0\"}]\nsteps: [{id: a, type: transform, value: 1}]\n",
        ),
    )
    .await;
    for _ in 0..4 {
        time.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = ticks(&app, "even", 4).await;
    let mut seen: Vec<(String, String)> = items
        .iter()
        .map(|t| {
            (
                t["scheduled_time"].as_str().unwrap_or_default()[14..16].to_string(),
                t["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("01".into(), "skipped".into()),
            ("02".into(), "fired".into()),
            ("03".into(), "skipped".into()),
            ("04".into(), "fired".into()),
        ]
    );
    let skipped = items
        .iter()
        .find(|t| t["outcome"] == "skipped")
        .expect("one");
    assert!(
        skipped["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is false")),
        "{skipped}"
    );
    app.stop().await;
}

const SIGNED: &str = r#"
id: signed
triggers:
  - type: webhook
    token: standard-webhooks-token-0001
    auth:
      type: standard_webhooks
      secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24xMjM=]
steps:
  - { id: a, type: transform, value: "{{ trigger.body.n }}" }
"#;

async fn post_signed(
    app: &TestApp,
    secret: &str,
    id: &str,
    ts: i64,
    body: &str,
    tamper: bool,
) -> (StatusCode, Value) {
    let headers = tripline_app::signing::headers(secret, id, ts, body.as_bytes()).expect("secret");
    let mut req = app
        .client
        .post(app.url("/hooks/standard-webhooks-token-0001"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let body = if tamper {
        body.replace('1', "2")
    } else {
        body.to_string()
    };
    let (status, _, resp) = read(req.body(body).send().await.expect("post")).await;
    (status, resp)
}

#[tokio::test]
async fn a_standard_webhooks_signature_is_verified_and_its_id_is_the_key() {
    let app = spawn_app(Opts::default().workflow("s.yaml", SIGNED)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let first_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rotated = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24xMjM=";
    let (s1, a) = post_signed(&app, first_secret, "msg_1", now, r#"{"n": 1}"#, false).await;
    assert_eq!(s1, StatusCode::ACCEPTED, "{a}");
    // The sender's retry of msg_1 (a new timestamp, signed again) is the same message.
    let (_, b) = post_signed(&app, first_secret, "msg_1", now + 3, r#"{"n": 1}"#, false).await;
    assert_eq!(a["run_id"], b["run_id"]);
    // The second secret of a rotation is valid too.
    let (s2, c) = post_signed(&app, rotated, "msg_2", now, r#"{"n": 2}"#, false).await;
    assert_eq!(s2, StatusCode::ACCEPTED, "{c}");
    assert_ne!(a["run_id"], c["run_id"]);
    // A changed body, an unknown secret, a replay from an hour ago: refused, saying why.
    let (s, e) = post_signed(&app, first_secret, "msg_3", now, r#"{"n": 1}"#, true).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(e.to_string().contains("does not match"), "{e}");
    let other = "whsec_b3RoZXItc2VjcmV0LW5vdC1vbi10aGUtdHJpZ2dlcg==";
    let (s, _) = post_signed(&app, other, "msg_4", now, r#"{"n": 1}"#, false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, e) = post_signed(
        &app,
        first_secret,
        "msg_5",
        now - 3600,
        r#"{"n": 1}"#,
        false,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(e.to_string().contains("tolerance"), "{e}");
    let (status, _, e) = app
        .post_json("/hooks/standard-webhooks-token-0001", &json!({"n": 1}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e.to_string().contains("webhook-signature"), "{e}");
    let (_, runs) = app.get("/v1/runs?workflow=signed").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(2), "{runs}");
    app.stop().await;
}

#[tokio::test]
async fn calendar_helpers_keep_a_schedule_to_paris_business_hours_on_weekdays() {
    // Monday 2026-03-02, 06:30 UTC = 07:30 in Paris (winter time, UTC+1).
    let start = Timestamp::parse_rfc3339("2026-03-02T06:30:00Z").expect("time");
    let (app, time) = spawn_app_with_manual_clock(
        Opts {
            clock_start: Some(start),
            ..Opts::default()
        }
        .workflow(
            "c.yaml",
            r#"
id: office
triggers:
  - type: cron
    schedule: "0 * * * *"
    condition: "is_weekday(trigger.scheduled_time, 'Europe/Paris') and in_time_window(trigger.scheduled_time, '09:00', '11:00', 'Europe/Paris')"
steps:
  - { id: a, type: transform, value: "{{ weekday(trigger.scheduled_time, 'Europe/Paris') }} {{ local_time(trigger.scheduled_time, 'Europe/Paris') }}" }
"#,
        ),
    )
    .await;
    // To each hour exactly (a tick more than 60 s late would be a missed one).
    time.advance(Duration::from_secs(1800));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..4 {
        time.advance(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = ticks(&app, "office", 5).await;
    let mut fired: Vec<String> = Vec::new();
    for t in items.iter().filter(|t| t["outcome"] == "fired") {
        let run = app.wait_run(t["run_id"].as_str().expect("run")).await;
        fired.push(run["final_output"].as_str().unwrap_or_default().to_string());
    }
    fired.sort();
    assert_eq!(fired, vec!["monday 09:00", "monday 10:00"], "{items:?}");
    assert_eq!(
        items.iter().filter(|t| t["outcome"] == "skipped").count(),
        3
    );
    app.stop().await;
}

#[tokio::test]
async fn a_cron_key_template_makes_the_ticks_of_one_day_one_run() {
    let start = Timestamp::parse_rfc3339("2026-03-02T06:00:00Z").expect("time");
    let (app, time) = spawn_app_with_manual_clock(
        Opts {
            clock_start: Some(start),
            ..Opts::default()
        }
        .workflow(
            "d.yaml",
            "id: daily\ntriggers: [{type: cron, schedule: '*/30 * * * *', idempotency_key: \"{{ local_date(trigger.scheduled_time, 'Europe/Paris') }}\"}]\nsteps: [{id: a, type: transform, value: 1}]\n",
        ),
    )
    .await;
    for _ in 0..3 {
        time.advance(Duration::from_secs(1800));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = ticks(&app, "daily", 3).await;
    let mut outcomes: Vec<String> = items
        .iter()
        .map(|t| t["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["duplicate", "duplicate", "fired"], "{items:?}");
    let (_, runs) = app.get("/v1/runs?workflow=daily").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1), "{runs}");
    app.stop().await;
}
