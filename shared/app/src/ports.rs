//! The ports: what the use cases need from storage, queues and time. Adapters (embedded
//! SQLite, AWS) implement them; the use cases never see an adapter's types.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tripline_core::definition::{CronTrigger, KafkaTrigger};
use tripline_core::{Run, Timestamp, Workflow};

/// A deployed revision of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub id: String,
    pub revision: u32,
    /// The definition as deployed, with generated webhook tokens filled in.
    pub definition: Workflow,
    /// The definition as its author wrote it (to tell an unchanged redeploy).
    pub source: Value,
    pub deployed_at: Timestamp,
    /// A removal: the workflow is no longer deployed (its triggers are gone; its runs keep
    /// their revisions). Deploying it again makes a new revision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// The operator's switches: the workflow, or single triggers, turned off without
    /// removing them. Kept across deploys; a change is a new revision with the same
    /// definition.
    #[serde(default, skip_serializing_if = "Switches::all_on")]
    pub switches: Switches,
}

impl WorkflowRecord {
    /// Whether `trigger` may start runs now: the workflow is on and the trigger is not
    /// switched off.
    pub fn is_on(&self, trigger: &str) -> bool {
        !self.switches.disabled && !self.switches.triggers_off.contains(trigger)
    }
}

/// What an operator switched off (`POST /v1/workflows/{id}/disable`, `…/triggers/{t}/disable`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Switches {
    /// The whole workflow: no trigger starts a run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Single triggers, by id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub triggers_off: std::collections::BTreeSet<String>,
}

impl Switches {
    pub fn all_on(&self) -> bool {
        !self.disabled && self.triggers_off.is_empty()
    }
}

/// What happened to an inbound message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Runs were started.
    Started { run_ids: Vec<String> },
    /// An idempotency key mapped the message to a run started earlier.
    Duplicate { run_id: String },
    /// No trigger matched: which filter or condition failed, and where.
    Filtered { reason: String },
    /// The message could not be accepted (malformed body, unsupported type, too large).
    Rejected { reason: String },
    /// A cron tick that started nothing by its trigger's policy (`overlap: skip`).
    Skipped { reason: String },
    /// A cron tick that came due while the scheduler was not running, and was not caught
    /// up (`catch_up`).
    Missed { reason: String },
    /// A cron tick delivered again: `tick` is the id of its first record (and of its run,
    /// when it started one).
    DuplicateTick { tick: String },
    /// An operator's edited copy of the message `of`, kept beside it; reprocessing it
    /// matches it like a new arrival.
    Edited { of: String },
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Started { .. } => "started",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Filtered { .. } => "filtered",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Missed { .. } => "missed",
            Outcome::DuplicateTick { .. } => "duplicate",
            Outcome::Edited { .. } => "edited",
        }
    }
}

/// An inbound request as received, stored before it is acknowledged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    pub id: String,
    pub received_at: Timestamp,
    pub workflow: String,
    pub trigger: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lowercased names; credentials redacted.
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The raw body bytes.
    #[serde(skip)]
    pub body: Vec<u8>,
    pub outcome: Outcome,
    /// A cron tick's scheduled time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Timestamp>,
    /// A Kafka record's coordinates, timestamp, key and headers as received (so that it
    /// can be reprocessed exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaMeta>,
    /// The message this one reprocesses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess_of: Option<String>,
    /// The workflow's `retention` when it sets one (see `Run::retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<tripline_core::Duration>,
}

impl InboxMessage {
    /// A message received `at`, for `trigger` of `workflow` by `method` (an HTTP method,
    /// or `CRON` / `KAFKA`); its path, query, headers and body empty, and its outcome
    /// still to be decided (admission sets it).
    pub fn new(id: String, at: Timestamp, workflow: &str, trigger: &str, method: &str) -> Self {
        InboxMessage {
            id,
            received_at: at,
            workflow: workflow.to_string(),
            trigger: trigger.to_string(),
            method: method.to_string(),
            path: String::new(),
            query: String::new(),
            headers: Vec::new(),
            content_type: None,
            body: Vec::new(),
            outcome: Outcome::Rejected {
                reason: String::new(),
            },
            scheduled_at: None,
            kafka: None,
            reprocess_of: None,
            retain: None,
        }
    }

