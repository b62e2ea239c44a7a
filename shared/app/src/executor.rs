//! The step executor: takes work items from the queue, applies the engine's events to the
//! run, performs its effects, and writes the run back with a conditional write.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::Instrument;
use tripline_core::engine::{self, Effect, Event, HttpRequest};
use tripline_core::run::{FailureClass, ParentRef, StepError, TriggerKind, TriggerRef};
use tripline_core::{Run, RunStatus, Timestamp, Workflow};

use crate::App;
use crate::ports::{
    Admission, Admitted, Delivery, IdempotencyClaim, InboxMessage, Outcome, StoreError, WorkItem,
};

/// How long an approval's notification may take.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `trigger_workflow` step's claim on its run lasts: a redelivery within it
/// finds the run started before instead of starting another.
pub const CHILD_CLAIM_WINDOW: Duration = Duration::from_secs(400 * 24 * 3600);

fn status_of(output: &Value) -> Option<u16> {
    output
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
}

/// How long a received item stays hidden from other receivers. Longer than any step
/// attempt may take; a crashed worker's items come back after it (and at once on restart).
pub const LEASE: Duration = Duration::from_secs(15 * 60);

/// How soon an item whose handling failed (the store was failing) is tried again.
pub const RETRY_FAILED_ITEM: Duration = Duration::from_secs(2);

/// Time kept free after a step's timeout before an invocation's deadline (for the write).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// The name of the sweeper's watermark (see [`App::sweep`]).
pub const SWEEP_MARKER: &str = "sweeper";

/// How far back a sweeper with no watermark yet looks.
pub const FIRST_SWEEP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Wakes the callers that wait for a run to end (synchronous webhook replies).
#[derive(Default)]
pub struct Completions {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<Run>>>>,
}

