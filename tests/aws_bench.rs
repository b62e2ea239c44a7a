//! The AWS shape's numbers, against moto's server (run by `tests/bench`, which starts it):
//! AWS requests per run, counted by an SDK interceptor, with the write and read units
//! they imply and the list-price cost per million runs; each Lambda binary's size and its
//! start-up time to the first handled event (the release binaries behind a Lambda Runtime
//! API on loopback).
//!
//! Usage: tests/with-aws cargo run --release -p tripline-tests --example aws-bench

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use serde_json::{Value, json};
use tower::ServiceExt;
use tripline_app::App;
use tripline_app::ports::Store;
use tripline_aws::{CallCounter, Clients, Settings, WRITE_UNITS};
use tripline_tests::Stub;
use tripline_tests::aws::{endpoint, fresh};
use tripline_tests::lambda::{
    Function, function_bin, function_env, http_event, queue_arn, receive, sqs_event,
};
use tripline_tests::stream::RunsStream;

/// List prices, us-east-1, on-demand (USD per million).
const PRICE_WRU: f64 = 0.625;
const PRICE_RRU: f64 = 0.125;
const PRICE_SQS_REQUEST: f64 = 0.40;
const PRICE_S3_PUT: f64 = 5.0;
const PRICE_S3_GET: f64 = 0.40;
const PRICE_LAMBDA_REQUEST: f64 = 0.20;
const PRICE_HTTP_API_REQUEST: f64 = 1.00;
const PRICE_SCHEDULER_INVOCATION: f64 = 1.00;

const RUNS: usize = 20;

struct Rig {
    clients: Clients,
    /// The bench's own reads (not counted).
    observer: tripline_aws::DynamoStore,
    /// The bench's own derivation of wait URLs (not counted).
    observer_app: Arc<App>,
    settings: Settings,
    functions: CallCounter,
    esm: CallCounter,
    ingress: Arc<App>,
    executor: Arc<App>,
    esm_sqs: aws_sdk_sqs::Client,
    queue_arn: String,
    /// The store the executor's handler writes the listings' index with (counted).
    indexer: tripline_aws::DynamoStore,
    /// The runs table's stream, read as its event source mapping would.
    stream: RunsStream,
}

fn workflows(stub: &Stub) -> Vec<(&'static str, String)> {
    vec![
        (
            "one",
            format!(
                "id: one\ntriggers:\n  - {{type: webhook, id: hook, token: bench-one-token-0000000001}}\nsteps:\n  - {{id: call, type: http, method: POST, url: \"{}/one\", body: \"{{{{ trigger.body }}}}\"}}\n",
                stub.url
            ),
        ),
        (
            "three",
            format!(
                "id: three\ntriggers:\n  - {{type: webhook, id: hook, token: bench-three-token-000000001}}\nsteps:\n  - {{id: a, type: http, method: POST, url: \"{url}/a\", body: \"{{{{ trigger.body }}}}\"}}\n  - {{id: b, type: transform, value: {{n: \"{{{{ trigger.body.n }}}}\", status: \"{{{{ steps.a.status }}}}\"}}}}\n  - {{id: c, type: http, method: POST, url: \"{url}/c\", body: \"{{{{ steps.b }}}}\"}}\n",
                url = stub.url
            ),
        ),
        (
            "sync",
            "id: sync\ntriggers:\n  - {type: webhook, id: hook, token: bench-sync-token-0000000001, response: sync}\nsteps:\n  - {id: t, type: transform, value: {n: \"{{ trigger.body.n }}\"}}\n".to_string(),
        ),
        (
            "parked",
            format!(
                "id: parked\ntriggers:\n  - {{type: webhook, id: hook, token: bench-parked-token-0000001}}\nsteps:\n  - {{id: a, type: http, method: POST, url: \"{}/a\", body: \"{{{{ trigger.body }}}}\"}}\n  - {{id: w, type: wait_for_webhook, timeout: 1h}}\n  - {{id: b, type: transform, value: {{n: \"{{{{ trigger.body.n }}}}\", got: \"{{{{ steps.w }}}}\"}}}}\n",
                stub.url
            ),
        ),
        (
            "cron",
            "id: cron\ntriggers:\n  - {type: cron, id: minute, schedule: \"* * * * *\"}\nsteps:\n  - {id: count, type: transform, value: {n: \"{{ (state.n if state else 0) + 1 }}\"}}\nstate: {n: \"{{ output.n }}\"}\n".to_string(),
        ),
        (
            "kafka",
            "id: kafka\ntriggers:\n  - {type: kafka, topics: [orders]}\nsteps:\n  - {id: t, type: transform, value: {n: \"{{ trigger.body.n }}\", at: \"{{ trigger.offset }}\"}}\n".to_string(),
        ),
        (
            "secret",
            format!(
                "id: secret\ntriggers:\n  - {{type: webhook, id: hook, token: bench-secret-token-0000001}}\nsteps:\n  - {{id: call, type: http, method: POST, url: \"{}/one\", headers: {{authorization: \"Bearer {{{{ secrets.bench_token }}}}\"}}, body: \"{{{{ trigger.body }}}}\"}}\n",
                stub.url
            ),
        ),
        (
            "map",
            format!(
                "id: map\ntriggers:\n  - {{type: webhook, id: hook, token: bench-map-token-00000000001}}\nsteps:\n  - id: each\n    type: map\n    items: \"range(10) | list\"\n    concurrency: 10\n    steps:\n      - {{id: call, type: http, method: POST, url: \"{}/m\", body: {{i: \"{{{{ item }}}}\", n: \"{{{{ trigger.body.n }}}}\"}}}}\n",
                stub.url
            ),
        ),
        (
            "synchttp",
            format!(
                "id: synchttp\ntriggers:\n  - {{type: webhook, id: hook, token: bench-synchttp-token-00001, response: sync}}\nsteps:\n  - {{id: call, type: http, method: POST, url: \"{}/s\", body: \"{{{{ trigger.body }}}}\"}}\n",
                stub.url
            ),
        ),
    ]
}

