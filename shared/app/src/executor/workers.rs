//! The local shape's executor workers, and the sweeper that enqueues runs whose work item
//! was never sent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::{FIRST_SWEEP_WINDOW, LEASE, RETRY_FAILED_ITEM, SWEEP_MARKER};
use crate::App;
use crate::ports::{StoreError, WorkItem};

impl App {
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

    /// The sweeper's check of runs it may have passed by: where listings are indexed after
    /// the runs are written (DynamoDB's, from its stream), a run indexed later than the
    /// sweeper looked at its time is enqueued again here if it is still `queued`. Returns
    /// how many were.
    pub async fn sweep_runs(&self, ids: &[String]) -> Result<usize, StoreError> {
        let mut sent = 0;
        for id in ids {
            let queued = self.store.run(id).await?;
            if queued.is_some_and(|r| r.status == tripline_core::RunStatus::Queued) {
                tracing::warn!(run_id = %id, "run indexed after the sweeper passed its time, still queued; enqueuing it again");
                self.queue
                    .send(&WorkItem::run(id.clone()), Duration::ZERO)
                    .await?;
                sent += 1;
            }
        }
        Ok(sent)
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
                // Boxed: a run's state machine is large, and the task would otherwise hold
                // it inline and copy it in and out of its cell.
                tokio::spawn(Box::pin(async move {
                    if let Err(e) = app.handle_delivery(&d).await {
                        tracing::error!(run_id = %d.item.run_id, error = %e, "work item failed; it will be delivered again");
                        if let Err(e) = app.queue.release(&d, RETRY_FAILED_ITEM).await {
                            tracing::error!(error = %e, "releasing a failed work item failed; it returns after its lease");
                        }
                    }
                    drop(permit);
                }));
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
