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
use tripline_tests::stream::RunsStream;

async fn aws() -> (Ports, ()) {
    let (clients, settings) = fresh(None).await;
    let clock = Arc::new(ManualClock::new(T0));
    let ticker = clock.clone();
    let store = DynamoStore::new(&clients, settings.clone());
    let stream = Arc::new(RunsStream::new(&clients, &settings).await);
    let indexer = store.clone();
    let ports = Ports {
        store: Arc::new(store),
        queue: Arc::new(SqsQueue::new(clients.sqs.clone(), settings.queue_url)),
        clock,
        advance: Box::new(move |d| {
            ticker.advance(d);
            Box::pin(tokio::time::sleep(d))
        }),
        index: Box::new(move || {
            let (stream, store) = (stream.clone(), indexer.clone());
            Box::pin(async move {
                stream.index_with(&store).await;
            })
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

/// A queued run of workflow `wf` at `T0`, with an empty input.
fn run(id: &str, kind: tripline_core::run::TriggerKind, trigger: &str) -> tripline_core::Run {
    let trigger = tripline_core::run::TriggerRef {
        kind,
        id: trigger.into(),
    };
    tripline_core::Run::new(id.into(), "wf", 1, trigger, serde_json::json!({}), T0)
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
    let run = run("r1", tripline_core::run::TriggerKind::Webhook, "hook");
    store
        .admit(Admission {
            message: message("m1", vec![]),
            runs: vec![run],
            idempotency: Some(IdempotencyClaim {
                key: "wf/hook/abc".into(),
                expires_at,
                held_by_message: false,
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

async fn item_of(
    clients: &tripline_aws::Clients,
    table: &str,
    id: &str,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    maybe_item_of(clients, table, id).await.expect("item")
}

async fn maybe_item_of(
    clients: &tripline_aws::Clients,
    table: &str,
    id: &str,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let out = clients
        .dynamodb
        .get_item()
        .table_name(table)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.into()))
        .send()
        .await;
    out.expect("get").item
}

fn expires(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Option<i64> {
    item.get("expires")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn with_retention_ended_runs_and_messages_expire_and_read_as_gone_once_past_it() {
    let (clients, mut settings) = fresh(None).await;
    let ten_years = Duration::from_secs(3650 * 86_400);
    settings.retention = Some(ten_years);
    settings.item_budget = 1000;
    let store = DynamoStore::new(&clients, settings.clone());
    let mut run = tripline_core::Run::new(
        "r-exp".into(),
        "wf",
        1,
        tripline_core::run::TriggerRef {
            kind: tripline_core::run::TriggerKind::Webhook,
            id: "hook".into(),
        },
        // Text that does not deflate: the record goes to S3.
        serde_json::json!({"pad": (0..200).map(|_| tripline_app::tokens::new_token()).collect::<String>()}),
        T0,
    );
    store
        .admit(Admission {
            message: message("m-exp", vec![1u8; 2000]),
            runs: vec![run.clone()],
            idempotency: None,
        })
        .await
        .expect("admit");
    let m = item_of(&clients, &settings.inbox_table, "m-exp").await;
    assert_eq!(expires(&m), Some(T0.plus(ten_years).millis() / 1000));
    let queued = item_of(&clients, &settings.runs_table, "r-exp").await;
    assert_eq!(expires(&queued), None, "a live run never expires");

    run.status = tripline_core::RunStatus::Succeeded;
    run.finished_at = Some(T0);
    let saved = store.save_run(&run).await.expect("save");
    let ended = item_of(&clients, &settings.runs_table, "r-exp").await;
    assert_eq!(expires(&ended), Some(T0.plus(ten_years).millis() / 1000));
    // Its record went to S3 (over the budget), tagged for the bucket's lifecycle rule; the
    // message body's was not (its prefix is).
    let tags = |key: String| {
        let s3 = clients.s3.clone();
        let bucket = settings.bucket.clone();
        async move {
            s3.get_object_tagging()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .expect("tags")
                .tag_set()
                .iter()
                .map(|t| format!("{}={}", t.key(), t.value()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        tags(format!("runs/r-exp/{}.json", saved.version)).await,
        ["tripline-expire=yes"]
    );
    assert!(tags("inbox/m-exp".into()).await.is_empty());

    // A workflow's own retention wins; an item past it reads as gone at once.
    let mut old = message("m-old", vec![]);
    old.received_at = tripline_core::Timestamp(1_600_000_000_000);
    old.retain = Some(tripline_core::Duration::from_secs(3600));
    store
        .admit(Admission {
            message: old,
            runs: vec![],
            idempotency: None,
        })
        .await
        .expect("admit");
    assert!(store.message("m-old").await.expect("read").is_none());
    let listed = store
        .messages(&tripline_app::ports::InboxQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("list");
    let ids: Vec<&str> = listed.items.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m-exp"]);
}

/// A message and the run that took its id are one item, written at once: a failed write
/// records nothing (the caller is answered 503), and a redelivery of the same id (a Kafka
/// record's or a cron tick's is derived) writes both; a third is its duplicate.
#[tokio::test]
async fn a_message_and_its_run_are_written_as_one_item_or_not_at_all() {
    let (clients, working, store) = without_runs_table().await;
    let admission = started_by("m-one", "m-one", b"{}".to_vec());
    let admitted = store.admit(admission.clone()).await;
    assert!(admitted.is_err(), "the caller is told (503): {admitted:?}");
    assert!(working.message("m-one").await.expect("read").is_none());
    let again = working.admit(admission.clone()).await.expect("admit again");
    assert!(
        matches!(again, tripline_app::ports::Admitted::New { .. }),
        "{again:?}"
    );
    let item = item_of(&clients, &working.settings().runs_table, "m-one").await;
    assert!(item.contains_key("mz"), "the message is in its run's item");
    assert!(
        maybe_item_of(&clients, &working.settings().inbox_table, "m-one")
            .await
            .is_none(),
        "and has no item of its own"
    );
    let recorded = working
        .message("m-one")
        .await
        .expect("read")
        .expect("message");
    assert_eq!(recorded, admission.message);
    // The run's progress leaves the message as it was.
    let mut run = working.run("m-one").await.expect("read").expect("run");
    run.status = tripline_core::RunStatus::Succeeded;
    run.finished_at = Some(T0);
    let saved = working.save_run(&run).await.expect("save");
    assert_eq!(working.run("m-one").await.expect("read"), Some(saved));
    let recorded = working
        .message("m-one")
        .await
        .expect("read")
        .expect("message");
    assert_eq!(recorded, admission.message);
    let third = working.admit(admission).await.expect("admit a third time");
    match third {
        tripline_app::ports::Admitted::Duplicate { run_id } => assert_eq!(run_id, "m-one"),
        other => panic!("{other:?}"),
    }
}

/// A joined message stays in its run's item while the run's record grows up to the item
/// budget: a message too large to fit DynamoDB's item limit beside a full budget keeps an
/// item of its own, and the run still saves a record as large as the budget.
#[tokio::test]
async fn a_message_joins_its_run_only_where_a_full_record_still_fits_beside_it() {
    let (clients, mut settings) = fresh(None).await;
    settings.item_budget = 350 * 1024;
    let store = DynamoStore::new(&clients, settings.clone());
    let noise = |n: usize, mut seed: u32| -> String {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                // 64 letters at random: deflate keeps about 6 bits of each 8.
                char::from(LETTERS[(seed % 64) as usize])
            })
            .collect()
    };
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // About 90 KB deflated: over what fits beside a 350 KiB record (46 KiB).
    let admission = started_by("m-big", "m-big", noise(120_000, 7).into_bytes());
    store.admit(admission).await.expect("admit");
    assert!(
        maybe_item_of(&clients, &settings.inbox_table, "m-big")
            .await
            .is_some(),
        "a 90 KB message beside a 350 KiB budget has an item of its own"
    );
    // About 330 KB deflated: under the budget, so in the item.
    let mut run = store.run("m-big").await.expect("read").expect("run");
    run.context
        .insert("out".into(), serde_json::json!(noise(440_000, 11)));
    let saved = store
        .save_run(&run)
        .await
        .expect("a record as large as the budget");
    assert_eq!(store.run("m-big").await.expect("read"), Some(saved));
    assert_eq!(
        store
            .message("m-big")
            .await
            .expect("read")
            .expect("message")
            .body
            .len(),
        120_000
    );
    // A small message beside the same budget is joined.
    store
        .admit(started_by("m-small", "m-small", b"{}".to_vec()))
        .await
        .expect("admit");
    assert!(
        maybe_item_of(&clients, &settings.inbox_table, "m-small")
            .await
            .is_none()
    );
}

/// A message whose run has another id is written first, then the run: a failed run write
/// marks the message, and a redelivery of its id replaces it and starts the run.
#[tokio::test]
async fn without_a_claim_a_run_is_written_only_after_its_message_and_a_failed_run_write_says_so() {
    // The runs table is missing: the run's write fails after the message's landed.
    let (_, working, store) = without_runs_table().await;
    let admission = started_by("m-half", "r-half", b"{}".to_vec());
    let admitted = store.admit(admission.clone()).await;
    assert!(admitted.is_err(), "the caller is told (503): {admitted:?}");
    let recorded = working
        .message("m-half")
        .await
        .expect("read")
        .expect("message");
    match recorded.outcome {
        tripline_app::ports::Outcome::Rejected { reason } => {
            assert!(reason.contains("could not be recorded"), "{reason}")
        }
        other => panic!("the message must not point at a run that does not exist: {other:?}"),
    }
    // Delivered again with the same id, with the store working: the run the first
    // delivery could not write starts now, rather than the message being taken for a
    // duplicate of nothing.
    let again = working.admit(admission.clone()).await.expect("admit again");
    assert!(
        matches!(again, tripline_app::ports::Admitted::New { .. }),
        "{again:?}"
    );
    assert!(working.run("r-half").await.expect("read").is_some());
    let recorded = working
        .message("m-half")
        .await
        .expect("read")
        .expect("message");
    assert!(
        matches!(
            recorded.outcome,
            tripline_app::ports::Outcome::Started { .. }
        ),
        "{:?}",
        recorded.outcome
    );
    // And a third delivery is the duplicate of that run.
    let third = working.admit(admission).await.expect("admit a third time");
    match third {
        tripline_app::ports::Admitted::Duplicate { run_id } => assert_eq!(run_id, "r-half"),
        other => panic!("{other:?}"),
    }
}

/// A working store, and one on the same tables whose runs table is missing (its writes
/// there fail).
async fn without_runs_table() -> (tripline_aws::Clients, DynamoStore, DynamoStore) {
    let (clients, mut settings) = fresh(None).await;
    let working = DynamoStore::new(&clients, settings.clone());
    settings.runs_table = format!("{}-gone", settings.runs_table);
    let broken = DynamoStore::new(&clients, settings);
    (clients, working, broken)
}

/// The admission of message `id` starting one run `run_id` at the message's time.
fn started_by(id: &str, run_id: &str, body: Vec<u8>) -> Admission {
    let mut m = message(id, body);
    m.outcome = tripline_app::ports::Outcome::Started {
        run_ids: vec![run_id.into()],
    };
    Admission {
        message: m,
        runs: vec![run(
            run_id,
            tripline_core::run::TriggerKind::Webhook,
            "hook",
        )],
        idempotency: None,
    }
}

/// A message whose run took its id, time and workflow writes no index entries of its own:
/// it is listed through its run's, exactly once, in time order with every other message,
/// by workflow and across workflows, page by page and within a time range.
#[tokio::test]
async fn a_message_that_shares_its_runs_id_is_listed_through_the_runs_index_entries() {
    use tripline_app::ports::{InboxQuery, Outcome};
    use tripline_core::Timestamp;
    use tripline_core::run::{TriggerKind, TriggerRef};
    let (clients, settings) = fresh(None).await;
    let store = DynamoStore::new(&clients, settings.clone());
    let run_at = |id: &str, at: Timestamp| {
        let trigger = TriggerRef {
            kind: TriggerKind::Webhook,
            id: "hook".into(),
        };
        tripline_core::Run::new(id.into(), "wf", 1, trigger, serde_json::json!({}), at)
    };
    let started = |id: &str, at: i64, run: Option<tripline_core::Run>| {
        let mut m = message(id, b"{}".to_vec());
        m.received_at = Timestamp(T0.millis() + at);
        if let Some(r) = &run {
            m.outcome = Outcome::Started {
                run_ids: vec![r.id.clone()],
            };
        }
        (m, run.into_iter().collect::<Vec<_>>())
    };
    let at = |ms: i64| Timestamp(T0.millis() + ms);
    let admissions = [
        // Shares its run's id and time: listed through the run.
        started("m1", 10, Some(run_at("m1", at(10)))),
        // Starts nothing.
        started("m2", 20, None),
        // Its run has an id of its own (records from before runs took their message's id).
        started("m3", 30, Some(run_at("r3", at(30)))),
        // Same id, another time: the message keeps entries of its own.
        started("m4", 40, Some(run_at("m4", at(41)))),
        started("m5", 50, Some(run_at("m5", at(50)))),
    ];
    for (message, runs) in admissions {
        store
            .admit(Admission {
                message,
                runs,
                idempotency: None,
            })
            .await
            .expect("admit");
    }
    // Shares its run's id and time, but the two do not fit one item (a body over a small
    // budget): the message has an item of its own, without entries, listed through the run.
    let tight = DynamoStore::new(
        &clients,
        tripline_aws::Settings {
            item_budget: 300,
            ..settings.clone()
        },
    );
    let (mut m6, runs) = started("m6", 60, Some(run_at("m6", at(60))));
    m6.body = (0..400u32).map(|i| (i * 37 % 251) as u8).collect();
    tight
        .admit(Admission {
            message: m6,
            runs,
            idempotency: None,
        })
        .await
        .expect("admit");
    for (id, own_entries) in [("m2", true), ("m3", true), ("m4", true), ("m6", false)] {
        let item = item_of(&clients, &settings.inbox_table, id).await;
        for key in ["rkey", "wkey", "shard"] {
            assert_eq!(item.contains_key(key), own_entries, "{id}: {key}");
        }
    }
    // One item for a message and its run: none in the inbox table.
    for id in ["m1", "m5"] {
        let inbox = maybe_item_of(&clients, &settings.inbox_table, id).await;
        assert!(inbox.is_none(), "{id}");
        assert!(
            item_of(&clients, &settings.runs_table, id)
                .await
                .contains_key("mz")
        );
    }
    let list = |q: InboxQuery| {
        let store = store.clone();
        async move {
            let mut ids = Vec::new();
            let mut q = q;
            loop {
                let page = store.messages(&q).await.expect("list");
                ids.extend(page.items.into_iter().map(|m| m.id));
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => return ids,
                }
            }
        }
    };
    RunsStream::new(&clients, &settings)
        .await
        .index_with(&store)
        .await;
    let every = ["m6", "m5", "m4", "m3", "m2", "m1"];
    for limit in [1, 2, 50] {
        let all = InboxQuery {
            limit,
            ..Default::default()
        };
        assert_eq!(
            list(all.clone()).await,
            every,
            "every workflow, pages of {limit}"
        );
        let of_wf = InboxQuery {
            workflow: Some("wf".into()),
            ..all
        };
        assert_eq!(list(of_wf).await, every, "workflow `wf`, pages of {limit}");
    }
    let range = InboxQuery {
        since: Some(at(10)),
        until: Some(at(30)),
        limit: 50,
        ..Default::default()
    };
    assert_eq!(list(range).await, ["m3", "m2", "m1"]);
    let started_only = InboxQuery {
        outcome: Some("started".into()),
        workflow: Some("wf".into()),
        limit: 50,
        ..Default::default()
    };
    assert_eq!(list(started_only).await, ["m6", "m5", "m4", "m3", "m1"]);
    let other = InboxQuery {
        workflow: Some("other".into()),
        limit: 50,
        ..Default::default()
    };
    assert!(list(other).await.is_empty());
}

/// A claim its message's own record holds (a cron tick's: the key and the id both come
/// from the trigger and the time) is not written while that record outlives it, and the
/// tick is still admitted once; with a retention shorter than the claim's window it is.
#[tokio::test]
async fn a_claim_held_by_its_message_is_written_only_when_the_message_expires_first() {
    use tripline_app::ports::{Admitted, Outcome};
    let day = Duration::from_secs(86_400);
    for (retention, written) in [(None, false), (Some(30 * day), false), (Some(day), true)] {
        let (clients, mut settings) = fresh(None).await;
        settings.retention = retention;
        let store = DynamoStore::new(&clients, settings.clone());
        let run = run("tick-1", tripline_core::run::TriggerKind::Cron, "nightly");
        let mut m = message("tick-1", b"{}".to_vec());
        m.outcome = Outcome::Started {
            run_ids: vec!["tick-1".into()],
        };
        let admission = Admission {
            message: m,
            runs: vec![run],
            idempotency: Some(IdempotencyClaim {
                key: "wf/nightly/cron:0".into(),
                expires_at: T0.plus(8 * day),
                held_by_message: true,
            }),
        };
        let first = store.admit(admission.clone()).await.expect("admit");
        assert!(
            matches!(first, Admitted::New { .. }),
            "{retention:?}: {first:?}"
        );
        match store.admit(admission).await.expect("admit again") {
            Admitted::Duplicate { run_id } => assert_eq!(run_id, "tick-1", "{retention:?}"),
            other => panic!("{retention:?}: a redelivered tick starts nothing: {other:?}"),
        }
        let claim = clients
            .dynamodb
            .get_item()
            .table_name(&settings.idempotency_table)
            .key(
                "key",
                aws_sdk_dynamodb::types::AttributeValue::S("wf/nightly/cron:0".into()),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("get")
            .item;
        assert_eq!(claim.is_some(), written, "retention {retention:?}");
        // With the claim's transaction or without, the tick's message is in its run's item.
        let item = item_of(&clients, &settings.runs_table, "tick-1").await;
        assert!(item.contains_key("mz"), "{retention:?}: {item:?}");
        let inbox = maybe_item_of(&clients, &settings.inbox_table, "tick-1").await;
        assert!(inbox.is_none(), "{retention:?}");
        let m = store
            .message("tick-1")
            .await
            .expect("read")
            .expect("message");
        assert_eq!(m.outcome.kind(), "started");
    }
}
