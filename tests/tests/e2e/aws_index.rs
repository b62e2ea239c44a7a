//! The listings' index of the runs table, written from its DynamoDB stream
//! (`shared/aws/src/store/index.rs`), against the AWS-protocol server: whatever batches the
//! stream's records come in (out of order, delivered twice, split differently), every
//! listing names each run once, newest first, on every page size; and pages expire after
//! the runs they list.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use tripline_app::ports::{Admission, Outcome, RunQuery, Store, StoreError};
use tripline_aws::DynamoStore;
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::{Run, RunStatus, Timestamp};
use tripline_tests::aws::fresh;
use tripline_tests::conformance::T0;
use tripline_tests::stream::RunsStream;

fn admission(id: &str, workflow: &str, at: Timestamp) -> Admission {
    let trigger = TriggerRef {
        kind: TriggerKind::Webhook,
        id: "hook".into(),
    };
    let run = Run::new(id.into(), workflow, 1, trigger, json!({"n": id}), at);
    let outcome = Outcome::Started {
        run_ids: vec![id.into()],
    };
    let message = tripline_tests::conformance::message(id, workflow, at, outcome);
    Admission {
        message,
        runs: vec![run],
        idempotency: None,
    }
}

/// Every page of a listing, followed by its cursors: the ids in order.
async fn every_page(store: &DynamoStore, q: RunQuery) -> Vec<String> {
    let mut q = q;
    let mut ids = Vec::new();
    for _ in 0..500 {
        let page = store.runs(&q).await.expect("runs");
        assert!(
            page.items.len() <= q.limit,
            "{} > {}",
            page.items.len(),
            q.limit
        );
        ids.extend(page.items.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return ids,
        }
    }
    panic!("the listing did not end: {ids:?}");
}

fn batch(records: &[Value]) -> Value {
    json!({ "Records": records })
}

/// What the executor's handler does with a stream batch: the pages of its new items.
async fn index_batch(store: &DynamoStore, event: &Value) -> Result<usize, StoreError> {
    store
        .index(&tripline_aws::lambda::stream_records(event))
        .await
}

#[tokio::test]
async fn every_run_is_listed_once_whatever_batches_its_stream_records_came_in() {
    let (clients, settings) = fresh(None).await;
    let store = DynamoStore::new(&clients, settings.clone());
    // 60 runs 700 ms apart: 42 s, five buckets of the index; every third of workflow `b`.
    let mut expected = Vec::new();
    for i in 0..60u64 {
        let id = format!("r{i:03}");
        let workflow = if i % 3 == 0 { "b" } else { "a" };
        let at = T0.plus(Duration::from_millis(700 * i));
        store
            .admit(admission(&id, workflow, at))
            .await
            .expect("admit");
        expected.push((id, workflow, at));
    }
    expected.reverse();
    let stream = RunsStream::new(&clients, &settings).await;
    let event = stream.next_event().await.expect("the stream has the runs");
    let records = event["Records"].as_array().expect("records").clone();
    assert_eq!(records.len(), 60);
    // Batches of 7, newest first; the fourth delivered again split in two, the sixth again
    // whole (a retried batch).
    let chunks: Vec<&[Value]> = records.chunks(7).collect();
    for chunk in chunks.iter().rev() {
        index_batch(&store, &batch(chunk)).await.expect("indexed");
    }
    let (first, second) = chunks[3].split_at(3);
    for part in [first, second, chunks[5]] {
        index_batch(&store, &batch(part))
            .await
            .expect("indexed again");
    }
    // Then all of them again in batches of 5 (a shard read again from an older place):
    // every entry is in two pages now, under different keys.
    for chunk in records.chunks(5) {
        index_batch(&store, &batch(chunk))
            .await
            .expect("indexed again");
    }

    let ids = |w: Option<&str>, until: Option<Timestamp>| -> Vec<String> {
        expected
            .iter()
            .filter(|(_, wf, at)| w.is_none_or(|w| w == *wf) && until.is_none_or(|u| *at <= u))
            .map(|(id, ..)| id.clone())
            .collect()
    };
    for limit in [1, 6, 7, 25, 100] {
        for workflow in [None, Some("a"), Some("b")] {
            let q = RunQuery {
                workflow: workflow.map(String::from),
                limit,
                ..RunQuery::default()
            };
            assert_eq!(
                every_page(&store, q).await,
                ids(workflow, None),
                "workflow {workflow:?}, pages of {limit}"
            );
        }
        let until = T0.plus(Duration::from_millis(700 * 31));
        let q = RunQuery {
            until: Some(until),
            limit,
            ..RunQuery::default()
        };
        assert_eq!(
            every_page(&store, q).await,
            ids(None, Some(until)),
            "until run 31, pages of {limit}"
        );
    }
    let mut queued = store
        .queued_runs(T0, T0.plus(Duration::from_secs(21)))
        .await
        .expect("queued");
    queued.dedup();
    let oldest_first: Vec<String> = (0..30).map(|i| format!("r{i:03}")).collect();
    assert_eq!(queued, oldest_first, "the sweeper's window, each run once");
}