    /// With `body` as its JSON body.
    pub fn with_json(mut self, body: &Value) -> Self {
        self.content_type = Some("application/json".into());
        self.body = serde_json::to_vec(body).unwrap_or_default();
        self
    }

    /// With `path` as its path.
    pub fn at_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }
}

/// A Kafka record's metadata in its inbox message; key and header values in base64.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaMeta {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// A claim on an idempotency key: the first run for the key within the window wins.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotencyClaim {
    /// Scoped by the caller, e.g. `{workflow}/{trigger}/{key}`.
    pub key: String,
    pub expires_at: Timestamp,
    /// The key is the message's own: no message with another id takes it (a cron tick's
    /// key and id both come from its trigger and scheduled time). A store may then let the
    /// message's record hold the key for as long as it keeps that record, and leave the
    /// claim unwritten when the record outlives it (it still admits the message only where
    /// none has its id). Keys that many messages share (`idempotency_key`s) are `false`.
    pub held_by_message: bool,
}

/// Everything an accepted message writes, in one durable step.
#[derive(Clone, Debug)]
pub struct Admission {
    pub message: InboxMessage,
    pub runs: Vec<Run>,
    pub idempotency: Option<IdempotencyClaim>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Admitted {
    /// Recorded. `to_enqueue` are the queued runs the caller must still send to the
    /// [`Queue`]; a store whose queue lives in the same database enqueues them in the same
    /// transaction and returns none.
    New { to_enqueue: Vec<String> },
    /// The idempotency key was already claimed by this run: nothing new was started (the
    /// message was recorded with outcome `duplicate`).
    Duplicate { run_id: String },
}

pub use crate::queries::{InboxQuery, RunQuery, contains_text};

/// A state-changing control action, as the audit log keeps it: who (the API key's name),
/// what (the route and method), to what (the path), when, from where, and the answer's
/// status. Appended only: the API lists entries and never changes or removes one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: Timestamp,
    /// The API key's name (`main` for `--api-key`, `local` on loopback without a key).
    pub key: String,
    /// The route, e.g. `PUT /v1/workflows/{id}`.
    pub action: String,
    /// The path acted on, e.g. `/v1/workflows/orders`.
    pub path: String,
    pub status: u16,
    /// The client's address, where the shape knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// One page of a listing, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the record changed since it was read.
    #[error("the record changed since it was read (conditional write lost)")]
    Conflict,
    /// The store could not be reached or failed; the operation may be retried.
    #[error("the store failed: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Records: workflows, runs, inbox messages, idempotency keys.
///
/// Every run write is conditional on the run's `version`: [`Store::save_run`] succeeds only
/// when the stored version equals `run.version`, and stores `version + 1`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new revision; fails with `Conflict` when `record.revision` is not the next.
    async fn deploy(&self, record: &WorkflowRecord) -> Result<(), StoreError>;
    /// The latest revision of every workflow.
    async fn latest_workflows(&self) -> Result<Vec<WorkflowRecord>, StoreError>;
    /// One revision, or the latest with `None`.
    async fn workflow(
        &self,
        id: &str,
        revision: Option<u32>,
    ) -> Result<Option<WorkflowRecord>, StoreError>;
    /// Every revision's number and time, newest first.
    async fn revisions(&self, id: &str) -> Result<Vec<(u32, Timestamp)>, StoreError>;

    /// Durably records a message and the runs it starts (see [`Admitted`]).
    async fn admit(&self, admission: Admission) -> Result<Admitted, StoreError>;

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError>;
    /// Conditional write; returns the run with its new version.
    async fn save_run(&self, run: &Run) -> Result<Run, StoreError>;
    async fn runs(&self, query: &RunQuery) -> Result<Page<Run>, StoreError>;

