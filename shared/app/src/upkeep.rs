//! Upkeep the local shape runs in the background: retention (records older than each
//! workflow's `retention`, or the server's, deleted in small batches) and moving runs
//! that were left with no work item. In AWS, DynamoDB's TTL and an S3 lifecycle rule do
//! the deleting, and the sweeper and retried requests move runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::App;
use crate::ports::{StoreError, WorkItem};

/// Records deleted per write: small enough that webhooks are not held behind it.
pub const PURGE_BATCH: usize = 500;

/// How often upkeep runs.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(60);

impl App {
    /// Deletes what is past retention: for every workflow the store knows (removed ones
    /// too), records older than its `retention` or the server's. Returns how many.
    pub async fn apply_retention(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut deleted = 0;
        for rec in self.store.latest_workflows().await? {
            let keep = rec
                .definition
                .retention
                .map(|d| d.std())
                .or(self.config.retention);
            let Some(keep) = keep else { continue };
            let before = now.minus(keep);
            loop {
                let n = self.store.purge(&rec.id, before, PURGE_BATCH).await?;
                deleted += n;
                if n == 0 {
                    break;
                }
                // Let the writes that answer webhooks in between batches.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "retention: old runs and messages deleted");
        }
        Ok(deleted)
    }

    /// Sends a work item for every run the store finds queued or running with none (see
    /// [`crate::ports::Store::stranded_runs`]). A run that gets one twice is harmless:
    /// writes are conditional on its version. Returns how many were sent.
    pub async fn move_stranded(&self) -> Result<usize, StoreError> {
        let ids = self.store.stranded_runs(1000).await?;
        for id in &ids {
            tracing::warn!(run_id = %id, "run had no work item to move it; enqueuing it again");
            self.queue
                .send(&WorkItem::run(id.clone()), Duration::ZERO)
                .await?;
        }
        Ok(ids.len())
    }

    /// Runs upkeep every `every` until `stop` turns true (the first pass at once: a run
    /// stranded by a crash moves when the server starts again).
    pub async fn run_upkeep(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.move_stranded().await {
                tracing::warn!(error = %e, "moving stranded runs failed; trying again later");
            }
            if let Err(e) = self.apply_retention().await {
                tracing::warn!(error = %e, "retention failed; trying again later");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