impl Rig {
    async fn new(stub: &Stub) -> Self {
        let (clients, settings) = fresh(None).await;
        let functions = CallCounter::default();
        let esm = CallCounter::default();
        let counted = Clients::for_endpoint(&endpoint(), Some(functions.clone()));
        let esm_clients = Clients::for_endpoint(&endpoint(), Some(esm.clone()));
        let mut config = tripline_aws::config_from_env().expect("config");
        config.outbound.allow_private_networks = true;
        let ingress = tripline_aws::build_app(&counted, settings.clone(), config.clone());
        let executor = tripline_aws::build_app(&counted, settings.clone(), config);
        ingress
            .secrets
            .set("bench_token", "bench-token-0123456789", ingress.clock.now())
            .await
            .expect("set the secret");
        for (id, yaml) in workflows(stub) {
            ingress
                .deployments
                .deploy_text(
                    ingress.store.as_ref(),
                    &yaml,
                    tripline_core::validate::Format::Yaml,
                    Some(id),
                    ingress.clock.now(),
                )
                .await
                .unwrap_or_else(|_| panic!("deploy {id}"));
        }
        let queue_arn = queue_arn(&clients.sqs, &settings.queue_url).await;
        let indexer = tripline_aws::DynamoStore::new(&counted, settings.clone());
        let stream = RunsStream::new(&clients, &settings).await;
        let mut observer_config = tripline_aws::config_from_env().expect("config");
        observer_config.public_url = String::new();
        Self {
            observer_app: tripline_aws::build_app(&clients, settings.clone(), observer_config),
            observer: tripline_aws::DynamoStore::new(&clients, settings.clone()),
            clients,
            settings,
            functions,
            esm,
            ingress,
            executor,
            esm_sqs: esm_clients.sqs,
            queue_arn,
            indexer,
            stream,
        }
    }

