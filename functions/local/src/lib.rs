//! The `tripline` binary's library: `serve` wires every use case on the embedded adapters in
//! one process. The tests start the same server in-process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tripline_app::ports::{Clock, Queue, SecretStore, Store, SystemClock};
use tripline_app::{App, Config};
use tripline_core::definition::Trigger;
use tripline_core::validate::Format;
use tripline_embedded::{EmbeddedQueue, EmbeddedSecrets, EmbeddedStore, SecretsKey};

pub mod kafka;
pub mod redeploy;

/// Settings of `tripline serve`.
#[derive(Clone)]
pub struct ServeOptions {
    /// Definitions deployed at start (every `.yaml`, `.yml`, `.json`); none when `None`.
    pub workflows: Option<PathBuf>,
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub workers: usize,
    /// How long in-flight steps may take to finish at shutdown.
    pub grace: Duration,
    pub config: Config,
    /// The Kafka cluster whose topics `kafka` triggers consume; none when `None`.
    pub kafka: Option<kafka::KafkaOptions>,
    /// The secrets key file (`--secrets-key-file`); `None`: `TRIPLINE_SECRETS_KEY`, else the
    /// data folder's `secrets.key`, made at first start.
    pub secrets_key_file: Option<PathBuf>,
    /// The secret store to use with [`Server::start_with`] (`start` makes the embedded
    /// one); `None` there: the server keeps no secrets.
    pub secret_store: Option<Arc<dyn SecretStore>>,
}

/// The embedded secret store of a data folder, with its key (see [`ServeOptions`]).
pub fn embedded_secrets(
    store: &EmbeddedStore,
    data: &Path,
    key_file: Option<&Path>,
) -> anyhow::Result<EmbeddedSecrets> {
    let env = std::env::var(tripline_embedded::KEY_ENV).ok();
    let key = SecretsKey::load(data, key_file, env.as_deref())?;
    Ok(EmbeddedSecrets::new(store.clone(), &key))
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    workers: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    consumer: Option<JoinHandle<()>>,
}

/// The definition files of a folder, sorted.
pub fn definition_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the workflows folder {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Validates and deploys every definition in `dir`; fails listing every problem of every
/// file, deploying none, when any is invalid.
async fn deploy_folder(app: &App, dir: &Path) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    let mut report = String::new();
    for file in definition_files(dir)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let format = Format::from_path(&file.to_string_lossy());
        match tripline_core::validate::load(&text, format) {
            Ok(_) => texts.push((file, text, format)),
            Err(problems) => {
                for p in problems {
                    report.push_str(&format!("{}:{p}\n", file.display()));
                }
            }
        }
    }
    if !report.is_empty() {
        bail!("invalid workflow definitions; nothing was deployed:\n{report}");
    }
    for (file, text, format) in texts {
        let deployed = app
            .deployments
            .deploy_text(app.store.as_ref(), &text, format, None, app.clock.now())
            .await
            .map_err(|e| match e {
                tripline_app::deploy::DeployError::Invalid(ps) => {
                    let list: Vec<String> = ps
                        .iter()
                        .map(|p| format!("{}:{p}", file.display()))
                        .collect();
                    anyhow::anyhow!("cannot deploy {}:\n{}", file.display(), list.join("\n"))
                }
                other => anyhow::anyhow!("cannot deploy {}: {other}", file.display()),
            })?;
        for w in &deployed.warnings {
            tracing::warn!("{}:{w}", file.display());
        }
        app.sync_once(&deployed.record).await?;
    }
    Ok(())
}