/// The index table's pages of a partition: (sort key, entries, expires).
async fn pages_of(
    clients: &tripline_aws::Clients,
    table: &str,
    p: &str,
) -> Vec<(String, usize, Option<i64>)> {
    let out = clients
        .dynamodb
        .query()
        .table_name(table)
        .key_condition_expression("p = :p")
        .expression_attribute_values(":p", AttributeValue::S(p.into()))
        .send()
        .await
        .expect("query");
    out.items
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let k = item["k"].as_s().expect("k").clone();
            let entries = item["e"].as_l().map_or(0, Vec::len);
            let expires = item
                .get("expires")
                .and_then(|e| e.as_n().ok())
                .and_then(|n| n.parse().ok());
            (k, entries, expires)
        })
        .collect()
}

#[tokio::test]
async fn pages_expire_after_their_runs_and_a_run_that_ends_late_gets_its_own() {
    let (clients, mut settings) = fresh(None).await;
    let day = Duration::from_secs(24 * 3600);
    settings.retention = Some(day);
    let store = DynamoStore::new(&clients, settings.clone());
    for id in ["quick", "slow"] {
        store.admit(admission(id, "wf", T0)).await.expect("admit");
    }
    let stream = RunsStream::new(&clients, &settings).await;
    assert_eq!(stream.index_with(&store).await, 2);
    let pages = pages_of(&clients, &settings.index_table, "w#wf").await;
    assert_eq!(pages.len(), 1, "{pages:?}");
    let bucket_end = (T0.millis() - T0.millis() % 10_000 + 10_000) / 1000;
    let life = (day + tripline_aws::store::index::PAGE_MARGIN).as_secs() as i64;
    assert_eq!(pages[0].2, Some(bucket_end + life), "{pages:?}");

    // One ends within the margin: its item expires before the page does, no new page.
    let mut quick = store.run("quick").await.expect("read").expect("run");
    quick.status = RunStatus::Succeeded;
    quick.finished_at = Some(T0.plus(day));
    store.save_run(&quick).await.expect("save");
    assert_eq!(
        pages_of(&clients, &settings.index_table, "w#wf")
            .await
            .len(),
        1
    );

    // One ends after it: its own pages (its workflow's and the time listing's), expiring
    // with its item, which outlives the first page.
    let mut slow = store.run("slow").await.expect("read").expect("run");
    slow.status = RunStatus::Succeeded;
    slow.finished_at = Some(T0.plus(day * 30));
    store.save_run(&slow).await.expect("save");
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&settings.runs_table)
        .key("id", AttributeValue::S("slow".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("item");
    let item_expires: i64 = item["expires"].as_n().expect("n").parse().expect("number");
    assert!(item_expires > bucket_end + life);
    let pages = pages_of(&clients, &settings.index_table, "w#wf").await;
    assert_eq!(pages.len(), 2, "{pages:?}");
    let late = pages
        .iter()
        .find(|(_, n, _)| *n == 1)
        .expect("its own page");
    assert!(late.2.is_some_and(|e| e >= item_expires), "{late:?}");
    // Listed once, though two pages name it.
    let q = RunQuery {
        workflow: Some("wf".into()),
        limit: 10,
        ..RunQuery::default()
    };
    assert_eq!(every_page(&store, q).await, ["slow", "quick"]);
}

/// A stack whose runs were written before it had the index (or whose stream's records
/// expired unread) is indexed again by the executor's `{"reindex": true}`, in parts.
#[tokio::test]
async fn the_executor_indexes_the_runs_table_again_in_parts() {
    let (clients, settings) = fresh(None).await;
    let store = DynamoStore::new(&clients, settings.clone());
    let mut expected = Vec::new();
    for i in 0..30u64 {
        let id = format!("old{i:02}");
        let at = T0.plus(Duration::from_millis(900 * i));
        store.admit(admission(&id, "wf", at)).await.expect("admit");
        expected.push(id);
    }
    expected.reverse();
    let q = RunQuery {
        limit: 7,
        ..RunQuery::default()
    };
    assert!(
        every_page(&store, q.clone()).await.is_empty(),
        "nothing is indexed yet"
    );
    let config = tripline_aws::config_from_env().expect("config");
    let app = tripline_aws::build_app(&clients, settings.clone(), config);
    // Scans of 7 items, and a deadline that ends each invocation after its first scan
    // (under 10 s left): the operator sends `next` back as `from`.
    let soon = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut from = Value::Null;
    let mut parts = 0;
    loop {
        let answer = tripline_aws::lambda::reindex_event(
            &app,
            &store,
            tripline_aws::lambda::SWEEP_AFTER,
            &json!({"reindex": true, "from": from, "limit": 7}),
            soon,
        )
        .await
        .expect("reindexed");
        parts += 1;
        from = answer["next"].clone();
        if from.is_null() {
            break;
        }
        assert!(parts < 100, "the re-index ends");
    }
    assert!(
        parts >= 4,
        "30 items in scans of 7 take at least 5 parts: {parts}"
    );
    assert_eq!(every_page(&store, q.clone()).await, expected);
    let q = RunQuery {
        workflow: Some("wf".into()),
        ..q
    };
    assert_eq!(every_page(&store, q).await, expected);
}