    async fn post(&self, token: &str, body: &Value) -> (u16, Value) {
        let req = axum::http::Request::post(format!("/hooks/{token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = tripline_app::http::ingress::router(self.ingress.clone())
            .oneshot(req)
            .await
            .expect("answer");
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// One pass of the event source mapping: receive, invoke the executor's handler with
    /// the SQS event, delete what succeeded. Returns how many messages it delivered.
    async fn pump(&self, wait: u64) -> usize {
        let got = receive(
            &self.esm_sqs,
            &self.settings.queue_url,
            Duration::from_secs(wait),
            Duration::from_secs(30),
        )
        .await;
        if got.is_empty() {
            return 0;
        }
        let answer = self.invoke_executor(sqs_event(&got, &self.queue_arn)).await;
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        for m in &got {
            self.esm_sqs
                .delete_message()
                .queue_url(&self.settings.queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
        got.len()
    }

    /// One batch of the runs table's stream (everything since the last) through the
    /// executor's handler, which writes the listings' index; whether there was one.
    async fn index(&self) -> bool {
        let Some(event) = self.stream.next_event().await else {
            return false;
        };
        self.invoke_executor(event).await;
        true
    }

    /// The executor's handler with an event, as its Lambda function would be invoked.
    async fn invoke_executor(&self, event: Value) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let settings = tripline_aws::lambda::ExecutorSettings {
            sweep_after: tripline_aws::lambda::SWEEP_AFTER,
        };
        tripline_aws::lambda::executor_event(
            &self.executor,
            &self.indexer,
            &settings,
            event,
            deadline,
        )
        .await
        .expect("the executor handled the event")
    }

    async fn item(
        &self,
        table: &str,
        id: &str,
    ) -> BTreeMap<String, aws_sdk_dynamodb::types::AttributeValue> {
        self.clients
            .dynamodb
            .get_item()
            .table_name(table)
            .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.into()))
            .send()
            .await
            .expect("get")
            .item
            .unwrap_or_default()
            .into_iter()
            .collect()
    }
}

/// An item's size as DynamoDB bills it (attribute names plus values; numbers approximated
/// by their digits).
fn item_size(item: &BTreeMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    A::S(s) => s.len(),
                    A::N(n) => n.len().div_ceil(2) + 1,
                    A::B(b) => b.as_ref().len(),
                    A::Bool(_) | A::Null(_) => 1,
                    _ => 100,
                }
        })
        .sum()
}

#[derive(Default, Debug)]
struct PerRun {
    calls: BTreeMap<String, f64>,
    esm: BTreeMap<String, f64>,
    /// SSM reads by the first run (cold caches).
    first_ssm: u64,
    /// The size of the newest run's item as stored, ended (B).
    run_item: usize,
    /// Executor invocations for the runs table's stream (one batch for the scenario's
    /// runs, as the event source mapping's window gathers them at a few runs a second).
    index_invocations: f64,
}

fn per_run(counts: BTreeMap<String, u64>, n: usize) -> BTreeMap<String, f64> {
    counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 / n as f64))
        .collect()
}

async fn scenario(rig: &Rig, name: &str, token: &str, sync: bool) -> PerRun {
    // Warm up: the first run loads the revision cache, as a warm Lambda has it.
    rig.functions.reset();
    run_once(rig, token, sync, 0).await;
    let first_ssm = rig
        .functions
        .snapshot()
        .iter()
        .filter(|(k, _)| k.starts_with("SSM."))
        .map(|(_, v)| v)
        .sum();
    rig.index().await;
    rig.functions.reset();
    rig.esm.reset();
    for i in 1..=RUNS {
        run_once(rig, token, sync, i).await;
    }
    // The scenario's runs as one batch of the stream: the pages' writes are counted.
    let batches = usize::from(rig.index().await);
    let mut r = PerRun {
        calls: per_run(rig.functions.snapshot(), RUNS),
        esm: per_run(rig.esm.snapshot(), RUNS),
        first_ssm,
        run_item: 0,
        index_invocations: batches as f64 / RUNS as f64,
    };
    // An `UpdateItem` is billed on the whole item, which its request does not show (the
    // counter takes it for one unit): the newest run's item as stored, at its largest
    // (ended), bills each update of the run.
    let newest = tripline_app::ports::RunQuery {
        workflow: Some(name.into()),
        limit: 1,
        ..Default::default()
    };
    let page = rig.observer.runs(&newest).await.expect("runs");
    if let Some(run) = page.items.first() {
        r.run_item = item_size(&rig.item(&rig.settings.runs_table, &run.id).await);
        let updates = r.calls.get("DynamoDB.UpdateItem").copied().unwrap_or(0.0);
        let more = r.run_item.div_ceil(1024).max(1) as f64 - 1.0;
        *r.calls.entry(WRITE_UNITS.into()).or_default() += updates * more;
    }
    eprintln!("{name}: {r:?}");
    r
}

