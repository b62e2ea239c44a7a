//! Retrying a run (`POST /v1/runs/{id}/retry`): a new run with the original's trigger
//! input, against the workflow's current revision or the run's own, from the start or
//! from the failed step (see [`tripline_core::retry`]). It is admitted like any run, with
//! an inbox message of trigger `retry` that names the original; an idempotency key (the
//! caller's `Idempotency-Key`, or a bulk job's item) makes a retry asked twice start one
//! run.

use serde_json::json;
use tripline_core::retry::{RetryFrom, retry_run};

use crate::App;
use crate::admission::IDEMPOTENCY_WINDOW;
use crate::ports::{Admitted, IdempotencyClaim, InboxMessage, StoreError};

/// Which revision a retry runs.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RetryRevision {
    /// The workflow's latest deployed revision (after a fix).
    #[default]
    Current,
    /// The revision the original run ran.
    Own,
}

/// What to retry, and how.
#[derive(Clone, Debug, Default)]
pub struct RetryRequest {
    pub from: RetryFrom,
    pub revision: RetryRevision,
    /// Makes the retry happen once: a second request with the same key gets the first
    /// retry's run.
    pub key: Option<String>,
}

/// The run a retry started (or, with a key used before, the one it started then).
#[derive(Clone, Debug, PartialEq)]
pub struct Retried {
    pub run_id: String,
    pub revision: u32,
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no run `{0}`")]
    NotFound(String),
    /// The run cannot be retried so; the text says why and what to do instead.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl App {
    /// Retries run `id` (see the module's comment).
    pub async fn retry(&self, id: &str, req: &RetryRequest) -> Result<Retried, RetryError> {
        let original = self
            .store
            .run(id)
            .await?
            .ok_or_else(|| RetryError::NotFound(id.to_string()))?;
        let rec = match req.revision {
            RetryRevision::Current => {
                self.refresh_workflows(true).await;
                self.deployments.latest(&original.workflow)
            }
            RetryRevision::Own => self
                .store
                .workflow(&original.workflow, Some(original.revision))
                .await?
                .map(std::sync::Arc::new),
        };
        let rec = rec.filter(|r| !r.removed).ok_or_else(|| {
            RetryError::Refused(format!(
                "workflow `{}` is not deployed; deploy it again, then retry the run",
                original.workflow
            ))
        })?;
        if let Some(why) = rec.switched_off(&original.trigger.id) {
            return Err(RetryError::Refused(why));
        }
        let now = self.clock.now();
        // The run and its message share an id and a time (see `App::run_of_message`).
        let id_shared = self.new_id();
        let mut run = retry_run(
            &original,
            &rec.definition,
            rec.revision,
            req.from,
            id_shared.clone(),
            now,
        )
        .map_err(RetryError::Refused)?;
        let message = InboxMessage::new(id_shared, now, &rec.id, "retry", "POST")
            .at_path(format!("/v1/runs/{id}/retry"))
            .with_json(&json!({"retry_of": id, "from": req.from, "revision": rec.revision}));
        run.message_id = Some(message.id.clone());
        let claim = req.key.as_ref().map(|key| IdempotencyClaim {
            key: format!("{}/retry/{id}/{key}", rec.id),
            expires_at: now.plus(IDEMPOTENCY_WINDOW),
            held_by_message: false,
        });
        let run_id = run.id.clone();
        Ok(match self.admit_runs(message, vec![run], claim).await? {
            Admitted::New { .. } => Retried {
                run_id,
                revision: rec.revision,
                duplicate: false,
            },
            Admitted::Duplicate { run_id } => Retried {
                run_id,
                revision: rec.revision,
                duplicate: true,
            },
        })
    }
}
