//! Cancelling a run from outside: the same end as any other, through the interpreter.

use tripline_core::engine::Event;
use tripline_core::{Run, RunStatus};

use super::ExecError;
use crate::App;
use crate::ports::StoreError;

/// Why a run was not cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no run has this id")]
    NotFound,
    /// Only a queued, running or waiting run can be cancelled.
    #[error("the run has already ended ({})", .0.as_str())]
    Ended(RunStatus),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run kept changing under the request.
    #[error("the run kept changing while it was being cancelled; try again")]
    Conflict,
    #[error("cancelling the run failed: {0}")]
    Failed(#[source] ExecError),
}

impl App {
    /// Cancels the run: it ends `cancelled` (its wait's URLs used, its slot released, its
    /// flows started, its callback sent), reading it again when another writer got there
    /// first. Returns the run as written.
    pub async fn cancel_run(&self, id: &str) -> Result<Run, CancelError> {
        for _ in 0..5 {
            let Some(run) = self.store.run(id).await? else {
                return Err(CancelError::NotFound);
            };
            if run.status.is_terminal() {
                return Err(CancelError::Ended(run.status));
            }
            match self.apply_from_outside(run, Event::Cancel).await {
                Ok(Some(saved)) => return Ok(saved),
                Ok(None) => continue,
                Err(ExecError::Store(e)) => return Err(CancelError::Store(e)),
                Err(e) => return Err(CancelError::Failed(e)),
            }
        }
        Err(CancelError::Conflict)
    }
}
