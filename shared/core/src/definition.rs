//! The workflow definition format (YAML or JSON). These types are the format: the JSON Schema
//! that `tripline schema` prints is generated from them.

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

/// What starts a run.
// Few of these exist per workflow; boxing would only make the format types awkward.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    Webhook(WebhookTrigger),
    Manual(ManualTrigger),
    Cron(CronTrigger),
    Kafka(KafkaTrigger),
    Flow(FlowTrigger),
}

impl Trigger {
    pub fn id(&self) -> &str {
        match self {
            Trigger::Webhook(t) => &t.id,
            Trigger::Manual(t) => &t.id,
            Trigger::Cron(t) => &t.id,
            Trigger::Kafka(t) => &t.id,
            Trigger::Flow(t) => &t.id,
        }
    }

    /// The expression that must be true for an input to start a run.
    pub fn condition(&self) -> Option<&str> {
        match self {
            Trigger::Webhook(t) => t.condition.as_deref(),
            Trigger::Manual(t) => t.condition.as_deref(),
            Trigger::Cron(t) => t.condition.as_deref(),
            Trigger::Kafka(t) => t.condition.as_deref(),
            Trigger::Flow(t) => t.condition.as_deref(),
        }
    }

    /// The template of the key that makes two inputs the same.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Trigger::Webhook(t) => t.idempotency_key.as_deref(),
            Trigger::Manual(t) => t.idempotency_key.as_deref(),
            Trigger::Cron(t) => t.idempotency_key.as_deref(),
            Trigger::Kafka(t) => t.idempotency_key.as_deref(),
            Trigger::Flow(t) => t.idempotency_key.as_deref(),
        }
    }
}

/// Starts a run when a cron schedule comes due.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CronTrigger {
    /// Names the trigger within the workflow; defaults to `cron`.
    #[serde(default = "default_cron_id")]
    pub id: String,
    /// Five fields (minute hour day-of-month month day-of-week), six with seconds first,
    /// or a macro: `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub schedule: String,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Paris`; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What a tick does while this trigger's previous run has not ended.
    #[serde(default)]
    pub overlap: Overlap,
    /// What happens to the ticks that came due while the scheduler was not running (local
    /// shape).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// A template expression over `trigger` (`scheduled_time`, …) that must be true for a
    /// tick to start a run, e.g. `is_weekday(trigger.scheduled_time, 'Europe/Paris')`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A template over `trigger` naming the ticks that are the same run (each tick is one
    /// by its scheduled time already): e.g. `{{ local_date(trigger.scheduled_time) }}`
    /// starts at most one run a day, whatever the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl CronTrigger {
    /// The parsed schedule (validation has checked that it parses).
    pub fn parsed(&self) -> Result<crate::cron::CronSchedule, String> {
        crate::cron::CronSchedule::parse(&self.schedule, self.timezone.as_deref())
    }
}

