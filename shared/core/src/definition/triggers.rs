//! What starts a run: the trigger kinds and their settings.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Duration;

use super::HttpMethod;

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
    Once(OnceTrigger),
}

/// Starts one run at a given instant (a launch, a reminder, "run this once tomorrow at
/// 9:00"): recorded at deploy, `queued` until its time, then started by the queue's timer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OnceTrigger {
    #[serde(default = "default_once_id")]
    pub id: String,
    /// RFC 3339 with its offset (`2026-12-03T09:00:00+01:00`), or a local time
    /// (`2026-12-03T09:00`) in `timezone`.
    pub at: String,
    /// The IANA zone of a local `at` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The run's `trigger.body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

impl OnceTrigger {
    /// The instant the run starts.
    pub fn instant(&self) -> Result<crate::time::Timestamp, crate::time::BadTime> {
        crate::time::Timestamp::parse_in_zone(&self.at, self.timezone.as_deref())
    }
}

fn default_once_id() -> String {
    "once".into()
}

impl Trigger {
    pub fn id(&self) -> &str {
        match self {
            Trigger::Webhook(t) => &t.id,
            Trigger::Manual(t) => &t.id,
            Trigger::Once(t) => &t.id,
            Trigger::Cron(t) => &t.id,
            Trigger::Kafka(t) => &t.id,
            Trigger::Flow(t) => &t.id,
        }
    }

    /// What every trigger shares: the gate an input passes to start a run.
    pub fn gate(&self) -> Gate<'_> {
        match self {
            Trigger::Webhook(t) => t.gate(),
            Trigger::Manual(t) => t.gate(),
            Trigger::Once(_) => Gate::default(),
            Trigger::Cron(t) => t.gate(),
            Trigger::Kafka(t) => t.gate(),
            Trigger::Flow(t) => t.gate(),
        }
    }
}

/// The gate every trigger kind has: a JSON containment `filter` (not on cron triggers), a
/// `condition` expression, and an `idempotency_key` template. The fields stay on each
/// trigger's own struct (flattening them would lose serde's field paths in validation's
/// messages); this is the one view of them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gate<'a> {
    pub filter: Option<&'a Value>,
    pub condition: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
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

macro_rules! gated {
    ($($kind:ty),*) => {$(
        impl $kind {
            /// This trigger's gate: its filter, condition and idempotency key.
            pub fn gate(&self) -> Gate<'_> {
                Gate {
                    filter: self.filter.as_ref(),
                    condition: self.condition.as_deref(),
                    idempotency_key: self.idempotency_key.as_deref(),
                }
            }
        }
    )*};
}

gated!(WebhookTrigger, ManualTrigger, KafkaTrigger, FlowTrigger);

