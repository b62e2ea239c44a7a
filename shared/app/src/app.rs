//! `App`: what every use case shares (the ports, the deployed workflows, the settings),
//! built once at start-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tripline_core::Run;

use crate::deploy::Deployments;
use crate::outbound::{Outbound, OutboundPolicy};
use crate::ports::{Clock, KafkaSource, Queue, Schedules, SecretStore, Store};
use crate::secrets::Secrets;

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
    /// Without an API key, keep browsers out of `/v1/*`: a loopback `Host`, no foreign
    /// `Origin`, and a JSON body or the `x-tripline-request` header on state-changing
    /// requests (`tripline serve` turns it on).
    pub browser_guard: bool,
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
    /// Read a webhook client's address from the last `X-Forwarded-For` entry (only behind
    /// a proxy that sets it); off: the connection's address.
    pub trust_forwarded_for: bool,
    /// Webhook requests per second per token and per client address (0: none).
    pub rate_limits: crate::limits::RateLimits,
    /// How long runs, inbox messages and ticks are kept when their workflow does not say
    /// (`None`: forever). Applied by the local shape's upkeep; AWS uses DynamoDB's TTL.
    pub retention: Option<Duration>,
    /// Where a work item sent after a write may be lost with no one to notice (AWS: SQS
    /// failing after DynamoDB succeeded), a resume, decision or cancel first sends a
    /// rescue item delayed by this much, which moves the run only if nothing else has.
    /// `None` (local): upkeep finds such runs instead.
    pub rescue_after: Option<Duration>,
    /// The largest answer the shape can carry (AWS Lambda behind the HTTP API: 6 MB);
    /// `None`: answers stream. Exports past it come in parts.
    pub answer_limit: Option<usize>,
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
            browser_guard: false,
            outbound: OutboundPolicy::default(),
            poll_runs: false,
            refresh_workflows: None,
            public_url: String::new(),
            state_limit_bytes: STATE_LIMIT,
            trust_forwarded_for: false,
            rate_limits: Default::default(),
            retention: None,
            rescue_after: None,
            answer_limit: None,
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
    /// The secret store behind this process's cache.
    pub secrets: Arc<Secrets>,
    pub config: Config,
    /// Wakes the local scheduler (a deploy, a moved manual clock).
    pub cron_wake: tokio::sync::Notify,
    /// The webhook route's rate limits.
    pub limiter: crate::limits::Limiter,
    /// The control API's scoped keys, as this process last read them.
    pub keys: crate::keys::ApiKeys,
    /// What this process counted (`/metrics`; EMF lines in AWS).
    pub metrics: crate::metrics::Metrics,
    /// When an unknown token last made this process look for new deploys.
    miss_checked: std::sync::Mutex<Option<std::time::Instant>>,
    ids: std::sync::Mutex<ulid::Generator>,
    /// One lock per concurrency-limit record: this process's own takers and releasers
    /// queue here instead of racing each other's conditional writes.
    pub(crate) slot_locks: SlotLocks,
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
            secrets: Arc::new(Secrets::default()),
            config,
            cron_wake: tokio::sync::Notify::new(),
            limiter: Default::default(),
            keys: Default::default(),
            metrics: Default::default(),
            miss_checked: Default::default(),
            slot_locks: Default::default(),
            ids: std::sync::Mutex::new(ulid::Generator::new()),
        }
    }

    /// Where secrets are kept; `ttl`: how long a cached value is trusted where other
    /// processes set them (`None`: this process is the only writer).
    pub fn with_secrets(mut self, store: Arc<dyn SecretStore>, ttl: Option<Duration>) -> Self {
        self.secrets = Arc::new(Secrets::new(store, ttl));
        self.deployments.set_secrets(self.secrets.clone());
        self
    }

    /// Where cron triggers' schedules are kept outside this process (AWS): a deploy
    /// creates, updates and deletes them.
    pub fn with_schedules(self, schedules: Arc<dyn Schedules>) -> Self {
        self.deployments.set_schedules(schedules);
        self
    }

    /// Where kafka triggers' records come from outside this process (AWS: MSK): a deploy
    /// refuses a trigger it cannot deliver.
    pub fn with_kafka_source(self, source: Arc<dyn KafkaSource>) -> Self {
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
        if miss {
            // Unknown tokens look at the deploy marker at most once a second: a spray of
            // made-up tokens costs no store read per request.
            let mut last = self.miss_checked.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Err(e) = self.deployments.refresh(self.store.as_ref()).await {
            tracing::warn!(error = %e, "reloading the deployed workflows failed");
        }
    }
}

/// Wakes the callers that wait for a run to end (synchronous webhook replies).
#[derive(Default)]
pub struct Completions {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<Run>>>>,
}

impl Completions {
    /// Subscribe before the run can end; the receiver gets the ended run.
    pub fn subscribe(&self, run_id: &str) -> oneshot::Receiver<Run> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.waiting.lock() {
            m.entry(run_id.to_string()).or_default().push(tx);
        }
        rx
    }
    pub fn notify(&self, run: &Run) {
        let senders = self.waiting.lock().ok().and_then(|mut m| m.remove(&run.id));
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(run.clone());
        }
    }
    /// Drops subscriptions whose receiver is gone (a caller that stopped waiting).
    pub fn forget(&self, run_id: &str) {
        if let Ok(mut m) = self.waiting.lock()
            && let Some(v) = m.get_mut(run_id)
        {
            v.retain(|tx| !tx.is_closed());
            if v.is_empty() {
                m.remove(run_id);
            }
        }
    }
}

/// The per-record locks of one process (see `App::slot_locks`).
#[derive(Default)]
pub(crate) struct SlotLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl SlotLocks {
    pub(crate) fn of(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }
}