    async fn message(&self, id: &str) -> Result<Option<InboxMessage>, StoreError>;
    async fn messages(&self, query: &InboxQuery) -> Result<Page<InboxMessage>, StoreError>;

    /// Ids of the runs admitted in `[from, to)` that are still `queued`, oldest first (the
    /// sweeper's question: which runs may have been recorded but never enqueued).
    async fn queued_runs(&self, from: Timestamp, to: Timestamp) -> Result<Vec<String>, StoreError>;
    /// Ids of up to `limit` runs that are queued or running with no work item to move
    /// them (a resume or decision whose enqueue failed after its write, a crash between
    /// the two). Only a store that keeps the queue beside the runs can tell (embedded);
    /// others answer none.
    async fn stranded_runs(&self, limit: usize) -> Result<Vec<String>, StoreError>;
    /// A named time the use cases keep between invocations (the sweeper's watermark).
    async fn marker(&self, name: &str) -> Result<Option<Timestamp>, StoreError>;
    async fn set_marker(&self, name: &str, at: Timestamp) -> Result<(), StoreError>;

    /// A named pointer to a record (the last run of a Kafka key; the run ordered behind
    /// another).
    async fn link(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_link(&self, name: &str, target: &str) -> Result<(), StoreError>;

    /// The saved cron state of a workflow.
    async fn state(&self, workflow: &str) -> Result<Option<SavedState>, StoreError>;
    /// Conditional write: succeeds when the stored version equals `state.version` (0:
    /// nothing stored yet); returns the state with its new version.
    async fn save_state(
        &self,
        workflow: &str,
        state: &SavedState,
    ) -> Result<SavedState, StoreError>;

    /// The runs holding and waiting for the slots of a concurrency limit.
    async fn slots(&self, name: &str) -> Result<Option<Slots>, StoreError>;
    /// Conditional write: succeeds when the stored version equals `slots.version` (0:
    /// nothing stored yet); returns the record with its new version.
    async fn save_slots(&self, name: &str, slots: &Slots) -> Result<Slots, StoreError>;

    /// A workflow's context store: string keys to string values.
    async fn context(&self, workflow: &str) -> Result<BTreeMap<String, String>, StoreError>;
    /// Sets (`Some`) and deletes (`None`) keys of a workflow's context store, each key on
    /// its own: a change to other keys, made at the same time, is kept.
    async fn patch_context(
        &self,
        workflow: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), StoreError>;

    /// Appends an entry to the audit log.
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The audit log, newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError>;

    /// A bulk job's record and its version (see [`crate::jobs`]): a versioned document
    /// kept like a workflow's cron state, under `#job/{id}`.
    async fn job(&self, id: &str) -> Result<Option<(Value, u64)>, StoreError> {
        let state = self.state(&format!("#job/{id}")).await?;
        Ok(state.map(|s| (s.value, s.version)))
    }

    /// Writes a job's record, conditional on `version` (0: new); returns the new version.
    async fn save_job(
        &self,
        id: &str,
        value: Value,
        version: u64,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        let state = SavedState {
            value,
            saved_at: at,
            scheduled_at: at,
            run_id: None,
            version,
        };
        Ok(self
            .save_state(&format!("#job/{id}"), &state)
            .await?
            .version)
    }

    /// What the console's overview charts of the newest `limit` runs admitted since
    /// `since`, newest first: each run's workflow, status and admission time. The default
    /// reads the listing's pages; a store that can answer without decoding every record
    /// (embedded: three columns of the row) does so.
    async fn recent_runs(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<RunBrief>, StoreError> {
        let mut q = RunQuery {
            since: Some(since),
            limit: limit.min(500),
            ..RunQuery::default()
        };
        let mut briefs = Vec::new();
        while briefs.len() < limit {
            let page = self.runs(&q).await?;
            briefs.extend(page.items.iter().map(RunBrief::of));
            q.cursor = page.next_cursor;
            if q.cursor.is_none() {
                break;
            }
        }
        briefs.truncate(limit);
        Ok(briefs)
    }

    /// How many runs have `status` now; `None` where counting would cost a scan (DynamoDB).
    async fn count_runs(
        &self,
        _status: tripline_core::RunStatus,
    ) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Deletes up to `limit` of `workflow`'s records older than `before`: inbox messages
    /// (and ticks), and runs that have finished (a run still queued, running or waiting is
    /// never deleted), up to `limit` of each. Returns how many were deleted; 0: none are
    /// left.
    /// Stores that expire records themselves (DynamoDB TTL) delete nothing here.
    async fn purge(
        &self,
        workflow: &str,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;
}

/// A run as the console's overview counts it ([`Store::recent_runs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunBrief {
    pub workflow: String,
    pub status: tripline_core::RunStatus,
    pub inserted_at: Timestamp,
}

impl RunBrief {
    pub fn of(run: &Run) -> Self {
        Self {
            workflow: run.workflow.clone(),
            status: run.status,
            inserted_at: run.inserted_at,
        }
    }
}

/// A concurrency limit's accounting: the runs holding a slot and those waiting for one, in
/// arrival order (their ids, which sort by time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slots {
    pub holders: Vec<String>,
    pub waiting: Vec<String>,
    #[serde(skip)]
    pub version: u64,
}

/// The state a workflow's cron runs carry from one to the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub value: Value,
    pub saved_at: Timestamp,
    /// The scheduled time of the run that saved it (or of the reset): a run scheduled
    /// earlier never overwrites it.
    pub scheduled_at: Timestamp,
    /// The run that saved it; `None` when set through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Bumped by the store on every write; 0 when nothing is stored yet.
    #[serde(default)]
    pub version: u64,
}

