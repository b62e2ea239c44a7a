//! The durable queue, in the same database as the records. Delayed items are the durable
//! timers: an item is receivable once its `visible_at` has passed.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use tripline_app::ports::{Backlog, Clock, Delivery, Queue, StoreError, WorkItem};
use tripline_core::Timestamp;

use crate::{EmbeddedStore, sql};

/// The queue over an [`EmbeddedStore`]'s database.
#[derive(Clone)]
pub struct EmbeddedQueue {
    store: EmbeddedStore,
    clock: Arc<dyn Clock>,
    held: Arc<Mutex<Held>>,
}

/// What this process holds of the queue. Not stored: one process owns the database, and
/// after a restart every item is receivable again at once.
#[derive(Default)]
struct Held {
    /// The items delivered and not yet acked: sequence number → end of the lease.
    leases: HashMap<i64, Timestamp>,
    /// Every item up to this `(visible_at, seq)` was leased when last read, so the next
    /// read starts after it. Without it, an executor holding 64 items in flight read past
    /// those 64 rows at every receive (perf: 8% of the CPU under load). Forgotten when a
    /// lease ends unacked; and a read from it that finds nothing reads from the front
    /// again, so an item sent behind it (a clock set back) waits at most until the queue
    /// runs dry.
    leased_up_to: Option<(i64, i64)>,
}

/// An item as the queue table holds it: `(visible_at, seq)`, then the work item's columns.
type Row = ((i64, i64), String, bool, Option<i64>);

impl Held {
    /// Drops ended leases; an item whose lease ended unacked is receivable again, wherever
    /// it is in the queue, so reads start from the front again.
    fn expire(&mut self, now: Timestamp) {
        let before = self.leases.len();
        self.leases.retain(|_, until| *until > now);
        if self.leases.len() != before {
            self.leased_up_to = None;
        }
    }