async fn run_once(rig: &Rig, token: &str, sync: bool, n: usize) {
    let body = json!({"n": n, "order": format!("order-{n}")});
    if sync {
        let (status, answer) = if token.contains("synchttp") {
            let post = rig.post(token, &body);
            let pump = async {
                let mut delivered = 0;
                while delivered == 0 {
                    delivered = rig.pump(1).await;
                }
            };
            let (r, ()) = tokio::join!(post, pump);
            r
        } else {
            rig.post(token, &body).await
        };
        assert_eq!(status, 200, "{answer}");
        return;
    }
    let run_id = if token == "cron" {
        // The cron-tick function's work for one tick (what an EventBridge Scheduler
        // schedule invokes it with), one minute apart.
        let scheduled = tripline_core::Timestamp(1_800_000_000_000 + n as i64 * 60_000);
        let outcome = rig
            .ingress
            .cron_tick(
                "cron",
                "minute",
                scheduled,
                tripline_app::intake::cron::Delivery::OnTime,
            )
            .await
            .expect("tick");
        let tripline_app::ports::Outcome::Started { run_ids } = outcome else {
            panic!("the tick starts a run: {outcome:?}");
        };
        run_ids[0].clone()
    } else if token == "kafka" {
        kafka_record(rig, n, &body).await
    } else {
        let (status, answer) = rig.post(token, &body).await;
        assert_eq!(status, 202, "{answer}");
        answer["run_id"].as_str().expect("run id").to_string()
    };
    if token.contains("parked") {
        // Park at the wait, then resume it through its URL as a partner would.
        let resume = loop {
            rig.pump(1).await;
            let mut run = rig.observer.run(&run_id).await.expect("run").expect("run");
            // The run keeps the URL's hash; the URL is derived again, as the notification
            // and the control API do (not counted: the bench's own read).
            if run.waiting_salt.is_none() {
                continue;
            }
            rig.observer_app.reveal_urls(&mut run).await;
            if let Some(url) = run
                .waiting_payload
                .as_ref()
                .and_then(|p| p["resume_url"].as_str())
            {
                break url.to_string();
            }
        };
        let req = axum::http::Request::post(resume)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"ok": true}"#))
            .expect("request");
        let resp = tripline_app::http::resume::router(rig.ingress.clone())
            .oneshot(req)
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 200);
    }
    loop {
        rig.pump(1).await;
        let run = rig.observer.run(&run_id).await.expect("run").expect("run");
        if run.status.is_terminal() {
            assert_eq!(run.status.as_str(), "succeeded");
            break;
        }
    }
}

/// The msk-consumer function's work for one record at offset `n` (what the MSK event
/// source invokes it with); the id of the run it started (read back by the bench, not
/// counted).
async fn kafka_record(rig: &Rig, n: usize, body: &Value) -> String {
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let event = json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/bench/abcd1234-0123-4567-89ab-cdef01234567-1",
        "records": {"orders-0": [{
            "topic": "orders", "partition": 0, "offset": n,
            "timestamp": 1_800_000_000_000i64 + n as i64, "timestampType": "CREATE_TIME",
            "value": value, "headers": [],
        }]},
    });
    let report = tripline_aws::lambda::msk_event(&rig.ingress, event)
        .await
        .expect("the batch is recorded");
    assert_eq!(report["runs_started"], 1, "{report}");
    // The record's run is the one still queued (the earlier ones have ended); found by a
    // scan of the bench's own (not counted), since the listings are indexed afterwards.
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let found = rig
        .clients
        .dynamodb
        .scan()
        .table_name(&rig.settings.runs_table)
        .filter_expression("workflow = :w AND #s = :queued")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":w", A::S("kafka".into()))
        .expression_attribute_values(":queued", A::S("queued".into()))
        .send()
        .await
        .expect("scan");
    let items = found.items.unwrap_or_default();
    assert_eq!(items.len(), 1, "one queued run of the kafka workflow");
    items[0]["id"].as_s().expect("id").clone()
}

/// The calls of one service (`"SQS."`), summed (an empty sum is -0.0, hence the + 0.0).
fn prefixed(calls: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    calls
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum::<f64>()
        + 0.0
}

fn sum(calls: &BTreeMap<String, f64>, ops: &[&str]) -> f64 {
    ops.iter()
        .map(|o| calls.get(*o).copied().unwrap_or(0.0))
        .sum()
}

const DDB_WRITES: &[&str] = &[
    "DynamoDB.PutItem",
    "DynamoDB.BatchWriteItem",
    "DynamoDB.TransactWriteItems",
    "DynamoDB.UpdateItem",
    "DynamoDB.DeleteItem",
];
const DDB_READS: &[&str] = &[
    "DynamoDB.GetItem",
    "DynamoDB.BatchGetItem",
    "DynamoDB.Query",
    "DynamoDB.Scan",
];

