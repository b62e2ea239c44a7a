//! A concurrency limit in the AWS shape: a burst through `limit: 3` with two step-executor
//! functions, each fed by its own SQS pump at the same time; the slot record in DynamoDB
//! is written conditionally, so the downstream never sees more than 3 runs at once.

use std::time::Duration;

use serde_json::json;
use tripline_tests::Reply;
use tripline_tests::aws::endpoint;
use tripline_tests::lambda::{Function, Pump, function_env};
use tripline_tests::shape::{PUBLIC_URL, shape};

#[tokio::test]
async fn a_burst_through_limit_3_with_two_executors_at_once_never_exceeds_3() {
    let s = shape(&[]).await;
    s.stub.set_default(Reply::slow(Duration::from_millis(150)));
    s.deploy(
        "limited",
        &format!(
            r#"
id: limited
concurrency: {{ limit: 3 }}
triggers: [{{ type: webhook, id: hook, token: aws-concurrency-token-00001 }}]
steps:
  - {{ id: call, type: http, method: POST, url: "{}/work", body: {{ n: "{{{{ trigger.body.n }}}}" }} }}
"#,
            s.stub.url
        ),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..24 {
        let (status, _, body) = s
            .post_hook("aws-concurrency-token-00001", &json!({"n": n}))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["run_id"].as_str().expect("id").to_string());
    }
    let mut env = function_env(&s.settings, &endpoint());
    env.push(("TRIPLINE_SWEEP_AFTER".into(), "0s".into()));
    env.push(("TRIPLINE_PUBLIC_URL".into(), PUBLIC_URL.into()));
    let second = Function::start("step-executor", &env).await;
    let other_pump = Pump::new(s.clients.sqs.clone(), &s.settings.queue_url).await;
    tokio::join!(
        s.pump.drain(&s.executor, Duration::from_secs(120)),
        other_pump.drain(&second, Duration::from_secs(120)),
    );
    for id in &ids {
        let run = s.run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let max = s.stub.max_in_flight();
    assert!(max <= 3, "{max} runs at the downstream at once");
    assert!(max >= 2, "both executors worked under the limit: {max}");
    let mut seen: Vec<i64> = s
        .stub
        .requests()
        .iter()
        .filter_map(|r| r.body["n"].as_i64())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..24).collect::<Vec<i64>>(), "each run called once");
}
