//! Outbound requests that are not steps: a run's signed callback, and a parked step's
//! notification.

use std::time::Duration;

use serde_json::{Value, json};
use tripline_core::engine::{self, Event, HttpRequest};
use tripline_core::run::{FailureClass, StepError};
use tripline_core::{Run, Workflow};

use super::NOTIFY_TIMEOUT;
use crate::App;

fn status_of(output: &Value) -> Option<u16> {
    output
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
}

impl App {
    /// Sends a rendered request: its secrets put in just before, and cleaned from what
    /// comes back (a downstream that echoes the request, an error that quotes the URL).
    pub(super) async fn send(
        &self,
        request: &HttpRequest,
        timeout: Duration,
        success: &engine::SuccessRule,
    ) -> Result<Value, (StepError, Option<Value>)> {
        let resolved = match self.secrets.resolve(request, self.clock.now()).await {
            Ok(r) => r,
            Err(Ok(why)) => {
                let error = StepError {
                    class: FailureClass::Request,
                    message: why.to_string(),
                };
                return Err((error, None));
            }
            Err(Err(e)) => {
                let error = StepError {
                    class: FailureClass::Connection,
                    message: format!("the secret store failed: {e}"),
                };
                return Err((error, None));
            }
        };
        let clean = &resolved.redactor;
        match self
            .outbound
            .perform(&resolved.request, timeout, success)
            .await
        {
            Ok(out) => Ok(clean.redact_value(&out)),
            Err((mut error, out)) => {
                error.message = clean.redact(&error.message);
                Err((error, out.map(|o| clean.redact_value(&o))))
            }
        }
    }

    /// Sends a parked step's notification (when it has one) and records how it went in the
    /// run's `waiting_payload.notification` (the caller writes it).
    pub(super) async fn notify_waiter(&self, wf: &Workflow, run: &mut Run) {
        // The URLs are derived for the notification; the run keeps their hashes.
        let mut shown = run.clone();
        self.reveal_urls(&mut shown).await;
        let Some(rendered) = engine::wait_notification(wf, &shown) else {
            return;
        };
        let outcome = match rendered {
            Ok(req) => {
                let rule = engine::SuccessRule(None);
                match self.send(&req, NOTIFY_TIMEOUT, &rule).await {
                    Ok(out) => json!({"status": out.get("status"), "sent_at": self.clock.now()}),
                    Err((e, out)) => json!({
                        "status": out.as_ref().and_then(|o| o.get("status")),
                        "error": e.message,
                        "sent_at": self.clock.now(),
                    }),
                }
            }
            Err(e) => json!({"error": format!("the notification's template failed: {e}")}),
        };
        if outcome.get("error").is_some() {
            tracing::warn!(run_id = %run.id, "the wait's notification failed; its URLs are on the run");
        }
        if let Some(p) = run.waiting_payload.as_mut() {
            p["notification"] = outcome;
        }
    }

    /// The workflow's callback signing secret: the secret it names, or the value inline.
    async fn callback_signing_secret(
        &self,
        wf: &Workflow,
    ) -> Result<std::sync::Arc<str>, StepError> {
        let field = wf.callback_secret.as_deref().unwrap_or_default();
        match self.secrets.credential(field, self.clock.now()).await {
            Ok(Some(secret)) => Ok(secret),
            Ok(None) => {
                let name = tripline_core::secrets::reference(field).unwrap_or_default();
                let missing = tripline_core::secrets::Unresolved::Missing(name.to_string());
                Err(StepError {
                    class: FailureClass::Request,
                    message: format!("the callbacks' signing secret: {missing}"),
                })
            }
            Err(e) => Err(StepError {
                class: FailureClass::Connection,
                message: format!("the secret store failed: {e}"),
            }),
        }
    }

    /// One signed delivery attempt of a run's callback.
    pub(super) async fn deliver_callback(
        &self,
        wf: &Workflow,
        run: &Run,
        attempt: u32,
        mut request: HttpRequest,
        timeout: Duration,
    ) -> Event {
        let url = tripline_core::secrets::display(&request.url);
        let body = request
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let msg_id = format!("msg_{}", run.id);
        let secs = self.clock.now().millis() / 1000;
        let secret = match self.callback_signing_secret(wf).await {
            Ok(secret) => secret,
            Err(error) => {
                return Event::CallbackDone {
                    attempt,
                    url,
                    status: None,
                    error: Some(error),
                };
            }
        };
        match crate::signing::headers(&secret, &msg_id, secs, &body) {
            Ok(hs) => {
                for (k, v) in hs {
                    request.headers.insert(k.to_string(), v);
                }
            }
            Err(e) => {
                return Event::CallbackDone {
                    attempt,
                    url,
                    status: None,
                    error: Some(StepError {
                        class: FailureClass::Request,
                        message: e.to_string(),
                    }),
                };
            }
        }
        let rule = engine::SuccessRule(None);
        match self.send(&request, timeout, &rule).await {
            Ok(out) => Event::CallbackDone {
                attempt,
                url,
                status: status_of(&out),
                error: None,
            },
            Err((error, out)) => {
                tracing::info!(run_id = %run.id, attempt, class = ?error.class, "callback delivery failed");
                Event::CallbackDone {
                    attempt,
                    url,
                    status: out.as_ref().and_then(status_of),
                    error: Some(error),
                }
            }
        }
    }
}