impl CronTrigger {
    /// This trigger's gate: its condition and idempotency key (a tick has no body to
    /// filter).
    pub fn gate(&self) -> Gate<'_> {
        Gate {
            filter: None,
            condition: self.condition.as_deref(),
            idempotency_key: self.idempotency_key.as_deref(),
        }
    }
    /// The parsed schedule (validation has checked that it parses).
    pub fn parsed(&self) -> Result<crate::time::cron::CronSchedule, crate::time::BadTime> {
        crate::time::cron::CronSchedule::parse(&self.schedule, self.timezone.as_deref())
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
    /// `false`: the trigger starts nothing. A topic no enabled trigger consumes is not
    /// read (locally), and its position is kept: turned on again, it goes on from there.
    /// A record that reaches a workflow whose triggers on its topic are all off (a topic
    /// other triggers still consume; in AWS, MSK delivers every topic) is kept in the inbox
    /// `skipped`, to reprocess.
    #[serde(default = "enabled", skip_serializing_if = "is_enabled")]
    pub enabled: bool,
    /// Where its topics are, when not on the server's cluster (`--kafka-*` flags, which
    /// are the defaults of what is left out). Local shape only: in AWS the stack's MSK
    /// event source reads every trigger's topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::KafkaCluster>,
    /// Where it starts reading a partition it has no position for: `earliest`, `latest`,
    /// an RFC 3339 time or Unix milliseconds (the first record at or after it); default
    /// the server's `--kafka-start`. Local shape only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

impl KafkaTrigger {
    /// Whether it is read by a consumer of its own (its own cluster or start), with its
    /// own positions, rather than by the server's shared one.
    pub fn own_consumer(&self) -> bool {
        self.cluster.is_some() || self.start.is_some()
    }
}

fn enabled() -> bool {
    true
}

fn is_enabled(on: &bool) -> bool {
    *on
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
    /// Client addresses allowed to call: IPs or CIDR ranges (`203.0.113.0/24`,
    /// `2001:db8::/32`). Others get 403 and nothing is recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    /// Keep a body of any content type (images, `application/octet-stream`, PDFs) instead
    /// of answering 415: `trigger.body` is then `{content_type, bytes, base64}`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_body: bool,
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

/// Webhook authentication. Every credential (an API key, a password, a signing secret) is
/// written as a reference to a secret, `"{{ secrets.NAME }}"`, or inline (accepted, with a
/// warning: an inline credential is part of the definition).
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
        /// refused); default 5m, at most 1h.
        #[serde(default = "default_signature_tolerance")]
        tolerance: Duration,
    },
    /// An HMAC signature of the raw body: a sender's scheme (`preset`), or one described
    /// field by field.
    Hmac(HmacAuth),
}

/// `type: hmac`: a `preset` (github, stripe, slack, shopify) or a generic scheme
/// (`header`, `algorithm`, `encoding`, `prefix`, `signed`, `timestamp_header`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct HmacAuth {
    /// A sender's scheme, checked as its documentation specifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<HmacPreset>,
    /// The signing secrets: any of them may match (rotation).
    pub secrets: Vec<String>,
    /// Generic: the header that carries the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Generic: `sha1`, `sha256` (default) or `sha512`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<HmacAlgorithm>,
    /// Generic: `hex` (default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SignatureEncoding>,
    /// Generic: text before the signature in the header, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Generic: what is signed, with `{body}` (the raw body) and `{timestamp}` (the
    /// timestamp header's value) in it; default `{body}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<String>,
    /// Generic: the header with the Unix-seconds timestamp that `signed` reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
    /// Generic: the header whose value names a delivery (its idempotency key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_header: Option<String>,
    /// How far a signed timestamp may be from now; default 5m, at most 1h (well inside
    /// the 24 h idempotency window, so a replay is refused or recognized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HmacPreset {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`; delivery id
    /// `X-GitHub-Delivery`.
    Github,
    /// `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">[,v1=…]`; delivery id
    /// the event's `id`.
    Stripe,
    /// `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:ts:body">` with
    /// `X-Slack-Request-Timestamp`; delivery id the event's `event_id` when it has one.
    Slack,
    /// `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`; delivery id
    /// `X-Shopify-Webhook-Id`.
    Shopify,
}

