//! Operating on runs in the AWS shape: the control function retries a failed run from its
//! failed step against moto; the executor function runs it.

use std::time::Duration;

use serde_json::json;
use tripline_tests::Reply;
use tripline_tests::shape::shape;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_control_function_retries_a_failed_run_from_its_failed_step() {
    let s = shape(&[]).await;
    let yaml = format!(
        r#"
id: charge
triggers: [{{ type: manual }}]
steps:
  - {{ id: a, type: transform, value: {{ n: "{{{{ trigger.body.n }}}}" }} }}
  - {{ id: b, type: http, url: "{}/charge", method: POST, body: {{ n: "{{{{ steps.a.n }}}}" }} }}
"#,
        s.stub.url
    );
    s.deploy("charge", &yaml).await;
    s.stub.script([Reply::status(400)]);
    let id = s.start("charge", &json!({"n": 3})).await;
    s.pump_until(&id, "failed", LIMIT).await;

    let retry = |key: &'static str| {
        let path = format!("/v1/runs/{id}/retry?from=failed_step");
        let s = &s;
        async move {
            s.http(
                &s.control,
                "POST",
                &path,
                &[("idempotency-key", key), ("x-tripline-request", "1")],
                b"",
            )
            .await
        }
    };
    let (status, _, first) = retry("k1").await;
    assert_eq!(status, 201, "{first}");
    let (status, _, again) = retry("k1").await;
    assert_eq!(
        (status, again["run_id"].clone()),
        (200, first["run_id"].clone())
    );
    let new_id = first["run_id"].as_str().expect("run id");
    let run = s.pump_until(new_id, "succeeded", LIMIT).await;
    assert_eq!(run["retry_of"]["run_id"], id.as_str(), "{run}");
    assert_eq!(run["step_executions"][0]["step_id"], "a");
    let sent = s.stub.requests();
    assert_eq!(sent.len(), 2, "only `b` was sent again");
    assert_eq!(sent[1].headers["idempotency-key"], format!("{new_id}:b"));
}
