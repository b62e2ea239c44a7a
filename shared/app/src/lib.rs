//! tripline-app: Tripline's use cases, generic over the ports in [`ports`]: webhook ingress
//! (an axum Router), the step executor, and the control API.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub mod concurrency;
pub mod control;
pub mod cron;
pub mod deploy;
pub mod executor;
pub mod flow;
pub mod ingress;
pub mod kafka;
pub mod outbound;
pub mod ports;
pub mod reprocess;
pub mod resume;
pub mod signing;

use deploy::Deployments;
use executor::Completions;
use outbound::{Outbound, OutboundPolicy};
use ports::{Clock, Queue, Store};

/// Settings read once at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Request bodies over this many bytes get 413.
    pub max_body_bytes: usize,
    /// Answer an unknown webhook token like a known one (`200 {"received": true}`), so that
    /// tokens cannot be enumerated. Off: 404.
    pub hide_unknown_tokens: bool,
    /// How long a sync reply waits by default.
    pub sync_budget: Duration,
    /// When set, `/v1/*` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub outbound: OutboundPolicy,
    /// Sync replies poll the run record (strongly consistent reads, back-off from 5 ms to
    /// 250 ms) as well as waiting to be woken: needed where the executor runs in another
    /// process (AWS Lambda). Off: woken in-process only.
    pub poll_runs: bool,
    /// Where other processes deploy (AWS: the control API is another Lambda), the webhook
    /// registry is checked against the store's deploy marker when the last check is older
    /// than this, and on every unknown token (one read). `None`: this process is the only
    /// deployer.
    pub refresh_workflows: Option<Duration>,
    /// The base of the URLs that parked runs expose (`resume_url`, `review_url`, ...), as
    /// callers outside reach this server, e.g. `https://hooks.example.com`. Empty: the
    /// local server uses its listen address; elsewhere the URLs are relative.
    pub public_url: String,
    /// The largest cron state saved between runs, in bytes of JSON.
    pub state_limit_bytes: usize,
}

/// The default [`Config::state_limit_bytes`]: 64 KiB.
pub const STATE_LIMIT: usize = 64 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            hide_unknown_tokens: false,
            sync_budget: Duration::from_secs(25),
            api_key: None,
            outbound: OutboundPolicy::default(),
            poll_runs: false,
            refresh_workflows: None,
            public_url: String::new(),
            state_limit_bytes: STATE_LIMIT,
        }
    }
}

/// Everything the use cases share: the ports, the deployed workflows, the settings.
pub struct App {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub clock: Arc<dyn Clock>,
    pub deployments: Deployments,
    pub completions: Completions,
    pub outbound: Outbound,
    pub config: Config,
    /// Wakes the local scheduler (a deploy, a moved manual clock).
    pub cron_wake: tokio::sync::Notify,
    ids: std::sync::Mutex<ulid::Generator>,
    /// One lock per concurrency-limit record: this process's own takers and releasers
    /// queue here instead of racing each other's conditional writes.
    slot_locks: concurrency::SlotLocks,
}

/// `None` when a trigger's input passes its `filter` and `condition`; else why not.
pub fn unmet(
    filter: Option<&serde_json::Value>,
    condition: Option<&str>,
    input: &serde_json::Value,
) -> Option<String> {
    if let Some(f) = filter
        && let Err(m) = tripline_core::filter::check(input, f, "")
    {
        return Some(m.to_string());
    }
    if let Some(cond) = condition {
        match tripline_core::template::eval_condition(
            cond,
            &serde_json::json!({ "trigger": input }),
        ) {
            Ok(true) => {}
            Ok(false) => return Some(format!("condition `{cond}` is false")),
            Err(e) => return Some(format!("condition `{cond}` could not be evaluated: {e}")),
        }
    }
    None
}

