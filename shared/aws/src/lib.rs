//! tripline-aws: the ports on AWS — [`DynamoStore`] (DynamoDB, with S3 for large
//! payloads) and [`SqsQueue`] — plus what every Lambda function shares: settings from the
//! environment, the clients built once per cold start, and the event handlers of the
//! step executor (SQS batches and the sweeper's schedule).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use tripline_app::outbound::OutboundPolicy;
use tripline_app::ports::{StoreError, SystemClock};
use tripline_app::{App, Config};

pub mod http_api;
pub mod lambda;
pub mod msk;
pub mod provision;
pub mod queue;
pub mod schedules;
pub mod secrets;
pub mod settings;
mod signed;
pub mod store;

pub use queue::SqsQueue;
pub use settings::{CallCounter, Clients, CronSettings, Settings, WRITE_UNITS};
pub use store::DynamoStore;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed AWS request: which operation, what the service said (its error code and
/// message when it answered; the whole error chain when it did not: timeouts, connection
/// failures), with the SDK's error kept as the cause.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {said}")]
pub struct AwsError {
    pub(crate) op: String,
    pub(crate) said: String,
    #[source]
    pub(crate) cause: BoxError,
}

/// A failed AWS request as a store error (retryable: the store could not be reached or
/// refused the call).
pub(crate) fn store_error<E>(op: &str, e: E) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let said = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(&e).to_string(),
    };
    StoreError::Unavailable(Box::new(AwsError {
        op: op.to_string(),
        said,
        cause: Box::new(e),
    }))
}

/// How long after a resume, decision or cancel its rescue item arrives (see
/// `Config::rescue_after`).
pub const RESCUE_AFTER: Duration = Duration::from_secs(60);

/// The settings of the use cases, from the environment the SAM template sets:
/// `TRIPLINE_SYNC_BUDGET` (e.g. `25s`), `TRIPLINE_MAX_BODY` (bytes), `TRIPLINE_ANSWER_LIMIT`
/// (bytes; an export's part, default 4 MiB), `TRIPLINE_API_KEY`,
/// `TRIPLINE_HIDE_UNKNOWN_TOKENS` (`true`), `TRIPLINE_PUBLIC_URL` (the base of resume and
/// approval URLs), `TRIPLINE_ALLOW_PRIVATE_NETWORK` (`true`, for
/// tests only) and `TRIPLINE_REWRITE_URL` (`FROM=TO`, comma-separated).
pub fn config_from_env() -> Result<Config, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let flag = |name: &str| var(name).is_some_and(|v| v == "true" || v == "1");
    let mut config = Config {
        poll_runs: true,
        refresh_workflows: Some(Duration::from_secs(5)),
        // SQS can fail after DynamoDB succeeded, and no process would notice.
        rescue_after: Some(RESCUE_AFTER),
        // Lambda's answer is at most 6 MB; some room for headers and base64.
        answer_limit: Some(4 * 1024 * 1024),
        ..Config::default()
    };
    if let Some(v) = var("TRIPLINE_SYNC_BUDGET") {
        config.sync_budget = tripline_core::Duration::parse(&v)
            .map_err(|e| format!("TRIPLINE_SYNC_BUDGET: {e}"))?
            .std();
    }
    if let Some(v) = var("TRIPLINE_ANSWER_LIMIT") {
        let bytes: usize = v
            .parse()
            .map_err(|_| format!("TRIPLINE_ANSWER_LIMIT: `{v}` is not a number of bytes"))?;
        config.answer_limit = Some(bytes.min(6 * 1024 * 1024));
    }
    if let Some(v) = var("TRIPLINE_STATE_LIMIT") {
        config.state_limit_bytes = v
            .parse()
            .map_err(|_| format!("TRIPLINE_STATE_LIMIT must be a number of bytes, not {v:?}"))?;
    }
    if let Some(v) = var("TRIPLINE_MAX_BODY") {
        config.max_body_bytes = v
            .parse()
            .map_err(|_| format!("TRIPLINE_MAX_BODY must be a number of bytes, not {v:?}"))?;
    }
    config.api_key = var("TRIPLINE_API_KEY");
    if let Some(why) = config
        .api_key
        .as_deref()
        .and_then(tripline_app::http::control::weak_api_key)
    {
        return Err(format!("TRIPLINE_API_KEY: {why}"));
    }
    config.public_url = var("TRIPLINE_PUBLIC_URL").unwrap_or_default();
    config.hide_unknown_tokens = flag("TRIPLINE_HIDE_UNKNOWN_TOKENS");
    let mut rewrites = Vec::new();
    for pair in var("TRIPLINE_REWRITE_URL")
        .iter()
        .flat_map(|v| v.split(','))
    {
        let (from, to) = pair
            .split_once('=')
            .ok_or_else(|| format!("TRIPLINE_REWRITE_URL: write each as FROM=TO, not {pair:?}"))?;
        rewrites.push((from.to_string(), to.to_string()));
    }
    config.outbound = OutboundPolicy {
        allow_private_networks: flag("TRIPLINE_ALLOW_PRIVATE_NETWORK"),
        rewrites,
    };
    Ok(config)
}

