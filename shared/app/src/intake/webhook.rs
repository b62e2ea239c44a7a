//! The webhook use case: a request to `/hooks/{token}` that passed its method and header
//! checks (in `http::ingress`) becomes an inbox message and, through its trigger's gate,
//! a run; a sync reply waits for that run. Reprocessing a webhook message rebuilds the
//! same trigger input here.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use tripline_core::definition::ResponseMode;
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::{Run, Workflow};

use crate::App;
use crate::admission::{IDEMPOTENCY_WINDOW, Refused};
use crate::deploy::Hook;
use crate::ports::{Admitted, IdempotencyClaim, InboxMessage, StoreError};

/// What became of a webhook request that reached its trigger.
// One per request, answered at once; boxing the run would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Received {
    /// Recorded; it starts nothing, for `reason`: answered `status` with `code`.
    Refused {
        message_id: String,
        status: StatusCode,
        code: &'static str,
        reason: String,
    },
    /// Recorded as filtered (its filter or condition did not match).
    Filtered { message_id: String },
    /// Its run was admitted (or, for a repeated idempotency key, the first one's):
    /// `run` as last seen (ended, for a sync reply that waited long enough), or `None`
    /// when it could not be read back.
    Started {
        message_id: String,
        run_id: String,
        run: Option<Run>,
    },
    /// The store failed: nothing was recorded.
    Unavailable(StoreError),
}

/// The trigger input of a webhook request: `body`, `headers`, `query`, `method`, `path`.
pub fn webhook_input(message: &InboxMessage, body: Value) -> Value {
    let headers: Map<String, Value> = message
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "body": body,
        "headers": headers,
        "query": query_map(&message.query),
        "method": message.method,
        "path": message.path,
    })
}

impl App {
    /// Records a message that starts nothing, and says so.
    pub async fn refuse_webhook(
        &self,
        message: InboxMessage,
        status: StatusCode,
        code: &'static str,
        reason: String,
    ) -> Received {
        let message_id = message.id.clone();
        let outcome = crate::ports::Outcome::Rejected {
            reason: reason.clone(),
        };
        match self.record_message(message, outcome).await {
            Ok(()) => Received::Refused {
                message_id,
                status,
                code,
                reason,
            },
            Err(e) => Received::Unavailable(e),
        }
    }

    /// A webhook request whose body is `bytes` (authenticated, within the size limit):
    /// recorded, and its run admitted when it passes the trigger's gate. A sync trigger's
    /// pure run is run here; otherwise a sync reply waits for the executor within its
    /// budget.
    pub async fn receive_webhook(
        &self,
        hook: &Hook,
        mut message: InboxMessage,
        headers: &HeaderMap,
        bytes: &[u8],
        delivery: Option<String>,
    ) -> Received {
        message.body = bytes.to_vec();
        let parsed = match trigger_body(&hook.trigger, message.content_type.as_deref(), bytes) {
            Ok(v) => v,
            Err((status, code, reason)) => {
                return self.refuse_webhook(message, status, code, reason).await;
            }
        };
        let input = webhook_input(&message, parsed);
        let trigger = &hook.trigger;
        // A verified signature's delivery id names the message for good: its sender's
        // retries start nothing new, and an unsigned `Idempotency-Key` header cannot
        // override it (the trigger's own `idempotency_key` still comes first).
        let caller_headers = delivery.is_none().then_some(headers);
        let idempotency = match self.gate(
            &hook.record.id,
            &trigger.id,
            trigger.gate(),
            &input,
            caller_headers,
        ) {
            Ok(None) => delivery.map(|id| {
                crate::admission::claim(
                    &hook.record.id,
                    &trigger.id,
                    &id,
                    message.received_at,
                    IDEMPOTENCY_WINDOW,
                )
            }),
            Ok(claim) => claim,
            Err(Refused::Filtered(reason)) => {
                let message_id = message.id.clone();
                let outcome = crate::ports::Outcome::Filtered { reason };
                return match self.record_message(message, outcome).await {
                    Ok(()) => Received::Filtered { message_id },
                    Err(e) => Received::Unavailable(e),
                };
            }
            Err(Refused::KeyFailed(why)) => {
                let status = StatusCode::UNPROCESSABLE_ENTITY;
                return self
                    .refuse_webhook(message, status, "idempotency_key_failed", why)
                    .await;
            }
        };
        let trigger_ref = TriggerRef {
            kind: TriggerKind::Webhook,
            id: trigger.id.clone(),
        };
        let run = self.run_of_message(&message, &hook.record, trigger_ref, input);
        self.start_webhook_run(hook, message, run, idempotency)
            .await
    }

