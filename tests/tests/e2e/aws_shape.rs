//! The AWS shape end to end: the real function binaries (webhook-ingress, step-executor,
//! control-api) get the real event JSON of API Gateway and SQS through a Lambda Runtime API
//! on loopback, against moto's DynamoDB, SQS and S3; a pump plays the SQS event source
//! mapping; a stub on loopback plays the downstream.

use std::time::Duration;

use serde_json::{Value, json};
use tripline_tests::aws::endpoint;
use tripline_tests::shape::shape;
use tripline_tests::{Reply, Stub};

fn three_steps(stub: &Stub, token: &str) -> String {
    format!(
        r#"
id: orders
triggers:
  - type: webhook
    id: hook
    token: {token}
steps:
  - id: reserve
    type: http
    method: POST
    url: "{url}/reserve"
    body: {{ order: "{{{{ trigger.body.order }}}}" }}
    retry: {{ max_attempts: 3, backoff: fixed, initial: 1s }}
  - id: shape
    type: transform
    value:
      order: "{{{{ trigger.body.order }}}}"
      reserved: "{{{{ steps.reserve.status }}}}"
  - id: notify
    type: http
    method: POST
    url: "{url}/notify"
    body: "{{{{ steps.shape }}}}"
"#,
        url = stub.url
    )
}

fn sync_http(stub: &Stub, token: &str, budget: &str) -> String {
    format!(
        r#"
id: lookup
triggers:
  - type: webhook
    id: hook
    token: {token}
    response: sync
    sync_budget: {budget}
steps:
  - id: fetch
    type: http
    method: POST
    url: "{url}/lookup"
    body: {{ q: "{{{{ trigger.body.q }}}}" }}
  - id: answer
    type: transform
    value:
      q: "{{{{ trigger.body.q }}}}"
      downstream: "{{{{ steps.fetch.status }}}}"
"#,
        url = stub.url
    )
}

