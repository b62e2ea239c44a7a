//! The step executor: takes work items from the queue, applies the engine's events to the
//! run, performs its effects, and writes the run back with a conditional write.
//!
//! Where things are: a work item arrives here (`handle_delivery` → `advance_once`: load the
//! run, gate its start, apply the event); `interpret.rs` performs the effects in order and
//! is the one run-end path (also for resumes, decisions, cancels and pure sync runs);
//! `end.rs` wakes whoever waits for an ended run; `child.rs` starts the run of a
//! `trigger_workflow` step; `callback.rs` signs and sends callbacks and notifications;
//! `workers.rs` holds the local workers and the sweeper.

mod callback;
mod cancel;
mod child;
mod end;
mod interpret;
mod lanes;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;
use tripline_core::engine::{self, Event};
use tripline_core::run::TriggerKind;
use tripline_core::{Run, RunStatus, Timestamp, Workflow};

pub use self::cancel::CancelError;
pub(crate) use self::interpret::log_end;
use self::interpret::{Interpreted, Mode, Performer};
use crate::App;
use crate::concurrency::Slot;
use crate::ports::{Delivery, StoreError, WorkItem};

/// How soon a queued run (`overlap: queue`) whose predecessor has not ended looks again,
/// when it was not woken by the predecessor's end.
pub const QUEUED_LOOK_AGAIN: Duration = Duration::from_secs(30);

/// How long an approval's notification may take.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `trigger_workflow` step's claim on its run lasts: a redelivery within it
/// finds the run started before instead of starting another.
pub const CHILD_CLAIM_WINDOW: Duration = Duration::from_secs(400 * 24 * 3600);

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
        if let Some(job) = item.job_id() {
            return Ok(self.job_step(job).await?);
        }
        self.advance_loop(&item.run_id, deadline, item.start_only, item.if_version)
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
        self.advance_loop(run_id, deadline, false, None).await
    }

    async fn advance_loop(
        &self,
        run_id: &str,
        deadline: Option<tokio::time::Instant>,
        start_only: bool,
        if_version: Option<u64>,
    ) -> Result<(), ExecError> {
        for _ in 0..4 {
            match self
                .advance_once(run_id, deadline, start_only, if_version)
                .await
            {
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
        if_version: Option<u64>,
    ) -> Result<(), ExecError> {
        let Some(mut run) = self.store.run(run_id).await? else {
            tracing::warn!(run_id, "work item for an unknown run dropped");
            return Ok(());
        };
        if let Some(v) = if_version {
            if run.version != v {
                // Something moved the run after the write that sent this rescue.
                return Ok(());
            }
            tracing::warn!(
                run_id,
                "the work item sent after a resume, decision or cancel was lost; the rescue moves the run"
            );
        }
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
        let stored = run.clone();
        if run.status == RunStatus::Queued
            && let Some(at) = run.not_before.filter(|at| *at > self.clock.now())
        {
            // A one-time run: its timer (the queue's delay; in AWS past 15 minutes an
            // EventBridge Scheduler schedule) starts it.
            self.schedule(&run.id, at).await?;
            return Ok(());
        }
        if run.status == RunStatus::Queued && !self.may_start(&wf, &mut run).await? {
            return Ok(());
        }
        let (run, effects) = engine::apply(&wf, run, event, self.clock.now());
        let mode = Mode::Executor { deadline };
        // Boxed: awaited inline, its state machine (about 12 KB, much of it runs held by
        // value) was stored twice over in this one's, which the executor's task copies
        // into its cell: 26 KB without the box, 5 KB with it (measured 2026-12-07).
        let interpreted =
            Box::pin(self.interpret(&wf, run, stored, effects, mode, Some(&Performer)));
        match interpreted.await? {
            Interpreted::Done { .. } => Ok(()),
            Interpreted::Lost(progress) => Err(ExecError::Lost(progress)),
        }
    }

    /// Whether a queued run may start now: not while the run it is ordered behind
    /// (`overlap: queue`, Kafka `ordering: key`) has not ended, nor while its workflow's
    /// concurrency limit is full. A run that must wait is woken by the end it waits for,
    /// or looks again (a wake lost in a crash). A cron run gets its `state` input here.
    async fn may_start(&self, wf: &Workflow, run: &mut Run) -> Result<bool, ExecError> {
        if run.trigger.kind == TriggerKind::Cron || run.after.is_some() {
            match Box::pin(self.prepare_start(run.clone())).await? {
                Some(prepared) => *run = prepared,
                None => {
                    self.queue
                        .send(&WorkItem::start(run.id.clone()), QUEUED_LOOK_AGAIN)
                        .await?;
                    return Ok(false);
                }
            }
        }
        if wf.concurrency.is_some() && Box::pin(self.take_slot(wf, run)).await? == Slot::Wait {
            self.queue
                .send(&WorkItem::start(run.id.clone()), QUEUED_LOOK_AGAIN)
                .await?;
            return Ok(false);
        }
        Ok(true)
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
        let stored = run.clone();
        let (run, effects) = engine::apply(&wf, run, event, self.clock.now());
        match self
            .interpret(&wf, run, stored, effects, Mode::Outside, None)
            .await?
        {
            Interpreted::Done { run, .. } => Ok(Some(run)),
            Interpreted::Lost(_) => Ok(None),
        }
    }

    /// Runs a pure sync run to its end in memory and performs what must come before its
    /// first write (context writes, the runs its end starts); the admission then writes
    /// it. Returns the ended run, and `true` when a work item must follow the admission (a
    /// callback to deliver).
    pub(crate) async fn run_before_admission(
        &self,
        wf: &Workflow,
        mut run: Run,
    ) -> Result<(Run, bool), ExecError> {
        self.load_store(wf, &mut run).await?;
        let stored = run.clone();
        let (ran, effects) = engine::run_pure(wf, run, self.clock.now());
        match self
            .interpret(wf, ran, stored, effects, Mode::BeforeAdmission, None)
            .await?
        {
            Interpreted::Done { run, deferred } => Ok((run, deferred)),
            Interpreted::Lost(p) => Err(ExecError::Lost(p)),
        }
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
        match self.store.save_run(run).await {
            Ok(mut saved) => {
                saved.store = run.store.clone();
                Ok(Some(saved))
            }
            Err(StoreError::Conflict) => {
                tracing::info!(run_id = %run.id, "the run changed meanwhile (duplicate delivery); this result is dropped");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}
