//! Cron triggers: the tick (one scheduled time of one trigger → at most one run), the
//! state carried between runs, "run now", and the local shape's in-process scheduler.
//!
//! A tick's record is an inbox message of the cron trigger whose id is the tick's id, a
//! ULID made of the scheduled time and a hash of (workflow, trigger, scheduled time). The
//! run it starts has the same id, and an idempotency claim on the same three holds it: a
//! tick delivered twice starts one run and is recorded once more as `duplicate`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::watch;
use tripline_core::definition::{CatchUp, CronTrigger, Overlap, Trigger};
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::{Run, Timestamp};

use crate::App;
use crate::admission::KeyFailed;
use crate::ports::{
    Admitted, IdempotencyClaim, InboxMessage, Outcome, SavedState, StoreError, WorkItem,
    WorkflowRecord,
};

/// A tick handled within this long after its time is on time; a later one came due while
/// the scheduler was not running, and its trigger's `catch_up` decides.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// At most this many late ticks of one trigger are run (`catch_up: all`) or recorded
/// `missed` after a downtime; earlier ones are counted in the oldest record.
pub const CATCH_UP_LIMIT: usize = 100;

/// How long the claim that makes a tick start one run lasts (EventBridge Scheduler retries
/// a delivery for at most 24 hours).
pub const TICK_CLAIM_WINDOW: Duration = Duration::from_secs(8 * 24 * 3600);

/// The longest the local scheduler sleeps before looking at the triggers again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What a cron trigger's previous run means for a tick.
enum Overlapping {
    /// Nothing to wait for.
    Free,
    /// The tick is recorded skipped, for this reason.
    Skip(String),
    /// The run waits for this one to end.
    After(String),
}

/// The id of the tick of `trigger` at `scheduled`, and of the run it starts: a ULID of the
/// scheduled time (so ticks sort by it) and 80 bits of a hash of the three.
pub fn tick_id(workflow: &str, trigger: &str, scheduled: Timestamp) -> String {
    let mut h = sha2::Sha256::new();
    h.update(workflow.as_bytes());
    h.update([0]);
    h.update(trigger.as_bytes());
    h.update([0]);
    h.update(scheduled.millis().to_be_bytes());
    crate::tokens::derived_ulid(scheduled.millis(), &h.finalize())
}

fn fired_marker(workflow: &str, trigger: &str) -> String {
    format!("cron-fired/{workflow}/{trigger}")
}

/// At most this many fire times are walked forward to find the due ticks; past that (a
/// seconds schedule after a long downtime) the walk starts from the last
/// [`CATCH_UP_LIMIT`] + 1 before now.
const MAX_WALK: usize = 20_000;

/// How a tick came to be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// At (or near) its time: the local scheduler, or EventBridge Scheduler.
    OnTime,
    /// After a downtime, by `catch_up: last | all`: runs are queued behind each other
    /// (unless `overlap: allow`) rather than skipped.
    CatchUp,
}

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The cron trigger `id` of a deployed workflow.
pub fn cron_trigger<'a>(rec: &'a WorkflowRecord, id: &str) -> Option<&'a CronTrigger> {
    rec.definition.triggers.iter().find_map(|t| match t {
        Trigger::Cron(c) if c.id == id => Some(c),
        _ => None,
    })
}

fn tick_input(trigger: &CronTrigger, scheduled: Timestamp) -> Value {
    json!({
        "scheduled_time": scheduled,
        "trigger": trigger.id,
        "schedule": trigger.schedule,
        "timezone": trigger.timezone.as_deref().unwrap_or("UTC"),
    })
}

/// The ticks of `schedule` due after `cursor` up to `now`: the latest `CATCH_UP_LIMIT + 1`,
/// and how many earlier ones were left out. A downtime longer than `MAX_WALK` fire times
/// walks back from now instead of forward from the cursor.
fn due_ticks(
    schedule: &tripline_core::time::cron::CronSchedule,
    cursor: Timestamp,
    now: Timestamp,
) -> (std::collections::VecDeque<Timestamp>, usize) {
    let mut due: std::collections::VecDeque<Timestamp> = Default::default();
    let mut dropped = 0usize;
    let mut from = cursor;
    let mut walked = 0usize;
    loop {
        if walked >= MAX_WALK {
            // Too many to walk: start again from the last few before now.
            let mut start = now.plus(Duration::from_millis(1));
            for _ in 0..=CATCH_UP_LIMIT {
                match schedule.prev_before(start) {
                    Some(p) if p > cursor => start = p,
                    _ => break,
                }
            }
            dropped += due.len();
            due.clear();
            from = Timestamp(start.millis() - 1).max(cursor);
            for t in schedule.fire_times(from, now, CATCH_UP_LIMIT + 1) {
                due.push_back(t);
            }
            break;
        }
        let chunk = schedule.fire_times(from, now, 1000);
        let Some(last) = chunk.last().copied() else {
            break;
        };
        walked += chunk.len();
        for t in chunk {
            due.push_back(t);
            if due.len() > CATCH_UP_LIMIT + 1 {
                due.pop_front();
                dropped += 1;
            }
        }
        from = last;
    }
    (due, dropped)
}