    /// Admits the run (after running it here when it needs no I/O: see [`runs_here`]),
    /// and for a sync trigger waits for its end within the budget.
    async fn start_webhook_run(
        &self,
        hook: &Hook,
        message: InboxMessage,
        mut run: Run,
        idempotency: Option<IdempotencyClaim>,
    ) -> Received {
        let message_id = message.id.clone();
        let run_id = run.id.clone();
        let sync = hook.trigger.response == ResponseMode::Sync;
        let wf = &hook.record.definition;
        let mut deliver_after = false;
        if self.runs_here(wf, sync, idempotency.is_some()) {
            // A run that needs no I/O runs here and now, and is written once, ended.
            // Boxed, like the other paths here that only some requests take: inline, each
            // made every request's state machine larger, and the handler's is copied
            // whole into its box (43.6 KB with them inline, 10.6 KB boxed).
            match Box::pin(self.run_before_admission(wf, run)).await {
                Ok((ended, deferred)) => {
                    run = ended;
                    deliver_after = deferred;
                }
                Err(crate::executor::ExecError::Store(e)) => return Received::Unavailable(e),
                Err(e) => return Received::Unavailable(StoreError::Unavailable(Box::new(e))),
            }
        }
        let waiter =
            (sync && !run.status.is_terminal()).then(|| self.completions.subscribe(&run_id));
        let run = match self
            .admit_runs(message, vec![run.clone()], idempotency)
            .await
        {
            Ok(Admitted::New { .. }) => {
                if deliver_after {
                    // What the run left for the executor (its callback).
                    self.deliver_now(&run_id).await;
                }
                match waiter {
                    Some(rx) => Box::pin(self.wait_for(&run_id, rx, budget(self, hook))).await,
                    None => Some(run),
                }
            }
            Ok(Admitted::Duplicate { run_id: first }) => {
                self.completions.forget(&run_id);
                match Box::pin(self.first_run(hook, &first, sync)).await {
                    Ok(run) => run,
                    Err(e) => return Received::Unavailable(e),
                }
            }
            Err(e) => {
                self.completions.forget(&run_id);
                return Received::Unavailable(e);
            }
        };
        Received::Started {
            message_id,
            run_id,
            run,
        }
    }

    /// Whether a webhook's run is run to its end here, before its admission, and written
    /// once, ended, instead of being queued for the executor: when every step is pure
    /// (`transform`, `fail`, and `map`/`parallel` of those), which costs less than the
    /// queue's hop, and no concurrency limit makes it wait for a slot in the executor.
    ///
    /// Its end's effects (context-store writes, flow runs) would then happen before the
    /// admission is durable. A sync caller waits for them anyway, so a sync run takes this
    /// path unless a repeated idempotency key could make them for a run never recorded.
    /// An async run takes it only when its end has no such effects, so that the admission
    /// is its one write: it is then exactly what the executor would have written, and the
    /// `202` answers a run already ended (Temporal's eager start, for runs with no I/O).
    fn runs_here(&self, wf: &Workflow, sync: bool, idempotency: bool) -> bool {
        let end_effects = || {
            wf.steps.iter().any(|s| !s.extract_to_context.is_empty())
                || self.has_flow_listeners(&wf.id)
        };
        wf.concurrency.is_none()
            && wf.steps.iter().all(|s| s.action.is_pure())
            && if sync {
                !(idempotency && end_effects())
            } else {
                !end_effects()
            }
    }

    /// The run a repeated idempotency key maps to; a sync caller waits for it too.
    async fn first_run(
        &self,
        hook: &Hook,
        first: &str,
        sync: bool,
    ) -> Result<Option<Run>, StoreError> {
        match self.store.run(first).await? {
            Some(existing) if sync && !existing.status.is_terminal() => {
                let rx = self.completions.subscribe(first);
                // It may have ended between the read and the subscription.
                match self.store.run(first).await {
                    Ok(Some(r)) if r.status.is_terminal() => Ok(Some(r)),
                    _ => Ok(self.wait_for(first, rx, budget(self, hook)).await),
                }
            }
            other => Ok(other),
        }
    }

    /// Sends a work item for the run now; a failure is only logged (the sweeper finds
    /// what it left).
    async fn deliver_now(&self, run_id: &str) {
        let item = crate::ports::WorkItem::run(run_id.to_string());
        if let Err(e) = self.queue.send(&item, Duration::ZERO).await {
            tracing::warn!(run_id, error = %e, "enqueue after admit failed");
        }
    }

