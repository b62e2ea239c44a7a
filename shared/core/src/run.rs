//! A run (execution) of a workflow and its step executions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "timed_out" => Self::TimedOut,
            _ => return None,
        })
    }
}

/// Which trigger started a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TriggerRef {
    pub kind: TriggerKind,
    /// The trigger's id within its workflow (for `workflow`: the parent's workflow).
    pub id: String,
}

/// The kind of trigger that started a run (`trigger.kind` in its record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Webhook,
    Manual,
    Cron,
    Kafka,
    Flow,
    /// Started by another run's `trigger_workflow` step.
    Workflow,
    /// A `once` trigger's run.
    Once,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Webhook => "webhook",
            TriggerKind::Manual => "manual",
            TriggerKind::Cron => "cron",
            TriggerKind::Kafka => "kafka",
            TriggerKind::Flow => "flow",
            TriggerKind::Once => "once",
            TriggerKind::Workflow => "workflow",
        }
    }

    /// Runs of this kind can be ordered behind another run of their trigger (cron
    /// `overlap: queue`, Kafka `ordering: key`): their end wakes the next.
    pub fn has_successors(self) -> bool {
        matches!(self, TriggerKind::Cron | TriggerKind::Kafka)
    }
}

impl PartialEq<&str> for TriggerKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `waiting` run waits (`waiting_reason` in its record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// A `wait_for_webhook` step: its `resume_url` is called.
    Webhook,
    /// An `approval` step: a person decides.
    Approval,
    /// A `delay` step: its time comes.
    Delay,
    /// A `trigger_workflow` step with `wait`: the started run ends.
    Workflow,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Webhook => "webhook",
            WaitReason::Approval => "approval",
            WaitReason::Delay => "delay",
            WaitReason::Workflow => "workflow",
        }
    }

    /// The purposes of the single-use URLs this wait exposes (`{purpose}_url`).
    pub fn url_purposes(self) -> &'static [&'static str] {
        match self {
            WaitReason::Webhook => &["resume"],
            WaitReason::Approval => &["review", "approve", "reject"],
            WaitReason::Delay | WaitReason::Workflow => &[],
        }
    }
}

/// Why a run did not succeed (`error_type` in its record; `error` says the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// A step failed and had no retry left (or its failure does not retry).
    StepFailed,
    /// A template failed at run time (a step's, the output's, an extract's, the state's).
    TemplateError,
    /// A template ran past a bound: too many instructions, or too large an output.
    TemplateLimit,
    /// A `fail` step ended the run.
    FailStep,
    /// An `approval` step was rejected.
    Rejected,
    /// A wait ended with no callback or decision before its timeout.
    WaitTimedOut,
    /// The run took longer than the workflow's `max_duration`.
    TimedOut,
    /// The run was cancelled.
    Cancelled,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::StepFailed => "step_failed",
            ErrorType::TemplateError => "template_error",
            ErrorType::TemplateLimit => "template_limit",
            ErrorType::FailStep => "fail_step",
            ErrorType::Rejected => "rejected",
            ErrorType::WaitTimedOut => "wait_timed_out",
            ErrorType::TimedOut => "timed_out",
            ErrorType::Cancelled => "cancelled",
        }
    }
}

impl PartialEq<&str> for ErrorType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Skipped,
}

/// One attempt of one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepExecution {
    pub step_id: String,
    pub attempt: u32,
    pub status: StepStatus,
    /// The rendered request of an `http` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub duration_ms: i64,
}

/// How a step attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    Timeout,
    Connection,
    Status4xx,
    Status429,
    Status5xx,
    /// The request could not even be built or was refused before it was sent.
    Request,
    Template,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepError {
    pub class: FailureClass,
    pub message: String,
}

/// Where a run stands in its steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cursor {
    /// Index of the step to run next (or running now).
    pub step: usize,
    /// Attempt of that step (0 before its first attempt).
    pub attempt: u32,
    /// When the next attempt is due, while a retry waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// `started_at + max_duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// While a `delay` step waits: when it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_until: Option<Timestamp>,
    /// After the run ended, while its callback is still to be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackCursor>,
    /// While a `map` or `parallel` step runs: where each of its items or branches stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan: Option<Fan>,
}

/// Where a `map` or `parallel` step stands: the lanes (items or branches) started so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Fan {
    /// A `map` step's items, as `items` gave them when the step started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Value>,
    /// The lanes started, in the order of the items (or branches).
    #[serde(default)]
    pub lanes: Vec<Lane>,
}

/// One item of a `map` step, or one branch of a `parallel` step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Lane {
    /// Index of the lane's step to run next (or running now).
    #[serde(default)]
    pub step: usize,
    /// Attempt of that step: 0 before its first, else the one out (or in back-off).
    #[serde(default)]
    pub attempt: u32,
    /// When the next attempt is due, while a retry waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// Once the lane has ended: its output, or `{"error": ...}` when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl Lane {
    pub fn ended(&self) -> bool {
        self.result.is_some()
    }
    /// Its step's attempt is out, and its result not in.
    pub fn in_flight(&self) -> bool {
        !self.ended() && self.attempt > 0 && self.retry_at.is_none()
    }
}

