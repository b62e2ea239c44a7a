//! The port conformance suite against the AWS adapters (DynamoDB, SQS, S3), on the
//! AWS-protocol server that `tests/run` starts; plus what only the AWS adapters have: S3
//! offload and TTL attributes.

use std::sync::Arc;
use std::time::Duration;

use tripline_app::ports::{Admission, IdempotencyClaim, ManualClock, Store};
use tripline_aws::provision::IDEMPOTENCY;
use tripline_aws::{DynamoStore, SqsQueue};
use tripline_tests::aws::fresh;
use tripline_tests::conformance::{Ports, T0};

async fn aws() -> (Ports, ()) {
    let (clients, settings) = fresh(None).await;
    let clock = Arc::new(ManualClock::new(T0));
    let ticker = clock.clone();
    let ports = Ports {
        store: Arc::new(DynamoStore::new(&clients, settings.clone())),
        queue: Arc::new(SqsQueue::new(clients.sqs.clone(), settings.queue_url)),
        clock,
        advance: Box::new(move |d| {
            ticker.advance(d);
            Box::pin(tokio::time::sleep(d))
        }),
    };
    (ports, ())
}

tripline_tests::conformance_suite!(aws);

fn message(id: &str, body: Vec<u8>) -> tripline_app::ports::InboxMessage {
    tripline_app::ports::InboxMessage {
        id: id.into(),
        received_at: T0,
        workflow: "wf".into(),
        trigger: "hook".into(),
        method: "POST".into(),
        path: "/hooks/x".into(),
        query: String::new(),
        headers: vec![],
        content_type: None,
        body,
        outcome: tripline_app::ports::Outcome::Filtered {
            reason: "test".into(),
        },
        scheduled_at: None,
        kafka: None,
        reprocess_of: None,
        retain: None,
    }
}

#[tokio::test]
async fn bodies_over_the_item_budget_live_in_s3_and_small_ones_do_not() {
    let (clients, mut settings) = fresh(None).await;
    settings.item_budget = 1000;
    let store = DynamoStore::new(&clients, settings.clone());
    for (id, size) in [("small", 999usize), ("large", 1001)] {
        store
            .admit(Admission {
                message: message(id, vec![7u8; size]),
                runs: vec![],
                idempotency: None,
            })
            .await
            .expect("admit");
        let back = store.message(id).await.expect("read").expect("message");
        assert_eq!(back.body.len(), size);
    }
    let objects = clients
        .s3
        .list_objects_v2()
        .bucket(&settings.bucket)
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec!["inbox/large"]);
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&settings.inbox_table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("large".into()),
        )
        .send()
        .await
        .expect("get")
        .item
        .expect("item");
    assert!(
        !item.contains_key("body"),
        "the item keeps only the reference"
    );
    assert!(item.contains_key("blob"));
}

#[tokio::test]
async fn an_idempotency_claim_carries_a_ttl_in_seconds_and_the_table_expires_it() {
    let (clients, settings) = fresh(None).await;
    let store = DynamoStore::new(&clients, settings.clone());
    let expires_at = T0.plus(Duration::from_secs(86_400));
    let run = tripline_core::Run::new(
        "r1".into(),
        "wf",
        1,
        tripline_core::run::TriggerRef {
            kind: tripline_core::run::TriggerKind::Webhook,
            id: "hook".into(),
        },
        serde_json::json!({}),
        T0,
    );
    store
        .admit(Admission {
            message: message("m1", vec![]),
            runs: vec![run],
            idempotency: Some(IdempotencyClaim {
                key: "wf/hook/abc".into(),
                expires_at,
            }),
        })
        .await
        .expect("admit");
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&settings.idempotency_table)
        .key(
            "key",
            aws_sdk_dynamodb::types::AttributeValue::S("wf/hook/abc".into()),
        )
        .send()
        .await
        .expect("get")
        .item
        .expect("claim");
    let ttl: i64 = item["ttl"].as_n().expect("number").parse().expect("int");
    assert_eq!(ttl, expires_at.millis() / 1000 + 1, "seconds, after expiry");
    let described = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(&settings.idempotency_table)
        .send()
        .await
        .expect("describe");
    let spec = described.time_to_live_description().expect("ttl");
    assert_eq!(spec.attribute_name(), IDEMPOTENCY.ttl);
    assert_eq!(
        spec.time_to_live_status(),
        Some(&aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled)
    );
}

#[tokio::test]
async fn the_call_counter_counts_every_request_by_service_and_operation() {
    let counter = tripline_aws::CallCounter::default();
    let (_, settings) = fresh(None).await;
    let clients = tripline_aws::Clients::for_endpoint(
        &tripline_tests::aws::endpoint(),
        Some(counter.clone()),
    );
    let store = DynamoStore::new(&clients, settings.clone());
    let queue = SqsQueue::new(clients.sqs.clone(), settings.queue_url.clone());
    assert!(store.run("nope").await.expect("read").is_none());
    tripline_app::ports::Queue::send(
        &queue,
        &tripline_app::ports::WorkItem::run("r"),
        Duration::ZERO,
    )
    .await
    .expect("send");
    let counts = counter.snapshot();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![
            ("DynamoDB.GetItem".to_string(), 1),
            ("SQS.SendMessage".to_string(), 1)
        ]
    );
}

#[tokio::test]
async fn a_long_run_record_is_stored_deflated_and_reads_back_the_same() {
    let (clients, settings) = fresh(None).await;
    let store = DynamoStore::new(&clients, settings.clone());
    let mut run = tripline_core::Run::new(
        "long".into(),
        "wf",
        1,
        tripline_core::run::TriggerRef {
            kind: tripline_core::run::TriggerKind::Webhook,
            id: "hook".into(),
        },
        serde_json::json!({"body": {"lines": vec!["the same line, again and again"; 100]}}),
        T0,
    );
    store
        .admit(Admission {
            message: message("ml", vec![]),
            runs: vec![run.clone()],
            idempotency: None,
        })
        .await
        .expect("admit");
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&settings.runs_table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("long".into()),
        )
        .send()
        .await
        .expect("get")
        .item
        .expect("item");
    let stored = item["z"].as_b().expect("deflated").as_ref().len();
    let json = serde_json::to_string(&run).expect("json").len();
    assert!(!item.contains_key("doc"));
    assert!(
        stored * 4 < json,
        "{stored} bytes stored for {json} bytes of JSON"
    );
    assert_eq!(store.run("long").await.expect("read"), Some(run.clone()));
    run.status = tripline_core::RunStatus::Running;
    let saved = store.save_run(&run).await.expect("save");
    assert_eq!(store.run("long").await.expect("read"), Some(saved));
}
