//! The one harness of the end-to-end tests: the real server on port 0 with a fresh store,
//! a downstream stub on loopback, and helpers to drive them over HTTP.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tempfile::TempDir;
use tripline_app::Config;
use tripline_app::outbound::OutboundPolicy;
use tripline_local::{ServeOptions, Server};

pub use serde_json;

pub mod aws;
pub mod conformance;
pub mod lambda;
pub mod seed;
pub mod shape;
pub mod stream;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Options of a test server.
pub struct Opts {
    /// `(file name, definition)` written to a fresh workflows folder.
    pub workflows: Vec<(String, String)>,
    /// Deploy a folder of the repository instead (e.g. `examples`).
    pub folder: Option<PathBuf>,
    pub config: Config,
    /// Where a manual clock starts (now when `None`).
    pub clock_start: Option<tripline_core::Timestamp>,
    /// A Kafka cluster to consume (`serve`'s Kafka options).
    pub kafka: Option<tripline_local::kafka::KafkaOptions>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            workflows: Vec::new(),
            folder: None,
            clock_start: None,
            kafka: None,
            config: Config {
                outbound: OutboundPolicy {
                    allow_private_networks: true,
                    rewrites: Vec::new(),
                },
                ..Config::default()
            },
        }
    }
}

impl Opts {
    pub fn workflow(mut self, name: &str, yaml: &str) -> Self {
        self.workflows.push((name.to_string(), yaml.to_string()));
        self
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub server: Option<Server>,
    pub data: TempDir,
    _workflows: TempDir,
    folder: PathBuf,
    config: Config,
    kafka: Option<tripline_local::kafka::KafkaOptions>,
}

/// Starts the real server in-process on port 0 with a fresh store.
pub async fn spawn_app(opts: Opts) -> TestApp {
    let (data, wf_dir) = fresh_dirs(&opts);
    let folder = opts
        .folder
        .clone()
        .unwrap_or_else(|| wf_dir.path().to_path_buf());
    let server = start_server(
        &folder,
        data.path(),
        opts.config.clone(),
        opts.kafka.clone(),
    )
    .await;
    let mut app = TestApp::new(server, data, wf_dir, folder, opts.config);
    app.kafka = opts.kafka;
    app
}

/// A fresh data folder, and a workflows folder with the options' definitions.
fn fresh_dirs(opts: &Opts) -> (TempDir, TempDir) {
    let data = TempDir::new().expect("temp dir");
    let wf_dir = TempDir::new().expect("temp dir");
    for (name, yaml) in &opts.workflows {
        std::fs::write(wf_dir.path().join(name), yaml).expect("write workflow");
    }
    (data, wf_dir)
}

/// Time that moves only when a test says so: the server's clock and its queue's timers.
pub struct ManualTime {
    pub clock: Arc<tripline_app::ports::ManualClock>,
    // `None` only while the server restarts (the store is opened by one owner at a time).
    queue: Option<tripline_embedded::EmbeddedQueue>,
    app: Option<Arc<tripline_app::App>>,
}

impl ManualTime {
    /// Moves the clock on and wakes the executor and the cron scheduler, so timers and
    /// ticks now due fire.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
        if let Some(q) = &self.queue {
            q.wake();
        }
        if let Some(a) = &self.app {
            a.cron_wake.notify_one();
        }
    }

