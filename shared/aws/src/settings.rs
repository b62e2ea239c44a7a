//! Where the AWS resources are: table, queue and bucket names from environment variables
//! that the SAM template sets, and the clients built once per cold start.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::ConfigBag;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Names of the resources, as the SAM template creates them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub workflows_table: String,
    pub runs_table: String,
    pub inbox_table: String,
    pub idempotency_table: String,
    /// The listings' index of the runs table: pages of entries that the step executor
    /// writes from the runs table's stream (`store/index.rs`).
    pub index_table: String,
    pub queue_url: String,
    pub bucket: String,
    /// Run records and message bodies larger than this many bytes go to S3 (DynamoDB items
    /// hold at most 400 KB, with every attribute).
    pub item_budget: usize,
    /// Timers longer than SQS's 15-minute delay: one-time EventBridge Scheduler schedules
    /// in this group, sending to the queue. `None`: such timers are re-sent every 15 min.
    pub timers: Option<TimerSettings>,
    /// Where cron triggers' schedules go (the control API creates them at deploy). `None`:
    /// cron triggers cannot be deployed in this function.
    pub cron: Option<CronSettings>,
    /// The MSK cluster and topics the template's event source consumes: a deploy refuses
    /// kafka triggers it cannot deliver.
    pub msk: crate::msk::MskSettings,
    /// The SSM Parameter Store path the stack's secrets live under, e.g.
    /// `/tripline/{stack}/secrets`.
    pub secrets_prefix: String,
    /// How long a function trusts a cached secret (a rotation reaches every function
    /// within it); default 60 s.
    pub secrets_ttl: std::time::Duration,
    /// How long runs and messages are kept when their workflow sets no `retention`
    /// (`TRIPLINE_RETENTION`, e.g. `30d`; `off` or unset: forever): written on each item
    /// as DynamoDB's TTL attribute `expires`.
    pub retention: Option<std::time::Duration>,
}

/// Cron triggers' recurring schedules: the group, the cron-tick function they invoke, the
/// role Scheduler assumes to invoke it, and where an undeliverable tick goes.
#[derive(Clone, Debug, PartialEq)]
pub struct CronSettings {
    pub group: String,
    pub target_arn: String,
    pub role_arn: String,
    pub dead_letter_arn: Option<String>,
}

/// Where long timers are scheduled: the schedule group, the queue's ARN (the target) and
/// the role EventBridge Scheduler assumes to send to it.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerSettings {
    pub schedule_group: String,
    pub queue_arn: String,
    pub role_arn: String,
    /// Where a schedule's message goes when Scheduler could not deliver it within its
    /// retry policy (24 hours), instead of being lost.
    pub dead_letter_arn: Option<String>,
}