impl App {
    fn tick_message(
        &self,
        id: String,
        workflow: &str,
        trigger: &str,
        scheduled: Timestamp,
        body: &Value,
    ) -> InboxMessage {
        let mut m =
            InboxMessage::new(id, self.clock.now(), workflow, trigger, "CRON").with_json(body);
        m.scheduled_at = Some(scheduled);
        m
    }

    /// Handles the tick of `trigger` of `workflow` at `scheduled`: starts its run, or
    /// records why not. Safe to call again for the same tick (it is then recorded
    /// `duplicate` and starts nothing). Returns what was recorded.
    pub async fn cron_tick(
        &self,
        workflow: &str,
        trigger: &str,
        scheduled: Timestamp,
        delivery: Delivery,
    ) -> Result<Outcome, TickError> {
        let id = tick_id(workflow, trigger, scheduled);
        if matches!(delivery, Delivery::OnTime) {
            let lag = self.clock.now().millis() - scheduled.millis();
            self.metrics
                .scheduler_lag(std::time::Duration::from_millis(lag.max(0) as u64));
        }
        let (rec, cron) = match self.ticking(workflow, trigger).await {
            Ok(found) => found,
            Err(reason) => return self.reject_tick(workflow, trigger, scheduled, reason).await,
        };
        let input = tick_input(&cron, scheduled);
        if self.store.message(&id).await?.is_some() {
            let outcome = Outcome::DuplicateTick { tick: id };
            let tick = self.tick_message(self.new_id(), workflow, trigger, scheduled, &input);
            self.record_message(tick, outcome.clone()).await?;
            return Ok(outcome);
        }

        if let Some(why) = rec.switched_off(trigger) {
            let tick = self.tick_message(id, workflow, trigger, scheduled, &input);
            return self
                .record_tick(tick, Outcome::Skipped { reason: why })
                .await;
        }

        // The trigger's condition (e.g. weekdays only): a tick it refuses is recorded
        // skipped, with the reason, and does not count as the previous run.
        if let Some(why) = crate::admission::unmet(None, cron.condition.as_deref(), &input) {
            let tick = self.tick_message(id, workflow, trigger, scheduled, &input);
            return self
                .record_tick(tick, Outcome::Skipped { reason: why })
                .await;
        }

        // The trigger's previous run: the run of the last tick that fired.
        let last_fired = self.store.marker(&fired_marker(workflow, trigger)).await?;
        let after = match self
            .overlapping(&cron, workflow, scheduled, delivery, last_fired)
            .await?
        {
            Overlapping::Skip(reason) => {
                let tick = self.tick_message(id, workflow, trigger, scheduled, &input);
                return self.record_tick(tick, Outcome::Skipped { reason }).await;
            }
            Overlapping::After(prev) => Some(prev),
            Overlapping::Free => None,
        };
        self.fire(&rec, &cron, scheduled, input, after, last_fired)
            .await
    }

    /// The deployed workflow and cron trigger a tick is for; `Err` says why there is none
    /// (its schedule outlived it).
    async fn ticking(
        &self,
        workflow: &str,
        trigger: &str,
    ) -> Result<(Arc<WorkflowRecord>, CronTrigger), String> {
        self.refresh_workflows(false).await;
        if self.deployments.latest(workflow).is_none() {
            self.refresh_workflows(true).await;
        }
        let Some(rec) = self.deployments.latest(workflow) else {
            return Err(format!(
                "workflow `{workflow}` is not deployed (its schedule outlived it); nothing was started"
            ));
        };
        let Some(cron) = cron_trigger(&rec, trigger).cloned() else {
            return Err(format!(
                "workflow `{workflow}` has no cron trigger `{trigger}` in revision {} (it was removed); nothing was started",
                rec.revision
            ));
        };
        Ok((rec, cron))
    }

