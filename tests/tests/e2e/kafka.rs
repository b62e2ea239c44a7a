//! Kafka intake in the local shape's server (the use case a consumer hands its records to):
//! records in the inbox before anything is acknowledged, deterministic ids, filters,
//! undecodable values kept raw, redelivery harmless, and `ordering: key`.

use std::time::Duration;

use serde_json::{Value, json};
use tripline_app::intake::kafka::record_id;
use tripline_app::ports::KafkaRecord;
use tripline_core::Timestamp;
use tripline_tests::{Opts, Reply, Stub, TestApp, spawn_app};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn record(topic: &str, partition: i32, offset: i64, key: &str, value: &[u8]) -> KafkaRecord {
    KafkaRecord {
        topic: topic.into(),
        partition,
        offset,
        timestamp: Timestamp(T0.0 + offset),
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.to_vec()),
        headers: vec![("source".into(), b"tests".to_vec())],
        source: None,
    }
}

const ORDERS: &str = r#"
id: orders
triggers:
  - type: kafka
    topics: [orders]
    filter: { body: { type: created } }
steps:
  - { id: shape, type: transform, value: { id: "{{ trigger.body.id }}", key: "{{ trigger.key }}", at: "{{ trigger.topic }}/{{ trigger.partition }}/{{ trigger.offset }}", source: "{{ trigger.headers.source }}" } }
"#;

async fn message(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/inbox/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn records_are_kept_before_acknowledgement_and_start_one_run_each_however_often_delivered() {
    let app = spawn_app(Opts::default().workflow("o.yaml", ORDERS)).await;
    let core = app.app();
    let batch = vec![
        record("orders", 0, 10, "c-1", br#"{"type": "created", "id": "A"}"#),
        record("orders", 0, 11, "c-1", br#"{"type": "deleted", "id": "A"}"#),
        record("orders", 1, 5, "c-2", &[0xc3, 0x28, 0xff]),
        record("elsewhere", 0, 1, "x", b"{}"),
    ];
    let report = core.kafka_intake(batch.clone()).await.expect("intake");
    assert_eq!(
        (report.recorded, report.runs_started, report.already),
        (4, 1, 0)
    );

    let started = record_id(&batch[0], "orders");
    let run = app.wait_run(&started).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], json!({"kind": "kafka", "id": "kafka"}));
    assert_eq!(
        run["final_output"],
        json!({"id": "A", "key": "c-1", "at": "orders/0/10", "source": "tests"})
    );
    assert_eq!(message(&app, &started).await["outcome"]["kind"], "started");

    let filtered = message(&app, &record_id(&batch[1], "orders")).await;
    assert_eq!(filtered["outcome"]["kind"], "filtered");
    assert!(
        filtered["outcome"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("body.type"),
        "{filtered}"
    );
    let raw = message(&app, &record_id(&batch[2], "orders")).await;
    assert_eq!(raw["outcome"]["kind"], "rejected");
    assert_eq!(raw["body_base64"], "wyj/", "the raw bytes are kept: {raw}");
    let nobody = message(&app, &record_id(&batch[3], "")).await;
    assert!(
        nobody["outcome"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no deployed kafka trigger consumes topic `elsewhere`"),
        "{nobody}"
    );

    // The same batch again (the consumer crashed before committing): nothing new.
    let again = core.kafka_intake(batch).await.expect("intake again");
    assert_eq!(
        (again.recorded, again.runs_started, again.already),
        (0, 0, 4)
    );
    let (_, runs) = app.get("/v1/runs?workflow=orders").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1), "{runs}");
    app.stop().await;
}

fn ordered(stub: &Stub) -> String {
    format!(
        r#"
id: ordered
triggers:
  - {{ type: kafka, topics: [payments], ordering: key }}
steps:
  - {{ id: post, type: http, method: POST, url: "{}/pay", body: {{ key: "{{{{ trigger.key }}}}", offset: "{{{{ trigger.offset }}}}" }} }}
"#,
        stub.url
    )
}

#[tokio::test]
async fn ordering_by_key_runs_one_key_at_a_time_in_offset_order_and_keys_in_parallel() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(60)));
    let app = spawn_app(Opts::default().workflow("p.yaml", &ordered(&stub))).await;
    let core = app.app();
    // Three keys on three partitions, four records each, in one burst.
    let mut batch = Vec::new();
    for i in 0..4 {
        for (p, key) in ["k-a", "k-b", "k-c"].iter().enumerate() {
            batch.push(record("payments", p as i32, 100 + i, key, b"{}"));
        }
    }
    core.kafka_intake(batch.clone()).await.expect("intake");
    let mut runs = Vec::new();
    for r in &batch {
        runs.push((r.clone(), app.wait_run(&record_id(r, "ordered")).await));
    }
    let reqs = stub.wait_for(12).await;
    for key in ["k-a", "k-b", "k-c"] {
        let offsets: Vec<i64> = reqs
            .iter()
            .filter(|r| r.body["key"] == key)
            .map(|r| r.body["offset"].as_i64().expect("offset"))
            .collect();
        assert_eq!(offsets, vec![100, 101, 102, 103], "{key} in offset order");
        let mut of_key: Vec<&Value> = runs
            .iter()
            .filter(|(r, _)| r.key.as_deref() == Some(key.as_bytes()))
            .map(|(_, run)| run)
            .collect();
        of_key.sort_by_key(|run| run["trigger_input"]["offset"].as_i64());
        for pair in of_key.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(a["status"], "succeeded");
            let ended =
                Timestamp::parse_rfc3339(a["finished_at"].as_str().expect("end")).expect("t");
            let began =
                Timestamp::parse_rfc3339(b["started_at"].as_str().expect("start")).expect("t");
            assert!(
                began >= ended,
                "{key}: a run started before the previous one ended"
            );
        }
    }
    assert!(
        stub.max_in_flight() >= 2,
        "different keys run at once (max in flight {})",
        stub.max_in_flight()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_filtered_record_is_reprocessed_after_the_workflow_is_fixed() {
    let app = spawn_app(Opts::default().workflow("o.yaml", ORDERS)).await;
    let core = app.app();
    let r = record("orders", 4, 99, "c-9", br#"{"type": "updated", "id": "Z"}"#);
    core.kafka_intake(vec![r.clone()]).await.expect("intake");
    let first = record_id(&r, "orders");
    assert_eq!(message(&app, &first).await["outcome"]["kind"], "filtered");

    let (status, _) = app
        .deploy("orders", &ORDERS.replace("type: created", "type: updated"))
        .await;
    assert_eq!(status, 201);
    let (status, _, body) = app
        .post_json(&format!("/v1/inbox/{first}/reprocess"), &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["reprocess_of"], json!(first));
    let run = app.wait_run(body["run_id"].as_str().expect("run")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["final_output"],
        json!({"id": "Z", "key": "c-9", "at": "orders/4/99", "source": "tests"}),
        "the record as received: coordinates, key and headers"
    );
    let copy = message(&app, body["message_id"].as_str().expect("message")).await;
    assert_eq!(copy["reprocess_of"], json!(first));
    assert_eq!(copy["outcome"]["kind"], "started");

    let (status, _, _) = app
        .post_json("/v1/inbox/01NOSUCHMESSAGE0000000000/reprocess", &json!({}))
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}