/// The default [`Settings::item_budget`]: leaves room under 400 KB for the other attributes.
pub const ITEM_BUDGET: usize = 300 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0} is not set; the SAM template sets it for every function (see template.yaml)")]
pub struct MissingSetting(pub &'static str);

impl Settings {
    /// Reads `TRIPLINE_WORKFLOWS_TABLE`, `TRIPLINE_RUNS_TABLE`, `TRIPLINE_INBOX_TABLE`,
    /// `TRIPLINE_IDEMPOTENCY_TABLE`, `TRIPLINE_QUEUE_URL`, `TRIPLINE_BUCKET` and, optionally,
    /// `TRIPLINE_ITEM_BUDGET` (bytes) and, together, `TRIPLINE_SCHEDULE_GROUP`,
    /// `TRIPLINE_QUEUE_ARN` and `TRIPLINE_SCHEDULER_ROLE_ARN` (long timers), with
    /// `TRIPLINE_TIMER_DEAD_LETTER_ARN`; and, together, `TRIPLINE_CRON_GROUP`,
    /// `TRIPLINE_CRON_TARGET_ARN` and `TRIPLINE_CRON_ROLE_ARN` (cron triggers), with
    /// `TRIPLINE_CRON_DEAD_LETTER_ARN`.
    pub fn from_env() -> Result<Self, MissingSetting> {
        let var = |name: &'static str| std::env::var(name).map_err(|_| MissingSetting(name));
        Ok(Self {
            workflows_table: var("TRIPLINE_WORKFLOWS_TABLE")?,
            runs_table: var("TRIPLINE_RUNS_TABLE")?,
            inbox_table: var("TRIPLINE_INBOX_TABLE")?,
            idempotency_table: var("TRIPLINE_IDEMPOTENCY_TABLE")?,
            index_table: var("TRIPLINE_INDEX_TABLE")?,
            queue_url: var("TRIPLINE_QUEUE_URL")?,
            bucket: var("TRIPLINE_BUCKET")?,
            item_budget: std::env::var("TRIPLINE_ITEM_BUDGET")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(ITEM_BUDGET),
            timers: match (
                std::env::var("TRIPLINE_SCHEDULE_GROUP"),
                std::env::var("TRIPLINE_QUEUE_ARN"),
                std::env::var("TRIPLINE_SCHEDULER_ROLE_ARN"),
            ) {
                (Ok(schedule_group), Ok(queue_arn), Ok(role_arn)) if !schedule_group.is_empty() => {
                    Some(TimerSettings {
                        schedule_group,
                        queue_arn,
                        role_arn,
                        dead_letter_arn: std::env::var("TRIPLINE_TIMER_DEAD_LETTER_ARN")
                            .ok()
                            .filter(|v| !v.is_empty()),
                    })
                }
                _ => None,
            },
            cron: match (
                std::env::var("TRIPLINE_CRON_GROUP"),
                std::env::var("TRIPLINE_CRON_TARGET_ARN"),
                std::env::var("TRIPLINE_CRON_ROLE_ARN"),
            ) {
                (Ok(group), Ok(target_arn), Ok(role_arn)) if !group.is_empty() => {
                    Some(CronSettings {
                        group,
                        target_arn,
                        role_arn,
                        dead_letter_arn: std::env::var("TRIPLINE_CRON_DEAD_LETTER_ARN")
                            .ok()
                            .filter(|v| !v.is_empty()),
                    })
                }
                _ => None,
            },
            msk: crate::msk::MskSettings::from_env(),
            secrets_prefix: std::env::var("TRIPLINE_SECRETS_PREFIX")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "/tripline/secrets".into()),
            secrets_ttl: std::env::var("TRIPLINE_SECRETS_TTL")
                .ok()
                .and_then(|v| tripline_core::Duration::parse(&v).ok())
                .map_or(tripline_app::secrets::DEFAULT_SECRET_TTL, |d| d.std()),
            retention: match std::env::var("TRIPLINE_RETENTION") {
                Ok(v) if !v.is_empty() && v != "off" => Some(
                    tripline_core::Duration::parse(&v)
                        .map_err(|_| {
                            MissingSetting("a valid TRIPLINE_RETENTION (e.g. 30d, or off)")
                        })?
                        .std(),
                ),
                _ => None,
            },
        })
    }

    /// Names for a fresh set of resources (tests, a developer's own stack). The queue URL is
    /// filled in by [`crate::provision`].
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            workflows_table: format!("{prefix}-workflows"),
            runs_table: format!("{prefix}-runs"),
            inbox_table: format!("{prefix}-inbox"),
            idempotency_table: format!("{prefix}-idempotency"),
            index_table: format!("{prefix}-index"),
            queue_url: String::new(),
            bucket: format!("{prefix}-payloads").to_lowercase(),
            item_budget: ITEM_BUDGET,
            timers: Some(TimerSettings {
                schedule_group: format!("{prefix}-timers"),
                queue_arn: String::new(),
                role_arn: format!("arn:aws:iam::123456789012:role/{prefix}-scheduler"),
                dead_letter_arn: None,
            }),
            cron: Some(CronSettings {
                group: format!("{prefix}-cron"),
                target_arn: format!(
                    "arn:aws:lambda:us-east-1:123456789012:function:{prefix}-cron-tick"
                ),
                role_arn: format!("arn:aws:iam::123456789012:role/{prefix}-cron"),
                dead_letter_arn: None,
            }),
            msk: crate::msk::MskSettings {
                cluster_arn: None,
                topics: Vec::new(),
            },
            secrets_prefix: format!("/tripline/{prefix}/secrets"),
            secrets_ttl: tripline_app::secrets::DEFAULT_SECRET_TTL,
            retention: None,
        }
    }

    /// The environment variables that [`Settings::from_env`] reads back to these settings.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("TRIPLINE_WORKFLOWS_TABLE", self.workflows_table.clone()),
            ("TRIPLINE_RUNS_TABLE", self.runs_table.clone()),
            ("TRIPLINE_INBOX_TABLE", self.inbox_table.clone()),
            ("TRIPLINE_IDEMPOTENCY_TABLE", self.idempotency_table.clone()),
            ("TRIPLINE_INDEX_TABLE", self.index_table.clone()),
            ("TRIPLINE_QUEUE_URL", self.queue_url.clone()),
            ("TRIPLINE_BUCKET", self.bucket.clone()),
            ("TRIPLINE_ITEM_BUDGET", self.item_budget.to_string()),
            ("TRIPLINE_SECRETS_PREFIX", self.secrets_prefix.clone()),
            (
                "TRIPLINE_SECRETS_TTL",
                format!("{}ms", self.secrets_ttl.as_millis()),
            ),
        ];
        if let Some(r) = self.retention {
            env.push(("TRIPLINE_RETENTION", format!("{}s", r.as_secs())));
        }
        if let Some(t) = &self.timers {
            env.push(("TRIPLINE_SCHEDULE_GROUP", t.schedule_group.clone()));
            env.push(("TRIPLINE_QUEUE_ARN", t.queue_arn.clone()));
            env.push(("TRIPLINE_SCHEDULER_ROLE_ARN", t.role_arn.clone()));
            if let Some(dlq) = &t.dead_letter_arn {
                env.push(("TRIPLINE_TIMER_DEAD_LETTER_ARN", dlq.clone()));
            }
        }
        if let Some(arn) = &self.msk.cluster_arn {
            env.push(("TRIPLINE_MSK_CLUSTER_ARN", arn.clone()));
        }
        if !self.msk.topics.is_empty() {
            env.push(("TRIPLINE_MSK_TOPICS", self.msk.topics.join(",")));
        }
        if let Some(c) = &self.cron {
            env.push(("TRIPLINE_CRON_GROUP", c.group.clone()));
            env.push(("TRIPLINE_CRON_TARGET_ARN", c.target_arn.clone()));
            env.push(("TRIPLINE_CRON_ROLE_ARN", c.role_arn.clone()));
            if let Some(dlq) = &c.dead_letter_arn {
                env.push(("TRIPLINE_CRON_DEAD_LETTER_ARN", dlq.clone()));
            }
        }
        env
    }
}

