//! The one effect interpreter: performs the effects the engine returns, in order, feeds
//! the results back as events, and writes the run with a conditional write. The executor,
//! the resume/decision/cancel path and the pure sync path all run their effects here, so
//! a run ends the same way whoever ends it (state, flows, the write, the wake-ups, the
//! slot).

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;
use tripline_core::engine::{self, Effect, Event, HttpRequest, SuccessRule};
use tripline_core::{Run, RunStatus, Workflow};

use super::{DEADLINE_MARGIN, ExecError, Progress};
use crate::App;
use crate::metrics::StepTiming;
use crate::ports::WorkItem;

/// Where effects are performed, which decides what happens to those that need the
/// outside world.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// In the executor, with a work item in hand: steps and callbacks are performed here;
    /// with a deadline (AWS Lambda), a step is only started while it can finish in time.
    Executor {
        deadline: Option<tokio::time::Instant>,
    },
    /// Outside the executor (a resume, a decision, a cancel): the run is written and a
    /// work item carries on with what needs the outside world.
    Outside,
    /// A pure sync run, before its admission: what must come before the run's first
    /// write happens here (context writes, flow starts); the admission writes the run.
    BeforeAdmission,
}

/// What needs the outside world, performed: step attempts, child runs, callbacks and
/// notifications. Only the executor hands the interpreter one (`Performer`), so the
/// binaries that never perform steps (the webhook ingress, the resume-approval function)
/// do not link them: the other modes leave that work to a work item.
#[async_trait::async_trait]
pub(crate) trait World: Send + Sync {
    /// One attempt of an `http` step, as the event that reports it.
    async fn attempt_step(
        &self,
        app: &App,
        step: String,
        attempt: u32,
        request: HttpRequest,
        timeout: Duration,
        success: SuccessRule,
    ) -> Event;
    /// The run a `trigger_workflow` step starts, as the event that reports it.
    async fn start_child(
        &self,
        app: &App,
        parent: &Run,
        step: String,
        workflow: String,
        input: Value,
    ) -> Result<Event, ExecError>;
    /// One signed delivery attempt of the run's callback.
    async fn deliver_callback(
        &self,
        app: &App,
        wf: &Workflow,
        run: &Run,
        attempt: u32,
        request: HttpRequest,
        timeout: Duration,
    ) -> Event;
    /// A parked step's notification, recorded on the run.
    async fn notify(&self, app: &App, wf: &Workflow, run: &mut Run);
}

/// The executor's world: every effect is performed here.
pub(crate) struct Performer;

#[async_trait::async_trait]
impl World for Performer {
    async fn attempt_step(
        &self,
        app: &App,
        step: String,
        attempt: u32,
        request: HttpRequest,
        timeout: Duration,
        success: SuccessRule,
    ) -> Event {
        app.attempt_step(step, attempt, request, timeout, success)
            .await
    }

    async fn start_child(
        &self,
        app: &App,
        parent: &Run,
        step: String,
        workflow: String,
        input: Value,
    ) -> Result<Event, ExecError> {
        app.start_child(parent, &step, &workflow, input).await
    }

    async fn deliver_callback(
        &self,
        app: &App,
        wf: &Workflow,
        run: &Run,
        attempt: u32,
        request: HttpRequest,
        timeout: Duration,
    ) -> Event {
        app.deliver_callback(wf, run, attempt, request, timeout)
            .await
    }

    async fn notify(&self, app: &App, wf: &Workflow, run: &mut Run) {
        app.notify_waiter(wf, run).await;
    }
}

/// How the effects went.
// One is in hand at a time; boxing the run would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Interpreted {
    /// All performed; the run as it now stands. `deferred`: something is left for a work
    /// item that the caller must still send (only in `BeforeAdmission`, after admitting).
    Done { run: Run, deferred: bool },
    /// A write lost its version check: another writer moved the run on from this
    /// progress.
    Lost(Progress),
}

