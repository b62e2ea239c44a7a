//! The local shape's Kafka consumer against a real Kafka-protocol broker on loopback
//! (tansu, installed and started by `tests/run`): consume, filter, run; a restart in the
//! middle of a stream loses nothing and runs nothing twice; each start policy.

use std::time::Duration;

use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use serde_json::{Value, json};
use tripline_local::kafka::{KafkaOptions, StartAt};
use tripline_tests::{Opts, TestApp, spawn_app};

/// The broker's address. `tests/run` starts one and sets `TRIPLINE_TEST_KAFKA_BOOTSTRAP`.
fn bootstrap() -> String {
    std::env::var("TRIPLINE_TEST_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "TRIPLINE_TEST_KAFKA_BOOTSTRAP is not set: these tests need a Kafka-protocol broker; run `tests/run`, which installs and starts one"
        )
    })
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

async fn create_topic(topic: &str, partitions: i32) -> rskafka::client::Client {
    let client = ClientBuilder::new(vec![bootstrap()])
        .build()
        .await
        .expect("the broker answers");
    client
        .controller_client()
        .expect("controller")
        .create_topic(topic, partitions, 1, 5_000)
        .await
        .expect("create topic");
    client
}

async fn produce(client: &rskafka::client::Client, topic: &str, partition: i32, values: &[Value]) {
    let pc = client
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            key: Some(format!("k{partition}").into_bytes()),
            value: Some(v.to_string().into_bytes()),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    pc.produce(records, Compression::NoCompression)
        .await
        .expect("produce");
}

fn workflow(topic: &str) -> String {
    format!(
        r#"
id: stream
triggers:
  - {{ type: kafka, topics: [{topic}], filter: {{ body: {{ keep: true }} }} }}
steps:
  - {{ id: echo, type: transform, value: "{{{{ trigger.body.n }}}}" }}
"#
    )
}

fn options(group: &str, start: StartAt) -> KafkaOptions {
    KafkaOptions {
        bootstrap: vec![bootstrap()],
        group: group.into(),
        start,
        sasl: None,
        refresh: Duration::from_millis(200),
    }
}