/// The SDK's HTTPS client on rustls with *ring*, the same TLS stack the outbound `http`
/// steps use (one crypto library in each binary, not two).
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The SDK clients, built once per cold start and shared.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    shared: aws_config::SdkConfig,
    counter: Option<CallCounter>,
}

impl Clients {
    /// From the environment, as Lambda sets it: `AWS_REGION`, and the execution role's
    /// credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`;
    /// an `AWS_ENDPOINT_URL` points every client at another server (moto in tests).
    ///
    /// Not the SDK's default chain (profile files, web identity through STS, instance and
    /// container metadata): a function has none of them, and their code was a part of
    /// every binary's size, which decides how fast a cold start maps it.
    pub async fn from_env(counter: Option<CallCounter>) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let mut shared = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            ))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .http_client(http_client());
        if let Some(url) = var("AWS_ENDPOINT_URL") {
            shared = shared.endpoint_url(url);
        }
        Self::from_config(&shared.build(), counter)
    }

    pub fn from_config(shared: &aws_config::SdkConfig, counter: Option<CallCounter>) -> Self {
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(shared);
        let mut sqs = aws_sdk_sqs::config::Builder::from(shared);
        // Path-style addressing works for every S3-protocol endpoint, a loopback one included.
        let mut s3 = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(shared.endpoint_url().is_some());
        if let Some(c) = counter.clone() {
            dynamodb = dynamodb.interceptor(c.clone());
            sqs = sqs.interceptor(c.clone());
            s3 = s3.interceptor(c);
        }
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            shared: shared.clone(),
            counter,
        }
    }

    /// The bench's call counter, when it counts (for requests made outside the SDK).
    pub fn counter(&self) -> Option<CallCounter> {
        self.counter.clone()
    }

    /// An EventBridge Scheduler client on the same configuration. Built on demand: only the
    /// step executor schedules timers, and the other functions' binaries stay without it.
    pub fn scheduler(&self) -> aws_sdk_scheduler::Client {
        let mut b = aws_sdk_scheduler::config::Builder::from(&self.shared);
        if let Some(c) = self.counter.clone() {
            b = b.interceptor(c);
        }
        aws_sdk_scheduler::Client::from_conf(b.build())
    }

    /// The stack's secrets in SSM Parameter Store under `prefix`, on the same
    /// configuration (the functions that read or write secrets).
    pub fn ssm_secrets(&self, prefix: &str) -> crate::secrets::SsmSecrets {
        crate::secrets::SsmSecrets::new(&self.shared, self.counter.clone(), prefix)
    }

    /// The configuration the clients were built from.
    pub fn sdk_config(&self) -> &aws_config::SdkConfig {
        &self.shared
    }

    /// Clients for an AWS-protocol server at `endpoint` (moto in tests), with fixed test
    /// credentials.
    pub fn for_endpoint(endpoint: &str, counter: Option<CallCounter>) -> Self {
        let shared = aws_config::SdkConfig::builder()
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"),
            ))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .build();
        Self::from_config(&shared, counter)
    }
}

