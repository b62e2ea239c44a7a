//! The audit log and retention on SQLite. Records are deleted in small batches by id:
//! every run and message id is a ULID of its time, so "older than" is a range of the
//! `(workflow, id)` indexes and no index is added to the ingest path for it. Deleted
//! pages go to SQLite's free list and are reused, so the file stops growing once
//! retention deletes as much as arrives.

use rusqlite::{Connection, params};
use tripline_app::ports::{AuditEntry, StoreError};
use tripline_core::Timestamp;

use super::*;

pub(crate) fn record_audit(conn: &Connection, entry: &AuditEntry) -> Result<(), StoreError> {
    let record = serde_json::to_string(entry).map_err(|e| corrupt("audit entry", e))?;
    conn.prepare_cached("INSERT INTO audit (id, at, record) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![entry.id, entry.at.millis(), record]))
        .map(|_| ())
        .map_err(sql)
}

pub(crate) fn read_audit(record: &str) -> Result<AuditEntry, StoreError> {
    serde_json::from_str(record).map_err(|e| corrupt("audit entry", e))
}

/// The smallest ULID of the millisecond `at`: every id below it is older.
fn id_floor(at: Timestamp) -> String {
    ulid::Ulid::from_parts(u64::try_from(at.millis()).unwrap_or(0), 0).to_string()
}

pub(crate) fn purge(
    conn: &Connection,
    workflow: &str,
    before: Timestamp,
    limit: usize,
) -> Result<usize, StoreError> {
    let floor = id_floor(before);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let messages = conn
        .prepare_cached(
            "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE workflow = ?1 AND id < ?2 ORDER BY id LIMIT ?3)",
        )
        .and_then(|mut s| s.execute(params![workflow, floor, limit]))
        .map_err(sql)?;
    let runs = conn
        .prepare_cached(
            "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE workflow = ?1 AND id < ?2 AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out') ORDER BY id LIMIT ?3)",
        )
        .and_then(|mut s| s.execute(params![workflow, floor, limit]))
        .map_err(sql)?;
    Ok(messages + runs)
}

/// Runs queued or running with no work item. `NOT IN` over the queue's run ids, which
/// SQLite reads once into a temporary index: the correlated `NOT EXISTS` used before had no
/// index on `queue.run_id` to use and scanned the whole queue once per queued run, which
/// with a backlog of 9,810 runs took 1.9 s (5 ms now) and held a read snapshot that long,
/// so no checkpoint could finish and the log grew to 30,000 pages (a 665 ms checkpoint
/// after). An index on `queue.run_id` would cost every work item's insert and delete.
pub(crate) const STRANDED_RUNS: &str = "SELECT id FROM runs WHERE status IN ('queued', 'running') AND id NOT IN (SELECT run_id FROM queue) ORDER BY id LIMIT ?1";

pub(crate) fn stranded_runs(conn: &Connection, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(STRANDED_RUNS).map_err(sql)?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            r.get::<_, String>(0)
        })
        .map_err(sql)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stranded-runs query reads the queue once, not once per queued run (the plan
    /// of a correlated subquery): with a backlog, that was seconds of read snapshot.
    #[test]
    fn finding_stranded_runs_reads_the_queue_once() {
        let dir = tempfile::tempdir().expect("tmp");
        drop(EmbeddedStore::open(dir.path()).expect("store"));
        let conn = Connection::open(dir.path().join("tripline.db")).expect("open");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {STRANDED_RUNS}"))
            .expect("plan")
            .query_map([1000], |r| r.get::<_, String>(3))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        assert!(
            !plan.iter().any(|step| step.contains("CORRELATED")),
            "{plan:?}"
        );
        assert!(
            plan.iter().any(|step| step.contains("LIST SUBQUERY")),
            "{plan:?}"
        );
    }

    /// It finds exactly the queued or running runs without a work item.
    #[tokio::test]
    async fn stranded_runs_are_the_queued_and_running_ones_without_a_work_item() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        store
            .write(|conn| {
                for (id, status) in [("a", "queued"), ("b", "running"), ("c", "queued"), ("d", "succeeded")] {
                    conn.execute(
                        "INSERT INTO runs (id, workflow, status, version, inserted_at, record) VALUES (?1, 'wf', ?2, 1, 0, '{}')",
                        params![id, status],
                    )
                    .map_err(sql)?;
                }
                conn.execute("INSERT INTO queue (run_id, visible_at) VALUES ('c', 0)", [])
                    .map_err(sql)?;
                Ok(())
            })
            .await
            .expect("write");
        let found = store
            .read(|conn| stranded_runs(conn, 10))
            .await
            .expect("read");
        assert_eq!(found, vec!["a".to_string(), "b".to_string()]);
    }
}
