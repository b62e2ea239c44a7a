//! The AWS shape's test fixture: fresh resources on the AWS-protocol server, the real
//! function binaries behind loopback Lambda Runtime APIs, the SQS pump, and a downstream
//! stub.

use std::time::{Duration, Instant};

use serde_json::Value;
use tripline_aws::Settings;

use crate::Stub;
use crate::aws::{endpoint, fresh};
use crate::lambda::{Function, Pump, function_env, http_answer, http_event};
use crate::stream::RunsStream;

/// The base of the resume and approval URLs the functions hand out.
pub const PUBLIC_URL: &str = "https://hooks.example.test";

pub struct Shape {
    pub clients: tripline_aws::Clients,
    pub settings: Settings,
    pub ingress: Function,
    pub executor: Function,
    pub control: Function,
    pub resume: Function,
    pub pump: Pump,
    /// The runs table's stream, which the executor indexes (see [`Shape::index`]).
    pub stream: RunsStream,
    pub stub: Stub,
}

/// Fresh resources and the four functions; `ingress_env` is added to the ingress's
/// environment (to break its queue, say).
pub async fn shape(ingress_env: &[(&str, &str)]) -> Shape {
    let (clients, settings) = fresh(None).await;
    let stub = Stub::start().await;
    let mut env = function_env(&settings, &endpoint());
    env.push(("TRIPLINE_SWEEP_AFTER".into(), "0s".into()));
    let mut ingress_only = env.clone();
    for (k, v) in ingress_env {
        ingress_only.push((k.to_string(), v.to_string()));
    }
    env.push(("TRIPLINE_PUBLIC_URL".into(), PUBLIC_URL.into()));
    let (ingress, executor, control, resume) = tokio::join!(
        Function::start("webhook-ingress", &ingress_only),
        Function::start("step-executor", &env),
        Function::start("control-api", &env),
        Function::start("resume-approval", &env),
    );
    let pump = Pump::new(clients.sqs.clone(), &settings.queue_url).await;
    let stream = RunsStream::new(&clients, &settings).await;
    Shape {
        clients,
        settings,
        ingress,
        executor,
        control,
        resume,
        pump,
        stream,
        stub,
    }
}

impl Shape {
    /// Hands the runs table's new items to the executor, which writes the listings' index
    /// (on AWS the stream's event source mapping does this within seconds): a listing
    /// names a run only after this.
    pub async fn index(&self) -> usize {
        self.stream.index_through(&self.executor).await
    }

    pub async fn http(
        &self,
        f: &Function,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, std::collections::HashMap<String, String>, Value) {
        let answer = f
            .invoke(http_event(method, path, headers, body))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: the function failed: {e}"));
        http_answer(&answer)
    }

    pub async fn deploy(&self, id: &str, yaml: &str) {
        let (status, _, body) = self
            .http(
                &self.control,
                "PUT",
                &format!("/v1/workflows/{id}"),
                &[("content-type", "application/yaml")],
                yaml.as_bytes(),
            )
            .await;
        assert!(status == 201 || status == 200, "deploy: {status} {body}");
    }

    pub async fn post_hook(
        &self,
        token: &str,
        body: &Value,
    ) -> (u16, std::collections::HashMap<String, String>, Value) {
        self.http(
            &self.ingress,
            "POST",
            &format!("/hooks/{token}"),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
    }

    pub async fn run(&self, id: &str) -> Value {
        let (status, _, body) = self
            .http(&self.control, "GET", &format!("/v1/runs/{id}"), &[], b"")
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn version(&self, run_id: &str) -> String {
        let item = self
            .clients
            .dynamodb
            .get_item()
            .table_name(&self.settings.runs_table)
            .key(
                "id",
                aws_sdk_dynamodb::types::AttributeValue::S(run_id.into()),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("get")
            .item
            .expect("run item");
        item["v"].as_n().expect("n").clone()
    }
}

impl Shape {
    /// The path of a URL the functions handed out (their base is [`PUBLIC_URL`]).
    pub fn path_of(url: &str) -> String {
        url.strip_prefix(PUBLIC_URL)
            .unwrap_or_else(|| panic!("{url} is not under {PUBLIC_URL}"))
            .to_string()
    }

    /// Pumps the queue through the executor until the run's status is `status`.
    pub async fn pump_until(&self, run_id: &str, status: &str, limit: Duration) -> Value {
        let until = Instant::now() + limit;
        loop {
            let run = self.run(run_id).await;
            if run["status"] == status {
                return run;
            }
            assert!(
                Instant::now() < until,
                "run {run_id} did not become {status}: {run}"
            );
            self.pump.once(&self.executor, Duration::from_secs(1)).await;
        }
    }

    /// Starts a run through the control API (manual trigger); its id.
    pub async fn start(&self, workflow: &str, input: &Value) -> String {
        let (status, _, body) = self
            .http(
                &self.control,
                "POST",
                &format!("/v1/workflows/{workflow}/runs"),
                &[("content-type", "application/json")],
                input.to_string().as_bytes(),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["run_id"].as_str().expect("run id").to_string()
    }
}