/// Counts the AWS requests made, by `Service.Operation` (an SDK interceptor): the
/// benchmark's calls-per-run table comes from it.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<std::collections::BTreeMap<String, u64>>>);

impl CallCounter {
    /// Counts one request made outside the SDK clients (SSM's JSON protocol).
    pub fn count(&self, operation: &str) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation.to_string()).or_default() += 1;
        }
    }
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
    pub fn reset(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    // Before each transmission: a retried request counts again, as AWS bills it.
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>()
            && let Ok(mut counts) = self.0.lock()
        {
            *counts
                .entry(format!("{}.{}", m.service(), m.name()))
                .or_default() += 1;
            let units = match context.request().body().bytes() {
                Some(body) if m.service() == "DynamoDB" => write_units(m.name(), body),
                _ => 0,
            };
            if units > 0 {
                *counts.entry(WRITE_UNITS.into()).or_default() += units;
            }
        }
        Ok(())
    }
}

/// The [`CallCounter`]'s tally of DynamoDB write units (not a request).
pub const WRITE_UNITS: &str = "units:DynamoDB.WRU";

/// The write units DynamoDB bills a request, estimated from its body: each item put is
/// billed per started KB of its attribute names and values; an item created (written on
/// condition that it does not exist yet, or in a batch) with index keys adds one keys-only
/// entry per index (`shard`: the `by_time` index, `wkey`: `by_workflow`). An update or a
/// delete counts one unit (its item's size is not in the request). In a transaction every
/// action is billed twice (DynamoDB prepares and commits it), a condition check included,
/// and a put is counted as created: Tripline's transactions put only records they create
/// (an admission's message and runs, a claim, a workflow revision). Reads count nothing.
fn write_units(operation: &str, body: &[u8]) -> u64 {
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    let put_in = |p: &serde_json::Value, created: bool, times: u64| -> u64 {
        let Some(item) = p["Item"].as_object() else {
            return 0;
        };
        let size: usize = item.iter().map(|(k, v)| k.len() + value_size(v)).sum();
        let entries = u64::from(item.contains_key("shard")) + u64::from(item.contains_key("wkey"));
        times * size.div_ceil(1024).max(1) as u64 + if created { entries } else { 0 }
    };
    let put = |p: &serde_json::Value, created: bool| put_in(p, created, 1);
    let absent = |p: &serde_json::Value| {
        p["ConditionExpression"]
            .as_str()
            .is_some_and(|c| c.contains("attribute_not_exists"))
    };
    match operation {
        "PutItem" => put(&req, absent(&req)),
        "UpdateItem" | "DeleteItem" => 1,
        "TransactWriteItems" => req["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| match t.get("Put") {
                Some(p) => put_in(p, true, 2),
                None => 2,
            })
            .sum(),
        "BatchWriteItem" => req["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|tables| tables.values())
            .filter_map(serde_json::Value::as_array)
            .flatten()
            .map(|w| match w.get("PutRequest") {
                Some(p) => put(p, true),
                None => 1,
            })
            .sum(),
        _ => 0,
    }
}