    /// Moves the clock without waking anything (time that passes while the server is
    /// stopped).
    pub fn pass(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// The manual clock's now plus `d`, in RFC 3339.
    pub fn clock_now_plus(&self, d: Duration) -> String {
        use tripline_app::ports::Clock;
        self.clock.now().plus(d).to_string()
    }
}

/// Like [`spawn_app`], on a manual clock (the embedded store and queue as in `serve`).
pub async fn spawn_app_with_manual_clock(opts: Opts) -> (TestApp, ManualTime) {
    let (data, wf_dir) = fresh_dirs(&opts);
    let folder = wf_dir.path().to_path_buf();
    let start = opts.clock_start.unwrap_or_else(|| {
        tripline_core::Timestamp::from_system_time(std::time::SystemTime::now())
    });
    let clock = Arc::new(tripline_app::ports::ManualClock::new(start));
    let (server, queue) = start_manual(&folder, data.path(), &opts.config, &clock).await;
    let app = server.app.clone();
    let test_app = TestApp::new(server, data, wf_dir, folder, opts.config);
    (
        test_app,
        ManualTime {
            clock,
            queue: Some(queue),
            app: Some(app),
        },
    )
}

async fn start_manual(
    folder: &std::path::Path,
    data: &std::path::Path,
    config: &Config,
    clock: &Arc<tripline_app::ports::ManualClock>,
) -> (Server, tripline_embedded::EmbeddedQueue) {
    let store = tripline_embedded::EmbeddedStore::open(data).expect("store");
    let queue = tripline_embedded::EmbeddedQueue::new(store.clone(), clock.clone());
    let secrets = tripline_local::embedded_secrets(&store, data, None).expect("secrets key");
    let server = Server::start_with(
        ServeOptions {
            workflows: Some(folder.to_path_buf()),
            data: data.to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            workers: 8,
            grace: Duration::from_secs(5),
            config: config.clone(),
            kafka: None,
            secrets_key_file: None,
            secret_store: Some(Arc::new(secrets)),
        },
        Arc::new(store),
        Arc::new(queue.clone()),
        clock.clone(),
    )
    .await
    .expect("server starts");
    (server, queue)
}

async fn start_server(
    folder: &std::path::Path,
    data: &std::path::Path,
    config: Config,
    kafka: Option<tripline_local::kafka::KafkaOptions>,
) -> Server {
    Server::start(ServeOptions {
        workflows: Some(folder.to_path_buf()),
        data: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 16,
        grace: Duration::from_secs(5),
        config,
        kafka,
        secrets_key_file: None,
        secret_store: None,
    })
    .await
    .expect("server starts")
}

impl TestApp {
    fn new(
        server: Server,
        data: TempDir,
        wf_dir: TempDir,
        folder: PathBuf,
        config: Config,
    ) -> Self {
        let addr = server.addr;
        TestApp {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            server: Some(server),
            data,
            _workflows: wf_dir,
            folder,
            config,
            kafka: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON to a webhook; returns status, headers and the body as JSON (or null).
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        read(resp).await
    }

    /// POSTs `{}` to a control route with `headers`; returns status and the body.
    pub async fn post_with(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).json(&json!({}));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (s, _, v) = read(req.send().await.expect("request")).await;
        (s, v)
    }

    /// PUTs JSON to a control route; returns status and the body as JSON (or null).
    pub async fn put_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        let (s, _, v) = read(resp).await;
        (s, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let (s, _, v) = read(resp).await;
        (s, v)
    }

