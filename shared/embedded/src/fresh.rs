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
//! (`purge` deletes only ended runs, which were saved). Bounded in count and in each
//! run's record length (large bodies are not kept), so a backlog or a flood of large
//! bodies costs at most a few MiB: what is not kept is read from the database as before.

use std::collections::HashMap;
use std::sync::Mutex;

use tripline_core::Run;

/// At most this many runs are kept,
const KEPT: usize = 256;
/// and only those whose record is at most this long (a webhook's usual run; a run with a
/// large body is decoded from its row as before): at most 2 MiB of records, whatever the
/// senders and however far behind the executor is.
const KEPT_RECORD: usize = 8 * 1024;

#[derive(Default)]
pub(crate) struct Fresh(Mutex<HashMap<String, Run>>);

impl Fresh {
    /// Keeps runs about to be committed, as the database holds them (version 0), each
    /// with the length of its record.
    pub(crate) fn put(&self, runs: impl IntoIterator<Item = (Run, usize)>) {
        let Ok(mut kept) = self.0.lock() else { return };
        for (mut run, record) in runs {
            if kept.len() >= KEPT {
                return;
            }
            if record > KEPT_RECORD {
                continue;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::run::{TriggerKind, TriggerRef};

    fn run(id: &str) -> Run {
        let trigger = TriggerRef {
            kind: TriggerKind::Manual,
            id: "manual".into(),
        };
        Run::new(
            id.into(),
            "wf",
            1,
            trigger,
            serde_json::json!({}),
            tripline_core::Timestamp(0),
        )
    }

    /// A backlog or a flood of large bodies cannot grow it: at most `KEPT` runs, none with
    /// a record over `KEPT_RECORD`; the first read takes a run out.
    #[test]
    fn it_keeps_few_small_runs_and_each_once() {
        let fresh = Fresh::default();
        fresh.put([(run("large"), KEPT_RECORD + 1), (run("small"), KEPT_RECORD)]);
        assert!(
            fresh.take("large").is_none(),
            "a large record is read from its row"
        );
        assert_eq!(fresh.take("small").map(|r| r.id), Some("small".into()));
        assert!(fresh.take("small").is_none(), "taken once");
        fresh.put((0..KEPT + 10).map(|i| (run(&format!("r{i}")), 100)));
        assert_eq!(fresh.0.lock().expect("lock").len(), KEPT);
    }
}
