//! The durable queue, in the same database as the records. Delayed items are the durable
//! timers: an item is receivable once its `visible_at` has passed.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use tripline_app::ports::{Backlog, Clock, Delivery, Queue, StoreError, WorkItem};
use tripline_core::Timestamp;

use crate::{EmbeddedStore, Leases, sql};

/// The queue over an [`EmbeddedStore`]'s database.
#[derive(Clone)]
pub struct EmbeddedQueue {
    store: EmbeddedStore,
    clock: Arc<dyn Clock>,
    leases: Arc<Leases>,
}

impl EmbeddedQueue {
    pub fn new(store: EmbeddedStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            leases: Arc::new(Leases::new(HashMap::new())),
        }
    }

    /// Wakes waiting receivers so they look again (after a manual clock moved).
    pub fn wake(&self) {
        self.store.notify_queue();
    }

    /// Items in the queue, leased or not (for tests and metrics).
    pub async fn depth(&self) -> Result<u64, StoreError> {
        self.store
            .read(|conn| {
                conn.query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
                    .map_err(sql)
            })
            .await
    }

    fn claim(
        &self,
        rows: Vec<(i64, String, bool, Option<i64>)>,
        max: usize,
        now: Timestamp,
        lease: Duration,
    ) -> Vec<Delivery> {
        let Ok(mut leases) = self.leases.lock() else {
            return Vec::new();
        };
        leases.retain(|_, until| *until > now);
        let mut out = Vec::new();
        for (seq, run_id, start_only, if_version) in rows {
            if out.len() == max {
                break;
            }
            if leases.contains_key(&seq) {
                continue;
            }
            leases.insert(seq, now.plus(lease));
            out.push(Delivery {
                receipt: seq.to_string(),
                item: WorkItem {
                    run_id,
                    start_only,
                    if_version: if_version.and_then(|v| u64::try_from(v).ok()),
                },
                receive_count: 1,
            });
        }
        out
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn backlog(&self) -> Result<Option<Backlog>, StoreError> {
        let now = self.clock.now().millis();
        let (ready, oldest): (u64, Option<i64>) = self
            .store
            .read(move |conn| {
                conn.query_row(
                    "SELECT COUNT(*), MIN(visible_at) FROM queue WHERE visible_at <= ?1",
                    [now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql)
            })
            .await?;
        let age = oldest.map_or(0, |at| (now - at).max(0) as u64);
        Ok(Some(Backlog {
            ready,
            oldest_age: Duration::from_millis(age),
        }))
    }

    async fn send(&self, item: &WorkItem, delay: Duration) -> Result<(), StoreError> {
        let visible_at = self.clock.now().plus(delay).millis();
        let run_id = item.run_id.clone();
        let start_only = item.start_only;
        let if_version = item.if_version.and_then(|v| i64::try_from(v).ok());
        self.store
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO queue (run_id, visible_at, start_only, if_version) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![run_id, visible_at, start_only, if_version]))
                .map_err(sql)?;
                Ok(())
            })
            .await?;
        self.store.notify_queue();
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let mut notified = pin!(self.store.shared.queue_ready.notified());
            notified.as_mut().enable();
            let now = self.clock.now();
            let leased = self.leases.lock().map(|l| l.len()).unwrap_or(0);
            let limit = (max + leased) as i64;
            // The oldest due items, past those this process holds leases on: a short indexed
            // read, done in place.
            let (rows, next_visible) = self.store.read_now(|conn| {
                // No `LIMIT ?`: SQLite plans with a bound LIMIT's value, so such a statement
                // is prepared again on every run (perf: 4% of the CPU under load). The index
                // gives the order; reading stops after `limit` rows.
                let mut stmt = conn
                    .prepare_cached("SELECT seq, run_id, start_only, if_version FROM queue WHERE visible_at <= ?1 ORDER BY visible_at, seq")
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![now.millis()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, bool>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                        ))
                    })
                    .map_err(sql)?
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql)?;
                let next: Option<i64> = conn
                    .prepare_cached("SELECT MIN(visible_at) FROM queue WHERE visible_at > ?1")
                    .and_then(|mut s| s.query_row([now.millis()], |r| r.get(0)))
                    .map_err(sql)?;
                Ok((rows, next))
            })?;
            let got = self.claim(rows, max, now, lease);
            if !got.is_empty() {
                return Ok(got);
            }
            let lease_end = self
                .leases
                .lock()
                .ok()
                .and_then(|l| l.values().min().copied());
            let wake_at = [next_visible.map(Timestamp), lease_end]
                .into_iter()
                .flatten()
                .min();
            let mut until = give_up;
            if let Some(at) = wake_at {
                until = until.min(tokio::time::Instant::now() + at.since(now));
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), StoreError> {
        let seq: i64 = delivery.receipt.parse().map_err(|_| {
            StoreError::Unavailable(
                format!("`{}` is not a receipt of this queue", delivery.receipt).into(),
            )
        })?;
        let until = self.clock.now().plus(delay);
        if let Ok(mut l) = self.leases.lock()
            && let Some(lease) = l.get_mut(&seq)
        {
            *lease = until;
        }
        self.store.notify_queue();
        Ok(())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let seq: i64 = delivery.receipt.parse().map_err(|_| {
            StoreError::Unavailable(
                format!("`{}` is not a receipt of this queue", delivery.receipt).into(),
            )
        })?;
        self.store
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM queue WHERE seq = ?1")
                    .and_then(|mut s| s.execute([seq]))
                    .map_err(sql)?;
                Ok(())
            })
            .await?;
        if let Ok(mut l) = self.leases.lock() {
            l.remove(&seq);
        }
        Ok(())
    }
}
