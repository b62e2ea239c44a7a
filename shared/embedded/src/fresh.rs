//! Runs just admitted, kept in memory for their first read: the executor reads each new
//! run right after its admission, and decoding the record it was just given cost about 6%
//! of the server's CPU under load (perf, 2026-12-07).
//!
//! Exact because this process is the store's only writer (`tripline.lock`) and every write
//! to a run row passes here: an admission adds its queued runs (version 0, as inserted)
//! inside its write, *before* the commit makes them readable or deliverable, and forgets
//! them if the commit fails; `save_run` (conditional on a committed version) forgets the
//! run before it writes. So a run is always kept before anything can save it, and a kept
//! run is never older than its row (kept after the commit instead, an executor that
//! delivered and saved the run first would have had it replaced by the stale admission).
//! The first read takes it out. Nothing else changes a run that has never been saved
//! (`purge` deletes only ended runs, which were saved). Bounded: when runs are admitted
//! faster than they are read (the executor stopped), the newest are simply read from the
//! database.

use std::collections::HashMap;
use std::sync::Mutex;

use tripline_core::Run;

/// At most this many runs are kept.
const KEPT: usize = 1024;

#[derive(Default)]
pub(crate) struct Fresh(Mutex<HashMap<String, Run>>);

impl Fresh {
    /// Keeps runs just committed, as the database holds them (version 0).
    pub(crate) fn put(&self, runs: Vec<Run>) {
        let Ok(mut kept) = self.0.lock() else { return };
        for mut run in runs {
            if kept.len() >= KEPT {
                return;
            }
            run.version = 0;
            kept.insert(run.id.clone(), run);
        }
    }

    /// The run as admitted, once.
    pub(crate) fn take(&self, id: &str) -> Option<Run> {
        self.0.lock().ok()?.remove(id)
    }

    /// Forgets a run about to be written.
    pub(crate) fn forget(&self, id: &str) {
        if let Ok(mut kept) = self.0.lock() {
            kept.remove(id);
        }
    }
}
