//! `tripline`: the local shape's server and CLI.

use std::net::SocketAddr;

/// glibc's malloc took a fifth of the CPU under load, much of it waiting on its arenas'
/// locks (perf); mimalloc doubled ingest at c=64. Built with its arenas committed as they
/// are used, not up front (`.cargo/config.toml`), which keeps 11 MiB off the idle size.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tripline_app::Config;
use tripline_app::outbound::OutboundPolicy;
use tripline_core::validate::{Format, load};
use tripline_local::{ServeOptions, Server};

mod client;
mod keys;
mod secrets;

#[derive(Parser)]
#[command(
    name = "tripline",
    version,
    about = "Tripline: workflow triggers, steps and runs that are never lost"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process on the embedded store.
    Serve(Box<Serve>),
    /// Check workflow definitions; reports every problem with its line and column.
    Validate {
        /// Definition files (.yaml, .yml, .json).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the workflow definition format (for editors).
    Schema,
    /// Set, list and remove secrets (`{{ secrets.NAME }}` in definitions).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Make, list and remove scoped control API keys (read, operate, deploy, admin).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A server's workflows: list, get, enable, disable, deploy DIR, diff DIR.
    Workflows(Workflows),
    /// A server's runs: list, get, cancel, retry, watch.
    Runs(Runs),
    /// A server's inbox: list, get, reprocess.
    Inbox(Inbox),
    /// Retry, cancel or reprocess everything a filter selects, as a job with progress.
    Bulk(Bulk),
    /// Every run or inbox message a filter selects, as CSV or NDJSON, to standard output.
    Export(Export),
    /// Deploy a folder of definitions to a server: what `diff` shows, applied (removals
    /// only with --prune). Exit codes: 0 done, 1 server failed, 3 not found, 4 refused.
    Deploy(DeployTo),
    /// Show what deploying a folder would change: workflows and triggers added, changed
    /// (with a diff) or removed. Exit code 0: nothing would change; 5: something would.
    Diff(DeployTo),
}

#[derive(clap::Args)]
struct Workflows {
    #[command(subcommand)]
    cmd: client::WorkflowsCommand,
    #[command(flatten)]
    at: client::ServerArgs,
}

#[derive(clap::Args)]
struct Runs {
    #[command(subcommand)]
    cmd: client::RunsCommand,
    #[command(flatten)]
    at: client::ServerArgs,
}

#[derive(clap::Args)]
struct Inbox {
    #[command(subcommand)]
    cmd: client::InboxCommand,
    #[command(flatten)]
    at: client::ServerArgs,
}

#[derive(clap::Args)]
struct Bulk {
    #[command(subcommand)]
    cmd: client::BulkCommand,
    #[command(flatten)]
    at: client::ServerArgs,
}

#[derive(clap::Args)]
struct Export {
    #[command(subcommand)]
    cmd: client::ExportCommand,
    #[command(flatten)]
    at: client::ServerArgs,
}