/// Work for the executor: a run to start or continue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    pub run_id: String,
    /// Only to start the run while it is still `queued` (a wake of a run waiting for a
    /// slot or a predecessor, or its look-again): dropped once the run has started, so
    /// that it never runs a started run's step a second time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_only: bool,
    /// A rescue: act only while the run is still at this version, i.e. nothing has moved
    /// it since the write that sent this item (sent, delayed, before a resume's or a
    /// decision's write, in case the work item sent after the write is lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

impl WorkItem {
    /// Start or continue the run.
    pub fn run(run_id: impl Into<String>) -> Self {
        Self {
            run_id: run_id.into(),
            start_only: false,
            if_version: None,
        }
    }

    /// Continue the run if it is still at `version` (see [`WorkItem::if_version`]).
    pub fn rescue(run_id: impl Into<String>, version: u64) -> Self {
        Self {
            run_id: run_id.into(),
            start_only: false,
            if_version: Some(version),
        }
    }

    /// Go on with a bulk job (see [`crate::jobs`]): a work item whose `run_id` is
    /// `job:{id}` (never a run's id), so that every queue carries it as it is.
    pub fn job(job_id: &str) -> Self {
        Self::run(format!("{JOB_ITEM}{job_id}"))
    }

    /// The bulk job this item goes on with, if it is one.
    pub fn job_id(&self) -> Option<&str> {
        self.run_id.strip_prefix(JOB_ITEM)
    }

    /// Start the run if it is still queued.
    pub fn start(run_id: impl Into<String>) -> Self {
        Self {
            run_id: run_id.into(),
            start_only: true,
            if_version: None,
        }
    }
}

/// What a job's work item's `run_id` starts with.
const JOB_ITEM: &str = "job:";

/// A received work item, invisible to other receivers until acked or its lease ends.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub receipt: String,
    pub item: WorkItem,
    pub receive_count: u32,
}

/// An at-least-once queue with delays (the durable timers) and visibility leases.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Makes `item` receivable after `delay`.
    async fn send(&self, item: &WorkItem, delay: Duration) -> Result<(), StoreError>;
    /// Up to `max` items, waiting at most `wait` for the first. A received item is hidden
    /// for `lease`, then delivered again unless acked.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Done with a delivery: it is not delivered again.
    async fn ack(&self, delivery: &Delivery) -> Result<(), StoreError>;
    /// Not done: deliver it again after `delay` instead of at the end of its lease (like
    /// SQS's ChangeMessageVisibility).
    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), StoreError>;
    /// How many items are receivable now and how long the oldest of them has been; `None`
    /// where the queue keeps its own metrics (SQS's `ApproximateNumberOfMessagesVisible`
    /// and `ApproximateAgeOfOldestMessage` in CloudWatch).
    async fn backlog(&self) -> Result<Option<Backlog>, StoreError> {
        Ok(None)
    }
}

