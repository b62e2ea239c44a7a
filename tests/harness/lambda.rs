//! Runs the real Lambda function binaries as Lambda would: a minimal Lambda Runtime API on
//! loopback hands each process the real event JSON that API Gateway (HTTP API, payload
//! 2.0) and SQS send, and takes back its answer. A small pump plays the SQS event source
//! mapping: receive, invoke the step executor, delete what succeeded, leave the reported
//! failures for redelivery.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tripline_aws::Settings;

use crate::repo_root;

type Answer = Result<Value, Value>;

#[derive(Default)]
struct RuntimeState {
    events: Mutex<VecDeque<(String, Value, u64)>>,
    arrived: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    init_error: Mutex<Option<Value>>,
    first_poll: Mutex<Option<Instant>>,
}

/// A Lambda Runtime API for one function instance.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<RuntimeState>,
}

async fn next(State(s): State<Arc<RuntimeState>>) -> Response {
    {
        let mut first = s.first_poll.lock().expect("lock");
        if first.is_none() {
            *first = Some(Instant::now());
        }
    }
    loop {
        let notified = s.arrived.notified();
        if let Some((id, event, deadline)) = s.events.lock().expect("lock").pop_front() {
            let mut headers = HeaderMap::new();
            headers.insert("lambda-runtime-aws-request-id", id.parse().expect("id"));
            headers.insert(
                "lambda-runtime-deadline-ms",
                deadline.to_string().parse().expect("ms"),
            );
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:tripline"
                    .parse()
                    .expect("arn"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
                    .parse()
                    .expect("trace"),
            );
            return (StatusCode::OK, headers, event.to_string()).into_response();
        }
        notified.await;
    }
}

fn answer(s: &RuntimeState, id: &str, a: Answer) -> StatusCode {
    if let Some(tx) = s.waiting.lock().expect("lock").remove(id) {
        let _ = tx.send(a);
    }
    StatusCode::ACCEPTED
}