impl HmacPreset {
    pub fn as_str(self) -> &'static str {
        match self {
            HmacPreset::Github => "github",
            HmacPreset::Stripe => "stripe",
            HmacPreset::Slack => "slack",
            HmacPreset::Shopify => "shopify",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// Where a signed delivery's id is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryId {
    Header(String),
    /// A top-level field of the JSON body.
    BodyField(&'static str),
}

/// A signature scheme, resolved from a preset or the generic fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SignatureScheme {
    pub header: String,
    pub algorithm: HmacAlgorithm,
    pub encoding: SignatureEncoding,
    pub prefix: String,
    /// `{body}` and `{timestamp}` placeholders.
    pub signed: String,
    pub timestamp_header: Option<String>,
    /// Stripe's header: `t=…` and `v1=…` pairs, the timestamp inside the header.
    pub stripe_format: bool,
    pub tolerance: Duration,
    pub delivery_id: Option<DeliveryId>,
}

/// The most a signature's timestamp may be off: well below the idempotency window.
pub const MAX_SIGNATURE_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(3600);

impl HmacAuth {
    /// The scheme to check (validation has refused a generic one without `header`).
    pub fn scheme(&self) -> SignatureScheme {
        let tolerance = self.tolerance.unwrap_or_else(default_signature_tolerance);
        let generic = || SignatureScheme {
            header: self.header.clone().unwrap_or_default().to_ascii_lowercase(),
            algorithm: self.algorithm.unwrap_or_default(),
            encoding: self.encoding.unwrap_or_default(),
            prefix: self.prefix.clone().unwrap_or_default(),
            signed: self.signed.clone().unwrap_or_else(|| "{body}".into()),
            timestamp_header: self
                .timestamp_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            stripe_format: false,
            tolerance,
            delivery_id: self
                .id_header
                .as_ref()
                .map(|h| DeliveryId::Header(h.to_ascii_lowercase())),
        };
        let preset = |header: &str, encoding, prefix: &str, signed: &str| SignatureScheme {
            header: header.into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding,
            prefix: prefix.into(),
            signed: signed.into(),
            timestamp_header: None,
            stripe_format: false,
            tolerance,
            delivery_id: None,
        };
        match self.preset {
            None => generic(),
            Some(HmacPreset::Github) => SignatureScheme {
                delivery_id: Some(DeliveryId::Header("x-github-delivery".into())),
                ..preset(
                    "x-hub-signature-256",
                    SignatureEncoding::Hex,
                    "sha256=",
                    "{body}",
                )
            },
            Some(HmacPreset::Stripe) => SignatureScheme {
                stripe_format: true,
                delivery_id: Some(DeliveryId::BodyField("id")),
                ..preset(
                    "stripe-signature",
                    SignatureEncoding::Hex,
                    "",
                    "{timestamp}.{body}",
                )
            },
            Some(HmacPreset::Slack) => SignatureScheme {
                timestamp_header: Some("x-slack-request-timestamp".into()),
                delivery_id: Some(DeliveryId::BodyField("event_id")),
                ..preset(
                    "x-slack-signature",
                    SignatureEncoding::Hex,
                    "v0=",
                    "v0:{timestamp}:{body}",
                )
            },
            Some(HmacPreset::Shopify) => SignatureScheme {
                delivery_id: Some(DeliveryId::Header("x-shopify-webhook-id".into())),
                ..preset(
                    "x-shopify-hmac-sha256",
                    SignatureEncoding::Base64,
                    "",
                    "{body}",
                )
            },
        }
    }
}

impl WebhookAuth {
    /// The credential fields, each with its path under `auth`: API keys, the Basic
    /// password, signing secrets.
    pub fn credentials(&self) -> Vec<(String, &str)> {
        match self {
            WebhookAuth::None => Vec::new(),
            WebhookAuth::ApiKey { keys, .. } => keys
                .iter()
                .enumerate()
                .map(|(i, k)| (format!("keys[{i}]"), k.as_str()))
                .collect(),
            WebhookAuth::Basic { password, .. } => vec![("password".into(), password.as_str())],
            WebhookAuth::StandardWebhooks { secrets, .. }
            | WebhookAuth::Hmac(HmacAuth { secrets, .. }) => secrets
                .iter()
                .enumerate()
                .map(|(i, k)| (format!("secrets[{i}]"), k.as_str()))
                .collect(),
        }
    }

    /// The credential fields, to change them (hiding them in answers).
    pub fn credentials_mut(&mut self) -> Vec<&mut String> {
        match self {
            WebhookAuth::None => Vec::new(),
            WebhookAuth::ApiKey { keys, .. } => keys.iter_mut().collect(),
            WebhookAuth::Basic { password, .. } => vec![password],
            WebhookAuth::StandardWebhooks { secrets, .. }
            | WebhookAuth::Hmac(HmacAuth { secrets, .. }) => secrets.iter_mut().collect(),
        }
    }
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
