//! The workflow definition format (YAML or JSON). These types are the format: the JSON Schema
//! that `tripline schema` prints is generated from them.

mod kafka;
mod steps;
mod triggers;

pub use kafka::*;
pub use steps::*;
pub use triggers::*;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Duration;

/// A workflow: what starts it (`triggers`) and what it does (`steps`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Workflow {
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    pub steps: Vec<Step>,
    /// A value template for the run's final output. Without it, the output of the last step
    /// that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The longest a run may take from its start, waiting included; past it the run ends
    /// `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Duration>,
    /// POSTed the run's envelope after a run ends `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Callback>,
    /// POSTed the run's envelope after a run ends `failed`, `timed_out` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Callback>,
    /// The Standard Webhooks signing secret of the callbacks (`whsec_` and base64). Left
    /// out, the server generates one at deploy and keeps it across revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
    /// A value template for the state a successful cron run leaves to the next one (its
    /// `state` input). Without it, the `state` field of the run's output, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    /// At most `limit` runs `running` or `waiting` at once (per value of `key`, when
    /// given); the others wait `queued`, first in first out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The only hosts this workflow's requests (steps, notifications, callbacks) may reach:
    /// `api.example.com`, or `*.example.com` for its subdomains. Empty: any public host.
    /// With a list, redirects are not followed (the 3xx is the answer): a redirect could
    /// lead anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// How long this workflow's runs, inbox messages and ticks are kept (e.g. `90d`);
    /// without it, the server's default. A run still queued, running or waiting is never
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// `uses_store`, worked out once per loaded definition (runs ask at every advance).
    #[serde(skip)]
    #[schemars(skip)]
    pub store_use: Memo,
}

/// A value derived from the rest of a definition, worked out once: never serialized, and
/// never part of a comparison.
#[derive(Clone, Debug, Default)]
pub struct Memo(std::sync::OnceLock<bool>);

impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A workflow's concurrency limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// How many runs may be `running` or `waiting` at once: 1 to 10,000.
    pub limit: u32,
    /// A template over `trigger` (e.g. `{{ trigger.body.customer_id }}`): the limit holds
    /// for each of its values on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Workflow {
    /// Whether its runs read or write the context store: a step writes it, or a template
    /// mentions `store`. A superset (the word in a literal counts too): a false positive
    /// costs a read of the store, a false negative would fail a template.
    pub fn uses_store(&self) -> bool {
        *self.store_use.0.get_or_init(|| {
            self.steps.iter().any(|s| !s.extract_to_context.is_empty())
                || serde_json::to_string(self).is_ok_and(|t| t.contains("store"))
        })
    }

    /// The callback for a run that ended with `status`, if the workflow has one.
    pub fn callback_for(&self, status: crate::run::RunStatus) -> Option<&Callback> {
        use crate::run::RunStatus::*;
        match status {
            Succeeded => self.on_success.as_ref(),
            Failed | TimedOut | Cancelled => self.on_failure.as_ref(),
            Queued | Running | Waiting => None,
        }
    }
}

/// An HTTP POST of the run's envelope after it ends, signed the Standard Webhooks way
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and retried with back-off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Callback {
    /// An http:// or https:// URL (a string template over `run`, `trigger`, `context`).
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Default: 8 attempts, exponential from 1s up to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Per attempt; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl Callback {
    pub fn retry_policy(&self) -> Retry {
        self.retry.clone().unwrap_or(Retry {
            max_attempts: 8,
            backoff: Backoff::Exponential,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: true,
            on: vec![
                RetryOn::Timeout,
                RetryOn::Connection,
                RetryOn::Status5xx,
                RetryOn::Status429,
                RetryOn::Status4xx,
            ],
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }
}