/// The use cases on the AWS adapters, with the stack's secrets.
pub fn build_app(clients: &Clients, settings: Settings, config: Config) -> Arc<App> {
    build_app_with(clients, settings, config, None)
}

/// The stack's secrets (SSM Parameter Store), cached for `settings.secrets_ttl`: other
/// functions set them.
fn with_secrets(app: App, clients: &Clients, settings: &Settings) -> App {
    let store = clients.ssm_secrets(&settings.secrets_prefix);
    app.with_secrets(Arc::new(store), Some(settings.secrets_ttl))
}

/// [`build_app`], with timers over 15 minutes going to `timers`.
pub fn build_app_with(
    clients: &Clients,
    settings: Settings,
    config: Config,
    timers: Option<Arc<dyn queue::LongTimers>>,
) -> Arc<App> {
    let mut queue = SqsQueue::new(clients.sqs.clone(), settings.queue_url.clone());
    if let Some(t) = timers {
        queue = queue.with_timers(t);
    }
    let with = settings.clone();
    Arc::new(with_secrets(
        new_app(clients, settings, config, queue),
        clients,
        &with,
    ))
}

fn new_app(clients: &Clients, settings: Settings, config: Config, queue: SqsQueue) -> App {
    let store = DynamoStore::new(clients, settings);
    let app = App::new(
        Arc::new(store),
        Arc::new(queue),
        Arc::new(SystemClock),
        config,
    );
    app.metrics.enable_emf();
    app
}

/// Prints what this invocation counted as CloudWatch embedded-metric-format lines (the
/// functions call it as each event is done).
pub fn flush_metrics(app: &App) {
    app.metrics.flush_emf(app.clock.now().millis());
}

/// What a function's `main` does first: settings and clients from the environment (once
/// per cold start). Nothing is read from the store yet, so the function is ready for its
/// first event at once: the webhook registry is loaded on first use (see
/// [`Config::refresh_workflows`]), workflow revisions when a run needs them. The functions
/// that render no request and check no credential (cron-tick, msk-consumer) keep no
/// secrets, and do not link the SSM client.
pub async fn app_from_env() -> Result<Arc<App>, BoxError> {
    let settings = Settings::from_env()?;
    let config = config_from_env()?;
    let clients = Clients::from_env(None).await;
    let queue = SqsQueue::new(clients.sqs.clone(), settings.queue_url.clone());
    Ok(Arc::new(new_app(&clients, settings, config, queue)))
}

