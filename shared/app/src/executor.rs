//! The step executor: takes work items from the queue, applies the engine's events to the
//! run, performs its effects, and writes the run back with a conditional write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::Instrument;
use tripline_core::Run;
use tripline_core::engine::{self, Effect, Event};

use crate::App;
use crate::ports::{Delivery, StoreError, WorkItem};

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
}

impl App {
    /// Handles one delivery to the end of what can be done now. On `Ok` the delivery is
    /// done (acked); on `Err` it is left for redelivery.
    pub async fn handle_delivery(&self, delivery: &Delivery) -> Result<(), ExecError> {
        let run_id = &delivery.item.run_id;
        let span = tracing::info_span!("run", run_id = %run_id);
        async {
            self.advance_run(run_id).await?;
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

    /// Like [`App::advance_run`], but a step is only started while it can finish (its
    /// timeout plus [`DEADLINE_MARGIN`]) before `deadline`: past that, the run is written
    /// and enqueued again, to continue in another invocation (AWS Lambda's time limit).
    pub async fn advance_run_until(
        &self,
        run_id: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ExecError> {
        let Some(run) = self.store.run(run_id).await? else {
            tracing::warn!(run_id, "work item for an unknown run dropped");
            return Ok(());
        };
        if run.status.is_terminal() {
            return Ok(());
        }
        let wf = self
            .deployments
            .revision(self.store.as_ref(), &run.workflow, run.revision)
            .await?
            .ok_or_else(|| ExecError::MissingRevision {
                workflow: run.workflow.clone(),
                revision: run.revision,
            })?;
        let (mut run, mut effects) = engine::apply(&wf, run, Event::Continue, self.clock.now());
        let mut performed = 0usize;
        loop {
            let Some(effect) = effects.pop() else {
                return Ok(());
            };
            match effect {
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
                                return Ok(());
                            };
                            let item = WorkItem { run_id: saved.id };
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
                    let event = match self.outbound.perform(&request, timeout, &success).await {
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
                    };
                    (run, effects) = engine::apply(&wf, run, event, self.clock.now());
                }
                Effect::ScheduleTimer { at } => {
                    let Some(saved) = self.save(&run).await? else {
                        return Ok(());
                    };
                    let delay = at.since(self.clock.now());
                    self.queue
                        .send(
                            &WorkItem {
                                run_id: saved.id.clone(),
                            },
                            delay,
                        )
                        .await?;
                    return Ok(());
                }
                Effect::Finish { status } => {
                    let Some(saved) = self.save(&run).await? else {
                        return Ok(());
                    };
                    tracing::info!(workflow = %saved.workflow, status = status.as_str(), "run ended");
                    self.completions.notify(&saved);
                    return Ok(());
                }
            }
        }
    }

    /// Writes the run; `None` when the conditional write lost (another delivery of the same
    /// run moved it on, so this result is dropped).
    async fn save(&self, run: &Run) -> Result<Option<Run>, ExecError> {
        match self.store.save_run(run).await {
            Ok(saved) => Ok(Some(saved)),
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
                .send(&WorkItem { run_id: id.clone() }, Duration::ZERO)
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
