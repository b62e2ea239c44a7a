//! The attempts of a `map` or `parallel` step's lanes, performed together: each report is
//! applied as it arrives, and the attempts it asks for (the next step of its lane, the
//! next item) join those still out, so the step's bound holds without waiting for the
//! slowest of a batch. The run is written at most every [`CHECKPOINT_EVERY`] while lanes
//! run, so a crash repeats at most that much work (with the same idempotency keys).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tripline_core::engine::{self, Effect, Event, StepCall};
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::{Run, Timestamp};

use super::ExecError;
use super::interpret::{Mode, Next, Pass};
use crate::App;

/// How often the run is written while its lanes run.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

type Out<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = Event> + Send + 'a>>>;

impl App {
    /// Performs `calls` and every attempt their reports lead to, until none is out.
    pub(super) async fn run_lanes(
        &self,
        pass: &mut Pass<'_>,
        run: &mut Run,
        calls: Vec<StepCall>,
    ) -> Result<Next, ExecError> {
        let (Mode::Executor { deadline }, Some(world)) = (pass.mode, pass.world) else {
            return self.defer(pass, run).await;
        };
        let mut out: Out<'_> = FuturesUnordered::new();
        // An attempt not started for lack of time in this invocation: the run is written
        // with it out and continued by a work item, which issues it again.
        let mut left_over = false;
        for call in calls {
            left_over |= !self.launch(pass, world, deadline, call, &mut out);
        }
        let mut written = tokio::time::Instant::now();
        while let Some(event) = out.next().await {
            let (next, more) = engine::apply(pass.wf, take(run), event, self.clock.now());
            *run = next;
            for effect in more {
                match effect {
                    Effect::RunSteps { calls } => {
                        for call in calls {
                            left_over |= !self.launch(pass, world, deadline, call, &mut out);
                        }
                    }
                    other => pass.effects.push_back(other),
                }
            }
            if run.status.is_terminal() {
                // Failed fast (or cancelled by its deadline): the attempts still out are
                // dropped; their keys make a later repeat harmless.
                break;
            }
            if !out.is_empty() && written.elapsed() >= CHECKPOINT_EVERY && *run != pass.stored {
                self.commit(pass, run).await?;
                written = tokio::time::Instant::now();
            }
        }
        if left_over && !run.status.is_terminal() {
            return self.defer(pass, run).await;
        }
        Ok(Next::Go)
    }

    /// Starts one attempt; false when this invocation has no time left for it.
    fn launch<'a>(
        &'a self,
        pass: &mut Pass<'_>,
        world: &'a dyn super::interpret::World,
        deadline: Option<tokio::time::Instant>,
        call: StepCall,
        out: &mut Out<'a>,
    ) -> bool {
        let Some(timeout) = self.time_for_step(pass, &call.step, call.timeout, deadline) else {
            return false;
        };
        pass.performed += 1;
        out.push(Box::pin(world.attempt_step(
            self,
            call.step,
            call.attempt,
            call.request,
            timeout,
            call.success,
        )));
        true
    }
}

/// The run, moved out of `run` (which is left an empty placeholder until it is put back).
fn take(run: &mut Run) -> Run {
    let placeholder = Run::new(
        String::new(),
        "",
        0,
        TriggerRef {
            kind: TriggerKind::Manual,
            id: String::new(),
        },
        serde_json::Value::Null,
        Timestamp(0),
    );
    std::mem::replace(run, placeholder)
}
