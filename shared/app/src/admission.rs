//! Admission: the one way a message becomes runs. Every intake (webhook, manual, cron,
//! Kafka, flow, reprocess, a `trigger_workflow` step) ends here: its input passes the
//! trigger's gate (filter, condition, idempotency key), and the inbox message, its runs
//! and the key's claim are written in one durable step, then the runs are enqueued. A
//! message that starts nothing is recorded all the same, with why.

use std::time::Duration;

use serde_json::Value;
use tripline_core::definition::Gate;
use tripline_core::run::{RunStatus, TriggerRef};
use tripline_core::{Run, Timestamp};

use crate::App;
use crate::metrics::StepTiming;
use crate::ports::{
    self, Admission, Admitted, IdempotencyClaim, InboxMessage, Outcome, StoreError,
};

/// How long an idempotency key maps to its first run.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// `None` when a trigger's input passes its `filter` and `condition`; else why not.
pub fn unmet(
    filter: Option<&serde_json::Value>,
    condition: Option<&str>,
    input: &serde_json::Value,
) -> Option<String> {
    unmet_uncut(filter, condition, input).map(|why| crate::outbound::cut(&why, REASON_LIMIT))
}

/// The longest recorded reason a filter or condition gives (it may quote the input).
pub const REASON_LIMIT: usize = 1024;

fn unmet_uncut(
    filter: Option<&serde_json::Value>,
    condition: Option<&str>,
    input: &serde_json::Value,
) -> Option<String> {
    if let Some(f) = filter
        && let Err(m) = tripline_core::filter::check(input, f, "")
    {
        return Some(m.to_string());
    }
    if let Some(cond) = condition {
        match tripline_core::template::eval_condition(
            cond,
            &serde_json::json!({ "trigger": input }),
        ) {
            Ok(true) => {}
            Ok(false) => return Some(format!("condition `{cond}` is false")),
            Err(e) => return Some(format!("condition `{cond}` could not be evaluated: {e}")),
        }
    }
    None
}

/// A trigger's `idempotency_key` template failed on an input: the reason says where.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFailed(pub String);

/// Why an input passed no gate: recorded as the message's outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Refused {
    /// The filter or condition did not match.
    Filtered(String),
    /// The idempotency key could not be rendered from this input.
    KeyFailed(String),
}

impl Refused {
    pub fn reason(&self) -> &str {
        match self {
            Refused::Filtered(r) | Refused::KeyFailed(r) => r,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Refused::Filtered(reason) => Outcome::Filtered {
                reason: reason.clone(),
            },
            Refused::KeyFailed(reason) => Outcome::Rejected {
                reason: reason.clone(),
            },
        }
    }
}

impl App {
    /// The trigger's gate over an input: its filter and condition, then its idempotency
    /// key (the `idempotency_key` template, else the caller's `Idempotency-Key` header).
    /// `Ok` carries the claim to admit the run with.
    pub fn gate(
        &self,
        workflow: &str,
        trigger: &str,
        gate: Gate,
        input: &Value,
        headers: Option<&axum::http::HeaderMap>,
    ) -> Result<Option<IdempotencyClaim>, Refused> {
        if let Some(why) = unmet(gate.filter, gate.condition, input) {
            return Err(Refused::Filtered(why));
        }
        self.claim_for(workflow, trigger, gate.idempotency_key, input, headers)
            .map_err(|KeyFailed(why)| Refused::KeyFailed(why))
    }

    /// A new `queued` run of the workflow record's revision, started by `trigger` with
    /// `input`; it points at the message that starts it.
    pub fn new_run(
        &self,
        id: String,
        rec: &ports::WorkflowRecord,
        trigger: TriggerRef,
        input: Value,
        message_id: &str,
    ) -> Run {
        let mut run = Run::new(id, &rec.id, rec.revision, trigger, input, self.clock.now());
        run.message_id = Some(message_id.to_string());
        run
    }

    /// The run a message starts (the first, when it starts several): it takes the
    /// message's id and time, so that a store can keep the two as one entry of its
    /// time-ordered listings. The AWS store lists such a message through its run's index
    /// entries and writes none of its own (two write units fewer per run).
    pub fn run_of_message(
        &self,
        message: &InboxMessage,
        rec: &ports::WorkflowRecord,
        trigger: TriggerRef,
        input: Value,
    ) -> Run {
        let mut run = self.new_run(message.id.clone(), rec, trigger, input, &message.id);
        run.inserted_at = message.received_at;
        run
    }

    /// Admits `message` with the runs it starts (its outcome becomes `started` with their
    /// ids) and the claim that makes it happen once.
    pub async fn admit_runs(
        &self,
        mut message: InboxMessage,
        runs: Vec<Run>,
        idempotency: Option<IdempotencyClaim>,
    ) -> Result<Admitted, StoreError> {
        message.outcome = Outcome::Started {
            run_ids: runs.iter().map(|r| r.id.clone()).collect(),
        };
        self.admit(Admission {
            message,
            runs,
            idempotency,
        })
        .await
    }