/// A ULID of time `ms` whose random part is the first 80 bits of `digest`: the id of
/// something that must be the same each time it is derived (a cron tick, a Kafka record's
/// run, a flow run).
pub(crate) fn derived_ulid(ms: i64, digest: &[u8]) -> String {
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    ulid::Ulid::from_parts(u64::try_from(ms).unwrap_or(0), u128::from_be_bytes(random)).to_string()
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Self {
        Self {
            store,
            queue,
            clock,
            deployments: Deployments::default(),
            completions: Completions::default(),
            outbound: Outbound::new(config.outbound.clone()),
            config,
            cron_wake: tokio::sync::Notify::new(),
            slot_locks: Default::default(),
            ids: std::sync::Mutex::new(ulid::Generator::new()),
        }
    }

    /// Where cron triggers' schedules are kept outside this process (AWS): a deploy
    /// creates, updates and deletes them.
    pub fn with_schedules(self, schedules: Arc<dyn cron::Schedules>) -> Self {
        self.deployments.set_schedules(schedules);
        self
    }

    /// Where kafka triggers' records come from outside this process (AWS: MSK): a deploy
    /// refuses a trigger it cannot deliver.
    pub fn with_kafka_source(self, source: Arc<dyn kafka::KafkaSource>) -> Self {
        self.deployments.set_kafka_source(source);
        self
    }

    /// A new run id: a ULID, so ids sort by time.
    ///
    /// Ids made within one millisecond still sort in the order they were made (a monotonic
    /// generator: the random part is incremented), so that listings are newest first.
    pub fn new_id(&self) -> String {
        let at = self.clock.now().to_system_time();
        self.ids
            .lock()
            .ok()
            .and_then(|mut g| g.generate_from_datetime(at).ok())
            .unwrap_or_else(|| ulid::Ulid::from_datetime(at))
            .to_string()
    }

    /// Records a message and its runs, then sends the store's `to_enqueue` to the queue. A
    /// failed send is only logged: the run is recorded `queued`, and a store that does not
    /// enqueue in its own transaction has a sweeper that enqueues such runs again.
    pub async fn admit(
        &self,
        admission: ports::Admission,
    ) -> Result<ports::Admitted, ports::StoreError> {
        let admitted = self.store.admit(admission).await?;
        if let ports::Admitted::New { to_enqueue } = &admitted {
            for id in to_enqueue {
                let item = ports::WorkItem::run(id.clone());
                if let Err(e) = self.queue.send(&item, Duration::ZERO).await {
                    tracing::warn!(run_id = %id, error = %e, "enqueue after admit failed");
                }
            }
        }
        Ok(admitted)
    }

    /// Where other processes deploy (see [`Config::refresh_workflows`]): checks the deploy
    /// marker when the last check is older than the interval, or at once on an unknown
    /// token (`miss`), and reloads the registry when it moved.
    pub async fn refresh_workflows(&self, miss: bool) {
        let Some(every) = self.config.refresh_workflows else {
            return;
        };
        if !miss && self.deployments.checked_within(every) {
            return;
        }
        if let Err(e) = self.deployments.refresh(self.store.as_ref()).await {
            tracing::warn!(error = %e, "reloading the deployed workflows failed");
        }
    }

    /// The idempotency claim of a request's `Idempotency-Key`, scoped to its trigger.
    /// The idempotency claim of an input to `trigger`: its `idempotency_key` template,
    /// rendered over the input, when it has one; else the caller's `Idempotency-Key`
    /// header. A key that renders empty claims nothing (the input starts a run). `Err`:
    /// the template failed on this input, with why.
    pub fn claim_for(
        &self,
        workflow: &str,
        trigger: &str,
        key_template: Option<&str>,
        input: &serde_json::Value,
        headers: Option<&axum::http::HeaderMap>,
    ) -> Result<Option<ports::IdempotencyClaim>, String> {
        let Some(tpl) = key_template else {
            return Ok(headers.and_then(|h| self.idempotency_claim(workflow, trigger, h)));
        };
        let key =
            tripline_core::template::render_string(tpl, &serde_json::json!({ "trigger": input }))
                .map_err(|e| {
                format!("the trigger's idempotency_key `{tpl}` failed on this input: {e}")
            })?;
        let key = key.trim();
        if key.is_empty() {
            return Ok(None);
        }
        // Long keys are kept as their hash: the claim's own key stays small.
        let key = if key.len() > 200 {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(key.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        } else {
            key.to_string()
        };
        Ok(Some(ports::IdempotencyClaim {
            key: format!("{workflow}/{trigger}/{key}"),
            expires_at: self.clock.now().plus(ingress::IDEMPOTENCY_WINDOW),
        }))
    }

    pub fn idempotency_claim(
        &self,
        workflow: &str,
        trigger: &str,
        headers: &axum::http::HeaderMap,
    ) -> Option<ports::IdempotencyClaim> {
        let key = headers
            .get("idempotency-key")?
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)?;
        Some(ports::IdempotencyClaim {
            key: format!("{workflow}/{trigger}/{key}"),
            expires_at: self.clock.now().plus(ingress::IDEMPOTENCY_WINDOW),
        })
    }

    /// The whole HTTP surface: webhooks, the routes of parked runs, and the control API.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        ingress::router(self.clone())
            .merge(resume::router(self.clone()))
            .merge(control::router(self.clone()))
    }
}

/// A JSON error: `{"error": {"code": ..., "message": ...}}`.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The store failed: the request was not recorded, so the client must retry.
pub fn unavailable(e: &ports::StoreError) -> Response {
    tracing::error!(error = %e, "store failed");
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the request could not be recorded; nothing was started; retry later",
    );
    r.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    r
}