/// Each kind of run's list price per million: DynamoDB write units as the counter tallied
/// them from the requests (items by the started KB, a keys-only entry per index for each
/// item created), a read unit per read request (items under 4 KB), SQS, S3, a Lambda
/// request per function invocation, and what starts the run (an HTTP API request per
/// webhook call, a Scheduler invocation per cron tick). Twice: with every message
/// received and deleted on its own (as counted here, one run at a time), and with the
/// event source mapping's batches of 10 that a steady load gets (receives, deletes and
/// executor invocations shared by 10 messages).
fn cost_table(results: &[(&str, &str, PerRun)]) {
    println!(
        "\n## Cost per million runs, by kind (list prices, us-east-1, on-demand, before Lambda duration)\n"
    );
    println!(
        "| run | ended run's item, B | DynamoDB WRU | read requests | SQS requests | Lambda requests | HTTP API / Scheduler | $ per million, messages one by one | $ per million, batches of 10 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, name, r) in results {
        let wru = r.calls.get(WRITE_UNITS).copied().unwrap_or(0.0);
        let reads = sum(&r.calls, DDB_READS);
        let sqs_own = prefixed(&r.calls, "SQS.");
        let esm: f64 = r.esm.values().sum::<f64>() + 0.0;
        let executor = r.esm.get("SQS.DeleteMessage").copied().unwrap_or(0.0);
        let (entry, starts, start_price) = match *name {
            "cron" => (1.0, 1.0, PRICE_SCHEDULER_INVOCATION),
            // MSK bills by the broker hour, not per record; the event source batches
            // records (here one per invocation).
            "kafka" => (1.0, 0.0, 0.0),
            // The webhook call, and the partner's call of the resume URL.
            "parked" => (2.0, 2.0, PRICE_HTTP_API_REQUEST),
            _ => (1.0, 1.0, PRICE_HTTP_API_REQUEST),
        };
        let s3 = sum(&r.calls, &["S3.PutObject"]) * PRICE_S3_PUT
            + sum(&r.calls, &["S3.GetObject"]) * PRICE_S3_GET;
        let fixed = wru * PRICE_WRU + reads * PRICE_RRU + s3 + starts * start_price;
        let entry = entry + r.index_invocations;
        let cost = |batch: f64| {
            fixed
                + (sqs_own + esm / batch) * PRICE_SQS_REQUEST
                + (entry + executor / batch) * PRICE_LAMBDA_REQUEST
        };
        println!(
            "| {label} | {} | {wru:.2} | {reads:.2} | {:.2} | {:.2} | {starts:.0} | ${:.2} | ${:.2} |",
            r.run_item,
            sqs_own + esm,
            entry + executor,
            cost(1.0),
            cost(10.0)
        );
    }
}

