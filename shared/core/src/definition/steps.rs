//! What a run does: steps, their kinds (actions) and their retry policies.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Duration;

use super::HttpMethod;

/// One step of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    pub id: String,
    /// A template expression; the step runs only when it is true (else it is `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Per attempt; default 30s for `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Values put into the run's `context`; templates also see `output` (this step's output).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract: BTreeMap<String, Value>,
    /// Values written to the workflow's context store (`store` in templates) when the step
    /// succeeds: strings are kept as they are, other values as JSON text, and `null`
    /// deletes the key. Templates also see `output`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract_to_context: BTreeMap<String, Value>,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// An outbound HTTP request. Output: `{status, headers, body}`.
    Http(HttpAction),
    /// Produces a JSON value from a template.
    Transform { value: Value },
    /// Ends the run as failed with a message (a template).
    Fail { message: String },
    /// Parks the run until its single-use `resume_url` is called (POST); the request's body
    /// becomes the step's output. `timeout` is how long it waits (none: until the run's
    /// `max_duration`).
    WaitForWebhook(WaitForWebhookAction),
    /// Parks the run until a person approves or rejects it through single-use URLs.
    /// `timeout` is how long the links stay valid (default 7 days).
    Approval(ApprovalAction),
    /// Parks the run for a `duration`, or `until` a time.
    Delay(DelayAction),
    /// Starts a run of another workflow; with `wait: true`, parks until it ends and takes
    /// its output.
    TriggerWorkflow(TriggerWorkflowAction),
    /// Runs its `steps` once for each item of an array, up to `concurrency` items at a
    /// time. Output: the items' outputs, in the items' order.
    Map(MapAction),
    /// Runs its `branches` at the same time and joins them. Output: each branch's output,
    /// by the branch's id.
    Parallel(ParallelAction),
}

/// What a `map` or `parallel` step does when an item or branch fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnItemFailure {
    /// The step fails, and with it the run, as soon as one item or branch has failed
    /// (with no retry left); requests still out are abandoned.
    #[default]
    FailFast,
    /// Every item or branch runs; a failed one's output is `{"error": {"step", "type",
    /// "message"}}` and the step succeeds.
    Collect,
}

/// The most items a `map` step takes.
pub const MAP_MAX_ITEMS: usize = 1000;
/// The highest `concurrency` of a `map` step.
pub const MAP_MAX_CONCURRENCY: u32 = 50;
/// The default `concurrency` of a `map` step.
pub const MAP_DEFAULT_CONCURRENCY: u32 = 10;
/// The most branches a `parallel` step has.
pub const PARALLEL_MAX_BRANCHES: usize = 20;
/// The most steps in a `map` item or a `parallel` branch.
pub const LANE_MAX_STEPS: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MapAction {
    /// An expression giving the array to run the steps for, like `trigger.body.orders`;
    /// the steps' templates see each element as `item` and its position as `index`.
    pub items: String,
    /// How many items run at the same time (1 to 50; default 10).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default)]
    pub on_failure: OnItemFailure,
    /// The steps run for each item (`http`, `transform` and `fail` steps); each item's
    /// output is its last step's.
    pub steps: Vec<Step>,
}

fn default_concurrency() -> u32 {
    MAP_DEFAULT_CONCURRENCY
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ParallelAction {
    /// The branches, each a sequence of steps; all run at the same time.
    pub branches: Vec<Branch>,
    #[serde(default)]
    pub on_failure: OnItemFailure,
}

/// One branch of a `parallel` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Branch {
    /// Its id: the key of its output, and `branch` in its steps' templates.
    pub id: String,
    /// Its steps (`http`, `transform` and `fail` steps); its output is its last step's.
    pub steps: Vec<Step>,
}

/// What a wait does when its `timeout` passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The run ends `failed` (`error_type: wait_timed_out`).
    #[default]
    Fail,
    /// The step succeeds with a `null` output (approval: `{"decision": "timed_out"}`) and
    /// the run goes on.
    Continue,
}

/// What a rejected approval does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnReject {
    /// The run ends `failed` (`error_type: rejected`).
    #[default]
    Fail,
    /// The step succeeds with `{"decision": "rejected", ...}` and the run goes on.
    Continue,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct WaitForWebhookAction {
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// An HTTP request made when the run parks, to hand the `resume_url` to whoever calls
    /// back. Its templates also see `wait` (`resume_url`, `expires_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<HttpAction>,
}

