//! Parked runs woken from outside: the single-use URLs of `wait_for_webhook` and
//! `approval` steps. A token is `{run_id}.{secret}`: the secret is the HMAC-SHA256 (256
//! bits, base64url) of `{run_id}.{purpose}.{salt}` under the server's URL key (a secret of
//! Tripline's own in the secret store); the run keeps only its hash and the salt, so the
//! store alone opens nothing. The URLs are derived again where they are shown (the
//! notification, the control API's run, the review page). This is the use case behind
//! `http::resume`: find the wait a token opens, and apply the resume or decision to its
//! run (through the one interpreter).

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use tripline_core::engine::{self, Event};
use tripline_core::{Run, RunStatus};

use crate::App;
use crate::executor::ExecError;
use crate::ports::{StoreError, WorkItem};

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

/// True when the run has used `secret` (a URL's token after its run id): its hash, or
/// the secret itself for runs parked before URLs were hashed.
fn used(run: &Run, secret: &str) -> bool {
    let hashed = engine::token_hash(secret);
    run.used_tokens.iter().any(|s| {
        bool::from(s.as_bytes().ct_eq(hashed.as_bytes()))
            | (!s.starts_with("sha256:") && bool::from(s.as_bytes().ct_eq(secret.as_bytes())))
    })
}

/// The secret of a wait's URL.
fn wait_secret(key: &str, run_id: &str, purpose: &str, salt: &str) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{run_id}.{purpose}.{salt}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

impl App {
    /// Makes the URLs of the wait `run` is about to park on (the `Expose` effect): their
    /// hashes and salt on the run.
    pub(crate) async fn expose_wait(&self, run: &mut Run) -> Result<(), StoreError> {
        let key = self.secrets.wait_url_key(self.clock.now()).await?;
        let salt = crate::tokens::new_token();
        let run_id = run.id.clone();
        engine::expose(run, salt.clone(), |purpose| {
            wait_secret(&key, &run_id, purpose, &salt)
        });
        Ok(())
    }

    /// Puts the wait's URLs into `run.waiting_payload` (a copy to show: a notification, an
    /// answer), derived again from the run's salt.
    pub async fn reveal_urls(&self, run: &mut Run) {
        if run.waiting_salt.is_none() {
            return;
        }
        match self.secrets.wait_url_key(self.clock.now()).await {
            Ok(key) => {
                let run_id = run.id.clone();
                engine::show_urls(run, &self.config.public_url, |purpose, salt| {
                    wait_secret(&key, &run_id, purpose, salt)
                });
            }
            Err(e) => {
                tracing::warn!(run_id = %run.id, error = %e, "the wait's URLs cannot be shown: the URL key cannot be read");
            }
        }
    }

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
        // The run keeps hashes (with a salt); runs parked before that kept the secrets
        // themselves. A hash is never accepted as a secret.
        let hashed = engine::token_hash(secret);
        let expected = if run.waiting_salt.is_some() {
            hashed.as_str()
        } else {
            secret
        };
        let eq = |s: &String| bool::from(s.as_bytes().ct_eq(expected.as_bytes()));
        if run.waiting_tokens.get(purpose.name()).is_some_and(eq) {
            if run
                .waiting_expires_at
                .is_some_and(|e| self.clock.now() >= e)
            {
                return Err(WaitError::Gone(Box::new(run)));
            }
            return Ok(run);
        }
        if used(&run, secret) {
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
            let run = match self.locate_wait(token, purpose).await {
                Ok(run) => run,
                // This URL's request was applied, and the run has not moved since: its
                // answer may have been a 503 because the work item could not be sent
                // after the write. The retry sends it (twice is harmless) and gets the
                // answer the first should have had.
                Err(WaitError::Gone(run))
                    if matches!(run.status, RunStatus::Queued | RunStatus::Running)
                        && token.split_once('.').is_some_and(|(_, s)| used(&run, s)) =>
                {
                    self.queue
                        .send(&WorkItem::run(run.id.clone()), std::time::Duration::ZERO)
                        .await?;
                    return Ok(*run);
                }
                Err(e) => return Err(e),
            };
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