    /// What the trigger's previous run, when it has not ended, means for this tick: by
    /// its `overlap`, skip it (on time only: a late tick runs after it) or queue behind it.
    async fn overlapping(
        &self,
        cron: &CronTrigger,
        workflow: &str,
        scheduled: Timestamp,
        delivery: Delivery,
        last_fired: Option<Timestamp>,
    ) -> Result<Overlapping, StoreError> {
        let Some(prev_at) = last_fired.filter(|at| *at != scheduled) else {
            return Ok(Overlapping::Free);
        };
        if cron.overlap == Overlap::Allow {
            return Ok(Overlapping::Free);
        }
        let prev = tick_id(workflow, &cron.id, prev_at);
        let Some(run) = self.store.run(&prev).await? else {
            return Ok(Overlapping::Free);
        };
        if run.status.is_terminal() {
            return Ok(Overlapping::Free);
        }
        if cron.overlap == Overlap::Skip && delivery == Delivery::OnTime {
            return Ok(Overlapping::Skip(format!(
                "overlap: run {prev} of the previous tick is still {}",
                run.status.as_str()
            )));
        }
        Ok(Overlapping::After(prev))
    }

    /// Admits the tick's run (behind `after`, when it must wait for it) with the claim
    /// that makes the tick one run, and moves the trigger's last fired tick.
    async fn fire(
        &self,
        rec: &WorkflowRecord,
        cron: &CronTrigger,
        scheduled: Timestamp,
        input: Value,
        after: Option<String>,
        last_fired: Option<Timestamp>,
    ) -> Result<Outcome, TickError> {
        let (workflow, trigger) = (rec.id.as_str(), cron.id.as_str());
        let id = tick_id(workflow, trigger, scheduled);
        let message = self.tick_message(id.clone(), workflow, trigger, scheduled, &input);
        let trigger_ref = TriggerRef {
            kind: TriggerKind::Cron,
            id: trigger.to_string(),
        };
        // The trigger's own key, when it has one (two ticks with one key are one run);
        // else the tick's: its scheduled time.
        let keyed = self.claim_for(
            workflow,
            trigger,
            cron.idempotency_key.as_deref(),
            &input,
            None,
        );
        let mut run = self.run_of_message(&message, rec, trigger_ref, input);
        run.scheduled_at = Some(scheduled);
        let keyed = match keyed {
            Ok(k) => k,
            Err(KeyFailed(why)) => {
                return self.reject_tick(workflow, trigger, scheduled, why).await;
            }
        };
        if let Some(prev) = &after {
            // Before the run exists: when the previous run ends, it finds its successor
            // (a marker to a run never admitted finds nothing).
            self.store
                .set_link(&crate::intake::kafka::next_link(prev), &id)
                .await?;
        }
        run.after = after;
        let claim = keyed.unwrap_or_else(|| IdempotencyClaim {
            key: format!("{workflow}/{trigger}/cron:{}", scheduled.millis()),
            expires_at: scheduled.plus(TICK_CLAIM_WINDOW),
            held_by_message: true,
        });
        match self.admit_runs(message, vec![run], Some(claim)).await? {
            Admitted::New { .. } => {
                if last_fired.is_none_or(|t| t < scheduled) {
                    let fired = fired_marker(workflow, trigger);
                    self.store.set_marker(&fired, scheduled).await?;
                }
                tracing::info!(workflow, trigger, %scheduled, run_id = %id, "cron tick fired");
                Ok(Outcome::Started { run_ids: vec![id] })
            }
            Admitted::Duplicate { .. } => Ok(Outcome::DuplicateTick { tick: id }),
        }
    }

    /// Records a tick that starts nothing because its workflow or trigger is gone.
    /// Records a tick that starts nothing; its outcome is the answer.
    async fn record_tick(
        &self,
        tick: InboxMessage,
        outcome: Outcome,
    ) -> Result<Outcome, TickError> {
        self.record_message(tick, outcome.clone()).await?;
        Ok(outcome)
    }

    async fn reject_tick(
        &self,
        workflow: &str,
        trigger: &str,
        scheduled: Timestamp,
        reason: String,
    ) -> Result<Outcome, TickError> {
        let tick = self.tick_message(self.new_id(), workflow, trigger, scheduled, &Value::Null);
        self.record_tick(tick, Outcome::Rejected { reason }).await
    }