/// A posted body as JSON, or as a string when it is not JSON.
fn posted(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

async fn response(
    State(s): State<Arc<RuntimeState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    answer(&s, &id, Ok(posted(&body)))
}

async fn error(
    State(s): State<Arc<RuntimeState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    answer(&s, &id, Err(posted(&body)))
}

async fn init_error(State(s): State<Arc<RuntimeState>>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    *s.init_error.lock().expect("lock") = Some(v);
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let state = Arc::new(RuntimeState::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    /// Hands `event` to the function and waits for its answer (`Err`: the function
    /// reported an error). The function gets `timeout` as its remaining time.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Answer {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!(
            "req-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
            + timeout.as_millis() as u64;
        let (tx, rx) = oneshot::channel();
        self.state
            .waiting
            .lock()
            .expect("lock")
            .insert(id.clone(), tx);
        self.state
            .events
            .lock()
            .expect("lock")
            .push_back((id, event, deadline));
        self.state.arrived.notify_waiters();
        self.state.arrived.notify_one();
        match tokio::time::timeout(timeout + Duration::from_secs(5), rx).await {
            Ok(Ok(a)) => a,
            _ => {
                let init = self.state.init_error.lock().expect("lock").clone();
                panic!("the function did not answer within {timeout:?}; init error: {init:?}")
            }
        }
    }

    /// When the function first asked for an event (it was ready).
    pub fn first_poll(&self) -> Option<Instant> {
        *self.state.first_poll.lock().expect("lock")
    }
}

/// A function binary built by `cargo build -p <name>` (tests/run builds them).
pub fn function_bin(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let profile = std::env::var("TRIPLINE_FUNCTIONS_PROFILE").unwrap_or_else(|_| "debug".into());
    let bin = target.join(profile).join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p {name}` first (tests/run does)",
        bin.display()
    );
    bin
}

/// The environment a function gets in Lambda: the template's settings, the Lambda
/// runtime's variables, credentials, and the AWS-protocol server as the endpoint.
pub fn function_env(settings: &Settings, endpoint: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = settings
        .to_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (k, v) in [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/tripline"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "tests"),
        ("TRIPLINE_ALLOW_PRIVATE_NETWORK", "true"),
        ("RUST_LOG", "warn"),
    ] {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// One running instance of a function binary.
pub struct Function {
    pub runtime: RuntimeApi,
    child: tokio::process::Child,
    pub spawned_at: Instant,
    /// What the function printed to stdout (its EMF metric lines among them), each line
    /// also passed on to the test's stderr.
    stdout: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Function {
    pub async fn start(name: &str, env: &[(String, String)]) -> Self {
        let runtime = RuntimeApi::start().await;
        let mut cmd = tokio::process::Command::new(function_bin(name));
        cmd.env_clear()
            .envs(env.iter().cloned())
            .env("AWS_LAMBDA_RUNTIME_API", runtime.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let mut child = cmd.spawn().expect("spawn the function");
        let stdout = Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let lines = stdout.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt as _;
                let mut reader = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    eprintln!("{line}");
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
        Self {
            runtime,
            child,
            spawned_at,
            stdout,
        }
    }

    /// The lines the function printed to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The EMF metric documents the function printed so far (see `tripline_app::metrics`).
    pub fn emf(&self) -> Vec<Value> {
        self.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }

    pub async fn invoke(&self, event: Value) -> Answer {
        self.runtime.invoke(event, Duration::from_secs(60)).await
    }

    pub async fn invoke_with(&self, event: Value, timeout: Duration) -> Answer {
        self.runtime.invoke(event, timeout).await
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// How the process ended, if it ended within `limit` (a function that refuses its
    /// configuration stops before asking for an event).
    pub async fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// The event API Gateway (HTTP API, payload format 2.0) sends for a request.
pub fn http_event(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Value {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut h = serde_json::Map::new();
    h.insert(
        "host".into(),
        json!("abc123.execute-api.us-east-1.amazonaws.com"),
    );
    h.insert("user-agent".into(), json!("curl/8.5.0"));
    for (k, v) in headers {
        h.insert(k.to_lowercase(), json!(v));
    }
    let text = std::str::from_utf8(body).ok();
    let (body, encoded) = match text {
        Some(t) => (json!(t), false),
        None => (
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": h,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0"
            },
            "requestId": format!("r{now}"),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "23/Nov/2026:01:00:00 +0000",
            "timeEpoch": now
        },
        "body": body,
        "isBase64Encoded": encoded
    })
}

/// An API Gateway 2.0 answer: status, headers (lowercased) and the body as JSON (or a
/// string when it is not JSON).
pub fn http_answer(answer: &Value) -> (u16, HashMap<String, String>, Value) {
    let (status, headers, bytes) = http_answer_bytes(answer);
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, body)
}

/// An API Gateway 2.0 answer with its body as the bytes sent.
pub fn http_answer_bytes(answer: &Value) -> (u16, HashMap<String, String>, Vec<u8>) {
    let status = answer["statusCode"].as_u64().unwrap_or(0) as u16;
    let mut headers: HashMap<String, String> = answer["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    // Payload 2.0 carries cookies apart from the headers.
    if let Some(cookies) = answer["cookies"].as_array().filter(|c| !c.is_empty()) {
        let all: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
        headers.insert("set-cookie".into(), all.join(", "));
    }
    let raw = answer["body"].as_str().unwrap_or_default();
    let bytes = if answer["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap_or_default()
    } else {
        raw.as_bytes().to_vec()
    };
    (status, headers, bytes)
}

/// The event an SQS event source mapping sends for received messages.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attrs: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attrs,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Plays the SQS event source mapping for the step executor.
pub struct Pump {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub queue_arn: String,
    /// How long a received batch stays hidden (the queue's visibility timeout).
    pub visibility: Duration,
}

/// What one pass of the pump did.
#[derive(Debug, Default, PartialEq)]
pub struct Pumped {
    pub delivered: usize,
    pub failed: usize,
}

/// A queue's ARN (what an SQS event names as its source).
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .unwrap_or_default()
}

/// Up to 10 messages with their system attributes, as an event source mapping receives
/// them: waiting up to `wait` for the first, hidden for `visibility`.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    wait: Duration,
    visibility: Duration,
) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait.as_secs() as i32)
        .visibility_timeout(visibility.as_secs() as i32)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

impl Pump {
    pub async fn new(sqs: aws_sdk_sqs::Client, queue_url: &str) -> Self {
        Self {
            queue_arn: queue_arn(&sqs, queue_url).await,
            sqs,
            queue_url: queue_url.into(),
            visibility: Duration::from_secs(30),
        }
    }

    /// Receives one batch (up to 10, waiting up to `wait`), invokes the executor with it,
    /// deletes what succeeded.
    pub async fn once(&self, executor: &Function, wait: Duration) -> Pumped {
        let messages = receive(&self.sqs, &self.queue_url, wait, self.visibility).await;
        if messages.is_empty() {
            return Pumped::default();
        }
        let event = sqs_event(&messages, &self.queue_arn);
        let answer = executor.invoke(event).await;
        let failed: Vec<String> = match &answer {
            Ok(v) => v["batchItemFailures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            // A function error fails the whole batch.
            Err(_) => messages
                .iter()
                .filter_map(|m| m.message_id().map(str::to_string))
                .collect(),
        };
        for m in &messages {
            if m.message_id()
                .is_some_and(|id| !failed.iter().any(|f| f == id))
            {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
        Pumped {
            delivered: messages.len(),
            failed: failed.len(),
        }
    }

    /// Pumps until the queue stays empty for a moment (or `limit` passes).
    pub async fn drain(&self, executor: &Function, limit: Duration) -> usize {
        let until = Instant::now() + limit;
        let mut delivered = 0;
        let mut idle = 0;
        while Instant::now() < until && idle < 2 {
            let p = self.once(executor, Duration::from_secs(1)).await;
            delivered += p.delivered;
            idle = if p.delivered == 0 { idle + 1 } else { 0 };
        }
        delivered
    }
}

/// A loopback HTTP server that plays API Gateway (HTTP API, payload 2.0) in front of one
/// function: each request becomes the event the function is invoked with, and its answer
/// the response. For clients that speak HTTP (the `tripline` client) to reach a function.
pub async fn http_front(function: Arc<Function>) -> String {
    async fn forward(State(f): State<Arc<Function>>, req: axum::extract::Request) -> Response {
        let method = req.method().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = axum::body::to_bytes(req.into_body(), 10 << 20)
            .await
            .unwrap_or_default();
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let answer = match f.invoke(http_event(&method, &path, &pairs, &body)).await {
            Ok(a) => a,
            Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
        let (status, headers, bytes) = http_answer_bytes(&answer);
        let mut r = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            bytes,
        )
            .into_response();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                axum::http::HeaderValue::from_str(&v),
            ) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the front");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().fallback(forward).with_state(function);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}