/// One pass of the interpreter: the run's last written version, and the effects left.
pub(super) struct Pass<'a> {
    pub(super) wf: &'a Workflow,
    pub(super) stored: Run,
    pub(super) effects: VecDeque<Effect>,
    pub(super) mode: Mode,
    /// The executor's world, where effects that need the outside world are performed.
    pub(super) world: Option<&'a dyn World>,
    /// Steps performed in this pass (a deadline never defers the first).
    pub(super) performed: usize,
    /// Outside the executor: whether the rescue item has been sent (before the first
    /// write; see [`crate::Config::rescue_after`]).
    rescued: bool,
}

/// What performing one effect leaves the loop to do.
// One is in hand at a time; its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Next {
    /// Go on with the next effect.
    Go,
    /// An event to apply (a step's result, a child started, a callback delivered).
    Apply(Event),
    /// The rest happens later (a timer, a work item): stop here.
    Stop,
}

impl App {
    /// Performs `effects` (from applying an event to `stored`, which gave `run`) in
    /// `mode`, applying the events they produce until nothing is left to do now.
    pub(crate) async fn interpret(
        &self,
        wf: &Workflow,
        mut run: Run,
        stored: Run,
        effects: Vec<Effect>,
        mode: Mode,
        world: Option<&dyn World>,
    ) -> Result<Interpreted, ExecError> {
        let mut pass = Pass {
            wf,
            stored,
            effects: effects.into(),
            mode,
            world,
            performed: 0,
            rescued: false,
        };
        let mut deferred = false;
        while let Some(effect) = pass.effects.pop_front() {
            let next = match self.perform(&mut pass, &mut run, effect).await {
                Ok(next) => next,
                Err(ExecError::Lost(p)) => return Ok(Interpreted::Lost(p)),
                Err(e) => return Err(e),
            };
            match next {
                Next::Go => {}
                Next::Apply(event) => {
                    let (next, more) = engine::apply(wf, run, event, self.clock.now());
                    run = next;
                    pass.effects.extend(more);
                }
                Next::Stop => {
                    deferred = matches!(pass.mode, Mode::BeforeAdmission);
                    break;
                }
            }
        }
        if !matches!(pass.mode, Mode::BeforeAdmission) && run != pass.stored {
            match self.write(&pass, &run).await {
                Ok(saved) => run = saved,
                Err(ExecError::Lost(p)) => return Ok(Interpreted::Lost(p)),
                Err(e) => return Err(e),
            }
        }
        Ok(Interpreted::Done { run, deferred })
    }

    async fn perform(
        &self,
        pass: &mut Pass<'_>,
        run: &mut Run,
        effect: Effect,
    ) -> Result<Next, ExecError> {
        match effect {
            Effect::RunStep { .. } | Effect::StartRun { .. } | Effect::Callback { .. } => {
                self.reach_out(pass, run, effect).await
            }
            Effect::RunSteps { calls } => self.run_lanes(pass, run, calls).await,
            Effect::Continue => self.defer(pass, run).await,
            Effect::ScheduleTimer { at } => {
                // A timer that only fired early (a wait not yet over, a look at a child
                // still running) changed nothing: no write, just the next timer.
                if *run != pass.stored {
                    self.commit(pass, run).await?;
                }
                self.schedule(&run.id, at).await?;
                Ok(Next::Stop)
            }
            Effect::WriteContext { writes } => {
                // Before the run is written: a crash repeats them, never loses them.
                self.store.patch_context(&run.workflow, &writes).await?;
                Ok(Next::Go)
            }
            Effect::Expose => {
                self.expose_wait(run).await?;
                Ok(Next::Go)
            }
            Effect::Park {
                step,
                reason,
                until,
            } => {
                self.commit(pass, run).await?;
                tracing::debug!(step = %step, reason = reason.as_str(), "run parked");
                if let Some(at) = until {
                    self.schedule(&run.id, at).await?;
                }
                Ok(Next::Go)
            }
            Effect::Notify { .. } => self.notify(pass, run).await,
            Effect::SaveState { value } => {
                // Before the end is written: a crash runs the last step again and saves
                // the state again, never loses it.
                self.save_next_state(run, value).await?;
                Ok(Next::Go)
            }
            Effect::StartFlows => {
                // Likewise: the runs the end starts are admitted (with ids of their own
                // that a second admission recognizes) before the end is written.
                Box::pin(self.start_flows(run)).await?;
                Ok(Next::Go)
            }
            Effect::Finish { status } => self.finish(pass, run, status).await,
            Effect::ReleaseSlot => {
                self.release_slot(pass.wf, run).await;
                Ok(Next::Go)
            }
        }
    }