/// A `map` step's items run in the executor's invocation (requests out together), with
/// the run written once when it ends (and once a second while lanes run, which these
/// short runs never reach). Against it, the cheapest way to spread items over work items:
/// per item at least a send, a receive and a delete of SQS, a Lambda request and one
/// conditional write of the run.
async fn map_cost(rig: &Rig, results: &[(&str, &str, PerRun)]) {
    let find = |name: &str| {
        &results
            .iter()
            .find(|(_, n, _)| *n == name)
            .expect("the scenario")
            .2
    };
    let (one, map) = (find("one"), find("map"));
    let all = |r: &PerRun| r.calls.values().sum::<f64>() + r.esm.values().sum::<f64>();
    let (status, answer) = rig
        .post("bench-map-token-00000000001", &json!({"n": 99}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["run_id"].as_str().expect("run id").to_string();
    loop {
        rig.pump(1).await;
        let run = rig.observer.run(&run_id).await.expect("run").expect("run");
        if run.status.is_terminal() {
            break;
        }
    }
    let size = item_size(&rig.item(&rig.settings.runs_table, &run_id).await);
    let wru = size.div_ceil(1024) as f64;
    let extra_writes = sum(&map.calls, DDB_WRITES) - sum(&one.calls, DDB_WRITES);
    let extra_requests = all(map) - all(one);
    let in_invocation = extra_writes.max(0.0) * wru * PRICE_WRU + (wru - 1.0).max(0.0) * PRICE_WRU;
    let per_item = 3.0 * PRICE_SQS_REQUEST + PRICE_LAMBDA_REQUEST + wru * PRICE_WRU;
    println!("\n## A map step of 10 items: in one invocation, or a work item per item\n");
    println!(
        "- measured: {:.2} AWS requests per run against {:.2} for one http step ({extra_requests:+.2}); the finished run is {size} B as stored ({wru:.0} WRU per write)",
        all(map),
        all(one)
    );
    println!(
        "- in one invocation (what the executor does): about ${in_invocation:.2} per million runs more than a one-step run (larger writes), and the items' requests overlap, so the invocation lasts about one item's latency × ⌈10 / concurrency⌉"
    );
    println!(
        "- a work item per item would add at least 10 × (3 SQS requests + 1 Lambda request + 1 write of {wru:.0} WRU) = **${:.2} per million runs**, and an invocation's duration per item",
        10.0 * per_item
    );
}

/// A sync webhook whose one `http` step calls the loopback stub: the reply's time through
/// the ingress (the run recorded, queued, executed by the executor's handler fed by the
/// bench's event source loop, the reply found by polling the run) against the stub's own
/// time when called directly. Against moto on loopback: its latencies, not AWS's.
async fn sync_http_overhead(rig: &Rig, stub: &Stub) {
    const N: usize = 50;
    let client = reqwest::Client::new();
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for n in 0..N {
        let body = json!({"n": n, "order": format!("order-{n}")});
        let t0 = std::time::Instant::now();
        let resp = client
            .post(format!("{}/s", stub.url))
            .json(&body)
            .send()
            .await
            .expect("the stub answers");
        resp.bytes().await.expect("the stub's body");
        direct.push(t0.elapsed());
        let t0 = std::time::Instant::now();
        run_once(rig, "bench-synchttp-token-00001", true, n).await;
        through.push(t0.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |v: &[Duration], p: f64| {
        let mut v = v.to_vec();
        v.sort();
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    };
    println!(
        "\n## Sync webhook, one http step: the ingress's time over the step's own ({N} runs, against moto)\n"
    );
    println!("| | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    for (name, v) in [
        ("the stub called directly", &direct),
        ("through the ingress", &through),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} |",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99))
        );
    }
    println!(
        "| Tripline's time over the step's | {:.1} | {:.1} |",
        ms(pct(&through, 0.5)) - ms(pct(&direct, 0.5)),
        ms(pct(&through, 0.99)) - ms(pct(&direct, 0.99))
    );
}

async fn start_up(name: &str, settings: &Settings, event: Value) -> (Duration, Duration) {
    let env = function_env(settings, &endpoint());
    let f = Function::start(name, &env).await;
    let answer = f.invoke_with(event, Duration::from_secs(10)).await;
    let answered = f.spawned_at.elapsed();
    assert!(answer.is_ok(), "{name}: {answer:?}");
    let ready = f
        .runtime
        .first_poll()
        .map(|t| t.duration_since(f.spawned_at))
        .unwrap_or_default();
    f.stop().await;
    (ready, answered)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let stub = Stub::start().await;
    let rig = Rig::new(&stub).await;

    println!(
        "\n## AWS requests per run ({RUNS} runs each, warm functions, counted against moto)\n"
    );
    println!(
        "| run | DynamoDB writes | DynamoDB reads | SQS by the functions | SQS by the event source mapping | S3 | every call, per run |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    let mut results = Vec::new();
    for (label, name, token, sync) in [
        (
            "async webhook, one http step",
            "one",
            "bench-one-token-0000000001",
            false,
        ),
        (
            "async webhook, three steps (http, transform, http)",
            "three",
            "bench-three-token-000000001",
            false,
        ),
        (
            "async webhook, http step, wait_for_webhook resumed through its URL, transform",
            "parked",
            "bench-parked-token-0000001",
            false,
        ),
        (
            "async webhook, one http step rendering a secret (`Bearer {{ secrets.bench_token }}`)",
            "secret",
            "bench-secret-token-0000001",
            false,
        ),
        (
            "async webhook, one map step of 10 items (an http step each, 10 at a time)",
            "map",
            "bench-map-token-00000000001",
            false,
        ),
        (
            "cron tick (the cron-tick function), one transform, state carried to the next run",
            "cron",
            "cron",
            false,
        ),
        (
            "Kafka record (the msk-consumer function's batch of one), one transform",
            "kafka",
            "kafka",
            false,
        ),
        (
            "sync webhook, one transform",
            "sync",
            "bench-sync-token-0000000001",
            true,
        ),
        (
            "sync webhook, one http step (reply by polling)",
            "synchttp",
            "bench-synchttp-token-00001",
            true,
        ),
    ] {
        let r = scenario(&rig, name, token, sync).await;
        let all: Vec<String> = r
            .calls
            .iter()
            .filter(|(k, _)| k.as_str() != WRITE_UNITS)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .chain(r.esm.iter().map(|(k, v)| format!("ESM {k} {v:.2}")))
            .collect();
        let sqs = prefixed(&r.calls, "SQS.");
        let esm: f64 = r.esm.values().sum::<f64>() + 0.0;
        let s3 = prefixed(&r.calls, "S3.");
        println!(
            "| {label} | {:.2} | {:.2} | {sqs:.2} | {esm:.2} | {s3:.2} | {} |",
            sum(&r.calls, DDB_WRITES),
            sum(&r.calls, DDB_READS),
            all.join(", ")
        );
        results.push((label, name, r));
    }

    // Units: from the sizes of a three-step run's items, read back as stored: one more
    // run, its items read when queued and again when finished.
    let (status, answer) = rig
        .post(
            "bench-three-token-000000001",
            &json!({"n": 99, "order": "order-99"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["run_id"].as_str().expect("run id").to_string();
    let queued_item = rig.item(&rig.settings.runs_table, &run_id).await;
    while !rig
        .observer
        .run(&run_id)
        .await
        .expect("run")
        .expect("run")
        .status
        .is_terminal()
    {
        rig.pump(1).await;
    }
    let run = rig.observer.run(&run_id).await.expect("run").expect("run");
    let run_item = rig.item(&rig.settings.runs_table, &run.id).await;
    // Empty when the message is inside its run's item (`joined.rs`: one item for both).
    let msg_item = rig
        .item(
            &rig.settings.inbox_table,
            run.message_id.as_deref().unwrap_or_default(),
        )
        .await;
    let joined = msg_item.is_empty() && run_item.contains_key("mz");
    let queued_size = item_size(&queued_item);
    let (run_size, msg_size) = (item_size(&run_item), item_size(&msg_item));
    let wru = |bytes: usize| bytes.div_ceil(1024) as f64;
    // Admission: message and run items, plus a keys-only entry in each index an item has
    // keys for (a message listed through its run has none).
    let entries = |item: &BTreeMap<String, aws_sdk_dynamodb::types::AttributeValue>| {
        ["shard", "wkey"]
            .iter()
            .filter(|k| item.contains_key(**k))
            .count()
    };
    let index_entries = (entries(&msg_item) + entries(&queued_item)) as f64;
    let admission = if joined { 0.0 } else { wru(msg_size) } + wru(queued_size) + index_entries;
    let finish = wru(run_size);
    let three = &results[1].2;
    // The reads counted for the run (the executor's consistent read of the queued run, and
    // the deploy marker it looks at when the run ends, for flow triggers): items under
    // 4 KB, one RRU each.
    let reads = sum(&three.calls, &["DynamoDB.GetItem"]) * (run_size.div_ceil(4096)) as f64;
    // The listings' index pages, written by the executor from the runs table's stream:
    // what the counter tallied beyond the run's own writes.
    let tallied = three.calls.get(WRITE_UNITS).copied().unwrap_or(0.0);
    let pages = (tallied - admission - finish).max(0.0);
    let total_wru = admission + finish + pages;
    let ddb = total_wru * PRICE_WRU + reads * PRICE_RRU;
    let sqs_requests = prefixed(&three.calls, "SQS.") + three.esm.values().sum::<f64>();
    let sqs = sqs_requests * PRICE_SQS_REQUEST;
    let s3 = sum(&three.calls, &["S3.PutObject"]) * PRICE_S3_PUT
        + sum(&three.calls, &["S3.GetObject"]) * PRICE_S3_GET;
    let lambda = (2.0 + three.index_invocations) * PRICE_LAMBDA_REQUEST;
    let api = PRICE_HTTP_API_REQUEST;
    println!("\n## Cost of a million three-step async runs (list prices, us-east-1, on-demand)\n");
    if joined {
        println!(
            "- items as stored: one item for the message and its run (the message deflated against the run's input), {queued_size} B when queued, {run_size} B finished (run records over 512 B are deflated)"
        );
        println!(
            "- DynamoDB: admission {admission:.0} WRU (message and run {} + {index_entries:.0} index entries) + finish {finish:.0} WRU + index pages {pages:.2} WRU (the stream's batch of {RUNS} runs) = {total_wru:.2} WRU × ${PRICE_WRU}/M = ${:.3}; reads {reads:.0} RRU × ${PRICE_RRU}/M = ${:.3}",
            wru(queued_size),
            total_wru * PRICE_WRU,
            reads * PRICE_RRU
        );
    } else {
        println!(
            "- items as stored: inbox message {msg_size} B, run when queued {queued_size} B, finished run {run_size} B (run records over 512 B are deflated)"
        );
        println!(
            "- DynamoDB: admission {admission:.0} WRU (message {} + run {} + {index_entries:.0} index entries) + finish {finish:.0} WRU = {total_wru:.0} WRU × ${PRICE_WRU}/M = ${:.3}; reads {reads:.0} RRU × ${PRICE_RRU}/M = ${:.3}",
            wru(msg_size),
            wru(queued_size),
            total_wru * PRICE_WRU,
            reads * PRICE_RRU
        );
    }
    println!(
        "- SQS: {sqs_requests:.2} requests (send by the ingress; receive and delete by the event source mapping, counted here per message — Lambda batches them up to 10 under load) × ${PRICE_SQS_REQUEST}/M = ${sqs:.3}"
    );
    println!(
        "- the write units the counter tallied from the requests themselves: {:.2} per run",
        three.calls.get(WRITE_UNITS).copied().unwrap_or(0.0)
    );
    println!("- S3: ${s3:.3}");
    println!(
        "- storage side (DynamoDB + SQS + S3): **${:.2} per million runs**",
        ddb + sqs + s3
    );
    println!(
        "- plus Lambda requests (ingress + executor, and the executor's share of a stream batch: {:.2} × ${PRICE_LAMBDA_REQUEST}/M) ${lambda:.2} and HTTP API requests ${api:.2}: **${:.2} per million runs** before Lambda duration",
        2.0 + three.index_invocations,
        ddb + sqs + s3 + lambda + api
    );

    cost_table(&results);
    map_cost(&rig, &results).await;
    sync_http_overhead(&rig, &stub).await;

    // Secrets: what a step that renders one adds.
    let plain = &results[0].2;
    let secret = &results
        .iter()
        .find(|(_, name, _)| *name == "secret")
        .expect("the secret scenario")
        .2;
    let ssm = |r: &PerRun| prefixed(&r.calls, "SSM.");
    let all = |r: &PerRun| r.calls.values().sum::<f64>() + r.esm.values().sum::<f64>();
    println!("\n## A step that renders a secret (SSM Parameter Store SecureString)\n");
    println!(
        "- one http step without a secret: {:.2} AWS requests per run; with `Bearer {{{{ secrets.bench_token }}}}`: {:.2}, of which SSM reads {:.2} per run",
        all(plain),
        all(secret),
        ssm(secret)
    );
    println!(
        "- the first run on cold functions read it {} time(s) (ingress and executor share this bench's process; each Lambda function reads it once): each function then keeps it for TRIPLINE_SECRETS_TTL (60 s), so reads come to at most one per secret, per warm function, per minute, whatever the rate",
        secret.first_ssm
    );

    // Binary sizes and start-up.
    println!("\n## Lambda binaries (release build of this machine's architecture)\n");
    println!(
        "| function | binary | ready for the first event (median of 5) | first event answered (median of 5) |"
    );
    println!("|---|---:|---:|---:|");
    let events = [
        (
            "webhook-ingress",
            http_event("POST", "/hooks/no-such-token", &[], b"{}"),
        ),
        (
            "resume-approval",
            http_event("POST", "/resume/no-such-token", &[], b"{}"),
        ),
        ("step-executor", json!({"Records": []})),
        ("control-api", http_event("GET", "/healthz", &[], b"")),
        (
            "cron-tick",
            json!({"workflow": "none", "trigger": "none", "scheduled_time": "2026-01-01T00:00:00Z"}),
        ),
        (
            "msk-consumer",
            json!({"eventSource": "aws:kafka", "records": {}}),
        ),
    ];
    for (name, event) in events {
        let size = std::fs::metadata(function_bin(name))
            .map(|m| m.len())
            .unwrap_or(0);
        let mut ready = Vec::new();
        let mut answered = Vec::new();
        for _ in 0..5 {
            let (r, a) = start_up(name, &rig.settings, event.clone()).await;
            ready.push(r);
            answered.push(a);
        }
        println!(
            "| {name} | {:.2} MiB | {:.1} ms | {:.1} ms |",
            size as f64 / 1048576.0,
            median(ready).as_secs_f64() * 1000.0,
            median(answered).as_secs_f64() * 1000.0
        );
    }
}
