//! Parked runs woken from outside: the single-use URLs of `wait_for_webhook` and
//! `approval` steps. A token is `{run_id}.{secret}`: the secret has ≥ 128 random bits and is
//! compared in constant time. This is the use case behind `http::resume`: find the wait a
//! token opens, and apply the resume or decision to its run (through the one interpreter).

use subtle::ConstantTimeEq;
use tripline_core::Run;
use tripline_core::engine::Event;

use crate::App;
use crate::executor::ExecError;
use crate::ports::StoreError;

/// A token's purpose: which URL it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Resume,
    Review,
    Approve,
    Reject,
}

impl Purpose {
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Resume => "resume",
            Purpose::Review => "review",
            Purpose::Approve => "approve",
            Purpose::Reject => "reject",
        }
    }
}

/// Why a token opens nothing now.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// No run has this token: 404.
    #[error("this URL is not known; check that it was copied whole")]
    NotFound,
    /// The token was used, or its wait ended: 410, and nothing changes.
    #[error("this URL can no longer be used")]
    Gone(Box<Run>),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run kept changing under the request.
    #[error("the run kept changing while this request was applied; try again")]
    Conflict,
    #[error("applying the request failed: {0}")]
    Failed(#[source] ExecError),
}

impl App {
    /// The run waiting on the wait `token` opens for `purpose`.
    pub async fn locate_wait(&self, token: &str, purpose: Purpose) -> Result<Run, WaitError> {
        let Some((run_id, secret)) = token.split_once('.') else {
            return Err(WaitError::NotFound);
        };
        if secret.len() < 16 || run_id.is_empty() {
            return Err(WaitError::NotFound);
        }
        let Some(run) = self.store.run(run_id).await? else {
            return Err(WaitError::NotFound);
        };
        let eq = |s: &String| bool::from(s.as_bytes().ct_eq(secret.as_bytes()));
        if run.waiting_tokens.get(purpose.name()).is_some_and(eq) {
            if run
                .waiting_expires_at
                .is_some_and(|e| self.clock.now() >= e)
            {
                return Err(WaitError::Gone(Box::new(run)));
            }
            return Ok(run);
        }
        if run.used_tokens.iter().any(eq) {
            return Err(WaitError::Gone(Box::new(run)));
        }
        Err(WaitError::NotFound)
    }

    /// Applies `event` (a resume, a decision) to the run the token opens, reading it again
    /// when another writer got there first; returns the run as written.
    pub async fn wake_wait(
        &self,
        token: &str,
        purpose: Purpose,
        event: impl Fn() -> Event,
    ) -> Result<Run, WaitError> {
        for _ in 0..5 {
            let run = self.locate_wait(token, purpose).await?;
            let version = run.version;
            match self.apply_from_outside(run, event()).await {
                // The engine found nothing to do: the wait is not the one this URL was for.
                Ok(Some(same)) if same.version == version => {
                    return Err(WaitError::Gone(Box::new(same)));
                }
                Ok(Some(saved)) => return Ok(saved),
                Ok(None) => continue,
                Err(ExecError::Store(e)) => return Err(WaitError::Store(e)),
                Err(e) => {
                    tracing::error!(error = %e, "applying a decision failed");
                    return Err(WaitError::Failed(e));
                }
            }
        }
        Err(WaitError::Conflict)
    }
}
