//! The terminal client: `tripline workflows|runs|inbox|bulk|export|deploy|diff`, talking
//! to any Tripline server's control API (local, or the AWS stack's) given `--server` and a
//! key from the environment. Tables for people, `--json` for scripts, and exit codes
//! scripts can rely on ([`Exit`]).

mod commands;
mod deploy;
mod table;

use std::process::ExitCode;

use serde_json::Value;

pub use commands::{
    BulkCommand, ExportCommand, InboxCommand, RunsCommand, WorkflowsCommand, bulk, export, inbox,
    runs, workflows,
};
pub use deploy::{DeployArgs, deploy};

/// What the client's exit code says, for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done (for `diff`: nothing would change).
    Ok = 0,
    /// The server could not be reached, or failed (5xx): try again later.
    Failed = 1,
    /// The server has no such workflow, run, message or job (404).
    NotFound = 3,
    /// The server refused the request (other 4xx: invalid, conflict, unauthorized); the
    /// message says why.
    Refused = 4,
    /// `diff`: something would change.
    Differs = 5,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// A failed request: the exit code it means, and what to print.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

/// Where the server is and how to talk to it (every client command takes these).
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// The server's base URL: `tripline serve`'s, or the AWS stack's control API.
    #[arg(
        long,
        env = "TRIPLINE_SERVER",
        default_value = "http://127.0.0.1:8787",
        global = true
    )]
    pub server: String,
    /// The control API key (TRIPLINE_API_KEY).
    #[arg(long, env = "TRIPLINE_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON answers as they are, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A control API client.
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    pub json: bool,
}

impl Client {
    pub fn new(args: &ServerArgs) -> Self {
        Self {
            base: args.server.trim_end_matches('/').to_string(),
            key: args.api_key.clone().filter(|k| !k.is_empty()),
            http: reqwest::Client::new(),
            json: args.json,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(tripline_app::http::control::REQUEST_HEADER, "1");
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Sends a request; the answer's JSON, or the failure its status means.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let resp = self.raw(req).await?;
        Ok(resp.json().await.unwrap_or(Value::Null))
    }

    /// Sends a request; the answer itself when it succeeded.
    async fn raw(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::new(Exit::Failed, format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let detail = body["detail"].as_str().unwrap_or("no detail");
        let exit = match status.as_u16() {
            404 => Exit::NotFound,
            400..=499 => Exit::Refused,
            _ => Exit::Failed,
        };
        let mut message = format!("the server answered {status}: {detail}");
        if let Some(problems) = body["problems"].as_array() {
            for p in problems {
                let at = p["line"]
                    .as_u64()
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                message.push_str(&format!(
                    "\n  {}{at}: {}",
                    p["path"].as_str().unwrap_or(""),
                    p["message"].as_str().unwrap_or("")
                ));
            }
        }
        Err(Failure::new(exit, message))
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// Prints the answer as JSON (`--json`) or with `human`.
    fn show(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            human(v);
        }
    }
}

/// Runs a client command on a runtime of its own; prints a failure and exits with its
/// code.
pub fn run<F: std::future::Future<Output = Result<Exit, Failure>>>(work: F) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(exit) => exit.into(),
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.exit.into()
        }
    }
}

/// `?a=1&b=2` from the pairs that are set (values percent-encoded).
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", url_encode(v))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
