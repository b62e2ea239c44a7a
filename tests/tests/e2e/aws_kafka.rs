//! Kafka triggers in the AWS shape, against the AWS-protocol server: the msk-consumer
//! function fed the MSK event source's JSON (several topics and partitions, JSON, text
//! and binary values, headers), a batch delivered twice, and a store failure in the middle
//! of a batch.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tripline_app::intake::kafka::record_id;
use tripline_app::ports::KafkaRecord;
use tripline_core::Timestamp;
use tripline_tests::aws::{endpoint, fresh};
use tripline_tests::lambda::{Function, function_env};
use tripline_tests::shape::{Shape, shape};

const LIMIT: Duration = Duration::from_secs(30);

const WORKFLOW: &str = r#"
id: stream
triggers:
  - type: kafka
    topics: [orders, refunds]
    condition: "trigger.body is mapping"
steps:
  - { id: shape, type: transform, value: { at: "{{ trigger.topic }}/{{ trigger.partition }}/{{ trigger.offset }}", body: "{{ trigger.body }}", trace: "{{ trigger.headers.trace }}" } }
"#;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One record as the MSK event source writes it: base64 key and value, headers as lists
/// of (signed) bytes.
fn msk_record(topic: &str, partition: i64, offset: i64, key: &str, value: &[u8]) -> Value {
    json!({
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": 1_800_000_000_000i64 + offset,
        "timestampType": "CREATE_TIME",
        "key": b64(key.as_bytes()),
        "value": b64(value),
        "headers": [{"trace": "t-1".bytes().map(|b| b as i8).collect::<Vec<i8>>()}],
    })
}

fn msk_event(records: &[(&str, i64, Vec<Value>)]) -> Value {
    let mut by_partition = serde_json::Map::new();
    for (topic, partition, recs) in records {
        by_partition.insert(format!("{topic}-{partition}"), json!(recs));
    }
    json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/tripline/abcd1234-0123-4567-89ab-cdef01234567-1",
        "bootstrapServers": "b-1.tripline.abc123.c2.kafka.us-east-1.amazonaws.com:9098",
        "records": by_partition,
    })
}

/// The record `msk_record` describes, as the intake sees it (for its id).
fn as_record(topic: &str, partition: i32, offset: i64) -> KafkaRecord {
    KafkaRecord {
        topic: topic.into(),
        partition,
        offset,
        timestamp: Timestamp(1_800_000_000_000 + offset),
        key: None,
        value: None,
        headers: vec![],
        source: None,
    }
}

/// An MSK cluster on the test server that is ACTIVE (tests/moto-server.py honours the tag).
async fn active_cluster(clients: &tripline_aws::Clients) -> String {
    aws_sdk_kafka::Client::new(clients.sdk_config())
        .create_cluster()
        .cluster_name(format!("c{}", tripline_tests::aws::unique_prefix()).replace('-', ""))
        .kafka_version("3.6.0")
        .number_of_broker_nodes(2)
        .broker_node_group_info(
            aws_sdk_kafka::types::BrokerNodeGroupInfo::builder()
                .client_subnets("subnet-0a1b2c3d")
                .client_subnets("subnet-4e5f6a7b")
                .instance_type("kafka.m5.large")
                .build(),
        )
        .tags("moto:state", "ACTIVE")
        .send()
        .await
        .expect("a cluster on the test server")
        .cluster_arn()
        .expect("arn")
        .to_string()
}

/// The shape, an msk-consumer function, and a control function of a stack with an ACTIVE
/// cluster and both topics (the control API deploys kafka triggers only where the stack's
/// MSK event source can deliver them), with `stream` deployed through it.
async fn stream_deployed() -> (Shape, Function, Function) {
    let s = shape(&[]).await;
    let consumer = Function::start("msk-consumer", &function_env(&s.settings, &endpoint())).await;
    let cluster = active_cluster(&s.clients).await;
    let mut env = function_env(&s.settings, &endpoint());
    env.push(("TRIPLINE_MSK_CLUSTER_ARN".into(), cluster));
    env.push(("TRIPLINE_MSK_TOPICS".into(), "orders,refunds".into()));
    let control = Function::start("control-api", &env).await;
    let (status, _, body) = s
        .http(
            &control,
            "PUT",
            "/v1/workflows/stream",
            &[("content-type", "application/yaml")],
            WORKFLOW.as_bytes(),
        )
        .await;
    assert!(status == 201 || status == 200, "deploy: {status} {body}");
    (s, consumer, control)
}