#[tokio::test]
async fn an_async_webhook_run_goes_through_sqs_to_succeeded() {
    let s = shape(&[]).await;
    s.deploy(
        "orders",
        &three_steps(&s.stub, "aws-orders-token-000000000001"),
    )
    .await;
    let (status, headers, body) = s
        .post_hook("aws-orders-token-000000000001", &json!({"order": "A-1"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    // The run takes its message's id: the message is listed through the run's index
    // entries and writes none of its own.
    assert_eq!(headers["x-tripline-message-id"], run_id.as_str());
    assert_eq!(s.run(&run_id).await["status"], "queued");

    let delivered = s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    assert_eq!(delivered, 1, "one SQS message for the whole three-step run");
    let run = s.run(&run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let paths: Vec<String> = s.stub.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, vec!["/reserve", "/notify"]);
    assert_eq!(
        s.stub.requests()[1].body,
        json!({"order": "A-1", "reserved": 200})
    );
    // The control API lists it and its message, once the executor has indexed it from
    // the runs table's stream.
    s.index().await;
    let (_, _, runs) = s
        .http(&s.control, "GET", "/v1/runs?workflow=orders", &[], b"")
        .await;
    assert_eq!(runs["items"][0]["run_id"], run_id.as_str(), "{runs}");
    for path in ["/v1/inbox", "/v1/inbox?workflow=orders"] {
        let (_, _, inbox) = s.http(&s.control, "GET", path, &[], b"").await;
        assert_eq!(inbox["items"][0]["outcome"]["kind"], "started", "{inbox}");
        assert_eq!(inbox["items"][0]["id"], run_id.as_str(), "{path}: {inbox}");
    }
}

#[tokio::test]
async fn a_sync_reply_waits_for_the_run_by_polling_its_record() {
    let s = shape(&[]).await;
    s.deploy(
        "lookup",
        &sync_http(&s.stub, "aws-lookup-token-00000000001", "20s"),
    )
    .await;
    // The executor runs in its own process: the ingress learns of the end only from the
    // run record.
    let pumping = async {
        let mut delivered = 0;
        while delivered == 0 {
            delivered += s
                .pump
                .once(&s.executor, Duration::from_secs(1))
                .await
                .delivered;
        }
    };
    let question = json!({"q": "acme"});
    let ((status, _, body), ()) = tokio::join!(
        s.post_hook("aws-lookup-token-00000000001", &question),
        pumping
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"q": "acme", "downstream": 200}));
    assert_eq!(body["meta"]["status"], "succeeded");
}

#[tokio::test]
async fn a_sync_reply_over_its_budget_answers_202_with_the_status_url() {
    let s = shape(&[]).await;
    s.deploy(
        "lookup",
        &sync_http(&s.stub, "aws-lookup-token-00000000002", "1s"),
    )
    .await;
    // Nothing executes the run within the budget.
    let started = std::time::Instant::now();
    let (status, headers, body) = s
        .post_hook("aws-lookup-token-00000000002", &json!({"q": "slow"}))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().expect("run id");
    assert_eq!(headers["location"], format!("/v1/runs/{run_id}"));
    assert_eq!(body["status_url"], format!("/v1/runs/{run_id}"));
    // The run still finishes, and the status URL tells.
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    assert_eq!(s.run(run_id).await["status"], "succeeded");
}

#[tokio::test]
async fn a_duplicate_sqs_delivery_changes_nothing() {
    let s = shape(&[]).await;
    s.deploy(
        "orders",
        &three_steps(&s.stub, "aws-orders-token-000000000002"),
    )
    .await;
    let (_, _, body) = s
        .post_hook("aws-orders-token-000000000002", &json!({"order": "B-2"}))
        .await;
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    // Receive the one message and deliver it twice, as SQS may.
    let received = tripline_tests::lambda::receive(
        &s.clients.sqs,
        &s.settings.queue_url,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(received.len(), 1);
    let event = tripline_tests::lambda::sqs_event(&received, &s.pump.queue_arn);
    let first = s.executor.invoke(event.clone()).await.expect("first");
    assert_eq!(first["batchItemFailures"], json!([]));
    let run = s.run(&run_id).await;
    assert_eq!(run["status"], "succeeded");
    let version = s.version(&run_id).await;
    let calls = s.stub.requests().len();
    let again = s.executor.invoke(event).await.expect("again");
    assert_eq!(
        again["batchItemFailures"],
        json!([]),
        "a duplicate is not a failure"
    );
    assert_eq!(
        s.version(&run_id).await,
        version,
        "the record was not written again"
    );
    assert_eq!(s.stub.requests().len(), calls, "no step ran again");
    assert_eq!(s.run(&run_id).await, run);
}

#[tokio::test]
async fn a_run_recorded_but_never_enqueued_is_recovered_by_the_sweeper() {
    // The ingress's queue does not exist: it records the message and the run, and its send
    // fails, as when the process dies between the two.
    let broken = format!("{}/123456789012/no-such-queue", endpoint());
    let s = shape(&[("TRIPLINE_QUEUE_URL", broken.as_str())]).await;
    s.deploy(
        "orders",
        &three_steps(&s.stub, "aws-orders-token-000000000003"),
    )
    .await;
    let (status, _, body) = s
        .post_hook("aws-orders-token-000000000003", &json!({"order": "C-3"}))
        .await;
    assert_eq!(
        status, 202,
        "the run is recorded, so the webhook is accepted: {body}"
    );
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        s.pump.drain(&s.executor, Duration::from_secs(3)).await,
        0,
        "nothing was enqueued"
    );
    assert_eq!(s.run(&run_id).await["status"], "queued");
    // The stream's batch is indexed in time (the sweeper reads the index; written here
    // with the handler's page code alone, since this stack's executor sweeps after 0 s and
    // would take any batch for a late one), then the sweeper's schedule fires
    // (EventBridge's scheduled event). The deploy's audit entry is indexed with the run.
    let store = tripline_aws::DynamoStore::new(&s.clients, s.settings.clone());
    assert_eq!(
        s.stream.index_with(&store).await,
        2,
        "the run's item and the audit entry are indexed"
    );
    let swept = s
        .executor
        .invoke(json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-11-23T01:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/sweeper"],
            "detail": {}
        }))
        .await
        .expect("sweep");
    assert_eq!(swept, json!({"swept": 1}));
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    assert_eq!(s.run(&run_id).await["status"], "succeeded");
    assert_eq!(s.stub.requests().len(), 2);
    // A second sweep finds nothing new.
    let again = s
        .executor
        .invoke(json!({"detail-type": "Scheduled Event", "source": "aws.events"}))
        .await
        .expect("sweep");
    assert_eq!(again, json!({"swept": 0}));
}