    /// Leases up to `max` of `rows` (in queue order, read from [`Held::leased_up_to`]) that
    /// are not leased already.
    fn claim(
        &mut self,
        rows: impl Iterator<Item = Result<Row, StoreError>>,
        max: usize,
        until: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        for row in rows {
            let (key, run_id, start_only, if_version) = row?;
            // Every row read is leased now (it was, or it is claimed here).
            self.leased_up_to = Some(key);
            if self.leases.contains_key(&key.1) {
                continue;
            }
            self.leases.insert(key.1, until);
            out.push(Delivery {
                receipt: key.1.to_string(),
                item: WorkItem {
                    run_id,
                    start_only,
                    if_version: if_version.and_then(|v| u64::try_from(v).ok()),
                },
                receive_count: 1,
            });
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }
}

impl EmbeddedQueue {
    pub fn new(store: EmbeddedStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            held: Arc::default(),
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

    /// Leases up to `max` due items, oldest first; and when the next item becomes due.
    /// A short indexed read, done in place.
    fn claim_due(
        &self,
        max: usize,
        now: Timestamp,
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Option<i64>), StoreError> {
        let Ok(mut held) = self.held.lock() else {
            return Ok((Vec::new(), None));
        };
        held.expire(now);
        self.store.read_now(|conn| {
            // No `LIMIT ?`: SQLite plans with a bound LIMIT's value, so such a statement
            // is prepared again on every run (perf: 4% of the CPU under load). The index
            // gives the order; reading stops once `max` are claimed.
            let mut stmt = conn
                .prepare_cached("SELECT visible_at, seq, run_id, start_only, if_version FROM queue WHERE visible_at <= ?1 AND (visible_at, seq) > (?2, ?3) ORDER BY visible_at, seq")
                .map_err(sql)?;
            let mut got = Vec::new();
            for from in [held.leased_up_to, None] {
                let (v, q) = from.unwrap_or((i64::MIN, i64::MIN));
                let rows = stmt
                    .query_map(params![now.millis(), v, q], |r| {
                        Ok(((r.get(0)?, r.get(1)?), r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .map_err(sql)?
                    .map(|r| r.map_err(sql));
                got = held.claim(rows, max, now.plus(lease))?;
                if !got.is_empty() || from.is_none() {
                    break;
                }
            }
            let next: Option<i64> = conn
                .prepare_cached("SELECT MIN(visible_at) FROM queue WHERE visible_at > ?1")
                .and_then(|mut s| s.query_row([now.millis()], |r| r.get(0)))
                .map_err(sql)?;
            Ok((got, next))
        })
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
            let (got, next_visible) = self.claim_due(max, now, lease)?;
            if !got.is_empty() {
                return Ok(got);
            }
            let lease_end = self
                .held
                .lock()
                .ok()
                .and_then(|h| h.leases.values().min().copied());
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
        if let Ok(mut h) = self.held.lock()
            && let Some(lease) = h.leases.get_mut(&seq)
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
        if let Ok(mut h) = self.held.lock() {
            h.leases.remove(&seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    /// A clock the test sets, backwards too.
    struct SetClock(AtomicI64);

    impl Clock for SetClock {
        fn now(&self) -> Timestamp {
            Timestamp(self.0.load(Ordering::SeqCst))
        }
    }

    fn queue() -> (tempfile::TempDir, EmbeddedQueue, Arc<SetClock>) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let clock = Arc::new(SetClock(AtomicI64::new(10_000)));
        (dir, EmbeddedQueue::new(store, clock.clone()), clock)
    }

    async fn send(q: &EmbeddedQueue, id: &str) {
        q.send(&WorkItem::run(id.to_string()), Duration::ZERO)
            .await
            .expect("send");
    }

    async fn take(q: &EmbeddedQueue, max: usize, lease: Duration) -> Vec<String> {
        q.receive(max, Duration::ZERO, lease)
            .await
            .expect("receive")
            .into_iter()
            .map(|d| d.item.run_id)
            .collect()
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn items_come_once_each_in_order_while_the_earlier_ones_are_in_flight() {
        let (_dir, q, clock) = queue();
        let ids: Vec<String> = (0..50).map(|i| format!("r{i:02}")).collect();
        for id in &ids {
            send(&q, id).await;
        }
        let mut got = Vec::new();
        for _ in 0..50 {
            got.extend(take(&q, 1, LONG).await);
        }
        assert_eq!(got, ids, "one at a time, none twice, in the order sent");
        assert!(take(&q, 1, LONG).await.is_empty(), "all 50 are in flight");
        clock.0.fetch_add(1, Ordering::SeqCst);
        send(&q, "later").await;
        assert_eq!(take(&q, 5, LONG).await, ["later"]);
    }

    #[tokio::test]
    async fn an_item_whose_lease_ends_unacked_comes_back_though_later_ones_are_in_flight() {
        let (_dir, q, clock) = queue();
        for id in ["a", "b", "c"] {
            send(&q, id).await;
        }
        assert_eq!(take(&q, 1, Duration::from_secs(1)).await, ["a"]);
        assert_eq!(take(&q, 2, LONG).await, ["b", "c"]);
        clock.0.fetch_add(2_000, Ordering::SeqCst);
        send(&q, "d").await;
        assert_eq!(
            take(&q, 1, LONG).await,
            ["a"],
            "a's lease ended: it is the oldest"
        );
        assert_eq!(take(&q, 1, LONG).await, ["d"]);
    }

    #[tokio::test]
    async fn an_item_sent_behind_those_in_flight_when_the_clock_went_back_is_found() {
        let (_dir, q, clock) = queue();
        send(&q, "a").await;
        send(&q, "b").await;
        assert_eq!(take(&q, 2, LONG).await, ["a", "b"]);
        clock.0.store(5_000, Ordering::SeqCst);
        send(&q, "c").await;
        assert_eq!(take(&q, 2, LONG).await, ["c"]);
    }
}