    /// Records the tick of `trigger` at `scheduled` as `missed` (once).
    async fn record_missed(
        &self,
        rec: &WorkflowRecord,
        trigger: &CronTrigger,
        scheduled: Timestamp,
        reason: String,
    ) -> Result<(), StoreError> {
        let id = tick_id(&rec.id, &trigger.id, scheduled);
        if self.store.message(&id).await?.is_some() {
            return Ok(());
        }
        let input = tick_input(trigger, scheduled);
        let tick = self.tick_message(id, &rec.id, &trigger.id, scheduled, &input);
        self.record_message(tick, Outcome::Missed { reason }).await
    }

    /// "Run now": a run of a cron trigger outside its schedule, with the current state.
    pub fn run_now(&self, rec: &WorkflowRecord, trigger: &CronTrigger, body: Value) -> Run {
        let now = self.clock.now();
        let mut input = tick_input(trigger, now);
        input["run_now"] = json!(true);
        input["body"] = body;
        let mut run = Run::new(
            self.new_id(),
            &rec.id,
            rec.revision,
            TriggerRef {
                kind: TriggerKind::Cron,
                id: trigger.id.clone(),
            },
            input,
            now,
        );
        run.scheduled_at = Some(now);
        run
    }

    /// Before a queued run starts: `None` when it must wait for the run it is ordered
    /// behind (`overlap: queue`, Kafka `ordering: key`); else the run, a cron run with its
    /// `state` input read.
    pub(crate) async fn prepare_start(&self, mut run: Run) -> Result<Option<Run>, StoreError> {
        if let Some(after) = &run.after
            && let Some(prev) = self.store.run(after).await?
            && !prev.status.is_terminal()
        {
            return Ok(None);
        }
        if run.trigger.kind == TriggerKind::Cron {
            run.state = self.store.state(&run.workflow).await?.map(|s| s.value);
        }
        Ok(Some(run))
    }

    /// After a run ended: the run ordered behind it, when there is one, is delivered at
    /// once (a link the later run's admission left).
    pub(crate) async fn wake_successor(&self, run: &Run) {
        let Ok(Some(next_id)) = self
            .store
            .link(&crate::intake::kafka::next_link(&run.id))
            .await
        else {
            return;
        };
        if let Ok(Some(n)) = self.store.run(&next_id).await
            && n.status == tripline_core::RunStatus::Queued
        {
            // It may have started by its look-again meanwhile: only a start.
            let item = WorkItem::start(next_id);
            if let Err(e) = self.queue.send(&item, Duration::ZERO).await {
                tracing::warn!(error = %e, "waking the run ordered behind failed; it looks again by itself");
            }
        }
    }