/// An attribute value's billed size (DynamoDB's rules, numbers approximated by digits).
fn value_size(v: &serde_json::Value) -> usize {
    let Some((kind, v)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), v) {
        ("S", serde_json::Value::String(s)) => s.len(),
        ("N", serde_json::Value::String(n)) => n.len().div_ceil(2) + 1,
        // Binary travels base64-encoded: its bytes are three quarters of the text.
        ("B", serde_json::Value::String(b)) => b.trim_end_matches('=').len() * 3 / 4,
        ("M", serde_json::Value::Object(m)) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        ("L", serde_json::Value::Array(l)) => {
            3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>()
        }
        ("SS" | "NS" | "BS", serde_json::Value::Array(l)) => {
            l.iter().map(|v| v.as_str().map_or(0, str::len)).sum()
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn units(op: &str, body: serde_json::Value) -> u64 {
        write_units(op, body.to_string().as_bytes())
    }

    #[test]
    fn a_created_item_pays_per_started_kb_and_one_entry_per_index() {
        let item = json!({"id": {"S": "r1"}, "shard": {"S": "3"}, "wkey": {"S": "w#3"},
            "doc": {"S": "x".repeat(1100)}});
        let create = json!({"Item": item, "ConditionExpression": "attribute_not_exists(id)"});
        assert_eq!(units("PutItem", create), 2 + 2);
        let replace = json!({"Item": item, "ConditionExpression": "v = :v"});
        assert_eq!(units("PutItem", replace), 2);
        let small = json!({"Item": {"id": {"S": "m"}, "body": {"B": "aGVsbG8="}}});
        assert_eq!(units("PutItem", small), 1);
        let tx = json!({"TransactItems": [
            {"Put": {"Item": {"id": {"S": "a"}, "shard": {"S": "1"}},
                     "ConditionExpression": "attribute_not_exists(id)"}},
            {"ConditionCheck": {"Key": {"id": {"S": "b"}}}},
            {"Update": {"Key": {"id": {"S": "c"}}}}]});
        // Twice per action; the put created its item (one index entry).
        assert_eq!(units("TransactWriteItems", tx), (2 + 1) + 2 + 2);
        let unconditional = json!({"TransactItems": [
            {"Put": {"Item": {"id": {"S": "m"}, "shard": {"S": "1"}, "wkey": {"S": "w#1"}}}}]});
        assert_eq!(units("TransactWriteItems", unconditional), 2 + 2);
        assert_eq!(units("GetItem", json!({"Key": {"id": {"S": "a"}}})), 0);
    }
}