/// Where the delivery of a run's callback stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CallbackCursor {
    /// The attempt to make next (1 for the first).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
}

/// One attempt to deliver a run's `on_success` / `on_failure` callback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CallbackAttempt {
    pub attempt: u32,
    pub url: String,
    /// The receiver's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub succeeded: bool,
    pub at: Timestamp,
}

/// The run that started this one: with a `trigger_workflow` step (`step`), or by ending,
/// through this workflow's flow trigger (`flow`, the trigger's id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ParentRef {
    pub run_id: String,
    pub workflow: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Run {
    pub id: String,
    pub workflow: String,
    pub revision: u32,
    pub trigger: TriggerRef,
    pub trigger_input: Value,
    pub status: RunStatus,
    /// Bumped by the store on every write; writes are conditional on it.
    pub version: u64,
    #[serde(default)]
    pub step_executions: Vec<StepExecution>,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub inserted_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The inbox message that started this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default)]
    pub cursor: Cursor,
    /// Why a `waiting` run waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<WaitReason>,
    /// What a waiting run exposes: the step, its single-use URLs (`resume_url`;
    /// `review_url`, `approve_url`, `reject_url`), the run it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_payload: Option<Value>,
    /// When the wait ends by itself (its `timeout`, or the end of a `delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_expires_at: Option<Timestamp>,
    /// The hashes (`sha256:` + hex) of the secrets of the current wait's single-use URLs,
    /// by purpose (`resume`; `review`, `approve`, `reject`). The secrets themselves are
    /// never stored: they are derived again from `waiting_salt` under the server's key
    /// where a URL is shown. (Runs parked before hashing keep their plain secrets here,
    /// without a salt.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting_tokens: BTreeMap<String, String>,
    /// What the current wait's URL secrets are derived from (not a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_salt: Option<String>,
    /// Hashes of the secrets of single-use URLs already used or expired: a second use
    /// answers 410.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_tokens: Vec<String>,
    /// The run whose `trigger_workflow` step, or whose end (flow trigger), started this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Runs started by this run's `trigger_workflow` steps and by its end (flow triggers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Deliveries of the `on_success` / `on_failure` callback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<CallbackAttempt>,
    /// A cron run's scheduled time (for a "run now", when it was asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Timestamp>,
    /// A cron run's `state` input: the state the last successful run of the workflow left,
    /// read when this run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    /// The state this run leaves to the next, once it has succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_state: Option<Value>,
    /// With `overlap: queue`: the run of the same trigger that must end before this one
    /// starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// What went wrong without failing the run (e.g. a state too large to save).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The workflow's context store as this run's templates see it (`store`): read by the
    /// executor when the workflow uses it; not part of the run's record.
    #[serde(skip)]
    pub store: Option<BTreeMap<String, String>>,
    /// A one-time run: not started before this instant (it waits `queued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// The workflow's `retention` when it sets one (stores that expire records
    /// themselves, DynamoDB's TTL, read it when the run ends); `None`: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<crate::time::Duration>,
    /// The run this one retries (`POST /v1/runs/{id}/retry`), and where it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<crate::retry::RetryOf>,
}

impl Run {
    /// A new run, `queued`.
    pub fn new(
        id: String,
        workflow: &str,
        revision: u32,
        trigger: TriggerRef,
        trigger_input: Value,
        now: Timestamp,
    ) -> Self {
        Run {
            id,
            workflow: workflow.to_string(),
            revision,
            trigger,
            trigger_input,
            status: RunStatus::Queued,
            version: 0,
            step_executions: Vec::new(),
            context: Map::new(),
            final_output: None,
            error_type: None,
            error: None,
            inserted_at: now,
            claimed_at: None,
            started_at: None,
            finished_at: None,
            message_id: None,
            cursor: Cursor::default(),
            waiting_reason: None,
            waiting_payload: None,
            waiting_expires_at: None,
            waiting_tokens: BTreeMap::new(),
            waiting_salt: None,
            used_tokens: Vec::new(),
            parent: None,
            children: Vec::new(),
            callbacks: Vec::new(),
            scheduled_at: None,
            state: None,
            next_state: None,
            after: None,
            warnings: Vec::new(),
            store: None,
            not_before: None,
            retain: None,
            retry_of: None,
        }
    }

    /// The latest successful output of each step (not the steps inside a `map` or
    /// `parallel` step's lanes, whose executions are named `step[item].inner`).
    pub fn step_outputs(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for e in &self.step_executions {
            if e.status == StepStatus::Succeeded && !e.step_id.contains('[') {
                out.insert(e.step_id.clone(), e.output.clone().unwrap_or(Value::Null));
            }
        }
        out
    }

    /// What templates see. [`TemplateView`] builds it only when the engine needs it.
    pub fn template_context(&self) -> Value {
        json!({
            "trigger": self.trigger_input,
            "steps": self.step_outputs(),
            "context": self.context,
            "state": self.state,
            "store": self.store,
            "run": {
                "id": self.id,
                "workflow": self.workflow,
                "revision": self.revision,
                "attempt": self.cursor.attempt.max(1),
            },
        })
    }