    /// Waits for the run to end within `budget`: woken in-process, and, where the executor
    /// runs elsewhere (AWS), polling the run record with back-off. `None` when the run
    /// could not be read back.
    async fn wait_for(
        &self,
        run_id: &str,
        mut rx: tokio::sync::oneshot::Receiver<Run>,
        budget: Duration,
    ) -> Option<Run> {
        if !self.config.poll_runs {
            return match tokio::time::timeout(budget, rx).await {
                Ok(Ok(run)) => Some(run),
                _ => {
                    self.completions.forget(run_id);
                    self.store.run(run_id).await.ok().flatten()
                }
            };
        }
        let deadline = tokio::time::Instant::now() + budget;
        let mut every = Duration::from_millis(5);
        let mut woken = true;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let next = (now + every).min(deadline);
            if woken {
                match tokio::time::timeout_at(next, &mut rx).await {
                    Ok(Ok(run)) => return Some(run),
                    Ok(Err(_)) => woken = false,
                    Err(_) => {}
                }
            }
            tokio::time::sleep_until(next).await;
            match self.store.run(run_id).await {
                Ok(Some(run)) if run.status.is_terminal() => {
                    self.completions.forget(run_id);
                    return Some(run);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "polling the run failed"),
            }
            every = (every * 2).min(Duration::from_millis(250));
        }
        self.completions.forget(run_id);
        self.store.run(run_id).await.ok().flatten()
    }
}

fn budget(app: &App, hook: &Hook) -> Duration {
    hook.trigger
        .sync_budget
        .map_or(app.config.sync_budget, |d| d.std())
}

/// Why a body was refused: status, code and message.
type BodyError = (StatusCode, &'static str, String);

/// Decodes a body by its content type: JSON, form, or text. An empty body is `null`.
/// A webhook's body as its trigger takes it: [`parse_body`], and with `any_body`, a body
/// of another content type as `{content_type, bytes, base64}` instead of a 415.
pub fn trigger_body(
    trigger: &tripline_core::definition::WebhookTrigger,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Value, BodyError> {
    match parse_body(content_type, bytes) {
        Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, ..)) if trigger.any_body => {
            use base64::Engine as _;
            Ok(serde_json::json!({
                "content_type": content_type,
                "bytes": bytes.len(),
                "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
            }))
        }
        other => other,
    }
}

pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, BodyError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mime = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let text = || {
        std::str::from_utf8(bytes)
            .map(|s| Value::String(s.to_string()))
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    "invalid_utf8",
                    format!(
                        "the body is not valid UTF-8 (byte {}); send UTF-8 text",
                        e.valid_up_to()
                    ),
                )
            })
    };
    let json = || {
        serde_json::from_slice::<Value>(bytes).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })
    };
    match mime.as_deref() {
        None => json().or_else(|_| text()),
        Some(m) if m == "application/json" || m.ends_with("+json") => json(),
        Some("application/x-www-form-urlencoded") => {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(bytes).map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        "invalid_form",
                        format!("the body is not a valid form: {e}"),
                    )
                })?;
            let mut map = Map::new();
            for (k, v) in pairs {
                match map.get_mut(&k) {
                    Some(Value::Array(items)) => items.push(Value::String(v)),
                    Some(existing) => {
                        *existing = Value::Array(vec![existing.take(), Value::String(v)])
                    }
                    None => {
                        map.insert(k, Value::String(v));
                    }
                }
            }
            Ok(Value::Object(map))
        }
        Some(m) if m.starts_with("text/") || m == "application/xml" || m.ends_with("+xml") => {
            text()
        }
        Some(m) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!(
                "content type `{m}` is not accepted; send application/json, application/x-www-form-urlencoded or text/*"
            ),
        )),
    }
}

pub fn query_map(query: &str) -> Value {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut map = Map::new();
    for (k, v) in pairs {
        map.insert(k, Value::String(v));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_and_text_bodies_decode() {
        assert_eq!(
            parse_body(Some("application/json"), b"{\"a\":1}").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            parse_body(Some("application/x-www-form-urlencoded"), b"a=1&b=x+y&a=2").unwrap(),
            json!({"a": ["1", "2"], "b": "x y"})
        );
        assert_eq!(
            parse_body(Some("text/plain; charset=utf-8"), b"hi").unwrap(),
            json!("hi")
        );
        assert_eq!(parse_body(None, b"{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_body(None, b"plain").unwrap(), json!("plain"));
        assert_eq!(
            parse_body(Some("application/json"), b"").unwrap(),
            Value::Null
        );
    }

    #[test]
    fn bad_bodies_get_a_clear_4xx() {
        assert_eq!(
            parse_body(Some("application/json"), b"{\"a\":")
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_body(Some("text/plain"), b"\xff\xfe").unwrap_err().1,
            "invalid_utf8"
        );
        assert_eq!(
            parse_body(Some("image/png"), b"\x89PNG").unwrap_err().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
