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

pub(crate) fn stranded_runs(conn: &Connection, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id FROM runs WHERE status IN ('queued', 'running') AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.run_id = runs.id) ORDER BY id LIMIT ?1",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            r.get::<_, String>(0)
        })
        .map_err(sql)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql)
}