/// The inbox messages of the workflow once there are `n`.
async fn messages(app: &TestApp, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = app.get("/v1/inbox?workflow=stream&limit=500").await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} messages, have {}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runs(app: &TestApp) -> Vec<Value> {
    let (_, body) = app.get("/v1/runs?workflow=stream&limit=500").await;
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn records_are_consumed_filtered_and_run_once_across_a_restart() {
    let topic = unique("orders");
    let client = create_topic(&topic, 2).await;
    let mut app = spawn_app(Opts {
        kafka: Some(options(&unique("group"), StartAt::Earliest)),
        ..Opts::default().workflow("s.yaml", &workflow(&topic))
    })
    .await;
    // 20 records, half kept by the filter, over two partitions.
    for p in 0..2 {
        let values: Vec<Value> = (0..10)
            .map(|i| json!({"n": p * 100 + i, "keep": i % 2 == 0}))
            .collect();
        produce(&client, &topic, p, &values).await;
    }
    messages(&app, 20).await;

    // More records while the server restarts.
    let producing = {
        let client = ClientBuilder::new(vec![bootstrap()])
            .build()
            .await
            .expect("client");
        let topic = topic.clone();
        tokio::spawn(async move {
            for round in 0..5 {
                for p in 0..2 {
                    let values: Vec<Value> = (0..4)
                        .map(|i| json!({"n": 1000 + round * 10 + p * 5 + i, "keep": true}))
                        .collect();
                    produce(&client, &topic, p, &values).await;
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.restart().await;
    producing.await.expect("producer");
    let all = messages(&app, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_again = messages(&app, 60).await;
    assert_eq!(all.len(), 60, "no record recorded twice");
    assert_eq!(all_again.len(), 60);
    let started = all
        .iter()
        .filter(|m| m["outcome"]["kind"] == "started")
        .count();
    assert_eq!(
        started, 50,
        "10 kept of the first 20, and all 40 later ones"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = runs(&app).await;
        if r.len() == 50 && r.iter().all(|x| x["status"] == "succeeded") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "runs: {}", r.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs(&app).await.len(), 50, "one run per kept record");
    app.stop().await;
}

#[tokio::test]
async fn a_new_group_starts_where_its_policy_says() {
    let topic = unique("events");
    let client = create_topic(&topic, 1).await;
    produce(
        &client,
        &topic,
        0,
        &[json!({"n": 1, "keep": true}), json!({"n": 2, "keep": true})],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = tripline_core::Timestamp::from_system_time(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(&client, &topic, 0, &[json!({"n": 3, "keep": true})]).await;

    for (start, expected) in [
        (StartAt::Earliest, vec![1, 2, 3, 4]),
        (StartAt::Timestamp(middle), vec![3, 4]),
        (StartAt::Latest, vec![4]),
    ] {
        let app = spawn_app(Opts {
            kafka: Some(options(&unique("group"), start)),
            ..Opts::default().workflow("s.yaml", &workflow(&topic))
        })
        .await;
        // `latest` starts from when the group first looked: give it that look.
        tokio::time::sleep(Duration::from_millis(800)).await;
        produce(&client, &topic, 0, &[json!({"n": 4, "keep": true})]).await;
        let got = messages(&app, expected.len()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut ns: Vec<i64> = messages(&app, expected.len())
            .await
            .iter()
            .filter_map(|m| {
                serde_json::from_str::<Value>(m["body"].as_str()?)
                    .ok()?
                    .get("n")?
                    .as_i64()
            })
            .collect();
        ns.sort();
        ns.dedup();
        // Each round produces another `4` (later groups may see earlier rounds' too).
        let want = expected.clone();
        assert!(got.len() >= expected.len());
        assert_eq!(ns, want, "{start:?}");
        app.stop().await;
    }
}

/// `examples/payment-events.yaml` as its comment says: captured payments post to the
/// ledger in order per customer, with the record's coordinates as the idempotency key;
/// the others are kept in the inbox as filtered.
#[tokio::test]
async fn the_payment_events_example_posts_captured_payments_in_order_per_customer() {
    let stub = tripline_tests::Stub::start().await;
    let client = ClientBuilder::new(vec![bootstrap()])
        .build()
        .await
        .expect("the broker answers");
    // The example's topic has a fixed name: another run on this broker may have made it.
    let _ = client
        .controller_client()
        .expect("controller")
        .create_topic("payments", 1, 1, 5_000)
        .await;
    let since = tripline_core::Timestamp::from_system_time(std::time::SystemTime::now());
    let app = spawn_app(Opts {
        folder: Some(tripline_tests::repo_root().join("examples")),
        kafka: Some(options(&unique("group"), StartAt::Timestamp(since))),
        config: tripline_app::Config {
            outbound: tripline_app::outbound::OutboundPolicy {
                allow_private_networks: true,
                rewrites: vec![("https://httpbin.org".into(), stub.url.clone())],
            },
            ..tripline_app::Config::default()
        },
        ..Opts::default()
    })
    .await;
    let run = unique("p");
    let records = [
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-1"), "amount": 10}),
        ),
        (
            "cust-2",
            json!({"type": "captured", "payment": format!("{run}-2"), "amount": 20}),
        ),
        (
            "cust-1",
            json!({"type": "refunded", "payment": format!("{run}-3"), "amount": 10}),
        ),
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-4"), "amount": 0}),
        ),
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-5"), "amount": 30}),
        ),
        (
            "cust-2",
            json!({"type": "captured", "payment": format!("{run}-6"), "amount": 40}),
        ),
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-7"), "amount": 50}),
        ),
    ];
    let pc = client
        .partition_client("payments", 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let batch: Vec<Record> = records
        .iter()
        .map(|(key, value)| Record {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_string().into_bytes()),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    pc.produce(batch, Compression::NoCompression)
        .await
        .expect("produce");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let posts = loop {
        let posts: Vec<_> = stub
            .requests()
            .into_iter()
            .filter(|r| {
                r.body["payment"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&run))
            })
            .collect();
        if posts.len() >= 5 {
            break posts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ledger posts: {}",
            posts.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of = |customer: &str| -> Vec<String> {
        posts
            .iter()
            .filter(|r| r.body["customer"] == customer)
            .map(|r| r.body["payment"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        of("cust-1"),
        vec![format!("{run}-1"), format!("{run}-5"), format!("{run}-7")],
        "captured payments of a positive amount, in offset order"
    );
    assert_eq!(of("cust-2"), vec![format!("{run}-2"), format!("{run}-6")]);
    for p in &posts {
        assert_eq!(p.path, "/anything/ledger");
        assert!(
            p.headers
                .get("idempotency-key")
                .is_some_and(|k| k.starts_with("payments-0-")),
            "{:?}",
            p.headers
        );
        assert!(
            p.body["amount"].as_i64().is_some_and(|a| a > 0),
            "{}",
            p.body
        );
    }

    // The refund and the zero amount are kept, filtered, with the reason.
    let (_, inbox) = app
        .get("/v1/inbox?workflow=payment-events&outcome=filtered&limit=500")
        .await;
    let filtered: Vec<&Value> = inbox["items"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let ours = |n: usize| {
        filtered.iter().any(|m| {
            m["body"]
                .as_str()
                .is_some_and(|b| b.contains(&format!("{run}-{n}\"")))
        })
    };
    assert!(ours(3) && ours(4), "{inbox}");
    app.stop().await;
}
