//! The MSK side of kafka triggers at deploy: the stack's MSK event source must be able to
//! deliver a trigger's topics (the cluster exists and is ACTIVE, and the topics are among
//! those the event source consumes), or the deploy says why not.

use async_trait::async_trait;
use tripline_app::ports::KafkaSource;
use tripline_app::ports::StoreError;
use tripline_core::definition::KafkaTrigger;

use crate::store_error;

/// The cluster and topics the template's MSK event source consumes
/// (`TRIPLINE_MSK_CLUSTER_ARN`, `TRIPLINE_MSK_TOPICS`, comma-separated).
#[derive(Clone, Debug, PartialEq)]
pub struct MskSettings {
    pub cluster_arn: Option<String>,
    pub topics: Vec<String>,
}

impl MskSettings {
    pub fn from_env() -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        Self {
            cluster_arn: var("TRIPLINE_MSK_CLUSTER_ARN"),
            topics: var("TRIPLINE_MSK_TOPICS")
                .map(|t| {
                    t.split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
pub struct MskSource {
    kafka: aws_sdk_kafka::Client,
    settings: MskSettings,
}

impl MskSource {
    pub fn new(kafka: aws_sdk_kafka::Client, settings: MskSettings) -> Self {
        Self { kafka, settings }
    }
}

#[async_trait]
impl KafkaSource for MskSource {
    async fn refuse(&self, trigger: &KafkaTrigger) -> Result<Option<String>, StoreError> {
        if let Some(why) = per_trigger_settings(trigger) {
            return Ok(Some(why));
        }
        let Some(arn) = &self.settings.cluster_arn else {
            return Ok(Some(
                "this stack consumes no MSK cluster: set the template's MskClusterArn parameter (and MskTopics) and update the stack, then deploy again".into(),
            ));
        };
        let missing: Vec<&str> = trigger
            .topics
            .iter()
            .filter(|t| !self.settings.topics.contains(t))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Ok(Some(format!(
                "topic(s) {} are not among those the MSK event source consumes ({}); add them to the template's MskTopics parameter and update the stack",
                missing.join(", "),
                self.settings.topics.join(", ")
            )));
        }
        let described = self
            .kafka
            .describe_cluster_v2()
            .cluster_arn(arn)
            .send()
            .await;
        let cluster = match described {
            Ok(out) => out.cluster_info,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                return Ok(Some(format!(
                    "the MSK cluster {arn} does not exist; check the template's MskClusterArn parameter"
                )));
            }
            Err(e) => return Err(store_error("Kafka DescribeClusterV2", e)),
        };
        let state = cluster
            .as_ref()
            .and_then(|c| c.state())
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "UNKNOWN".into());
        if state != "ACTIVE" {
            let name = cluster
                .as_ref()
                .and_then(|c| c.cluster_name())
                .unwrap_or(arn.as_str());
            return Ok(Some(format!(
                "the MSK cluster {name} is {state}, not ACTIVE; deploy again once it is ACTIVE"
            )));
        }
        Ok(None)
    }
}

/// What the stack's one MSK event source mapping cannot do per trigger: its cluster, its
/// authentication and its starting position are the mapping's, set in the template
/// (MskClusterArn, MskStartingPosition), for every trigger alike.
fn per_trigger_settings(trigger: &KafkaTrigger) -> Option<String> {
    let mut fields = Vec::new();
    if trigger.cluster.is_some() {
        fields.push("`cluster`");
    }
    if trigger.start.is_some() {
        fields.push("`start`");
    }
    (!fields.is_empty()).then(|| format!(
        "{} is set on kafka trigger `{}`, but in AWS one MSK event source mapping reads every trigger's topics, with the cluster, authentication (IAM) and starting position of the template's MskClusterArn and MskStartingPosition parameters; remove {} (it is for the local shape, `tripline serve`)",
        fields.join(" and "),
        trigger.id,
        if fields.len() > 1 { "them" } else { "it" }
    ))
}