#[tokio::test]
async fn the_msk_consumer_records_every_record_and_starts_each_run_once() {
    let (s, consumer, _control) = stream_deployed().await;
    let event = msk_event(&[
        (
            "orders",
            0,
            vec![
                msk_record("orders", 0, 7, "c-1", br#"{"id": 1}"#),
                msk_record("orders", 0, 8, "c-1", br#"{"id": 2}"#),
            ],
        ),
        (
            "orders",
            1,
            vec![msk_record("orders", 1, 3, "c-2", b"plain text")],
        ),
        (
            "refunds",
            0,
            vec![msk_record("refunds", 0, 1, "c-3", &[0xff, 0xfe, 0x00])],
        ),
    ]);
    let answer = consumer
        .invoke(event.clone())
        .await
        .expect("the batch succeeds");
    assert_eq!(answer["records"], 4, "{answer}");
    assert_eq!(answer["recorded"], 4);
    assert_eq!(
        answer["runs_started"], 2,
        "text fails the condition, binary is rejected"
    );

    for offset in [7, 8] {
        let id = record_id(&as_record("orders", 0, offset), "stream");
        let run = s.pump_until(&id, "succeeded", LIMIT).await;
        assert_eq!(run["final_output"]["at"], format!("orders/0/{offset}"));
        assert_eq!(run["final_output"]["trace"], "t-1");
    }
    let (_, _, text) = s
        .http(
            &s.control,
            "GET",
            &format!(
                "/v1/inbox/{}",
                record_id(&as_record("orders", 1, 3), "stream")
            ),
            &[],
            b"",
        )
        .await;
    assert_eq!(text["outcome"]["kind"], "filtered", "{text}");
    assert_eq!(text["body"], "plain text");
    // Reprocessed from DynamoDB as it was received (its record's metadata kept).
    let filtered_id = record_id(&as_record("orders", 1, 3), "stream");
    let (status, _, again) = s
        .http(
            &s.control,
            "POST",
            &format!("/v1/inbox/{filtered_id}/reprocess"),
            &[],
            b"",
        )
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["outcome"]["kind"], "filtered");
    assert!(
        again["outcome"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("is mapping"),
        "{again}"
    );
    let (_, _, raw) = s
        .http(
            &s.control,
            "GET",
            &format!(
                "/v1/inbox/{}",
                record_id(&as_record("refunds", 0, 1), "stream")
            ),
            &[],
            b"",
        )
        .await;
    assert_eq!(raw["outcome"]["kind"], "rejected", "{raw}");
    assert_eq!(raw["body_base64"], b64(&[0xff, 0xfe, 0x00]), "kept raw");

    // The event source delivers the same batch again: nothing new.
    let again = consumer.invoke(event).await.expect("the batch succeeds");
    assert_eq!(again["recorded"], 0, "{again}");
    assert_eq!(again["already_recorded"], 4);
    assert_eq!(again["runs_started"], 0);
    consumer.stop().await;
}

#[tokio::test]
async fn a_store_failure_in_a_batch_fails_the_invocation_and_the_retry_completes_it_once() {
    let (clients, settings) = fresh(None).await;
    let config = tripline_app::Config::default();
    let healthy = tripline_aws::build_app(&clients, settings.clone(), config.clone());
    healthy
        .deployments
        .deploy_text(
            healthy.store.as_ref(),
            WORKFLOW,
            tripline_core::validate::Format::Yaml,
            None,
            healthy.clock.now(),
        )
        .await
        .expect("deploy");
    // The same tables, but a large body goes to a bucket that does not exist: the second
    // record of the partition cannot be stored.
    let broken = tripline_aws::build_app(
        &clients,
        tripline_aws::Settings {
            bucket: "no-such-bucket-for-this-test".into(),
            item_budget: 1024,
            ..settings.clone()
        },
        config,
    );
    broken
        .deployments
        .load(broken.store.as_ref())
        .await
        .expect("load");
    // Letters that do not repeat (deflate cannot shrink them under the budget).
    let mut seed = 0x2545_f491_u32;
    let pad: String = (0..4000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            char::from(b'a' + (seed % 26) as u8)
        })
        .collect();
    let big = format!(r#"{{"id": 2, "pad": "{pad}"}}"#);
    let event = msk_event(&[(
        "orders",
        0,
        vec![
            msk_record("orders", 0, 1, "k", br#"{"id": 1}"#),
            msk_record("orders", 0, 2, "k", big.as_bytes()),
            msk_record("orders", 0, 3, "k", br#"{"id": 3}"#),
        ],
    )]);
    let failed = tripline_aws::lambda::msk_event(&broken, event.clone()).await;
    assert!(failed.is_err(), "the invocation fails: {failed:?}");
    let id = |offset| record_id(&as_record("orders", 0, offset), "stream");
    let store = &healthy.store;
    assert!(store.message(&id(1)).await.expect("read").is_some());
    for offset in [2, 3] {
        assert!(
            store.message(&id(offset)).await.expect("read").is_none(),
            "{offset}: nothing half-done"
        );
        assert!(
            store.run(&id(offset)).await.expect("read").is_none(),
            "{offset}"
        );
    }

    let retried = tripline_aws::lambda::msk_event(&healthy, event)
        .await
        .expect("retry");
    assert_eq!(retried["recorded"], 2, "{retried}");
    assert_eq!(retried["already_recorded"], 1);
    assert_eq!(retried["runs_started"], 2);
    for offset in [1, 2, 3] {
        let run = store
            .run(&id(offset))
            .await
            .expect("read")
            .expect("one run per record");
        assert_eq!(run.trigger.kind, "kafka");
    }
}

#[tokio::test]
async fn a_kafka_trigger_deploys_only_where_the_msk_event_source_can_deliver_it() {
    use aws_sdk_kafka::types::BrokerNodeGroupInfo;
    let (clients, settings) = fresh(None).await;
    let create = |state: Option<&'static str>| {
        let mut req = aws_sdk_kafka::Client::new(clients.sdk_config())
            .create_cluster()
            .cluster_name(format!("c{}", tripline_tests::aws::unique_prefix()).replace('-', ""))
            .kafka_version("3.6.0")
            .number_of_broker_nodes(2)
            .broker_node_group_info(
                BrokerNodeGroupInfo::builder()
                    .client_subnets("subnet-0a1b2c3d")
                    .client_subnets("subnet-4e5f6a7b")
                    .instance_type("kafka.m5.large")
                    .build(),
            );
        if let Some(state) = state {
            // tests/moto-server.py: the test server's clusters otherwise stay CREATING.
            req = req.tags("moto:state", state);
        }
        async move {
            req.send()
                .await
                .expect("a cluster on the test server")
                .cluster_arn()
                .expect("arn")
                .to_string()
        }
    };
    let arn = create(None).await;
    let active = create(Some("ACTIVE")).await;
    let deploy = |msk: tripline_aws::msk::MskSettings, topics: &'static str| {
        let app = tripline_aws::build_control_app(
            &clients,
            tripline_aws::Settings {
                msk,
                ..settings.clone()
            },
            tripline_app::Config::default(),
        );
        async move {
            let text = format!(
                "id: consumer\ntriggers: [{{type: kafka, topics: [{topics}]}}]\nsteps: [{{id: a, type: transform, value: 1}}]\n"
            );
            match app
                .deployments
                .deploy_text(
                    app.store.as_ref(),
                    &text,
                    tripline_core::validate::Format::Yaml,
                    None,
                    app.clock.now(),
                )
                .await
            {
                Ok(_) => None,
                Err(tripline_app::deploy::DeployError::Invalid(p)) => {
                    assert_eq!(p[0].path, "triggers[0].topics");
                    Some(p[0].message.clone())
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let no_cluster = deploy(
        tripline_aws::msk::MskSettings {
            cluster_arn: None,
            topics: vec![],
        },
        "orders",
    )
    .await;
    assert!(
        no_cluster
            .as_deref()
            .unwrap_or_default()
            .contains("MskClusterArn"),
        "{no_cluster:?}"
    );
    let msk = tripline_aws::msk::MskSettings {
        cluster_arn: Some(arn.clone()),
        topics: vec!["orders".into()],
    };
    let other_topic = deploy(msk.clone(), "orders, refunds").await;
    assert!(
        other_topic
            .as_deref()
            .unwrap_or_default()
            .contains("refunds are not among those the MSK event source consumes (orders)"),
        "{other_topic:?}"
    );
    let creating = deploy(msk.clone(), "orders").await;
    assert!(
        creating
            .as_deref()
            .unwrap_or_default()
            .contains("is CREATING, not ACTIVE"),
        "{creating:?}"
    );
    // Another ARN: its last character changed (to one it is not).
    let last = if arn.ends_with('0') { "1" } else { "0" };
    let gone = format!("{}{last}", &arn[..arn.len() - 1]);
    let unknown = deploy(
        tripline_aws::msk::MskSettings {
            cluster_arn: Some(gone.clone()),
            ..msk.clone()
        },
        "orders",
    )
    .await;
    assert!(
        unknown
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("the MSK cluster {gone} does not exist")),
        "{unknown:?}"
    );
    let store = tripline_aws::DynamoStore::new(&clients, settings.clone());
    use tripline_app::ports::Store as _;
    assert!(
        store
            .workflow("consumer", None)
            .await
            .expect("read")
            .is_none(),
        "nothing deployed while the deploy was refused"
    );
    let ok = deploy(
        tripline_aws::msk::MskSettings {
            cluster_arn: Some(active),
            topics: vec!["orders".into(), "refunds".into()],
        },
        "orders, refunds",
    )
    .await;
    assert_eq!(
        ok, None,
        "an ACTIVE cluster whose event source consumes both topics"
    );
    assert!(
        store
            .workflow("consumer", None)
            .await
            .expect("read")
            .is_some(),
        "deployed"
    );
}

/// What one MSK event source mapping cannot do per trigger (its own cluster, its own
/// starting position) is refused at deploy, with the field and the template's parameters.
#[tokio::test]
async fn a_kafka_trigger_with_its_own_cluster_or_start_is_refused_at_deploy() {
    let (clients, settings) = fresh(None).await;
    let app = tripline_aws::build_control_app(&clients, settings, tripline_app::Config::default());
    for (extra, field) in [
        ("cluster: {bootstrap: ['kafka.internal:9092']}", "cluster"),
        ("start: earliest", "start"),
    ] {
        let text = format!(
            "id: own\ntriggers: [{{type: kafka, topics: [orders], {extra}}}]\nsteps: [{{id: a, type: transform, value: 1}}]\n"
        );
        let refused = app
            .deployments
            .deploy_text(
                app.store.as_ref(),
                &text,
                tripline_core::validate::Format::Yaml,
                None,
                app.clock.now(),
            )
            .await;
        let Err(tripline_app::deploy::DeployError::Invalid(p)) = refused else {
            panic!("deployed: {extra}");
        };
        assert_eq!(p[0].path, format!("triggers[0].{field}"));
        assert!(
            p[0].message
                .contains("one MSK event source mapping reads every trigger's topics")
                && p[0].message.contains("MskStartingPosition"),
            "{}",
            p[0].message
        );
    }
}

/// Switched off through the control function, a kafka trigger starts nothing from what MSK
/// delivers: each record is kept `skipped`, to reprocess once it is on again.
#[tokio::test]
async fn a_switched_off_kafka_trigger_keeps_what_msk_delivers_skipped() {
    let (s, consumer, control) = stream_deployed().await;
    let (status, _, body) = s
        .http(
            &control,
            "POST",
            "/v1/workflows/stream/triggers/kafka/disable",
            &[("x-tripline-request", "1")],
            b"",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let event = msk_event(&[(
        "orders",
        0,
        vec![msk_record("orders", 0, 11, "c-9", br#"{"id": 9}"#)],
    )]);
    let answer = consumer.invoke(event).await.expect("the batch succeeds");
    assert_eq!(
        (answer["recorded"].clone(), answer["runs_started"].clone()),
        (json!(1), json!(0)),
        "{answer}"
    );
    let (_, _, inbox) = s
        .http(&control, "GET", "/v1/inbox?workflow=stream", &[], b"")
        .await;
    let m = &inbox["items"][0];
    assert_eq!(m["outcome"]["kind"], "skipped", "{inbox}");
    assert!(
        m["outcome"]["reason"]
            .as_str()
            .expect("reason")
            .contains("switched off"),
        "{m}"
    );
}