/// The default lifetime of approval links.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalAction {
    /// A string template shown on the review page: what is being approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default)]
    pub on_reject: OnReject,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// An HTTP request made when the run parks, so a team can post the links to chat.
    /// Its templates also see `approval` (`review_url`, `approve_url`, `reject_url`,
    /// `expires_at`, `summary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<HttpAction>,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct DelayAction {
    /// How long to wait, like `90s` or `2h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// A string template giving an RFC 3339 time to wait until.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerWorkflowAction {
    /// The id of the workflow to start (deployed by the time the step runs).
    pub workflow: String,
    /// A value template: the started run's `trigger.body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Park until the started run ends and take its output; its failure fails the step.
    /// Without it the step's output is `{"run_id", "workflow"}`.
    #[serde(default)]
    pub wait: bool,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Http(_) => "http",
            Action::Transform { .. } => "transform",
            Action::Fail { .. } => "fail",
            Action::WaitForWebhook(_) => "wait_for_webhook",
            Action::Approval(_) => "approval",
            Action::Delay(_) => "delay",
            Action::TriggerWorkflow(_) => "trigger_workflow",
            Action::Map(_) => "map",
            Action::Parallel(_) => "parallel",
        }
    }
    /// Pure steps need no I/O and never park: the engine runs them itself (a `map` or
    /// `parallel` step is pure when all its steps are).
    pub fn is_pure(&self) -> bool {
        match self {
            Action::Transform { .. } | Action::Fail { .. } => true,
            Action::Map(m) => m.steps.iter().all(|s| s.action.is_pure()),
            Action::Parallel(p) => p
                .branches
                .iter()
                .all(|b| b.steps.iter().all(|s| s.action.is_pure())),
            _ => false,
        }
    }

    /// The steps each lane of a `map` or `parallel` step runs: a map's for every item, a
    /// parallel's branch by branch. `None` for other kinds.
    pub fn lanes(&self) -> Option<Vec<&[Step]>> {
        match self {
            Action::Map(m) => Some(vec![m.steps.as_slice()]),
            Action::Parallel(p) => Some(p.branches.iter().map(|b| b.steps.as_slice()).collect()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpAction {
    #[serde(default = "default_http_method")]
    pub method: HttpMethod,
    /// A string template.
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// A value template sent as JSON; a string result is sent as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Statuses that count as success: numbers or classes like `2xx`; default `[2xx]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_status: Option<Vec<StatusPattern>>,
}

fn default_http_method() -> HttpMethod {
    HttpMethod::Get
}

/// `200` or a class like `"2xx"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusPattern {
    Code(u16),
    Class(String),
}

impl StatusPattern {
    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusPattern::Code(c) => *c == status,
            StatusPattern::Class(c) => c
                .strip_suffix("xx")
                .and_then(|d| d.parse::<u16>().ok())
                .is_some_and(|d| status / 100 == d),
        }
    }
    pub fn is_valid(&self) -> bool {
        match self {
            StatusPattern::Code(c) => (100..=599).contains(c),
            StatusPattern::Class(c) => matches!(c.as_str(), "1xx" | "2xx" | "3xx" | "4xx" | "5xx"),
        }
    }
}

/// How a failed step is tried again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
    /// Wait before the second attempt; default 1s.
    #[serde(default = "default_initial")]
    pub initial: Duration,
    /// Longest wait between attempts; default 5m.
    #[serde(default = "default_max")]
    pub max: Duration,
    /// Spread each wait over [wait/2, wait] so retries from many runs do not align.
    #[serde(default)]
    pub jitter: bool,
    /// Which failures retry; default `[timeout, connection, status_5xx, status_429]`.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

fn default_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_max() -> Duration {
    Duration::from_secs(300)
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::Timeout,
        RetryOn::Connection,
        RetryOn::Status5xx,
        RetryOn::Status429,
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Fixed,
    #[default]
    Exponential,
}

/// A class of step failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The attempt took longer than the step's `timeout`.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// The downstream answered 5xx.
    Status5xx,
    /// The downstream answered 429.
    Status429,
    /// The downstream answered another status outside `success_status`.
    Status4xx,
}

impl Retry {
    /// The wait before attempt `next_attempt` (2 for the first retry). `jitter_unit` in [0, 1)
    /// comes from the caller so that this stays a pure function.
    pub fn delay_before(&self, next_attempt: u32, jitter_unit: f64) -> std::time::Duration {
        let initial = self.initial.std();
        let base = match self.backoff {
            Backoff::Fixed => initial,
            Backoff::Exponential => {
                let exp = next_attempt.saturating_sub(2).min(30);
                initial.saturating_mul(1u32 << exp)
            }
        };
        let capped = base.min(self.max.std());
        if self.jitter {
            capped.mul_f64(0.5 + 0.5 * jitter_unit.clamp(0.0, 1.0))
        } else {
            capped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(backoff: Backoff) -> Retry {
        Retry {
            max_attempts: 5,
            backoff,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            jitter: false,
            on: default_retry_on(),
        }
    }

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap() {
        let r = retry(Backoff::Exponential);
        let ms: Vec<u128> = (2..=5)
            .map(|a| r.delay_before(a, 0.0).as_millis())
            .collect();
        assert_eq!(ms, vec![100, 200, 350, 350]);
    }

    #[test]
    fn fixed_backoff_waits_the_same_each_time() {
        let r = retry(Backoff::Fixed);
        assert_eq!(r.delay_before(4, 0.0).as_millis(), 100);
    }

    #[test]
    fn jitter_stays_within_half_and_whole_wait() {
        let mut r = retry(Backoff::Fixed);
        r.jitter = true;
        assert_eq!(r.delay_before(2, 0.0).as_millis(), 50);
        assert!(r.delay_before(2, 0.999).as_millis() <= 100);
    }

    #[test]
    fn status_classes_match_their_hundreds() {
        assert!(StatusPattern::Class("2xx".into()).matches(204));
        assert!(!StatusPattern::Class("2xx".into()).matches(301));
        assert!(StatusPattern::Code(409).matches(409));
        assert!(!StatusPattern::Class("7xx".into()).is_valid());
    }
}