    /// After a cron run succeeded, before its end is written: saves the state it leaves
    /// (unless over the limit, or older than the saved one: then a warning on the run).
    pub(crate) async fn save_next_state(
        &self,
        run: &mut Run,
        value: Value,
    ) -> Result<(), StoreError> {
        let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        let limit = self.config.state_limit_bytes;
        if size > limit {
            run.warnings.push(format!(
                "the state this run ended with is {size} bytes, over the limit of {limit}; it was not saved, and the next run gets the last saved state"
            ));
            return Ok(());
        }
        let scheduled = run.scheduled_at.unwrap_or(run.inserted_at);
        for _ in 0..5 {
            let current = self.store.state(&run.workflow).await?;
            if let Some(c) = &current
                && c.scheduled_at > scheduled
            {
                run.warnings.push(format!(
                    "the state was not saved: a newer one (saved at {} for {}) is kept",
                    c.saved_at,
                    c.run_id.as_deref().unwrap_or("a reset through the API")
                ));
                return Ok(());
            }
            let next = SavedState {
                value: value.clone(),
                saved_at: self.clock.now(),
                scheduled_at: scheduled,
                run_id: Some(run.id.clone()),
                version: current.map_or(0, |c| c.version),
            };
            match self.store.save_state(&run.workflow, &next).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Sets a workflow's saved state from the API (`null` clears it): it wins over the runs
    /// scheduled before now. `None` when it kept losing to other writers.
    pub async fn put_state(
        &self,
        workflow: &str,
        value: Value,
    ) -> Result<Option<SavedState>, StoreError> {
        for _ in 0..5 {
            let current = self.store.state(workflow).await?;
            let now = self.clock.now();
            let next = SavedState {
                value: value.clone(),
                saved_at: now,
                scheduled_at: now,
                run_id: None,
                version: current.map_or(0, |c| c.version),
            };
            match self.store.save_state(workflow, &next).await {
                Ok(saved) => return Ok(Some(saved)),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// One pass of the local scheduler: handles every tick now due, by each trigger's
    /// `catch_up` for those that came due while it was not running. Returns when the next
    /// tick is due.
    pub async fn scheduler_pass(&self) -> Option<Timestamp> {
        let mut next_due: Option<Timestamp> = None;
        for rec in self.deployments.all() {
            for t in &rec.definition.triggers {
                let Trigger::Cron(cron) = t else { continue };
                match self.trigger_pass(&rec, cron).await {
                    Ok(Some(n)) => next_due = Some(next_due.map_or(n, |d| d.min(n))),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(workflow = %rec.id, trigger = %cron.id, error = %e, "cron ticks not handled; trying again shortly");
                        let soon = self.clock.now().plus(Duration::from_secs(1));
                        next_due = Some(next_due.map_or(soon, |d| d.min(soon)));
                    }
                }
            }
        }
        next_due
    }

    async fn trigger_pass(
        &self,
        rec: &WorkflowRecord,
        cron: &CronTrigger,
    ) -> Result<Option<Timestamp>, TickError> {
        let Ok(schedule) = cron.parsed() else {
            return Ok(None);
        };
        let now = self.clock.now();
        let cursor_name = crate::deploy::cursor_marker(&rec.id, cron);
        // A trigger seen for the first time starts at its workflow's deploy.
        let cursor = match self.store.marker(&cursor_name).await? {
            Some(c) => c,
            None => {
                self.store.set_marker(&cursor_name, rec.deployed_at).await?;
                rec.deployed_at
            }
        };
        let (due, dropped) = due_ticks(&schedule, cursor, now);
        let late = |t: Timestamp| now.since(t) > ON_TIME;
        let late_count = due.iter().filter(|t| late(**t)).count();
        let latest_late = due.iter().rev().find(|t| late(**t)).copied();
        let any_on_time = due.iter().any(|t| !late(*t));
        let mut first = true;
        for t in due {
            let action = if !late(t) {
                Some(Delivery::OnTime)
            } else {
                match cron.catch_up {
                    CatchUp::None => None,
                    CatchUp::Last => {
                        (Some(t) == latest_late && !any_on_time).then_some(Delivery::CatchUp)
                    }
                    CatchUp::All => Some(Delivery::CatchUp),
                }
            };
            match action {
                Some(d) => {
                    self.cron_tick(&rec.id, &cron.id, t, d).await?;
                }
                None => {
                    let mut reason = format!(
                        "the scheduler was not running at {t} (catch_up: {})",
                        match cron.catch_up {
                            CatchUp::None => "none",
                            CatchUp::Last => "last: only the latest of the ticks missed runs",
                            CatchUp::All => "all",
                        }
                    );
                    if first && dropped > 0 {
                        reason.push_str(&format!(
                            "; {dropped} or more earlier tick(s) came due too and are not recorded one by one"
                        ));
                    }
                    self.record_missed(rec, cron, t, reason).await?;
                }
            }
            first = false;
            self.store.set_marker(&cursor_name, t).await?;
        }
        if late_count > 0 {
            tracing::info!(workflow = %rec.id, trigger = %cron.id, late = late_count + dropped, policy = ?cron.catch_up, "cron ticks came due while the scheduler was not running");
        }
        Ok(schedule.next_after(now.max(cursor)))
    }

    /// The local shape's scheduler: handles due ticks, sleeps until the next one (at most a
    /// minute, or until woken by a deploy or a moved manual clock), until `stop`.
    pub async fn run_scheduler(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let next = self.scheduler_pass().await;
            let now = self.clock.now();
            let sleep = next
                .map(|n| n.since(now))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.cron_wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_id_depends_on_workflow_trigger_and_time_only() {
        let t = Timestamp(1_800_000_000_000);
        let a = tick_id("pull", "nightly", t);
        assert_eq!(a, tick_id("pull", "nightly", t));
        assert_ne!(a, tick_id("pull", "hourly", t));
        assert_ne!(a, tick_id("push", "nightly", t));
        assert_ne!(a, tick_id("pull", "nightly", Timestamp(t.0 + 1000)));
        let ulid: ulid::Ulid = a.parse().expect("a ULID");
        assert_eq!(ulid.timestamp_ms(), 1_800_000_000_000);
    }

    #[test]
    fn tick_ids_sort_by_scheduled_time() {
        let ids: Vec<String> = (0..50)
            .map(|i| tick_id("w", "t", Timestamp(1_800_000_000_000 + i * 60_000)))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