    /// What needs the outside world (a step's attempt, a child run, a callback): done here
    /// in the executor while the invocation has time for it; otherwise the run is written
    /// and continued by a work item.
    async fn reach_out(
        &self,
        pass: &mut Pass<'_>,
        run: &mut Run,
        effect: Effect,
    ) -> Result<Next, ExecError> {
        let (Mode::Executor { deadline }, Some(world)) = (pass.mode, pass.world) else {
            return self.defer(pass, run).await;
        };
        let event = match effect {
            Effect::RunStep {
                step,
                attempt,
                request,
                timeout,
                success,
            } => {
                let Some(timeout) = self.time_for_step(pass, &step, timeout, deadline) else {
                    // Not enough time left in this invocation: continued in a new one.
                    return self.defer(pass, run).await;
                };
                pass.performed += 1;
                world
                    .attempt_step(self, step, attempt, request, timeout, success)
                    .await
            }
            Effect::StartRun {
                step,
                workflow,
                input,
            } => world.start_child(self, run, step, workflow, input).await?,
            Effect::Callback {
                attempt,
                request,
                timeout,
            } => {
                world
                    .deliver_callback(self, pass.wf, run, attempt, request, timeout)
                    .await
            }
            _ => return Ok(Next::Go),
        };
        Ok(Next::Apply(event))
    }

    /// A parked step's notification, and a write of how it went. That is an annotation: a
    /// write that loses to another writer (a resume meanwhile) is dropped, not retried.
    async fn notify(&self, pass: &mut Pass<'_>, run: &mut Run) -> Result<Next, ExecError> {
        let Some(world) = pass.world else {
            // Only the executor parks runs; nothing to notify elsewhere.
            return Ok(Next::Go);
        };
        world.notify(self, pass.wf, run).await;
        match self.save(run).await? {
            Some(saved) => *run = saved,
            None => *run = pass.stored.clone(),
        }
        pass.stored = run.clone();
        Ok(Next::Go)
    }

    /// The run-end path: the end is written (state and flows came before it, as their own
    /// effects), and whoever waits for it is woken. Before an admission, the admission
    /// writes it.
    async fn finish(
        &self,
        pass: &mut Pass<'_>,
        run: &mut Run,
        status: RunStatus,
    ) -> Result<Next, ExecError> {
        if matches!(pass.mode, Mode::BeforeAdmission) {
            return Ok(Next::Go);
        }
        self.commit(pass, run).await?;
        log_end(&run.workflow, status, run.error.as_deref());
        self.metrics.run_ended(&run.workflow, status.as_str());
        self.after_end(run).await;
        Ok(Next::Go)
    }