/// The sweeper reads the listings' index, which the executor writes from the runs table's
/// stream: when the stream falls behind, the sweeper can pass a run's time before the run
/// is indexed. The indexer then checks such late runs itself.
#[tokio::test]
async fn a_never_enqueued_run_indexed_after_the_sweeper_passed_it_is_enqueued_by_the_indexer() {
    let broken = format!("{}/123456789012/no-such-queue", endpoint());
    let s = shape(&[("TRIPLINE_QUEUE_URL", broken.as_str())]).await;
    s.deploy(
        "orders",
        &three_steps(&s.stub, "aws-orders-token-000000000009"),
    )
    .await;
    let (status, _, body) = s
        .post_hook("aws-orders-token-000000000009", &json!({"order": "L-1"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    // The sweeper runs before the stream is indexed: it finds nothing and moves on.
    let swept = s
        .executor
        .invoke(json!({"detail-type": "Scheduled Event", "source": "aws.events"}))
        .await
        .expect("sweep");
    assert_eq!(swept, json!({"swept": 0}));
    // The stream's batch arrives late (this stack sweeps after 0 s): its run, still
    // queued, is enqueued by the indexer.
    let event = s.stream.next_event().await.expect("the stream has the run");
    let answer = s.executor.invoke(event).await.expect("indexed");
    assert_eq!(answer["requeued"], 1, "{answer}");
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    assert_eq!(s.run(&run_id).await["status"], "succeeded");
    assert_eq!(s.stub.requests().len(), 2);
}

#[tokio::test]
async fn a_payload_over_the_item_limit_goes_through_s3() {
    let s = shape(&[]).await;
    s.deploy(
        "orders",
        &three_steps(&s.stub, "aws-orders-token-000000000004"),
    )
    .await;
    // ~600 KB: more than a DynamoDB item can hold.
    // Random-looking text, so that deflating the run record cannot bring it under the
    // budget either.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let lines: Vec<String> = (0..12_000)
        .map(|_| {
            (0..40)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ALPHABET[(state % 64) as usize] as char
                })
                .collect()
        })
        .collect();
    let body = json!({"order": "D-4", "lines": lines});
    let (status, headers, answer) = s.post_hook("aws-orders-token-000000000004", &body).await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["run_id"].as_str().expect("run id").to_string();
    let message_id = headers["x-tripline-message-id"].clone();
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    let run = s.run(&run_id).await;
    assert_eq!(run["status"], "succeeded", "{}", run["error"]);
    assert_eq!(
        run["trigger_input"]["body"]["lines"]
            .as_array()
            .map(Vec::len),
        Some(12_000),
        "{}",
        run["trigger_input"].to_string().len()
    );
    let (_, _, message) = s
        .http(
            &s.control,
            "GET",
            &format!("/v1/inbox/{message_id}"),
            &[],
            b"",
        )
        .await;
    let sent: Value =
        serde_json::from_str(message["body"].as_str().expect("text body")).expect("json");
    assert_eq!(sent, body);
    let objects = s
        .clients
        .s3
        .list_objects_v2()
        .bucket(&s.settings.bucket)
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.contains(&format!("inbox/{message_id}").as_str()),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("runs/{run_id}/"))),
        "{keys:?}"
    );
}

#[tokio::test]
async fn a_failing_step_is_retried_through_the_queue_and_a_failed_batch_item_is_redelivered() {
    let s = shape(&[]).await;
    s.stub.script([Reply::status(503)]);
    s.deploy(
        "orders",
        &three_steps(&s.stub, "aws-orders-token-000000000005"),
    )
    .await;
    let (_, _, body) = s
        .post_hook("aws-orders-token-000000000005", &json!({"order": "E-5"}))
        .await;
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    // First delivery: the step fails with 503 and its retry is a delayed SQS message.
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    let run = s.run(&run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(s.stub.requests().len(), 3, "reserve twice, notify once");

    // A record the executor cannot handle is reported as a batch item failure: SQS keeps
    // it and delivers it again (and to the dead-letter queue after the redrive limit).
    s.clients
        .sqs
        .send_message()
        .queue_url(&s.settings.queue_url)
        .message_body("not a work item")
        .send()
        .await
        .expect("send");
    let mut pump =
        tripline_tests::lambda::Pump::new(s.clients.sqs.clone(), &s.settings.queue_url).await;
    pump.visibility = Duration::from_secs(1);
    let first = pump.once(&s.executor, Duration::from_secs(2)).await;
    assert_eq!((first.delivered, first.failed), (1, 1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = tripline_tests::lambda::receive(
        &s.clients.sqs,
        &s.settings.queue_url,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(again.len(), 1, "the failed record was not deleted");
    assert_eq!(again[0].body(), Some("not a work item"));
    assert_eq!(
        again[0]
            .attributes()
            .and_then(
                |a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            )
            .map(String::as_str),
        Some("2")
    );
}

#[tokio::test]
async fn a_spray_of_made_up_tokens_costs_no_store_read_per_request() {
    use tower::ServiceExt as _;
    let counter = tripline_aws::CallCounter::default();
    let (clients, settings) = tripline_tests::aws::fresh(Some(counter.clone())).await;
    let mut config = tripline_aws::config_from_env().expect("config");
    config.hide_unknown_tokens = false;
    let app = tripline_aws::build_app(&clients, settings, config);
    counter.reset();
    for i in 0..50 {
        let req = axum::http::Request::post(format!("/hooks/made-up-token-{i:03}-aaaaaaaaaa"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .expect("request");
        let resp = tripline_app::http::ingress::router(app.clone())
            .oneshot(req)
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 404);
    }
    let reads: u64 = counter
        .snapshot()
        .iter()
        .filter(|(k, _)| k.starts_with("DynamoDB."))
        .map(|(_, v)| *v)
        .sum();
    assert!(
        reads <= 4,
        "50 unknown tokens cost {reads} DynamoDB calls: {:?}",
        counter.snapshot()
    );
}
