//! The MSK side of kafka triggers at deploy: the stack's MSK event source must be able to
//! deliver a trigger's topics (the cluster exists and is ACTIVE, and the topics are among
//! those the event source consumes), or the deploy says why not.

use async_trait::async_trait;
use tripline_app::ports::KafkaSource;
use tripline_app::ports::StoreError;
use tripline_core::definition::KafkaTrigger;

use crate::signed::Signed;
use crate::{AwsError, CallCounter};

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

/// The deploy-time check's one MSK operation, `DescribeClusterV2`, is a signed request of
/// its own (`signed.rs`) rather than through `aws-sdk-kafka`, whose code was about 0.2 MB
/// of the control API.
#[derive(Debug)]
pub struct MskSource {
    signed: Signed,
    settings: MskSettings,
}

/// What `DescribeClusterV2` said of a cluster.
enum Cluster {
    Missing,
    Found { name: Option<String>, state: String },
}

impl MskSource {
    pub fn new(
        config: &aws_config::SdkConfig,
        counter: Option<CallCounter>,
        settings: MskSettings,
    ) -> Self {
        Self {
            signed: Signed::new(config, counter),
            settings,
        }
    }

    async fn describe(&self, arn: &str) -> Result<Cluster, StoreError> {
        const OP: &str = "Kafka DescribeClusterV2";
        let url = format!(
            "{}/api/v2/clusters/{}",
            self.signed.endpoint("kafka"),
            encode(arn)
        );
        let failed = |said: String, cause: crate::BoxError| {
            StoreError::Unavailable(Box::new(AwsError {
                op: OP.into(),
                said,
                cause,
            }))
        };
        let (status, body) = self
            .signed
            .send(
                "kafka",
                "Kafka.DescribeClusterV2",
                reqwest::Method::GET,
                &url,
                &[],
                Vec::new(),
            )
            .await
            .map_err(|(said, cause)| failed(said, cause))?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = answer["__type"]
            .as_str()
            .or(answer["code"].as_str())
            .unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND || code.ends_with("NotFoundException") {
            return Ok(Cluster::Missing);
        }
        if !status.is_success() {
            let said = format!("{status}: {}", answer["message"].as_str().unwrap_or(code));
            return Err(failed(said.clone(), said.into()));
        }
        let info = &answer["clusterInfo"];
        Ok(Cluster::Found {
            name: info["clusterName"].as_str().map(str::to_string),
            state: info["state"].as_str().unwrap_or("UNKNOWN").to_string(),
        })
    }
}

/// A path segment, percent-encoded (an ARN's `:` and `/` included), as the SDK sends it.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
        match self.describe(arn).await? {
            Cluster::Missing => Ok(Some(format!(
                "the MSK cluster {arn} does not exist; check the template's MskClusterArn parameter"
            ))),
            Cluster::Found { state, .. } if state == "ACTIVE" => Ok(None),
            Cluster::Found { name, state } => Ok(Some(format!(
                "the MSK cluster {} is {state}, not ACTIVE; deploy again once it is ACTIVE",
                name.as_deref().unwrap_or(arn)
            ))),
        }
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