/// Starts a run for each record of its topics that passes its filter and condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KafkaTrigger {
    /// Names the trigger within the workflow; defaults to `kafka`.
    #[serde(default = "default_kafka_id")]
    pub id: String,
    /// The topics whose records start runs.
    pub topics: Vec<String>,
    /// `none` (default): runs start as records arrive; `key`: the runs of one record key
    /// start one at a time, in offset order, while different keys run in parallel.
    #[serde(default)]
    pub ordering: KafkaOrdering,
    /// JSON containment filter over the trigger input (`body`, `key`, `headers`, `topic`,
    /// `partition`, `offset`, `timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// A template expression over `trigger` that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A template over `trigger` naming what makes two inputs the same: a second input
    /// with the same key within 24 h starts nothing and gets the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Starts a run when a run of another workflow ends with one of the statuses in `on`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowTrigger {
    /// Names the trigger within the workflow; defaults to `flow`.
    #[serde(default = "default_flow_id")]
    pub id: String,
    /// The workflow whose runs' ends start this one.
    pub workflow: String,
    /// Which ends start a run; default `[succeeded]`.
    #[serde(default = "default_flow_on")]
    pub on: Vec<FlowOn>,
    /// When the ended run's output is an array, start one run per item (`trigger.body` is
    /// the item, `trigger.index` its position).
    #[serde(default)]
    pub for_each: bool,
    /// JSON containment filter over the trigger input (`body`, `status`, `error`,
    /// `parent`, `index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// A template expression over `trigger` that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A template over `trigger` naming what makes two inputs the same: a second input
    /// with the same key within 24 h starts nothing and gets the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The end of a run that a flow trigger reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowOn {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl FlowOn {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowOn::Succeeded => "succeeded",
            FlowOn::Failed => "failed",
            FlowOn::TimedOut => "timed_out",
            FlowOn::Cancelled => "cancelled",
        }
    }
    pub fn of(status: crate::run::RunStatus) -> Option<FlowOn> {
        use crate::run::RunStatus as S;
        match status {
            S::Succeeded => Some(FlowOn::Succeeded),
            S::Failed => Some(FlowOn::Failed),
            S::TimedOut => Some(FlowOn::TimedOut),
            S::Cancelled => Some(FlowOn::Cancelled),
            S::Queued | S::Running | S::Waiting => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaOrdering {
    #[default]
    None,
    Key,
}

/// A cron tick while the trigger's previous run is still going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is recorded `skipped` and starts nothing.
    #[default]
    Skip,
    /// The run is recorded `queued` and starts when the previous one ends.
    Queue,
    /// The run starts at once, beside the previous one.
    Allow,
}

/// Ticks that came due while the scheduler was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Each is recorded `missed`; nothing runs.
    #[default]
    None,
    /// The latest one runs; the others are recorded `missed`.
    Last,
    /// Each runs, oldest first, up to 100; older ones are recorded `missed`.
    All,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookTrigger {
    /// Names the trigger within the workflow; defaults to `webhook`.
    #[serde(default = "default_webhook_id")]
    pub id: String,
    /// The secret in the URL `/hooks/{token}`: at least 22 characters of `A-Z a-z 0-9 - _`
    /// (≥ 128 bits when random). Left out, the server generates one at deploy and keeps it
    /// across revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Accepted HTTP methods; default `[POST]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<HttpMethod>,
    #[serde(default)]
    pub auth: WebhookAuth,
    /// `async` (default) answers 202 once the request is durably recorded; `sync` waits
    /// for the run to end and answers with its output.
    #[serde(default)]
    pub response: ResponseMode,
    /// How long a `sync` reply waits for the run before answering 202; default 25s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_budget: Option<Duration>,
    /// A custom reply instead of the default envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<CustomReply>,
    /// JSON containment filter over the trigger input (`body`, `headers`, `query`, `method`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// A template expression over `trigger` that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A template over `trigger` naming what makes two inputs the same: a second input
    /// with the same key within 24 h starts nothing and gets the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

fn default_webhook_id() -> String {
    "webhook".into()
}
fn default_manual_id() -> String {
    "manual".into()
}
fn default_cron_id() -> String {
    "cron".into()
}
fn default_kafka_id() -> String {
    "kafka".into()
}
fn default_flow_id() -> String {
    "flow".into()
}
fn default_flow_on() -> Vec<FlowOn> {
    vec![FlowOn::Succeeded]
}
fn default_methods() -> Vec<HttpMethod> {
    vec![HttpMethod::Post]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ManualTrigger {
    #[serde(default = "default_manual_id")]
    pub id: String,
    /// JSON containment filter over the trigger input (`body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// A template expression over `trigger` that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A template over `trigger` naming what makes two inputs the same: a second input
    /// with the same key within 24 h starts nothing and gets the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
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

/// Webhook authentication.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WebhookAuth {
    #[default]
    None,
    /// A key in a header; several keys may be valid at once (rotation).
    ApiKey {
        #[serde(default = "default_api_key_header")]
        header: String,
        keys: Vec<String>,
    },
    /// HTTP Basic authentication.
    Basic { username: String, password: String },
    /// Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`),
    /// under any of `secrets` (`whsec_…`; several during a rotation). A verified
    /// `webhook-id` is the request's idempotency key when the trigger has no other.
    StandardWebhooks {
        secrets: Vec<String>,
        /// How far `webhook-timestamp` may be from now (replays older than this are
        /// refused); default 5m.
        #[serde(default = "default_signature_tolerance")]
        tolerance: Duration,
    },
}

fn default_signature_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    #[default]
    Async,
    Sync,
}

/// A reply the workflow writes itself. Templates see `trigger`, `run` and, for sync
/// replies, `output` (the run's final output) and `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomReply {
    /// HTTP status; default 200 (sync) or 202 (async).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A value template: a JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

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
        }
    }
    /// Pure steps need no I/O and never park: the engine runs them itself.
    pub fn is_pure(&self) -> bool {
        matches!(self, Action::Transform { .. } | Action::Fail { .. })
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
