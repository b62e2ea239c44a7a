//! Concurrency limits (`concurrency: { limit, key }`): at most `limit` runs of a workflow
//! (per value of `key`) are `running` or `waiting`. A queued run takes a slot before it
//! starts, or joins the waiting list, in arrival order (run ids sort by time), and starts
//! when a slot frees: the end of a run releases its slot, hands it to the first waiting run
//! and wakes that run (a start-only work item, so a duplicate never runs a step twice).
//!
//! The accounting is one record per limit (holders and waiting runs) written with a
//! conditional write on its version, so that of two executors taking the last slot at once
//! one loses, reads again and waits. A crash after a run ended but before it released its
//! slot is repaired when the limit is full: holders that have ended are dropped.

use serde_json::json;
use sha2::Digest as _;
use tripline_core::{Run, Workflow, template};

use crate::App;
use crate::ports::{StoreError, WorkItem};

/// What a queued run may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// It holds a slot (or the workflow has no limit): start.
    Taken,
    /// It is on the waiting list: stay queued until woken.
    Wait,
}

/// How often a contended slot record is read and written again before the run waits.
const TRIES: usize = 500;

/// The record's name: the workflow, and the key's value when the limit is per key (hashed
/// when long).
fn slots_name(workflow: &str, key: Option<&str>) -> String {
    match key {
        None => workflow.to_string(),
        Some(k) if k.len() <= 100 => format!("{workflow}/key/{k}"),
        Some(k) => {
            let hex: String = sha2::Sha256::digest(k.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{workflow}/key/sha256:{hex}")
        }
    }
}

impl App {
    /// The limit a run counts against: its record's name and the limit.
    fn limit_of(&self, wf: &Workflow, run: &Run) -> Option<(String, usize)> {
        let c = wf.concurrency.as_ref()?;
        let key = c.key.as_ref().map(|tpl| {
            template::render_string(tpl, &json!({ "trigger": run.trigger_input }))
                .unwrap_or_else(|e| {
                    tracing::warn!(run_id = %run.id, error = %e, "the concurrency key could not be rendered; the run counts against the empty key");
                    String::new()
                })
        });
        Some((
            slots_name(&wf.id, key.as_deref()),
            usize::try_from(c.limit).unwrap_or(usize::MAX),
        ))
    }

    /// Takes a slot for a queued run, or puts it on the waiting list.
    pub(crate) async fn take_slot(&self, wf: &Workflow, run: &Run) -> Result<Slot, StoreError> {
        let Some((name, limit)) = self.limit_of(wf, run) else {
            return Ok(Slot::Taken);
        };
        // Other processes (AWS: other executors) may still write between our read and
        // write: the conditional write tells, and the loop reads again.
        let lock = self.slot_locks.of(&name);
        let _held = lock.lock().await;
        for attempt in 0..TRIES {
            let mut slots = self.store.slots(&name).await?.unwrap_or_default();
            if slots.holders.contains(&run.id) {
                return Ok(Slot::Taken);
            }
            let before = slots.clone();
            if let Err(at) = slots.waiting.binary_search(&run.id) {
                slots.waiting.insert(at, run.id.clone());
            }
            if slots.holders.len() >= limit {
                self.drop_ended(&mut slots.holders).await?;
            }
            let free = limit.saturating_sub(slots.holders.len());
            let pos = slots.waiting.iter().position(|w| w == &run.id).unwrap_or(0);
            if pos >= free {
                // Runs ahead that ended while waiting (cancelled) do not hold the line.
                let mut ahead: Vec<String> = slots.waiting[..pos].to_vec();
                self.drop_ended(&mut ahead).await?;
                if ahead.len() < pos {
                    slots
                        .waiting
                        .retain(|w| ahead.contains(w) || w.as_str() >= run.id.as_str());
                }
            }
            // The free slots go to the first waiting runs, this one or others: a slot freed
            // by dropping an ended holder is handed on here, since that holder's own
            // release will find nothing left to give.
            let granted: Vec<String> = slots
                .waiting
                .drain(..free.min(slots.waiting.len()))
                .collect();
            slots.holders.extend(granted.iter().cloned());
            let outcome = if granted.contains(&run.id) {
                Slot::Taken
            } else {
                Slot::Wait
            };
            if slots == before {
                return Ok(outcome);
            }
            match self.store.save_slots(&name, &slots).await {
                Ok(_) => {
                    self.wake(granted.iter().filter(|g| **g != run.id)).await;
                    return Ok(outcome);
                }
                Err(StoreError::Conflict) => {
                    // Another executor wrote meanwhile: read again, after a short pause
                    // that spreads the contenders.
                    let ms = 1 + (attempt as u64 % 7) + (run.id.len() as u64 % 3);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(e),
            }
        }
        tracing::warn!(run_id = %run.id, "the concurrency record stayed contended; the run looks again later");
        Ok(Slot::Wait)
    }

    /// Gives back an ended run's slot (or its place on the waiting list) and wakes the
    /// waiting runs that may now start. Errors are logged: the next run that finds the
    /// limit full drops holders that have ended.
    pub(crate) async fn release_slot(&self, wf: &Workflow, run: &Run) {
        let Some((name, limit)) = self.limit_of(wf, run) else {
            return;
        };
        let lock = self.slot_locks.of(&name);
        let _held = lock.lock().await;
        for _ in 0..TRIES {
            let mut slots = match self.store.slots(&name).await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(run_id = %run.id, error = %e, "releasing the run's concurrency slot failed");
                    return;
                }
            };
            let before = slots.clone();
            slots.holders.retain(|h| h != &run.id);
            slots.waiting.retain(|w| w != &run.id);
            if slots == before {
                return;
            }
            // The freed slots go to the first waiting runs now (they are woken once, by
            // this release; another release does not wake them again).
            let free = limit.saturating_sub(slots.holders.len());
            let granted: Vec<String> = slots
                .waiting
                .drain(..free.min(slots.waiting.len()))
                .collect();
            slots.holders.extend(granted.iter().cloned());
            match self.store.save_slots(&name, &slots).await {
                Ok(_) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => {
                    tracing::warn!(run_id = %run.id, error = %e, "releasing the run's concurrency slot failed");
                    return;
                }
            }
            self.wake(granted.iter()).await;
            return;
        }
    }

    /// Starts runs that were given a slot (start-only work items: a duplicate does nothing).
    async fn wake(&self, ids: impl Iterator<Item = &String>) {
        for id in ids {
            if let Err(e) = self
                .queue
                .send(&WorkItem::start(id.clone()), std::time::Duration::ZERO)
                .await
            {
                tracing::warn!(run_id = %id, error = %e, "waking a run given a slot failed; it looks again later");
            }
        }
    }

    /// Drops the runs that have ended (or do not exist) from `ids`.
    async fn drop_ended(&self, ids: &mut Vec<String>) -> Result<(), StoreError> {
        let mut kept = Vec::with_capacity(ids.len());
        for id in ids.drain(..) {
            if let Some(r) = self.store.run(&id).await?
                && !r.status.is_terminal()
            {
                kept.push(id);
            }
        }
        *ids = kept;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_per_key_has_a_record_per_key_and_long_keys_are_hashed() {
        assert_eq!(slots_name("wf", None), "wf");
        assert_eq!(slots_name("wf", Some("c-1")), "wf/key/c-1");
        let long = "x".repeat(300);
        let name = slots_name("wf", Some(&long));
        assert!(
            name.starts_with("wf/key/sha256:") && name.len() < 100,
            "{name}"
        );
    }
}