    /// The step's timeout when it can run now; `None` when this invocation's deadline
    /// comes first and another step already ran in it.
    pub(super) fn time_for_step(
        &self,
        pass: &Pass<'_>,
        step: &str,
        timeout: Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<Duration> {
        let Some(deadline) = deadline else {
            return Some(timeout);
        };
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .saturating_sub(DEADLINE_MARGIN);
        if timeout <= left {
            return Some(timeout);
        }
        if pass.performed > 0 {
            tracing::info!(step = %step, "not enough time left for the step; the run continues in a new invocation");
            return None;
        }
        // Even a fresh invocation cannot give this step its timeout: it gets what there
        // is, rather than being deferred forever.
        tracing::warn!(step = %step, timeout = ?timeout, left = ?left, "the step's timeout is longer than an invocation allows; it is cut to the time left");
        Some(left.max(Duration::from_secs(1)))
    }

    /// What needs a work item: the run is written (when it changed) and delivered again
    /// now. Before an admission, the caller sends the item once the run is admitted.
    pub(super) async fn defer(
        &self,
        pass: &mut Pass<'_>,
        run: &mut Run,
    ) -> Result<Next, ExecError> {
        if matches!(pass.mode, Mode::BeforeAdmission) {
            return Ok(Next::Stop);
        }
        if *run != pass.stored {
            self.commit(pass, run).await?;
        }
        self.queue
            .send(&WorkItem::run(run.id.clone()), Duration::ZERO)
            .await?;
        Ok(Next::Stop)
    }

    /// Writes the run; it becomes the stored version. Outside the executor, where the
    /// shape asks for it, a delayed rescue item goes first: if the work item sent after
    /// this write is lost, the rescue moves the run (and does nothing if anything else has
    /// moved it since); if the rescue cannot be sent, nothing is written.
    pub(super) async fn commit(&self, pass: &mut Pass<'_>, run: &mut Run) -> Result<(), ExecError> {
        if let (Mode::Outside, Some(after), false) =
            (pass.mode, self.config.rescue_after, pass.rescued)
        {
            let rescue = WorkItem::rescue(run.id.clone(), pass.stored.version + 1);
            self.queue.send(&rescue, after).await?;
            pass.rescued = true;
        }
        let saved = self.write(pass, run).await?;
        pass.stored = saved.clone();
        *run = saved;
        Ok(())
    }

    /// Writes the run conditionally on the version it was read at.
    async fn write(&self, pass: &Pass<'_>, run: &Run) -> Result<Run, ExecError> {
        match self.save(run).await? {
            Some(saved) => {
                let before = pass.stored.step_executions.len();
                if let Some(new) = saved.step_executions.get(before..) {
                    self.metrics
                        .steps(&saved.workflow, new.iter().map(StepTiming::from));
                }
                Ok(saved)
            }
            None => Err(ExecError::Lost(Progress::of(&pass.stored))),
        }
    }

    /// One attempt of an `http` step, as the event that reports it.
    pub(super) async fn attempt_step(
        &self,
        step: String,
        attempt: u32,
        request: HttpRequest,
        timeout: Duration,
        success: SuccessRule,
    ) -> Event {
        let started_at = self.clock.now();
        let request_record = crate::secrets::recorded(&request);
        tracing::debug!(step = %step, attempt, "step attempt");
        match self.send(&request, timeout, &success).await {
            Ok(output) => Event::StepSucceeded {
                step,
                attempt,
                started_at,
                request: request_record,
                output,
            },
            Err((error, output)) => {
                tracing::info!(step = %step, attempt, class = ?error.class, "step attempt failed");
                Event::StepFailed {
                    step,
                    attempt,
                    started_at,
                    request: request_record,
                    error,
                    output,
                }
            }
        }
    }
}

/// A run's end, logged once it is written. A line per run is what an operator does not want
/// at thousands of runs a second (the run record is the history): runs that ended as asked
/// log at `debug`, those that did not at `info`, with their error.
pub(crate) fn log_end(workflow: &str, status: RunStatus, error: Option<&str>) {
    if matches!(status, RunStatus::Succeeded | RunStatus::Cancelled) {
        tracing::debug!(workflow, status = status.as_str(), "run ended");
    } else {
        tracing::info!(
            workflow,
            status = status.as_str(),
            error = error.unwrap_or_default(),
            "run ended"
        );
    }
}