/// [`app_from_env`] with the stack's secrets: for the webhook ingress (its webhooks'
/// credentials) and the resume-approval function (the review page's URLs are derived
/// under a key kept with the secrets).
pub async fn app_with_secrets_from_env() -> Result<Arc<App>, BoxError> {
    let settings = Settings::from_env()?;
    let config = config_from_env()?;
    let clients = Clients::from_env(None).await;
    Ok(build_app(&clients, settings, config))
}

/// [`app_from_env`] for the function that parks runs (the step executor): timers over 15
/// minutes become EventBridge Scheduler schedules when the template's timer settings are
/// set (`TRIPLINE_SCHEDULE_GROUP`, `TRIPLINE_QUEUE_ARN`, `TRIPLINE_SCHEDULER_ROLE_ARN`).
/// Also the store itself, which writes the listings' index from the runs table's stream.
pub async fn executor_app_from_env() -> Result<(Arc<App>, DynamoStore), BoxError> {
    let settings = Settings::from_env()?;
    let config = config_from_env()?;
    let clients = Clients::from_env(None).await;
    let timers = settings.timers.clone().map(|t| {
        Arc::new(queue::SchedulerTimers::new(clients.scheduler(), t)) as Arc<dyn queue::LongTimers>
    });
    let store = DynamoStore::new(&clients, settings.clone());
    Ok((build_app_with(&clients, settings, config, timers), store))
}

/// [`app_from_env`] for the control API: a deploy keeps cron triggers' EventBridge
/// Scheduler schedules in step when the template's cron settings are set
/// (`TRIPLINE_CRON_GROUP`, `TRIPLINE_CRON_TARGET_ARN`, `TRIPLINE_CRON_ROLE_ARN`).
pub async fn control_app_from_env() -> Result<Arc<App>, BoxError> {
    let settings = Settings::from_env()?;
    let mut config = config_from_env()?;
    let clients = Clients::from_env(None).await;
    if let Some(name) = std::env::var("TRIPLINE_API_KEY_PARAMETER")
        .ok()
        .filter(|v| !v.is_empty())
    {
        config.api_key = Some(api_key_from(&clients, &name).await?);
    }
    Ok(build_control_app(&clients, settings, config))
}

/// The control API's key, from the SSM parameter the stack keeps it in (read once, at
/// cold start: never in the function's environment, where anyone who may read the
/// function's configuration would see it).
async fn api_key_from(clients: &Clients, parameter: &str) -> Result<String, BoxError> {
    let key = clients
        .ssm_secrets("")
        .parameter(parameter)
        .await?
        .ok_or_else(|| format!("TRIPLINE_API_KEY_PARAMETER: no parameter `{parameter}`"))?;
    if let Some(why) = tripline_app::http::control::weak_api_key(&key) {
        return Err(format!("the API key in `{parameter}`: {why}").into());
    }
    Ok(key)
}

/// The control API's use cases on the AWS adapters, with the cron schedules.
pub fn build_control_app(clients: &Clients, settings: Settings, config: Config) -> Arc<App> {
    let cron = settings.cron.clone();
    let msk = settings.msk.clone();
    let queue = SqsQueue::new(clients.sqs.clone(), settings.queue_url.clone());
    let with = settings.clone();
    let app = with_secrets(new_app(clients, settings, config, queue), clients, &with);
    if let Some(max) = with.retention {
        app.deployments.set_retention_max(max);
    }
    let app = app.with_kafka_source(Arc::new(msk::MskSource::new(
        clients.sdk_config(),
        clients.counter(),
        msk,
    )));
    Arc::new(match cron {
        Some(cron) => app.with_schedules(Arc::new(schedules::EventBridgeSchedules::new(
            clients.scheduler(),
            cron,
        ))),
        None => app,
    })
}

/// Logs as JSON lines (CloudWatch; Lambda adds the time), at the level `RUST_LOG` names:
/// `error`, `warn`, `info` (the default), `debug` or `trace`.
pub fn init_tracing() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::level_filters::LevelFilter>().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .init();
}