#[derive(clap::Args)]
struct DeployTo {
    #[command(flatten)]
    args: client::DeployArgs,
    #[command(flatten)]
    at: client::ServerArgs,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key; it is printed once, alone on standard output.
    Create {
        /// A name for the audit log: letters, digits and `_`.
        name: String,
        /// read, operate, deploy or admin (each includes the ones before it).
        #[arg(long)]
        scope: String,
        #[command(flatten)]
        at: SecretsAt,
    },
    /// List the keys: names, scopes, when each was made. Never values.
    List {
        #[command(flatten)]
        at: SecretsAt,
    },
    /// Remove a key: it stops working at once.
    Rm {
        name: String,
        #[command(flatten)]
        at: SecretsAt,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Set a secret: the value is read from standard input (never from the command line,
    /// where the shell's history and `ps` would keep it), one trailing newline removed.
    Set {
        name: String,
        #[command(flatten)]
        at: SecretsAt,
    },
    /// List the secrets: names, when each was set, which workflows read it. Never values.
    List {
        #[command(flatten)]
        at: SecretsAt,
    },
    /// Remove a secret.
    Rm {
        name: String,
        /// Remove it even while deployed workflows read it.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: SecretsAt,
    },
}

/// Where the secrets are: a data folder (when no server has it open), or a running
/// server's control API.
#[derive(clap::Args)]
struct SecretsAt {
    /// Folder of the embedded store.
    #[arg(long, default_value = "data", env = "TRIPLINE_DATA")]
    data: PathBuf,
    /// The secrets key file [default: TRIPLINE_SECRETS_KEY, else DATA/secrets.key].
    #[arg(long, env = "TRIPLINE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// A running server to go through (its control API), e.g. http://127.0.0.1:8787: needed
    /// while `tripline serve` has the data folder open.
    #[arg(long, env = "TRIPLINE_SERVER")]
    server: Option<String>,
    /// The server's control API key.
    #[arg(long, env = "TRIPLINE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(clap::Args)]
struct Serve {
    /// Folder of workflow definitions to deploy at start [default: ./examples when it
    /// exists, else none: only what the store already has].
    #[arg(long, env = "TRIPLINE_WORKFLOWS")]
    workflows: Option<PathBuf>,
    /// Folder of the embedded store.
    #[arg(long, default_value = "data", env = "TRIPLINE_DATA")]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8787", env = "TRIPLINE_LISTEN")]
    listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body: usize,
    /// Answer unknown webhook tokens with 200 {"received": true} instead of 404.
    #[arg(long)]
    hide_unknown_tokens: bool,
    /// Key required by the control API (/v1/...) as `Authorization: Bearer <key>`.
    #[arg(long, env = "TRIPLINE_API_KEY")]
    api_key: Option<String>,
    /// Let http steps reach loopback and private networks.
    #[arg(long)]
    allow_private_network: bool,
    /// Send http steps for a URL prefix elsewhere: FROM=TO (repeatable).
    #[arg(long, value_parser = parse_rewrite)]
    rewrite_url: Vec<(String, String)>,
    /// The base of the resume and approval URLs that parked runs expose, as their callers
    /// reach this server (default: http://<listen address>).
    #[arg(long, env = "TRIPLINE_PUBLIC_URL")]
    public_url: Option<String>,
    /// The largest cron state carried between runs, in bytes of JSON.
    #[arg(long, default_value_t = tripline_app::STATE_LIMIT)]
    state_limit: usize,
    /// Kafka brokers (host:port, comma-separated) whose topics `kafka` triggers consume;
    /// none: no Kafka consumer.
    #[arg(long, env = "TRIPLINE_KAFKA_BOOTSTRAP", value_delimiter = ',')]
    kafka_bootstrap: Vec<String>,
    /// The consumer group: names the positions kept in the store.
    #[arg(long, default_value = "tripline", env = "TRIPLINE_KAFKA_GROUP")]
    kafka_group: String,
    /// Where a new group starts on a partition: earliest, latest, an RFC 3339 time or Unix
    /// milliseconds.
    #[arg(long, default_value = "latest", env = "TRIPLINE_KAFKA_START")]
    kafka_start: tripline_local::kafka::StartAt,
    /// SASL user name (with TRIPLINE_KAFKA_SASL_PASSWORD).
    #[arg(long, env = "TRIPLINE_KAFKA_SASL_USER")]
    kafka_sasl_user: Option<String>,
    /// The SASL mechanism: plain, scram-sha-256 or scram-sha-512.
    #[arg(long, default_value = "plain", env = "TRIPLINE_KAFKA_SASL_MECHANISM", value_parser = parse_mechanism)]
    kafka_sasl_mechanism: tripline_local::kafka::SaslMechanism,
    #[arg(long, env = "TRIPLINE_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    kafka_sasl_password: Option<String>,
    /// Connect to the brokers over TLS, checking their certificates against the public web
    /// roots (and --kafka-tls-ca). Implied by the other --kafka-tls-* options.
    #[arg(long, env = "TRIPLINE_KAFKA_TLS")]
    kafka_tls: bool,
    /// A PEM file of CA certificates the brokers' certificates may also chain to.
    #[arg(long, env = "TRIPLINE_KAFKA_TLS_CA")]
    kafka_tls_ca: Option<PathBuf>,
    /// A PEM client certificate (chain) for mutual TLS, with --kafka-tls-key.
    #[arg(long, env = "TRIPLINE_KAFKA_TLS_CERT")]
    kafka_tls_cert: Option<PathBuf>,
    /// The PEM private key of --kafka-tls-cert.
    #[arg(long, env = "TRIPLINE_KAFKA_TLS_KEY")]
    kafka_tls_key: Option<PathBuf>,
    /// Steps executed at once.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Default wait of sync webhook replies, e.g. 25s.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    sync_budget: Duration,
    /// The key that encrypts secrets: a file of 32 bytes (raw or base64) [default:
    /// TRIPLINE_SECRETS_KEY, else DATA/secrets.key, generated at first start].
    #[arg(long, env = "TRIPLINE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Read a webhook client's address (for `ip_allowlist`) from the last entry of
    /// X-Forwarded-For: only behind a proxy that sets it.
    #[arg(long)]
    trust_forwarded_for: bool,
    /// Webhook requests per second per token (a burst of twice that); over it, 429 with
    /// Retry-After. 0: no limit.
    #[arg(long, default_value_t = 5000)]
    rate_limit: u32,
    /// Webhook requests per second per client address (behind a proxy, with
    /// --trust-forwarded-for). 0: no limit.
    #[arg(long, default_value_t = 0)]
    client_rate_limit: u32,
    /// How long runs, inbox messages and ticks are kept when their workflow sets no
    /// `retention` (e.g. 30d, 12h); `off` keeps them forever. Runs still queued, running or
    /// waiting are never deleted.
    #[arg(long, default_value = "30d", value_parser = retention)]
    retention: Retention,
    /// Deploy a definition of the workflows folder again whenever its file changes.
    #[arg(long)]
    watch: bool,
}

/// `--retention`: a duration, or `off` (`None`).
#[derive(Clone, Copy, Debug)]
struct Retention(Option<std::time::Duration>);

fn retention(s: &str) -> Result<Retention, String> {
    if s == "off" {
        return Ok(Retention(None));
    }
    let d = tripline_core::Duration::parse(s)
        .map_err(|e| e.to_string())?
        .std();
    if !(tripline_core::validate::MIN_RETENTION..=tripline_core::validate::MAX_RETENTION)
        .contains(&d)
    {
        return Err("retention is from 1h to 3650d, or `off`".into());
    }
    Ok(Retention(Some(d)))
}

/// The Kafka consumer's options, or why they do not fit together. TLS files are read
/// here, so a bad one stops the start with its name.
fn kafka_options(s: &Serve) -> anyhow::Result<Option<tripline_local::kafka::KafkaOptions>> {
    let tls_asked = s.kafka_tls || s.kafka_tls_ca.is_some() || s.kafka_tls_cert.is_some();
    if s.kafka_bootstrap.is_empty() {
        if s.kafka_sasl_user.is_some() {
            anyhow::bail!(
                "the --kafka-sasl-* options need --kafka-bootstrap host:port (a trigger's own cluster names its SASL settings in its definition)"
            );
        }
        if !tls_asked {
            return Ok(None);
        }
        // TLS files without a server cluster: what the triggers' own clusters use.
    }
    let sasl = match (&s.kafka_sasl_user, &s.kafka_sasl_password) {
        (Some(u), Some(p)) => Some(tripline_local::kafka::Sasl {
            mechanism: s.kafka_sasl_mechanism,
            username: u.clone(),
            password: p.clone(),
        }),
        (None, None) => None,
        _ => anyhow::bail!(
            "SASL needs both --kafka-sasl-user and --kafka-sasl-password (or TRIPLINE_KAFKA_SASL_USER and TRIPLINE_KAFKA_SASL_PASSWORD)"
        ),
    };
    let client = match (&s.kafka_tls_cert, &s.kafka_tls_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => anyhow::bail!("mutual TLS needs both --kafka-tls-cert and --kafka-tls-key"),
    };
    let tls = tls_asked
        .then(|| tripline_local::kafka::tls_config(s.kafka_tls_ca.as_deref(), client))
        .transpose()?;
    Ok(Some(tripline_local::kafka::KafkaOptions {
        bootstrap: s.kafka_bootstrap.clone(),
        group: s.kafka_group.clone(),
        start: s.kafka_start,
        sasl,
        tls,
        refresh: Duration::from_secs(5),
        health: Default::default(),
        triggers: Default::default(),
    }))
}

fn parse_mechanism(s: &str) -> Result<tripline_local::kafka::SaslMechanism, String> {
    use tripline_local::kafka::SaslMechanism::*;
    match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "plain" => Ok(Plain),
        "scram-sha-256" => Ok(ScramSha256),
        "scram-sha-512" => Ok(ScramSha512),
        _ => Err("use plain, scram-sha-256 or scram-sha-512".into()),
    }
}

fn parse_rewrite(s: &str) -> Result<(String, String), String> {
    let (from, to) = s
        .split_once('=')
        .ok_or("write it as FROM=TO, e.g. https://api.example.com=http://127.0.0.1:9000")?;
    Ok((from.to_string(), to.to_string()))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tripline_core::Duration::parse(s)
        .map(|d| d.std())
        .map_err(String::from)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema => {
            let schema = schemars::schema_for!(tripline_core::Workflow);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Validate { files } => validate(&files),
        Command::Serve(s) => serve(*s),
        Command::Secrets(c) => secrets::run(c),
        Command::Keys(c) => keys::run(c),
        Command::Workflows(w) => {
            let c = client::Client::new(&w.at);
            client::run(async move { client::workflows(&c, w.cmd).await })
        }
        Command::Runs(r) => {
            let c = client::Client::new(&r.at);
            client::run(async move { client::runs(&c, r.cmd).await })
        }
        Command::Inbox(i) => {
            let c = client::Client::new(&i.at);
            client::run(async move { client::inbox(&c, i.cmd).await })
        }
        Command::Bulk(b) => {
            let c = client::Client::new(&b.at);
            client::run(async move { client::bulk(&c, b.cmd).await })
        }
        Command::Export(e) => {
            let c = client::Client::new(&e.at);
            client::run(async move { client::export(&c, e.cmd).await })
        }
        Command::Deploy(d) => {
            let c = client::Client::new(&d.at);
            client::run(async move { client::deploy(&c, &d.args, true).await })
        }
        Command::Diff(d) => {
            let c = client::Client::new(&d.at);
            client::run(async move { client::deploy(&c, &d.args, false).await })
        }
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", f.display());
                failed = true;
                continue;
            }
        };
        match load(&text, Format::from_path(&f.to_string_lossy())) {
            Ok(wf) => {
                println!(
                    "{}: ok (workflow `{}`, {} step(s))",
                    f.display(),
                    wf.id,
                    wf.steps.len()
                );
                for w in tripline_core::validate::warnings(&wf) {
                    eprintln!("{}: warning: {w}", f.display());
                }
            }
            Err(problems) => {
                failed = true;
                for p in &problems {
                    eprintln!("{}:{p}", f.display());
                }
                eprintln!("{}: {} problem(s)", f.display(), problems.len());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The use cases' settings from `serve`'s flags.
fn config(s: &Serve) -> Config {
    Config {
        max_body_bytes: s.max_body,
        hide_unknown_tokens: s.hide_unknown_tokens,
        sync_budget: s.sync_budget,
        api_key: s.api_key.clone(),
        browser_guard: true,
        public_url: s.public_url.clone().unwrap_or_default(),
        state_limit_bytes: s.state_limit,
        trust_forwarded_for: s.trust_forwarded_for,
        rate_limits: tripline_app::limits::RateLimits {
            per_token: s.rate_limit,
            per_client: s.client_rate_limit,
        },
        retention: s.retention.0,
        outbound: OutboundPolicy {
            allow_private_networks: s.allow_private_network,
            rewrites: s.rewrite_url.clone(),
        },
        ..Config::default()
    }
}

fn serve(s: Serve) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        // Logs on standard error; standard output has the banner (the address, the hooks).
        .with_writer(std::io::stderr)
        .init();
    if let Some(why) = s
        .api_key
        .as_deref()
        .and_then(tripline_app::http::control::weak_api_key)
    {
        eprintln!("error: --api-key: {why}");
        return ExitCode::FAILURE;
    }
    if !s.listen.ip().is_loopback() && s.api_key.is_none() {
        eprintln!(
            "error: listening on {} (not loopback) needs --api-key (or TRIPLINE_API_KEY) to protect the control API",
            s.listen
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kafka = match kafka_options(&s) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let config = config(&s);
    let watch = s.watch;
    let opts = ServeOptions {
        workflows: s.workflows.or_else(|| {
            let examples = PathBuf::from("examples");
            examples.is_dir().then_some(examples)
        }),
        data: s.data,
        listen: s.listen,
        workers: s.workers.max(1),
        grace: Duration::from_secs(20),
        config,
        kafka,
        secrets_key_file: s.secrets_key_file,
        secret_store: None,
    };
    let watch_dir = opts.workflows.clone().filter(|_| watch);
    runtime.block_on(run_server(opts, watch_dir))
}

/// Runs the server until SIGINT or SIGTERM: the banner on stdout, the folder watched when
/// asked, then a graceful stop.
async fn run_server(opts: ServeOptions, watch_dir: Option<PathBuf>) -> ExitCode {
    let server = match Server::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("tripline listening on http://{}", server.addr);
    for line in server.hook_lines() {
        println!("{line}");
    }
    let watcher =
        watch_dir.map(|dir| tokio::spawn(tripline_local::redeploy::watch(server.app.clone(), dir)));
    wait_for_signal().await;
    if let Some(w) = watcher {
        w.abort();
    }
    tracing::info!("shutting down: finishing in-flight steps");
    server.stop().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