/// `GET /readyz`: `200` when this server can take work, `503` when not, with why: the
/// store answers a read; where Kafka triggers are deployed and the server has a cluster,
/// its shared consumer reaches it (`kafka`: each partition's position, high watermark and
/// lag); and each trigger read by a consumer of its own reaches its cluster
/// (`kafka_triggers`, by `workflow/trigger`). `/healthz` only says the process answers.
async fn readyz(app: Arc<App>, kafka: Readiness) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let store = app.store.marker("readyz").await;
    let mut ready = store.is_ok();
    let mut body = serde_json::json!({
        "store": store.as_ref().map_or_else(|e| e.to_string(), |_| "ok".to_string()),
    });
    if let Some(k) = kafka.shared {
        let topics = app.kafka_topics();
        let state = k.state();
        if !topics.is_empty() && !state.connected {
            ready = false;
        }
        body["kafka"] = serde_json::json!(state);
        body["kafka"]["topics"] = serde_json::json!(topics);
    }
    let triggers = kafka.triggers.states();
    if !triggers.is_empty() {
        ready &= triggers.values().all(|s| s.connected);
        body["kafka_triggers"] = serde_json::json!(triggers);
    }
    body["ready"] = serde_json::json!(ready);
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// What `/readyz` reads of the Kafka consumers.
#[derive(Clone)]
struct Readiness {
    /// The shared consumer's, when the server has a cluster.
    shared: Option<Arc<kafka::KafkaHealth>>,
    triggers: Arc<kafka::TriggerHealth>,
}

/// The HTTP server (the App's routes and `/readyz`) until `stopped` turns true.
async fn serve_http(
    app: Arc<App>,
    health: Readiness,
    listener: tokio::net::TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    let ready_app = app.clone();
    let router = app.router().route(
        "/readyz",
        axum::routing::get(move || readyz(ready_app.clone(), health.clone())),
    );
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "the HTTP server failed");
    }
}

/// The Kafka consumers (always: triggers with a `cluster` of their own are read without a
/// server cluster), and what `/readyz` reads of them.
fn start_consumers(
    app: &Arc<App>,
    kafka: Option<kafka::KafkaOptions>,
    stopped: watch::Receiver<bool>,
) -> (Option<tokio::task::JoinHandle<()>>, Readiness) {
    let consumers = kafka.clone().unwrap_or_else(kafka::KafkaOptions::none);
    let shared = kafka.as_ref().filter(|k| !k.bootstrap.is_empty());
    let health = Readiness {
        shared: shared.map(|k| k.health.clone()),
        triggers: consumers.triggers.clone(),
    };
    let consumer = tokio::spawn(kafka::run(app.clone(), consumers, stopped));
    if shared.is_none() {
        let topics = app.kafka_topics();
        if !topics.is_empty() {
            tracing::warn!(
                topics = %topics.join(","),
                "kafka triggers are deployed but no Kafka cluster is configured, so they receive nothing; pass --kafka-bootstrap host:port"
            );
        }
    }
    (Some(consumer), health)
}

/// How long the Kafka consumer has to stop at shutdown.
const CONSUMER_GRACE: Duration = Duration::from_secs(5);

