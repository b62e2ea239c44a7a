//! The `Store` on SQLite: workflows, runs, inbox messages, idempotency claims and the
//! versioned singleton records, each write in the writer's group commit.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tripline_app::ports::*;
use tripline_core::{Run, RunStatus, Timestamp};

use super::*;
use crate::listing::{Listing, message_listing, run_listing};

/// A document stored with a version (cron state, concurrency slots).
trait Versioned: serde::Serialize + serde::de::DeserializeOwned {
    fn set_version(&mut self, version: u64);
}

impl Versioned for SavedState {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl Versioned for Slots {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl EmbeddedStore {
    /// Reads a versioned document of `table` (`key_column` = `key`).
    fn versioned<T: Versioned>(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.read_now(|conn| {
            let row: Option<(String, i64)> = conn
                .query_row(
                    &format!("SELECT record, version FROM {table} WHERE {key_column} = ?1"),
                    [key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql)?;
            row.map(|(rec, v)| {
                let mut doc: T = serde_json::from_str(&rec).map_err(|e| corrupt(what, e))?;
                doc.set_version(v as u64);
                Ok(doc)
            })
            .transpose()
        })
    }

    /// Writes a versioned document if its stored version is still `expected` (0: none
    /// yet); else `Conflict`.
    async fn put_versioned<T: Versioned>(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
        expected: u64,
        next: &T,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let record = serde_json::to_string(next).map_err(|e| corrupt(what, e))?;
        let (key, expected) = (key.to_string(), expected as i64);
        self.write(move |conn| {
            let changed = if expected == 0 {
                conn.execute(
                    &format!("INSERT INTO {table} ({key_column}, version, record) VALUES (?1, 1, ?2) ON CONFLICT ({key_column}) DO NOTHING"),
                    params![key, record],
                )
            } else {
                conn.execute(
                    &format!("UPDATE {table} SET record = ?1, version = version + 1 WHERE {key_column} = ?2 AND version = ?3"),
                    params![record, key, expected],
                )
            }
            .map_err(sql)?;
            if changed == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict)
            }
        })
        .await
    }
}

fn read_run(record: &str, version: i64) -> Result<Run, StoreError> {
    let mut run: Run = serde_json::from_str(record).map_err(|e| corrupt("run", e))?;
    run.version = version as u64;
    Ok(run)
}

fn read_message(record: &str, body: Vec<u8>) -> Result<InboxMessage, StoreError> {
    let mut m: InboxMessage =
        serde_json::from_str(record).map_err(|e| corrupt("inbox message", e))?;
    m.body = body;
    Ok(m)
}

fn insert_message(conn: &Connection, m: &InboxMessage) -> Result<(), StoreError> {
    let record = serde_json::to_string(m).map_err(|e| corrupt("inbox message", e))?;
    conn.prepare_cached(
        "INSERT INTO inbox (id, workflow, trigger, outcome, received_at, record, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![m.id, m.workflow, m.trigger, m.outcome.kind(), m.received_at.millis(), record, m.body])
    })
    .map_err(sql)?;
    Ok(())
}