    /// The `meta` part of the reply envelope.
    /// The run a `trigger_workflow` wait waits for, and its workflow.
    pub fn waiting_child(&self) -> Option<(&str, &str)> {
        if self.waiting_reason != Some(WaitReason::Workflow) {
            return None;
        }
        let p = self.waiting_payload.as_ref()?;
        let run_id = p.get("run_id").and_then(Value::as_str)?;
        let workflow = p
            .get("workflow")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some((run_id, workflow))
    }

    /// When the current wait began.
    pub fn waiting_since(&self) -> Option<Timestamp> {
        self.waiting_payload
            .as_ref()?
            .get("since")
            .and_then(Value::as_str)
            .and_then(|s| Timestamp::parse_rfc3339(s).ok())
    }

    pub fn meta(&self) -> Value {
        json!({
            "run_id": self.id,
            "workflow": self.workflow,
            "status": self.status,
            "error_type": self.error_type,
            "error": self.error,
            "inserted_at": self.inserted_at,
            "claimed_at": self.claimed_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        })
    }
}

/// What templates see of a run ([`Run::template_context`]), built only when the template
/// engine needs it: a plain path into the trigger, a step's output or the context is read
/// from the run itself (a transform of `{{ trigger.body }}` copied the whole context first).
pub struct TemplateView<'a>(pub &'a Run);

impl Serialize for TemplateView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.template_context().serialize(s)
    }
}

impl crate::template::Context for TemplateView<'_> {
    fn find(&self, path: &str) -> Option<&Value> {
        use crate::template::{follow, plain_name};
        let mut names = path.split('.');
        let (root, first) = (names.next()?, names.next());
        let start = match root {
            "trigger" => return follow(&self.0.trigger_input, first.into_iter().chain(names)),
            // As in `step_outputs`: the last success of a step outside a lane.
            "steps" => self
                .0
                .step_executions
                .iter()
                .rev()
                .find(|e| Some(e.step_id.as_str()) == first && e.status == StepStatus::Succeeded)?
                .output
                .as_ref()?,
            "context" => self.0.context.get(first?)?,
            _ => return None,
        };
        plain_name(first?).then(|| follow(start, names))?
    }
}

#[cfg(test)]
mod template_view_tests {
    use super::*;
    use crate::template::{Context, eval, render_value};
    use serde_json::json;

    fn execution(step: &str, status: StepStatus, output: Option<Value>) -> StepExecution {
        StepExecution {
            step_id: step.into(),
            attempt: 1,
            status,
            request: None,
            output,
            error: None,
            started_at: Timestamp(0),
            finished_at: Timestamp(0),
            duration_ms: 0,
        }
    }

    fn run() -> Run {
        let manual = TriggerRef {
            kind: TriggerKind::Manual,
            id: "manual".into(),
        };
        let input = json!({"body": {"b": 1, "a": {"z": [1, {"y": 2.5, "x": null}]}}});
        let mut run = Run::new("r1".into(), "w", 1, manual, input, Timestamp(0));
        use StepStatus::*;
        run.step_executions = vec![
            execution("a", Succeeded, Some(json!({"id": 1}))),
            execution("a", Succeeded, Some(json!({"k": "v", "id": 2}))),
            execution("a", Failed, Some(json!({"id": 3}))),
            execution("b", Succeeded, None),
            execution("c[0]", Succeeded, Some(json!({"lane": true}))),
            execution("d", Failed, Some(json!({"x": 1}))),
        ];
        run.context.insert("tenant".into(), json!({"name": "acme"}));
        run.state = Some(json!({"n": 1}));
        run
    }

    /// A template renders against the view exactly as the template engine renders it
    /// against the whole context: the same JSON text, or the same error.
    #[test]
    fn a_run_is_seen_by_templates_as_its_whole_context() {
        let run = run();
        let whole = run.template_context();
        let view = TemplateView(&run);
        for direct in [
            "trigger.body.a",
            "steps.a.id",
            "steps.a",
            "context.tenant.name",
        ] {
            assert!(view.find(direct).is_some(), "{direct} is read directly");
        }
        let paths = [
            "trigger",
            "trigger.body",
            "trigger.body.a.z",
            "steps.a",
            "steps.a.id",
            "steps.a.k",
            "steps.b",
            "context.tenant",
            "context.tenant.name",
            "state.n",
            "run.id",
            "steps",
            "context",
            "trigger.body.b * 2",
            "steps.d",
            "steps.d.x",
            "steps.c",
            "trigger.none",
            "context.other",
            "steps.a.id.deeper",
            "steps.a-b",
        ];
        for expr in paths {
            let tpl = json!(format!("{{{{ {expr} }}}}"));
            let seen = render_value(&tpl, &view).map(|v| v.to_string());
            let engine = eval(expr, &whole).map(|v| v.to_string());
            assert_eq!(seen, engine, "{expr}");
        }
    }
}