    /// Polls a run, with the control API `key`, until it ends (10 s at most).
    pub async fn wait_run_with_key(&self, run_id: &str, key: &str) -> Value {
        let start = Instant::now();
        loop {
            let resp = self
                .client
                .get(self.url(&format!("/v1/runs/{run_id}")))
                .bearer_auth(key)
                .send()
                .await
                .expect("request");
            let (_, _, run) = read(resp).await;
            let status = run["status"].as_str().unwrap_or_default();
            if matches!(status, "succeeded" | "failed" | "cancelled" | "timed_out") {
                return run;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "run {run_id} did not end: {run}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls a run until its status is `status` (10 s at most).
    pub async fn wait_status(&self, run_id: &str, status: &str) -> Value {
        let start = Instant::now();
        loop {
            let (code, run) = self.get(&format!("/v1/runs/{run_id}")).await;
            assert_eq!(code, StatusCode::OK, "run {run_id}: {run}");
            if run["status"] == status {
                return run;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "run {run_id} did not become {status}: {run}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls a run until it ends (10 s at most).
    pub async fn wait_run(&self, run_id: &str) -> Value {
        let start = Instant::now();
        loop {
            let (status, run) = self.get(&format!("/v1/runs/{run_id}")).await;
            assert_eq!(status, StatusCode::OK, "run {run_id}: {run}");
            let s = run["status"].as_str().unwrap_or_default();
            if ["succeeded", "failed", "cancelled", "timed_out"].contains(&s) {
                return run;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "run {run_id} did not end: {run}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Deploys YAML through the control API.
    pub async fn deploy(&self, id: &str, yaml: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .put(self.url(&format!("/v1/workflows/{id}")))
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .expect("request");
        let (s, _, v) = read(resp).await;
        (s, v)
    }

    /// Stops the server gracefully and starts a new one on the same store (a new port).
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        let server = start_server(
            &self.folder,
            self.data.path(),
            self.config.clone(),
            self.kafka.clone(),
        )
        .await;
        self.addr = server.addr;
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Stops the server and starts a new one on the same store and the same manual clock
    /// (which `time` may have moved meanwhile with [`ManualTime::pass`]).
    pub async fn restart_manual(&mut self, time: &mut ManualTime) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        time.queue = None;
        time.app = None;
        let (server, queue) =
            start_manual(&self.folder, self.data.path(), &self.config, &time.clock).await;
        time.queue = Some(queue);
        time.app = Some(server.app.clone());
        self.addr = server.addr;
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// The server's use cases.
    pub fn app(&self) -> Arc<tripline_app::App> {
        self.server.as_ref().expect("running").app.clone()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
    let mut headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
            axum::http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let bytes = resp.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, headers, value)
}

/// A request the stub received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

/// How the stub answers the next request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: json!({"status": status}),
            delay: Duration::ZERO,
        }
    }
    /// `302 Found` with `Location: to`.
    pub fn redirect(to: &str) -> Self {
        Self {
            status: 302,
            body: json!({ "location": to }),
            delay: Duration::ZERO,
        }
    }
    pub fn slow(delay: Duration) -> Self {
        Self {
            status: 200,
            body: json!({"slow": true}),
            delay,
        }
    }
}

#[derive(Default)]
struct StubState {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A downstream HTTP server on loopback that records every request. By default it answers
/// 200 with an httpbin-like echo: `{"url", "args", "method", "headers", "json"}`.
#[derive(Clone)]
pub struct Stub {
    pub addr: SocketAddr,
    pub url: String,
    state: Arc<StubState>,
}

impl Stub {
    pub async fn start() -> Stub {
        let state = Arc::new(StubState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(stub_handler)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub {
            addr,
            url: format!("http://{addr}"),
            state,
        }
    }

    /// The next replies, in order; after them the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().expect("lock").extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().expect("lock") = Some(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The requests once there are at least `n` (5 s at most).
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let reqs = self.requests();
            if reqs.len() >= n {
                return reqs;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the stub got {} request(s), not {n}: {reqs:?}",
                reqs.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn stub_handler(
    State(state): State<Arc<StubState>>,
    method: Method,
    uri: Uri,
    axum::extract::Query(args): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    // A header sent twice reads as both values joined, as HTTP folds them: a test sees it.
    let mut headers_map: HashMap<String, String> = HashMap::new();
    for (k, v) in &headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers_map
            .entry(k.as_str().to_string())
            .and_modify(|first| {
                first.push_str(", ");
                first.push_str(&v);
            })
            .or_insert(v);
    }
    state.requests.lock().expect("lock").push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers_map.clone(),
        body: body_json.clone(),
    });
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Counted out however the request ends, a dropped connection (a killed server) included.
    struct Out<'a>(&'a AtomicUsize);
    impl Drop for Out<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _out = Out(&state.in_flight);
    let scripted = state.script.lock().expect("lock").pop_front();
    let reply = scripted.or_else(|| state.default.lock().expect("lock").clone());
    match reply {
        Some(r) => {
            tokio::time::sleep(r.delay).await;
            let mut resp = (
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                axum::Json(r.body.clone()),
            )
                .into_response();
            if let Some(to) = r.body["location"].as_str()
                && let Ok(v) = axum::http::HeaderValue::from_str(to)
            {
                resp.headers_mut().insert(axum::http::header::LOCATION, v);
            }
            resp
        }
        None => axum::Json(json!({
            "url": uri.to_string(),
            "args": args,
            "method": method.as_str(),
            "headers": headers_map,
            "json": body_json,
        }))
        .into_response(),
    }
}

/// Runs `cmd` with `stdin` written to its standard input: (success, stdout + stderr).
pub fn run_with_stdin(cmd: &mut std::process::Command, stdin: &str) -> (bool, String) {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `tripline` binary built by `cargo build -p tripline-local` (the test runner builds it).
pub fn tripline_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRIPLINE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug").join("tripline");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tripline-local` first (tests/run does)",
        bin.display()
    );
    bin
}

/// A `tripline serve` process (the real binary), killed when dropped.
pub struct ServeProc {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`, as the server printed it.
    pub base: String,
}

impl ServeProc {
    /// Starts `tripline serve --listen 127.0.0.1:0 --allow-private-network --workflows W
    /// --data D` with `extra` arguments, and reads the address it printed.
    pub fn start(workflows: &Path, data: &Path, extra: &[&str]) -> ServeProc {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(tripline_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--allow-private-network",
            ])
            .args(extra)
            .arg("--workflows")
            .arg(workflows)
            .arg("--data")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start tripline");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("read");
        let base = first
            .strip_prefix("tripline listening on ")
            .expect("banner")
            .trim()
            .to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServeProc { child, base }
    }

    /// SIGKILL: nothing is flushed or stopped gracefully.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the `tripline` client against the server at `base` (no API key in its
/// environment): its exit code, stdout and stderr.
pub async fn cli(base: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(tripline_bin())
        .args(args)
        .env("TRIPLINE_SERVER", base)
        .env_remove("TRIPLINE_API_KEY")
        .output()
        .await
        .expect("run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