impl Server {
    /// Opens the store, deploys the folder's workflows, binds, and starts the HTTP server
    /// and the executor workers.
    pub async fn start(mut opts: ServeOptions) -> anyhow::Result<Server> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = EmbeddedStore::open(&opts.data)?;
        let queue = EmbeddedQueue::new(store.clone(), clock.clone());
        let secrets = embedded_secrets(&store, &opts.data, opts.secrets_key_file.as_deref())?;
        opts.secret_store = Some(Arc::new(secrets));
        Self::start_with(opts, Arc::new(store), Arc::new(queue), clock).await
    }

    /// Like [`Server::start`] over given ports (tests wrap the embedded ones to inject
    /// faults); `opts.data` is not used.
    pub async fn start_with(
        opts: ServeOptions,
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Server> {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}; is another server using it? pass --listen",
                    opts.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let mut config = opts.config.clone();
        if config.public_url.is_empty() {
            config.public_url = format!("http://{addr}");
        }
        let mut app = App::new(store, queue, clock, config);
        if let Some(secrets) = opts.secret_store.clone() {
            // This process is the store's only writer: a cached value lives until it is
            // set again here.
            app = app.with_secrets(secrets, None);
        }
        let app = Arc::new(app);
        app.deployments
            .load(app.store.as_ref())
            .await
            .context("cannot load the deployed workflows")?;
        if let Some(dir) = &opts.workflows {
            deploy_folder(&app, dir).await?;
        }
        // The `once` runs of every deployed workflow (a deploy that failed to record them,
        // or one made through the API before a crash): found, or recorded now.
        for rec in app.deployments.all() {
            app.sync_once(&rec).await?;
        }
        let (stop, stopped) = watch::channel(false);

        let workers = tokio::spawn(app.clone().run_workers(
            opts.workers,
            stopped.clone(),
            opts.grace,
        ));
        let scheduler = tokio::spawn(app.clone().run_scheduler(stopped.clone()));
        let upkeep = tokio::spawn(
            app.clone()
                .run_upkeep(tripline_app::upkeep::UPKEEP_EVERY, stopped.clone()),
        );
        let (consumer, health) = start_consumers(&app, opts.kafka.clone(), stopped.clone());
        let http = tokio::spawn(serve_http(app.clone(), health, listener, stopped));
        Ok(Server {
            addr,
            app,
            stop,
            http,
            workers,
            scheduler,
            upkeep,
            consumer,
        })
    }

    /// The webhook URLs of the deployed workflows, for the start-up banner.
    pub fn hook_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for rec in self.app.deployments.all() {
            for t in &rec.definition.triggers {
                match t {
                    Trigger::Webhook(w) => lines.push(format!(
                        "  {:<7} http://{}/hooks/{}  ({} / {}, {})",
                        w.methods
                            .iter()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        self.addr,
                        w.token.as_deref().unwrap_or_default(),
                        rec.id,
                        w.id,
                        if w.response == tripline_core::definition::ResponseMode::Sync {
                            "sync"
                        } else {
                            "async"
                        },
                    )),
                    Trigger::Manual(_) => lines.push(format!(
                        "  POST    http://{}/v1/workflows/{}/runs  ({} / manual)",
                        self.addr, rec.id, rec.id
                    )),
                    Trigger::Once(o) => lines.push(format!(
                        "  ONCE    at {}  ({} / {})",
                        o.instant().map_or_else(|e| e.0, |t| t.to_string()),
                        rec.id,
                        o.id
                    )),
                    Trigger::Flow(f) => lines.push(format!(
                        "  FLOW    after {} {}  ({} / {}{})",
                        f.workflow,
                        f.on.iter()
                            .map(|o| o.as_str())
                            .collect::<Vec<_>>()
                            .join("|"),
                        rec.id,
                        f.id,
                        if f.for_each { ", for each item" } else { "" }
                    )),
                    Trigger::Kafka(k) => lines.push(format!(
                        "  KAFKA   {}  ({} / {})",
                        k.topics.join(", "),
                        rec.id,
                        k.id
                    )),
                    Trigger::Cron(c) => lines.push(format!(
                        "  CRON    {} {}  ({} / {}; next {}; run now: POST http://{}/v1/workflows/{}/runs?trigger={})",
                        c.schedule,
                        c.timezone.as_deref().unwrap_or("UTC"),
                        rec.id,
                        c.id,
                        c.parsed()
                            .ok()
                            .and_then(|s| s.next_after(self.app.clock.now()))
                            .map_or_else(|| "never".to_string(), |t| t.to_string()),
                        self.addr,
                        rec.id,
                        c.id
                    )),
                }
            }
        }
        lines
    }

    /// Stops accepting requests, lets in-flight steps finish (within the grace period) and
    /// returns. Work not finished stays in the durable queue for the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.http.await;
        let _ = self.scheduler.await;
        let _ = self.upkeep.await;
        if let Some(c) = self.consumer {
            // The consumer may be stuck retrying a broker that is down: it gets a few
            // seconds, then is stopped (a record it was admitting is read again at the next
            // start, and its derived ids make that a duplicate).
            let abort = c.abort_handle();
            if tokio::time::timeout(CONSUMER_GRACE, c).await.is_err() {
                tracing::warn!("the Kafka consumer did not stop in time; stopped");
                abort.abort();
            }
        }
        let _ = self.workers.await;
    }
}