/// The receivable part of a queue (timers not yet due are not in it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backlog {
    pub ready: u64,
    pub oldest_age: Duration,
}

/// The time. Tests use a manual clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(std::time::SystemTime::now())
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(std::sync::atomic::AtomicI64::new(start.millis()))
    }
    pub fn advance(&self, d: Duration) {
        self.0
            .fetch_add(d.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Where the schedules of cron triggers live outside this process (AWS: EventBridge
/// Scheduler). The local shape has none: its scheduler reads the deployed workflows.
#[async_trait::async_trait]
pub trait Schedules: Send + Sync + 'static {
    /// Why this shape cannot run the trigger's schedule, if it cannot.
    fn refuse(&self, trigger: &CronTrigger) -> Option<String>;
    /// Creates or updates the trigger's schedule; `enabled: false` keeps it, paused (its
    /// trigger is switched off).
    async fn put(
        &self,
        workflow: &str,
        trigger: &CronTrigger,
        enabled: bool,
    ) -> Result<(), StoreError>;
    /// Deletes the trigger's schedule; one already gone is not an error.
    async fn delete(&self, workflow: &str, trigger: &str) -> Result<(), StoreError>;
}

/// Where the records of kafka triggers come from outside this process (AWS: the MSK event
/// source of the template). A deploy asks it whether it can deliver a trigger's topics.
#[async_trait::async_trait]
pub trait KafkaSource: Send + Sync + 'static {
    /// Why this shape cannot deliver the trigger's records, if it cannot.
    async fn refuse(&self, trigger: &KafkaTrigger) -> Result<Option<String>, StoreError>;
}

/// One record as the consumer (or the MSK event) gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (producer or log-append time).
    pub timestamp: Timestamp,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Read by the consumer of one trigger of its own (`workflow/trigger`: it has its own
    /// `cluster` or `start`), for that trigger only; `None`: by the server's shared
    /// consumer (or MSK), for every trigger on the topic without one.
    pub source: Option<String>,
}

/// A secret as a listing shows it: its name and when it was set, never its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub set_at: Timestamp,
}

/// Where secrets are kept (local: encrypted in the embedded store; AWS: SSM Parameter
/// Store SecureString parameters under the stack's prefix). Values go in and come out
/// only here; listings carry names.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The value of one secret.
    async fn secret(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Sets (creates or replaces) a secret.
    async fn set_secret(&self, name: &str, value: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Sets a secret only when it does not exist; false when it did (another process
    /// created it first: read it).
    async fn create_secret(
        &self,
        name: &str,
        value: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Removes a secret; false when there was none.
    async fn remove_secret(&self, name: &str) -> Result<bool, StoreError>;
    /// Every secret's name and when it was set, by name.
    async fn secret_names(&self) -> Result<Vec<SecretInfo>, StoreError>;
    /// False for a server without a secret store ([`NoSecrets`]).
    fn keeps_secrets(&self) -> bool {
        true
    }
}

/// A server that keeps no secrets: every name is missing, and setting one says where
/// secrets are kept.
pub struct NoSecrets;

#[async_trait]
impl SecretStore for NoSecrets {
    async fn secret(&self, _: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    async fn set_secret(&self, _: &str, _: &str, _: Timestamp) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "this server was started without a secret store".into(),
        ))
    }
    async fn create_secret(&self, _: &str, _: &str, _: Timestamp) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "this server was started without a secret store".into(),
        ))
    }
    async fn remove_secret(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn secret_names(&self) -> Result<Vec<SecretInfo>, StoreError> {
        Ok(Vec::new())
    }
    fn keeps_secrets(&self) -> bool {
        false
    }
}