impl Completions {
    /// Subscribe before the run can end; the receiver gets the ended run.
    pub fn subscribe(&self, run_id: &str) -> oneshot::Receiver<Run> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.waiting.lock() {
            m.entry(run_id.to_string()).or_default().push(tx);
        }
        rx
    }
    pub fn notify(&self, run: &Run) {
        let senders = self.waiting.lock().ok().and_then(|mut m| m.remove(&run.id));
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(run.clone());
        }
    }
    /// Drops subscriptions whose receiver is gone (a caller that stopped waiting).
    pub fn forget(&self, run_id: &str) {
        if let Ok(mut m) = self.waiting.lock()
            && let Some(v) = m.get_mut(run_id)
        {
            v.retain(|tx| !tx.is_closed());
            if v.is_empty() {
                m.remove(run_id);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the run's workflow revision {workflow}@{revision} is not in the store")]
    MissingRevision { workflow: String, revision: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A write lost its version check; handled inside the executor, never returned.
    #[error("the run changed while this delivery was handled")]
    Lost(Progress),
}

/// What marks progress in a run: a change in any of these means another writer moved it
/// on; a change elsewhere (an annotation) does not.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    status: RunStatus,
    cursor: tripline_core::run::Cursor,
    executions: usize,
    callbacks: usize,
}

impl Progress {
    fn of(run: &Run) -> Self {
        Self {
            status: run.status,
            cursor: run.cursor.clone(),
            executions: run.step_executions.len(),
            callbacks: run.callbacks.len(),
        }
    }
}

impl App {
    /// Handles one delivery to the end of what can be done now. On `Ok` the delivery is
    /// done (acked); on `Err` it is left for redelivery.
    pub async fn handle_delivery(&self, delivery: &Delivery) -> Result<(), ExecError> {
        let run_id = &delivery.item.run_id;
        let span = tracing::info_span!("run", run_id = %run_id);
        async {
            self.advance_item(&delivery.item, None).await?;
            self.queue.ack(delivery).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Loads a run and drives it until it parks (timer) or ends.
    pub async fn advance_run(&self, run_id: &str) -> Result<(), ExecError> {
        self.advance_run_until(run_id, None).await
    }

    /// Handles a work item: like [`App::advance_run_until`]; a `start_only` item does
    /// nothing once its run has started.
    pub async fn advance_item(
        &self,
        item: &WorkItem,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ExecError> {
        self.advance_loop(&item.run_id, deadline, item.start_only)
            .await
    }

    /// Like [`App::advance_run`], but a step is only started while it can finish (its
    /// timeout plus [`DEADLINE_MARGIN`]) before `deadline`: past that, the run is written
    /// and enqueued again, to continue in another invocation (AWS Lambda's time limit).
    ///
    /// A write that loses its version check means another writer got there first. When that
    /// writer made progress (a duplicate delivery moved the run on), this delivery's result
    /// is dropped; when it only annotated the run (a wait's notification result), the
    /// delivery is applied again to the new version, so that no timer is lost.
    pub async fn advance_run_until(
        &self,
        run_id: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ExecError> {
        self.advance_loop(run_id, deadline, false).await
    }

    async fn advance_loop(
        &self,
        run_id: &str,
        deadline: Option<tokio::time::Instant>,
        start_only: bool,
    ) -> Result<(), ExecError> {
        for _ in 0..4 {
            match self.advance_once(run_id, deadline, start_only).await {
                Err(ExecError::Lost(loaded)) => {
                    let current = self.store.run(run_id).await?;
                    if current.as_ref().map(Progress::of) != Some(loaded) {
                        tracing::info!(
                            run_id,
                            "the run changed meanwhile (duplicate delivery); this result is dropped"
                        );
                        return Ok(());
                    }
                }
                other => return other,
            }
        }
        Ok(())
    }

    async fn advance_once(
        &self,
        run_id: &str,
        deadline: Option<tokio::time::Instant>,
        start_only: bool,
    ) -> Result<(), ExecError> {
        let Some(mut run) = self.store.run(run_id).await? else {
            tracing::warn!(run_id, "work item for an unknown run dropped");
            return Ok(());
        };
        if start_only && run.status != RunStatus::Queued {
            // A wake or look-again for a run that has started since: its own work item
            // drives it.
            return Ok(());
        }
        if run.status.is_terminal() && run.cursor.callback.is_none() {
            return Ok(());
        }
        let wf = self.revision_of(&run).await?;
        self.load_store(&wf, &mut run).await?;
        let event = self.event_for(&run).await?;
        let mut stored = run.clone();
        let run = if run.status == RunStatus::Queued
            && (run.trigger.kind == TriggerKind::Cron || run.after.is_some())
        {
            match self.prepare_start(run).await? {
                Some(run) => run,
                None => {
                    // Ordered behind another run (`overlap: queue`, `ordering: key`):
                    // woken when it ends, or looks again.
                    let at = self.clock.now().plus(crate::cron::QUEUED_LOOK_AGAIN);
                    self.queue
                        .send(&WorkItem::start(run_id), at.since(self.clock.now()))
                        .await?;
                    return Ok(());
                }
            }
        } else {
            run
        };
        if run.status == RunStatus::Queued
            && wf.concurrency.is_some()
            && self.take_slot(&wf, &run).await? == crate::concurrency::Slot::Wait
        {
            // Over the workflow's concurrency limit: woken when a slot frees, or looks
            // again (a wake lost in a crash).
            self.queue
                .send(&WorkItem::start(run_id), crate::cron::QUEUED_LOOK_AGAIN)
                .await?;
            return Ok(());
        }
        let (mut run, effects) = engine::apply(&wf, run, event, self.clock.now());
        let mut effects: VecDeque<Effect> = effects.into();
        let mut performed = 0usize;
        while let Some(effect) = effects.pop_front() {
            let event = match effect {
                Effect::RunStep {
                    step,
                    attempt,
                    request,
                    timeout,
                    success,
                } => {
                    let mut timeout = timeout;
                    if let Some(deadline) = deadline {
                        let left = deadline
                            .saturating_duration_since(tokio::time::Instant::now())
                            .saturating_sub(DEADLINE_MARGIN);
                        if timeout > left && performed > 0 {
                            tracing::info!(step = %step, "not enough time left for the step; the run continues in a new invocation");
                            let Some(saved) = self.save(&run).await? else {
                                return Err(ExecError::Lost(Progress::of(&stored)));
                            };
                            let item = WorkItem::run(saved.id);
                            self.queue.send(&item, Duration::ZERO).await?;
                            return Ok(());
                        }
                        if timeout > left {
                            // Even a fresh invocation cannot give this step its timeout:
                            // it gets what there is, rather than being deferred forever.
                            tracing::warn!(step = %step, timeout = ?timeout, left = ?left, "the step's timeout is longer than an invocation allows; it is cut to the time left");
                            timeout = left.max(Duration::from_secs(1));
                        }
                    }
                    performed += 1;
                    let started_at = self.clock.now();
                    let request_record = serde_json::to_value(&request).unwrap_or(Value::Null);
                    tracing::debug!(step = %step, attempt, "step attempt");
                    match self.outbound.perform(&request, timeout, &success).await {
                        Ok(output) => Event::StepSucceeded {
                            step,
                            attempt,
                            started_at,
                            request: request_record,
                            output,
                        },
                        Err((error, output)) => {
                            tracing::info!(step = %step, attempt, class = ?error.class, "step attempt failed");
                            Event::StepFailed {
                                step,
                                attempt,
                                started_at,
                                request: request_record,
                                error,
                                output,
                            }
                        }
                    }
                }
                Effect::ScheduleTimer { at } => {
                    // A timer that only fired early (a wait not yet over, a look at a child
                    // still running) changed nothing: no write, just the next timer.
                    if run != stored && self.save(&run).await?.is_none() {
                        return Err(ExecError::Lost(Progress::of(&stored)));
                    }
                    self.schedule(&run.id, at).await?;
                    return Ok(());
                }
                Effect::Park {
                    step,
                    reason,
                    until,
                } => {
                    engine::expose(&mut run, &self.config.public_url, crate::deploy::new_token);
                    let Some(saved) = self.save(&run).await? else {
                        return Err(ExecError::Lost(Progress::of(&stored)));
                    };
                    tracing::info!(step = %step, reason = reason.as_str(), "run parked");
                    if let Some(at) = until {
                        self.schedule(&saved.id, at).await?;
                    }
                    self.notify_waiter(&wf, saved).await?;
                    return Ok(());
                }
                Effect::StartRun {
                    step,
                    workflow,
                    input,
                } => self.start_child(&run, &step, &workflow, input).await?,
                Effect::Continue => {
                    let Some(saved) = self.save(&run).await? else {
                        return Err(ExecError::Lost(Progress::of(&stored)));
                    };
                    self.schedule(&saved.id, self.clock.now()).await?;
                    return Ok(());
                }
                Effect::Finish { status } => {
                    if status == RunStatus::Succeeded && run.trigger.kind == TriggerKind::Cron {
                        // Before the end is written: a crash in between runs the last
                        // step again and saves the state again, never loses it.
                        self.save_next_state(&mut run).await?;
                    }
                    // Likewise: the runs its end starts are admitted (with ids of their
                    // own that a second admission recognizes) before the end is written.
                    self.start_flows(&mut run).await?;
                    let Some(saved) = self.save(&run).await? else {
                        return Err(ExecError::Lost(Progress::of(&stored)));
                    };
                    tracing::info!(workflow = %saved.workflow, status = status.as_str(), "run ended");
                    self.after_end(&saved).await;
                    self.release_slot(&wf, &saved).await;
                    stored = saved.clone();
                    run = saved;
                    continue;
                }
                Effect::Callback {
                    attempt,
                    request,
                    timeout,
                } => {
                    self.deliver_callback(&wf, &run, attempt, request, timeout)
                        .await
                }
            };
            let (next, more) = engine::apply(&wf, run, event, self.clock.now());
            run = next;
            effects.extend(more);
        }
        if run != stored && self.save(&run).await?.is_none() {
            return Err(ExecError::Lost(Progress::of(&stored)));
        }
        Ok(())
    }

    async fn revision_of(&self, run: &Run) -> Result<Arc<Workflow>, ExecError> {
        self.deployments
            .revision(self.store.as_ref(), &run.workflow, run.revision)
            .await?
            .ok_or_else(|| ExecError::MissingRevision {
                workflow: run.workflow.clone(),
                revision: run.revision,
            })
    }

    /// What a delivery means for the run: `Continue`, or, for a run waiting on a child run
    /// that has ended, `ChildEnded`.
    async fn event_for(&self, run: &Run) -> Result<Event, ExecError> {
        if run.status == RunStatus::Waiting
            && let Some((child_id, _)) = run.waiting_child()
            && let Some(child) = self.store.run(child_id).await?
            && child.status.is_terminal()
        {
            return Ok(Event::ChildEnded {
                run_id: child.id,
                status: child.status,
                output: child.final_output,
                error: child.error,
            });
        }
        Ok(Event::Continue)
    }

    /// Delivers `Continue` for the run at `at` (now or later): the queue's delay, which each
    /// adapter maps to its own timers.
    async fn schedule(&self, run_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let delay = at.since(self.clock.now());
        self.queue.send(&WorkItem::run(run_id), delay).await
    }

    /// What follows the end of a run: sync callers are woken, and a parent run waiting for
    /// it is delivered (it reads this run's outcome).
    pub async fn after_end(&self, run: &Run) {
        self.completions.notify(run);
        if run.trigger.kind.has_successors() {
            self.wake_successor(run).await;
        }
        // A parent waits for a run its step started; one that started runs by ending
        // (flow triggers) has nothing to be woken for.
        if let Some(parent) = run.parent.as_ref().filter(|p| p.flow.is_none()) {
            let item = WorkItem::run(parent.run_id.clone());
            if let Err(e) = self.queue.send(&item, Duration::ZERO).await {
                tracing::error!(parent = %parent.run_id, error = %e, "waking the parent run failed; it goes on at its next timer");
            }
        }
    }

    /// Sends a parked step's notification (when it has one) and records how it went in the
    /// run's `waiting_payload.notification`.
    async fn notify_waiter(&self, wf: &Workflow, run: Run) -> Result<(), ExecError> {
        let Some(rendered) = engine::wait_notification(wf, &run) else {
            return Ok(());
        };
        let outcome = match rendered {
            Ok(req) => {
                let rule = engine::SuccessRule(None);
                match self.outbound.perform(&req, NOTIFY_TIMEOUT, &rule).await {
                    Ok(out) => json!({"status": out.get("status"), "sent_at": self.clock.now()}),
                    Err((e, out)) => json!({
                        "status": out.as_ref().and_then(|o| o.get("status")),
                        "error": e.message,
                        "sent_at": self.clock.now(),
                    }),
                }
            }
            Err(e) => json!({"error": format!("the notification's template failed: {e}")}),
        };
        if outcome.get("error").is_some() {
            tracing::warn!(run_id = %run.id, "the wait's notification failed; its URLs are on the run");
        }
        let mut run = run;
        if let Some(p) = run.waiting_payload.as_mut() {
            p["notification"] = outcome;
        }
        self.save(&run).await?;
        Ok(())
    }

    /// Records (once per run and step) the run a `trigger_workflow` step starts.
    async fn start_child(
        &self,
        parent: &Run,
        step: &str,
        workflow: &str,
        input: Value,
    ) -> Result<Event, ExecError> {
        let attempt = parent.cursor.attempt;
        let failed = |message: String| Event::StepFailed {
            step: step.to_string(),
            attempt,
            started_at: self.clock.now(),
            request: json!({"workflow": workflow}),
            error: StepError {
                class: FailureClass::Request,
                message,
            },
            output: None,
        };
        self.refresh_workflows(false).await;
        if self.deployments.latest(workflow).is_none() {
            // Deployed elsewhere since this process last looked (AWS): look now.
            self.refresh_workflows(true).await;
        }
        let Some(rec) = self.deployments.latest(workflow) else {
            return Ok(failed(format!(
                "workflow `{workflow}` is not deployed; deploy it before the runs that start it"
            )));
        };
        let now = self.clock.now();
        let run_id = self.new_id();
        let message_id = self.new_id();
        let body = serde_json::to_vec(&input).unwrap_or_default();
        let mut child = Run::new(
            run_id.clone(),
            &rec.id,
            rec.revision,
            TriggerRef {
                kind: TriggerKind::Workflow,
                id: parent.workflow.clone(),
            },
            json!({ "body": input, "parent": {"run_id": parent.id, "workflow": parent.workflow, "step": step} }),
            now,
        );
        child.message_id = Some(message_id.clone());
        child.parent = Some(ParentRef {
            run_id: parent.id.clone(),
            workflow: parent.workflow.clone(),
            step: step.to_string(),
            flow: None,
        });
        let message = InboxMessage {
            id: message_id,
            received_at: now,
            workflow: rec.id.clone(),
            trigger: "workflow".into(),
            method: "POST".into(),
            path: format!("/v1/runs/{}/steps/{step}", parent.id),
            query: String::new(),
            headers: vec![],
            content_type: Some("application/json".into()),
            body,
            outcome: Outcome::Started {
                run_ids: vec![run_id.clone()],
            },
            scheduled_at: None,
            kafka: None,
            reprocess_of: None,
        };
        let claim = IdempotencyClaim {
            key: format!("{}/trigger_workflow/{}/{step}", rec.id, parent.id),
            expires_at: now.plus(CHILD_CLAIM_WINDOW),
        };
        let admitted = self
            .admit(Admission {
                message,
                runs: vec![child],
                idempotency: Some(claim),
            })
            .await?;
        let run_id = match admitted {
            Admitted::New { .. } => run_id,
            Admitted::Duplicate { run_id } => run_id,
        };
        Ok(Event::ChildStarted {
            step: step.to_string(),
            run_id,
            workflow: rec.id.clone(),
        })
    }

    /// One signed delivery attempt of a run's callback.
    async fn deliver_callback(
        &self,
        wf: &Workflow,
        run: &Run,
        attempt: u32,
        mut request: HttpRequest,
        timeout: Duration,
    ) -> Event {
        let url = request.url.clone();
        let body = request
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let msg_id = format!("msg_{}", run.id);
        let secs = self.clock.now().millis() / 1000;
        let secret = wf.callback_secret.as_deref().unwrap_or_default();
        match crate::signing::headers(secret, &msg_id, secs, &body) {
            Ok(hs) => {
                for (k, v) in hs {
                    request.headers.insert(k.to_string(), v);
                }
            }
            Err(e) => {
                return Event::CallbackDone {
                    attempt,
                    url,
                    status: None,
                    error: Some(StepError {
                        class: FailureClass::Request,
                        message: e.to_string(),
                    }),
                };
            }
        }
        let rule = engine::SuccessRule(None);
        match self.outbound.perform(&request, timeout, &rule).await {
            Ok(out) => Event::CallbackDone {
                attempt,
                url,
                status: status_of(&out),
                error: None,
            },
            Err((error, out)) => {
                tracing::info!(run_id = %run.id, attempt, class = ?error.class, "callback delivery failed");
                Event::CallbackDone {
                    attempt,
                    url,
                    status: out.as_ref().and_then(status_of),
                    error: Some(error),
                }
            }
        }
    }

    /// Applies an event that comes from outside the executor (a resume, a decision, a
    /// cancel) and writes the run; the rest happens in the executor (a work item is sent
    /// when the run goes on or has a callback to deliver). `None` when the conditional
    /// write lost: the caller reads the run again and decides anew.
    pub async fn apply_from_outside(
        &self,
        mut run: Run,
        event: Event,
    ) -> Result<Option<Run>, ExecError> {
        let wf = self.revision_of(&run).await?;
        self.load_store(&wf, &mut run).await?;
        let before = run.clone();
        let (mut run, effects) = engine::apply(&wf, run, event, self.clock.now());
        if run == before {
            return Ok(Some(run));
        }
        if run.status.is_terminal() && !before.status.is_terminal() {
            self.start_flows(&mut run).await?;
        }
        let Some(saved) = self.save(&run).await? else {
            return Ok(None);
        };
        if saved.status.is_terminal() {
            self.after_end(&saved).await;
            self.release_slot(&wf, &saved).await;
        }
        let more = effects
            .iter()
            .any(|e| matches!(e, Effect::Continue | Effect::Callback { .. }));
        if more {
            self.schedule(&saved.id, self.clock.now()).await?;
        }
        Ok(Some(saved))
    }

    /// Gives the run the workflow's context store (`store` in templates) when the workflow
    /// uses it: one read.
    pub(crate) async fn load_store(&self, wf: &Workflow, run: &mut Run) -> Result<(), StoreError> {
        if run.store.is_none() && wf.uses_store() {
            run.store = Some(self.store.context(&run.workflow).await?);
        }
        Ok(())
    }

    /// Writes the run; `None` when the conditional write lost (another delivery of the same
    /// run moved it on, so this result is dropped).
    async fn save(&self, run: &Run) -> Result<Option<Run>, ExecError> {
        // The steps' context-store writes go first: a crash before the run is written
        // runs the step again and writes them again; they are never lost.
        if !run.store_writes.is_empty() {
            self.store
                .patch_context(&run.workflow, &run.store_writes)
                .await?;
        }
        match self.store.save_run(run).await {
            Ok(mut saved) => {
                saved.store = run.store.clone();
                saved.store_writes.clear();
                Ok(Some(saved))
            }
            Err(StoreError::Conflict) => {
                tracing::info!(run_id = %run.id, "the run changed meanwhile (duplicate delivery); this result is dropped");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The sweeper: enqueues again every run admitted since the last sweep and more than
    /// `older_than` ago that is still `queued`: its record was written, but its work item may
    /// never have been sent (a crash between the two). A run that was only slow to start gets
    /// a second work item, which is harmless (conditional writes). The watermark moves only
    /// after every send succeeded. Returns how many runs were enqueued.
    pub async fn sweep(&self, older_than: Duration) -> Result<usize, StoreError> {
        let to = self.clock.now().minus(older_than);
        let from = self
            .store
            .marker(SWEEP_MARKER)
            .await?
            .unwrap_or_else(|| to.minus(FIRST_SWEEP_WINDOW));
        if from >= to {
            return Ok(0);
        }
        let ids = self.store.queued_runs(from, to).await?;
        for id in &ids {
            tracing::warn!(run_id = %id, "run still queued long after it was admitted; enqueuing it again");
            self.queue
                .send(&WorkItem::run(id.clone()), Duration::ZERO)
                .await?;
        }
        self.store.set_marker(SWEEP_MARKER, to).await?;
        Ok(ids.len())
    }

    /// Executor workers: receive work items and handle up to `concurrency` at once, until
    /// `shutdown` turns true; then stop receiving and let the items in hand finish within
    /// `grace` (what does not finish is redelivered after a restart).
    pub async fn run_workers(
        self: Arc<Self>,
        concurrency: usize,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut backoff = Duration::from_millis(50);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = permits.clone().acquire_owned() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let received = tokio::select! {
                r = self.queue.receive(free, Duration::from_secs(1), LEASE) => r,
                _ = shutdown.changed() => continue,
            };
            let deliveries = match received {
                Ok(d) => {
                    backoff = Duration::from_millis(50);
                    d
                }
                Err(e) => {
                    tracing::error!(error = %e, "receiving work failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            for d in deliveries {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let app = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = app.handle_delivery(&d).await {
                        tracing::error!(run_id = %d.item.run_id, error = %e, "work item failed; it will be delivered again");
                        if let Err(e) = app.queue.release(&d, RETRY_FAILED_ITEM).await {
                            tracing::error!(error = %e, "releasing a failed work item failed; it returns after its lease");
                        }
                    }
                    drop(permit);
                });
            }
        }
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("steps still in flight at shutdown; they will run again after restart");
        }
    }
}