    /// Records a message that starts nothing, with its outcome (filtered, rejected,
    /// skipped, …).
    pub async fn record_message(
        &self,
        mut message: InboxMessage,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        message.outcome = outcome;
        self.admit(Admission {
            message,
            runs: Vec::new(),
            idempotency: None,
        })
        .await
        .map(|_| ())
    }

    /// Records a message and its runs, then sends the store's `to_enqueue` to the queue. A
    /// failed send is only logged: the run is recorded `queued`, and a store that does not
    /// enqueue in its own transaction has a sweeper that enqueues such runs again.
    pub async fn admit(&self, mut admission: Admission) -> Result<Admitted, StoreError> {
        let retain = |workflow: &str| {
            self.deployments
                .latest(workflow)
                .and_then(|r| r.definition.retention)
        };
        admission.message.retain = retain(&admission.message.workflow);
        for run in &mut admission.runs {
            run.retain = retain(&run.workflow);
        }
        // What to count once it is recorded: each run's start, and the end of one that
        // ended before its admission (a pure run that the webhook ran: `runs_here`).
        let counted: Vec<Counted> = admission.runs.iter().map(Counted::of).collect();
        let admitted = self.store.admit(admission).await?;
        if matches!(admitted, Admitted::New { .. }) {
            for c in counted {
                self.metrics.run_started(&c.workflow, c.kind);
                if let Some((status, error, steps)) = c.ended {
                    crate::executor::log_end(&c.workflow, status, error.as_deref());
                    self.metrics.steps(&c.workflow, steps);
                    self.metrics.run_ended(&c.workflow, status.as_str());
                }
            }
        }
        if let Admitted::New { to_enqueue } = &admitted {
            for id in to_enqueue {
                let item = ports::WorkItem::run(id.clone());
                if let Err(e) = self.queue.send(&item, Duration::ZERO).await {
                    tracing::warn!(run_id = %id, error = %e, "enqueue after admit failed");
                }
            }
        }
        Ok(admitted)
    }

    /// The idempotency claim of an input to `trigger`: its `idempotency_key` template,
    /// rendered over the input, when it has one; else the caller's `Idempotency-Key`
    /// header. A key that renders empty claims nothing (the input starts a run). `Err`:
    /// the template failed on this input, with why.
    pub fn claim_for(
        &self,
        workflow: &str,
        trigger: &str,
        key_template: Option<&str>,
        input: &serde_json::Value,
        headers: Option<&axum::http::HeaderMap>,
    ) -> Result<Option<IdempotencyClaim>, KeyFailed> {
        let Some(tpl) = key_template else {
            return Ok(headers.and_then(|h| self.idempotency_claim(workflow, trigger, h)));
        };
        let key =
            tripline_core::template::render_string(tpl, &serde_json::json!({ "trigger": input }))
                .map_err(|e| {
                KeyFailed(format!(
                    "the trigger's idempotency_key `{tpl}` failed on this input: {e}"
                ))
            })?;
        let key = key.trim();
        if key.is_empty() {
            return Ok(None);
        }
        // Long keys are kept as their hash: the claim's own key stays small.
        let key = if key.len() > 200 {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(key.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        } else {
            key.to_string()
        };
        Ok(Some(IdempotencyClaim {
            key: format!("{workflow}/{trigger}/{key}"),
            expires_at: self.clock.now().plus(IDEMPOTENCY_WINDOW),
            held_by_message: false,
        }))
    }

    /// The idempotency claim of a request's `Idempotency-Key` header, scoped to its
    /// trigger.
    pub fn idempotency_claim(
        &self,
        workflow: &str,
        trigger: &str,
        headers: &axum::http::HeaderMap,
    ) -> Option<IdempotencyClaim> {
        let key = headers
            .get("idempotency-key")?
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)?;
        Some(IdempotencyClaim {
            key: format!("{workflow}/{trigger}/{key}"),
            expires_at: self.clock.now().plus(IDEMPOTENCY_WINDOW),
            held_by_message: false,
        })
    }
}

/// A claim on `key` for `window` from `now`, scoped to the trigger.
pub fn claim(
    workflow: &str,
    trigger: &str,
    key: &str,
    now: Timestamp,
    window: Duration,
) -> IdempotencyClaim {
    IdempotencyClaim {
        key: format!("{workflow}/{trigger}/{key}"),
        expires_at: now.plus(window),
        held_by_message: false,
    }
}

/// What [`App::admit`] counts and logs of a run once it is recorded.
struct Counted {
    workflow: String,
    kind: &'static str,
    /// A run that ended before its admission: its end, error and step timings.
    ended: Option<(RunStatus, Option<String>, Vec<StepTiming>)>,
}

impl Counted {
    fn of(run: &Run) -> Self {
        let ended = run.status.is_terminal().then(|| {
            let steps = run.step_executions.iter().map(StepTiming::from).collect();
            (run.status, run.error.clone(), steps)
        });
        Self {
            workflow: run.workflow.clone(),
            kind: run.trigger.kind.as_str(),
            ended,
        }
    }
}