/// An admission's runs (with their records), and a work item for each queued one.
fn insert_runs(
    conn: &Connection,
    runs: &[Run],
    records: &[String],
    now: i64,
) -> Result<(), StoreError> {
    for (run, json) in runs.iter().zip(records) {
        conn.prepare_cached(
            "INSERT INTO runs (id, workflow, status, version, inserted_at, record) VALUES (?1, ?2, ?3, 0, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![run.id, run.workflow, run.status.as_str(), run.inserted_at.millis(), json]))
        .map_err(sql)?;
        if run.status == tripline_core::RunStatus::Queued {
            conn.prepare_cached("INSERT INTO queue (run_id, visible_at) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![run.id, now]))
                .map_err(sql)?;
        }
    }
    Ok(())
}

fn run_json(run: &Run) -> Result<String, StoreError> {
    serde_json::to_string(run).map_err(|e| corrupt("run", e))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn deploy(&self, record: &WorkflowRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| corrupt("workflow", e))?;
        let (id, rev, at) = (
            record.id.clone(),
            record.revision,
            record.deployed_at.millis(),
        );
        self.write(move |conn| {
            let latest: u32 = conn
                .query_row(
                    "SELECT COALESCE(MAX(revision), 0) FROM workflows WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            if latest + 1 != rev {
                return Err(StoreError::Conflict);
            }
            conn.execute(
                "INSERT INTO workflows (id, revision, deployed_at, record) VALUES (?1, ?2, ?3, ?4)",
                params![id, rev, at, json],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn latest_workflows(&self) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT w.record FROM workflows w JOIN (SELECT id, MAX(revision) AS rev FROM workflows GROUP BY id) l \
                     ON w.id = l.id AND w.revision = l.rev ORDER BY w.id",
                )
                .map_err(sql)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row.map_err(sql)?).map_err(|e| corrupt("workflow", e))?);
            }
            Ok(out)
        })
        .await
    }

    async fn workflow(
        &self,
        id: &str,
        revision: Option<u32>,
    ) -> Result<Option<WorkflowRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            let rec: Option<String> = match revision {
                Some(rev) => conn
                    .query_row(
                        "SELECT record FROM workflows WHERE id = ?1 AND revision = ?2",
                        params![id, rev],
                        |r| r.get(0),
                    )
                    .optional(),
                None => conn
                    .query_row(
                        "SELECT record FROM workflows WHERE id = ?1 ORDER BY revision DESC LIMIT 1",
                        [&id],
                        |r| r.get(0),
                    )
                    .optional(),
            }
            .map_err(sql)?;
            rec.map(|s| serde_json::from_str(&s).map_err(|e| corrupt("workflow", e)))
                .transpose()
        })
        .await
    }

    async fn revisions(&self, id: &str) -> Result<Vec<(u32, Timestamp)>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare("SELECT revision, deployed_at FROM workflows WHERE id = ?1 ORDER BY revision DESC")
                .map_err(sql)?;
            let rows = stmt.query_map([&id], |r| Ok((r.get::<_, u32>(0)?, Timestamp(r.get(1)?)))).map_err(sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql)
        })
        .await
    }

    async fn admit(&self, admission: Admission) -> Result<Admitted, StoreError> {
        let mut runs_json = Vec::with_capacity(admission.runs.len());
        for r in &admission.runs {
            runs_json.push(run_json(r)?);
        }
        let queued: Vec<String> = admission
            .runs
            .iter()
            .filter(|r| r.status == tripline_core::RunStatus::Queued)
            .map(|r| r.id.clone())
            .collect();
        let shared = self.shared.clone();
        let result = self
            .write(move |conn| {
                let Admission { mut message, runs, idempotency } = admission;
                let now = message.received_at.millis();
                if let Some(claim) = &idempotency {
                    let existing: Option<(String, i64)> = conn
                        .prepare_cached("SELECT run_id, expires_at FROM idempotency WHERE key = ?1")
                        .and_then(|mut s| s.query_row([&claim.key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                        .map_err(sql)?;
                    if let Some((run_id, expires)) = existing.filter(|(_, exp)| *exp > now) {
                        let _ = expires;
                        message.outcome = Outcome::Duplicate { run_id: run_id.clone() };
                        // A duplicate never replaces a message recorded under its id (a
                        // cron tick's id is its first record's).
                        let exists = conn
                            .prepare_cached("SELECT 1 FROM inbox WHERE id = ?1")
                            .and_then(|mut s| s.exists([&message.id]))
                            .map_err(sql)?;
                        if !exists {
                            insert_message(conn, &message)?;
                        }
                        return Ok(Admitted::Duplicate { run_id });
                    }
                    if let Some(first) = runs.first() {
                        conn.prepare_cached("INSERT OR REPLACE INTO idempotency (key, run_id, expires_at) VALUES (?1, ?2, ?3)")
                            .and_then(|mut s| s.execute(params![claim.key, first.id, claim.expires_at.millis()]))
                            .map_err(sql)?;
                    }
                }
                // Admitted before under its id (a derived one: a Kafka record, a cron
                // tick): a duplicate of the first admission, which is left as it is.
                let first: Option<String> = conn
                    .prepare_cached("SELECT record FROM inbox WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&message.id], |r| r.get(0)).optional())
                    .map_err(sql)?;
                if let Some(record) = first {
                    let run_id = match read_message(&record, Vec::new())?.outcome {
                        Outcome::Started { run_ids } => run_ids.into_iter().next().unwrap_or_default(),
                        Outcome::Duplicate { run_id } => run_id,
                        _ => String::new(),
                    };
                    return Ok(Admitted::Duplicate { run_id });
                }
                insert_message(conn, &message)?;
                insert_runs(conn, &runs, &runs_json, now)?;
                // Kept for their first read before the commit makes them readable or
                // deliverable, so that nothing can save them before they are kept
                // (fresh.rs); forgotten below if the commit fails.
                let lengths = runs_json.iter().map(String::len);
                let queued = runs.into_iter().zip(lengths).filter(|(r, _)| r.status == tripline_core::RunStatus::Queued);
                shared.fresh.put(queued);
                Ok(Admitted::New { to_enqueue: Vec::new() })
            })
            .await;
        match &result {
            Ok(Admitted::New { .. }) if !queued.is_empty() => self.notify_queue(),
            Err(_) => queued.iter().for_each(|id| self.shared.fresh.forget(id)),
            Ok(_) => {}
        }
        result
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        if let Some(run) = self.shared.fresh.take(id) {
            return Ok(Some(run));
        }
        self.read_now(|conn| {
            let row: Option<(String, i64)> = conn
                .prepare_cached("SELECT record, version FROM runs WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(sql)?;
            row.map(|(rec, v)| read_run(&rec, v)).transpose()
        })
    }

    async fn save_run(&self, run: &Run) -> Result<Run, StoreError> {
        self.shared.fresh.forget(&run.id);
        let mut next = run.clone();
        next.version = run.version + 1;
        let json = run_json(&next)?;
        let (id, status, expected) = (run.id.clone(), run.status.as_str(), run.version as i64);
        self.write(move |conn| {
            let changed = conn
                .prepare_cached("UPDATE runs SET record = ?1, status = ?2, version = version + 1 WHERE id = ?3 AND version = ?4")
                .and_then(|mut s| s.execute(params![json, status, id, expected]))
                .map_err(sql)?;
            if changed == 1 { Ok(next) } else { Err(StoreError::Conflict) }
        })
        .await
    }

    async fn runs(&self, q: &RunQuery) -> Result<Page<Run>, StoreError> {
        let q = q.clone();
        self.read(move |conn| {
            run_listing(&q).page(
                conn,
                "SELECT record, version FROM runs",
                (q.limit, q.cursor.clone()),
                |r| read_run(&r.get::<_, String>(0).map_err(sql)?, r.get(1).map_err(sql)?),
                |run| run.id.clone(),
                q.reads_records().then_some(|run: &Run| q.matches(run)),
            )
        })
        .await
    }

    async fn message(&self, id: &str) -> Result<Option<InboxMessage>, StoreError> {
        self.read_now(|conn| {
            let row: Option<(String, Vec<u8>)> = conn
                .query_row("SELECT record, body FROM inbox WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(sql)?;
            row.map(|(rec, body)| read_message(&rec, body)).transpose()
        })
    }

    async fn messages(&self, q: &InboxQuery) -> Result<Page<InboxMessage>, StoreError> {
        let q = q.clone();
        self.read(move |conn| {
            message_listing(&q).page(
                conn,
                "SELECT record, body FROM inbox",
                (q.limit, q.cursor.clone()),
                |r| read_message(&r.get::<_, String>(0).map_err(sql)?, r.get(1).map_err(sql)?),
                |m| m.id.clone(),
                q.reads_records().then_some(|m: &InboxMessage| q.matches(m)),
            )
        })
        .await
    }

    async fn queued_runs(&self, from: Timestamp, to: Timestamp) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare("SELECT id FROM runs WHERE status = 'queued' AND inserted_at >= ?1 AND inserted_at < ?2 ORDER BY id")
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![from.millis(), to.millis()], |r| r.get::<_, String>(0))
                .map_err(sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql)
        })
        .await
    }

    async fn marker(&self, name: &str) -> Result<Option<Timestamp>, StoreError> {
        self.read_now(|conn| {
            conn.query_row("SELECT at FROM markers WHERE name = ?1", [name], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.map(Timestamp))
            .map_err(sql)
        })
    }

    async fn link(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.read_now(|conn| {
            conn.query_row("SELECT target FROM links WHERE name = ?1", [name], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(sql)
        })
    }

    async fn set_link(&self, name: &str, target: &str) -> Result<(), StoreError> {
        let (name, target) = (name.to_string(), target.to_string());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO links (name, target) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET target = excluded.target",
                params![name, target],
            )
            .map(|_| ())
            .map_err(sql)
        })
        .await
    }

    async fn state(&self, workflow: &str) -> Result<Option<SavedState>, StoreError> {
        self.versioned("states", "workflow", workflow, "state")
    }

    async fn save_state(
        &self,
        workflow: &str,
        state: &SavedState,
    ) -> Result<SavedState, StoreError> {
        let mut next = state.clone();
        next.version = state.version + 1;
        self.put_versioned(
            "states",
            "workflow",
            workflow,
            state.version,
            &next,
            "state",
        )
        .await?;
        Ok(next)
    }

    async fn slots(&self, name: &str) -> Result<Option<Slots>, StoreError> {
        self.versioned("slots", "name", name, "slots")
    }

    async fn save_slots(&self, name: &str, slots: &Slots) -> Result<Slots, StoreError> {
        let mut next = slots.clone();
        next.version = slots.version + 1;
        self.put_versioned("slots", "name", name, slots.version, &next, "slots")
            .await?;
        Ok(next)
    }

    async fn context(&self, workflow: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.read_now(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT key, value FROM contexts WHERE workflow = ?1")
                .map_err(sql)?;
            let rows = stmt
                .query_map([workflow], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(sql)?;
            rows.collect::<Result<BTreeMap<_, _>, _>>().map_err(sql)
        })
    }

    async fn patch_context(
        &self,
        workflow: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), StoreError> {
        let (workflow, changes) = (workflow.to_string(), changes.clone());
        self.write(move |conn| {
            for (key, value) in &changes {
                match value {
                    Some(v) => conn.execute(
                        "INSERT INTO contexts (workflow, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (workflow, key) DO UPDATE SET value = excluded.value",
                        params![workflow, key, v],
                    ),
                    None => conn.execute(
                        "DELETE FROM contexts WHERE workflow = ?1 AND key = ?2",
                        params![workflow, key],
                    ),
                }
                .map_err(sql)?;
            }
            Ok(())
        })
        .await
    }

    async fn set_marker(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO markers (name, at) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET at = excluded.at",
                params![name, at.millis()],
            )
            .map(|_| ())
            .map_err(sql)
        })
        .await
    }

    async fn stranded_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| crate::upkeep::stranded_runs(conn, limit))
            .await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.write(move |conn| crate::upkeep::record_audit(conn, &entry))
            .await
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let q = q.clone();
        self.read(move |conn| {
            let mut l = Listing::default();
            l.time_range("at", q.since, q.until);
            l.page(
                conn,
                "SELECT record FROM audit",
                (q.limit, q.cursor.clone()),
                |r| crate::upkeep::read_audit(&r.get::<_, String>(0).map_err(sql)?),
                |e| e.id.clone(),
                None::<fn(&AuditEntry) -> bool>,
            )
        })
        .await
    }

    async fn recent_runs(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<RunBrief>, StoreError> {
        // The listing's own conditions and order, reading three columns of each row
        // instead of decoding its record.
        let listing = run_listing(&RunQuery {
            since: Some(since),
            ..RunQuery::default()
        });
        self.read(move |conn| {
            let page = listing.page(
                conn,
                "SELECT id, workflow, status, inserted_at FROM runs",
                (limit, None),
                |r| {
                    let status: String = r.get(2).map_err(sql)?;
                    let status = RunStatus::parse(&status).ok_or_else(|| {
                        StoreError::Unavailable(
                            format!("a stored run has an unknown status {status:?}").into(),
                        )
                    })?;
                    let brief = RunBrief {
                        workflow: r.get(1).map_err(sql)?,
                        status,
                        inserted_at: Timestamp(r.get(3).map_err(sql)?),
                    };
                    Ok((r.get::<_, String>(0).map_err(sql)?, brief))
                },
                |(id, _)| id.clone(),
                None::<fn(&(String, RunBrief)) -> bool>,
            )?;
            Ok(page.items.into_iter().map(|(_, b)| b).collect())
        })
        .await
    }

    async fn count_runs(&self, status: RunStatus) -> Result<Option<u64>, StoreError> {
        let status = status.as_str();
        self.read(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM runs WHERE status = ?1",
                [status],
                |r| r.get(0),
            )
            .map(Some)
            .map_err(sql)
        })
        .await
    }

    async fn purge(
        &self,
        workflow: &str,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let workflow = workflow.to_string();
        self.write_long(move |conn| crate::upkeep::purge(conn, &workflow, before, limit))
            .await
    }
}
