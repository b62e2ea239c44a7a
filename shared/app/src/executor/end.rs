//! What follows the written end of a run: whoever waits for it is woken.

use std::time::Duration;

use tripline_core::Run;

use crate::App;
use crate::ports::WorkItem;

impl App {
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
}
