//! Checkpoints: copying the write-ahead log back into the database, so that the log starts
//! again from its beginning instead of growing.
//!
//! SQLite's automatic checkpoint runs on whichever thread committed (a tokio worker's, for a
//! write made on the caller's thread), and on the writer thread it held every commit: under
//! the async bench's load a checkpoint of about 1,000 pages ran 25 times a second and took
//! 4.6 ms at the median (15.8 ms at most), 12% of the writer's time with every waiting
//! request stalled behind it. So the write connection only notes the log's length, and the
//! copy runs in two parts:
//!
//! 1. when the log is [`CHECKPOINT_PAGES`] long, a thread of its own copies it on its own
//!    connection (SQLite's passive checkpoint, which commits do not wait for);
//! 2. the writer thread then copies what was committed during that pass, a few groups'
//!    pages, and the next write starts the log again. The log can only start again after
//!    a checkpoint that left nothing behind, which a pass made while commits go on never
//!    does: without this part it would grow as long as writes kept coming.
//!
//! Measured under the same load (2026-12-07, five instrumented 8 s loads): the thread's
//! passes took 3.5–3.9 ms at the median; the writer's part, about 80–180 pages and two
//! fsyncs, 1.7–2.1 ms; in all 0.38–0.53 s of the writer's time in 8 s, against 0.93 s.
//! A second pass of the thread to shrink the writer's part was tried and left out: it cut
//! the writer's time to 0.29–0.33 s and added a third to the thread's (1.0–1.1 s against
//! 0.74–0.82 s), with no change in the requests' p99.
//!
//! Should the checkpoint thread fall behind, the writer copies the whole log itself once it
//! reaches [`LIMIT_PAGES`], as SQLite would.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc;

use rusqlite::Connection;

/// The log's length, in pages, at which the checkpoint thread copies it back (SQLite's own
/// default for its automatic checkpoint).
pub(crate) const CHECKPOINT_PAGES: i32 = 1000;

/// The log's length at which the writer thread copies it back itself.
const LIMIT_PAGES: i32 = 4 * CHECKPOINT_PAGES;

/// The threads that ran checkpoints, for tests.
#[cfg(test)]
pub(crate) static CHECKPOINTED_ON: std::sync::Mutex<Vec<Option<String>>> =
    std::sync::Mutex::new(Vec::new());

thread_local! {
    /// The write-ahead log's length after this thread's last commit, told by [`note_wal`].
    pub(crate) static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The write connection's WAL hook, in place of SQLite's automatic checkpoint: it only
/// notes the log's length (see the module's comment).
pub(crate) fn note_wal(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// The checkpoint thread, and what the writer learns from it.
pub(crate) struct Checkpoints {
    /// Starts a pass (room for one: a pass already asked for covers this one too).
    wake: mpsc::SyncSender<()>,
    /// Set by the checkpoint thread after each pass: the writer's part is due.
    passed: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Starts the checkpoint thread with its own connection to the database at `path`; it
    /// ends once this is dropped.
    pub(crate) fn start(path: &Path) -> Result<Self, rusqlite::Error> {
        let conn = super::open_conn(path, false)?;
        let (wake, passes) = mpsc::sync_channel(1);
        let passed = Arc::new(AtomicBool::new(false));
        let told = passed.clone();
        std::thread::Builder::new()
            .name("tripline-checkpoint".into())
            .spawn(move || {
                while passes.recv().is_ok() {
                    checkpoint(&conn);
                    // A pass asked for during this one is covered by the writer's part.
                    while passes.try_recv().is_ok() {}
                    told.store(true, SeqCst);
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self { wake, passed })
    }

    /// After a commit that left the log `pages` long: whether the writer thread should
    /// checkpoint now (the thread's pass has ended, or the log is past [`LIMIT_PAGES`]);
    /// otherwise starts a pass when the log is due.
    pub(crate) fn after_commit(&self, pages: i32) -> bool {
        if self.passed.swap(false, SeqCst) || pages >= LIMIT_PAGES {
            return true;
        }
        if pages >= CHECKPOINT_PAGES {
            let _ = self.wake.try_send(());
        }
        false
    }
}

/// Copies the write-ahead log into the database without waiting for readers or writers
/// (what SQLite's automatic checkpoint does). Another checkpoint under way makes it do
/// nothing; it is tried again after a later commit.
pub(crate) fn checkpoint(conn: &Connection) {
    #[cfg(test)]
    CHECKPOINTED_ON
        .lock()
        .expect("names")
        .push(std::thread::current().name().map(str::to_string));
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "checkpointing the write-ahead log failed; it is tried again after a later commit");
    }
}
