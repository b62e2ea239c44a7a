//! Creates the tables, queues and bucket that template.yaml declares, with the same keys
//! and indexes: for tests against an AWS-protocol server, and for a developer's own
//! account without CloudFormation. Keep it in step with template.yaml (the test
//! `template_and_provision_agree` compares them).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::settings::{Clients, Settings};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A table's key and indexes: (name, hash key, range key) with every key attribute a
/// string except where listed in `numbers`.
pub struct TableSpec {
    pub hash: &'static str,
    pub range: Option<&'static str>,
    /// (index name, hash key, range key); every index projects keys only.
    pub indexes: &'static [(&'static str, &'static str, &'static str)],
    pub numbers: &'static [&'static str],
    pub ttl: Option<&'static str>,
    /// The table's stream, with new images (the runs table's feeds the listings' index).
    pub stream: bool,
}

pub const WORKFLOWS: TableSpec = TableSpec {
    hash: "id",
    range: Some("rev"),
    indexes: &[],
    numbers: &["rev"],
    ttl: None,
    stream: false,
};

/// No index: the runs table's listings read the index table's pages, which the step
/// executor writes from this table's stream (`store/index.rs`, infra/dynamodb.md).
pub const RUNS: TableSpec = TableSpec {
    hash: "id",
    range: None,
    indexes: &[],
    numbers: &[],
    ttl: Some("expires"),
    stream: true,
};

pub const INBOX: TableSpec = TableSpec {
    hash: "id",
    range: None,
    indexes: &[
        ("by_workflow", "wkey", "rkey"),
        ("by_time", "shard", "rkey"),
    ],
    numbers: &[],
    ttl: Some("expires"),
    stream: false,
};

pub const IDEMPOTENCY: TableSpec = TableSpec {
    hash: "key",
    range: None,
    indexes: &[],
    numbers: &[],
    ttl: Some("ttl"),
    stream: false,
};

/// The listings' index: pages (`p` a listing's partition, `k` its bucket and first entry).
pub const INDEX: TableSpec = TableSpec {
    hash: "p",
    range: Some("k"),
    indexes: &[],
    numbers: &[],
    ttl: Some("expires"),
    stream: false,
};

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, BoxError> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()?)
}

async fn create_table(clients: &Clients, name: &str, spec: &TableSpec) -> Result<(), BoxError> {
    let mut attrs: Vec<&str> = vec![spec.hash];
    attrs.extend(spec.range);
    for (_, h, r) in spec.indexes {
        attrs.push(h);
        attrs.push(r);
    }
    attrs.sort_unstable();
    attrs.dedup();
    let mut req = clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(spec.hash, KeyType::Hash)?);
    if let Some(r) = spec.range {
        req = req.key_schema(key(r, KeyType::Range)?);
    }
    for a in attrs {
        let kind = if spec.numbers.contains(&a) {
            ScalarAttributeType::N
        } else {
            ScalarAttributeType::S
        };
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a)
                .attribute_type(kind)
                .build()?,
        );
    }
    for (index, h, r) in spec.indexes {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(*index)
                .key_schema(key(h, KeyType::Hash)?)
                .key_schema(key(r, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()?,
        );
    }
    if spec.stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()?,
        );
    }
    req.send().await?;
    if let Some(ttl) = spec.ttl {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await?;
    }
    Ok(())
}

async fn queue_arn(clients: &Clients, url: &str) -> Result<String, BoxError> {
    Ok(clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default())
}

/// Creates everything `settings` names (a fresh set: tables must not exist yet) and
/// returns the settings with the queue URL filled in.
pub async fn provision(clients: &Clients, settings: &Settings) -> Result<Settings, BoxError> {
    create_table(clients, &settings.workflows_table, &WORKFLOWS).await?;
    create_table(clients, &settings.runs_table, &RUNS).await?;
    create_table(clients, &settings.inbox_table, &INBOX).await?;
    create_table(clients, &settings.idempotency_table, &IDEMPOTENCY).await?;
    create_table(clients, &settings.index_table, &INDEX).await?;
    clients
        .s3
        .create_bucket()
        .bucket(&settings.bucket)
        .send()
        .await?;
    let queue_name = format!("{}-work", settings.bucket.trim_end_matches("-payloads"));
    let dlq = clients
        .sqs
        .create_queue()
        .queue_name(format!("{queue_name}-dead"))
        .send()
        .await?;
    let dlq_arn = queue_arn(clients, dlq.queue_url().unwrap_or_default()).await?;
    let queue = clients
        .sqs
        .create_queue()
        .queue_name(&queue_name)
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string(),
        )
        .send()
        .await?;
    let queue_url = queue.queue_url().unwrap_or_default().to_string();
    let mut timers = settings.timers.clone();
    if let Some(t) = timers.as_mut() {
        t.queue_arn = queue_arn(clients, &queue_url).await?;
        t.dead_letter_arn = Some(dlq_arn.clone());
        clients
            .scheduler()
            .create_schedule_group()
            .name(&t.schedule_group)
            .send()
            .await?;
    }
    let mut cron = settings.cron.clone();
    if let Some(c) = cron.as_mut() {
        let dead = clients
            .sqs
            .create_queue()
            .queue_name(format!("{queue_name}-cron-dead"))
            .send()
            .await?;
        c.dead_letter_arn = Some(queue_arn(clients, dead.queue_url().unwrap_or_default()).await?);
        clients
            .scheduler()
            .create_schedule_group()
            .name(&c.group)
            .send()
            .await?;
    }
    Ok(Settings {
        queue_url,
        timers,
        cron,
        ..settings.clone()
    })
}
