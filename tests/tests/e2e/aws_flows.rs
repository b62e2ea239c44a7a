//! Flow triggers in the AWS shape: the real step-executor binary, fed by the SQS pump, ends
//! a run and starts the runs of the workflows listening to it, in DynamoDB and SQS.

use std::time::Duration;

use serde_json::json;
use tripline_tests::shape::shape;

#[tokio::test]
async fn a_run_end_starts_its_listeners_through_the_queue() {
    let s = shape(&[]).await;
    s.deploy(
        "source",
        "id: source\ntriggers: [{type: webhook, id: hook, token: aws-flow-source-token-00001}]\nsteps: [{id: out, type: transform, value: '{{ trigger.body.items }}'}]\n",
    )
    .await;
    s.deploy(
        "each",
        "id: each\ntriggers: [{type: flow, workflow: source, for_each: true}]\nsteps: [{id: e, type: transform, value: '{{ trigger.body * 10 }}'}]\n",
    )
    .await;
    s.deploy(
        "on-failure",
        "id: on-failure\ntriggers: [{type: flow, workflow: source, on: [failed]}]\nsteps: [{id: e, type: transform, value: 1}]\n",
    )
    .await;
    let (status, _, body) = s
        .post_hook("aws-flow-source-token-00001", &json!({"items": [1, 2, 3]}))
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    let parent = s.run(&run_id).await;
    assert_eq!(parent["status"], "succeeded", "{parent}");
    let children: Vec<String> = parent["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    assert_eq!(children.len(), 3, "{parent}");
    let mut outputs = Vec::new();
    for c in &children {
        let child = s.run(c).await;
        assert_eq!(child["status"], "succeeded", "{child}");
        assert_eq!(child["parent"]["run_id"], run_id.as_str());
        outputs.push(child["final_output"].as_i64().unwrap_or_default());
    }
    outputs.sort();
    assert_eq!(outputs, vec![10, 20, 30]);
    let (_, _, runs) = s
        .http(&s.control, "GET", "/v1/runs?workflow=on-failure", &[], b"")
        .await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(0), "{runs}");

    // A loop is refused by the control API.
    let (status, _, body) = s
        .http(
            &s.control,
            "PUT",
            "/v1/workflows/source",
            &[("content-type", "application/yaml")],
            b"id: source\ntriggers: [{type: flow, workflow: each}]\nsteps: [{id: a, type: transform, value: 1}]\n",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string().contains("source → each → source"),
        "{body}"
    );
}

#[tokio::test]
async fn a_failure_handler_sees_the_failed_step_and_its_response_in_the_aws_shape() {
    let s = shape(&[]).await;
    s.stub.script([tripline_tests::Reply {
        status: 422,
        body: json!({"error": "card declined"}),
        delay: Duration::ZERO,
    }]);
    s.deploy(
        "charge",
        &format!(
            "id: charge\ntriggers: [{{type: webhook, id: hook, token: aws-flow-charge-token-00001}}]\nsteps: [{{id: pay, type: http, method: POST, url: '{}/pay'}}]\n",
            s.stub.url
        ),
    )
    .await;
    s.deploy(
        "alert",
        "id: alert\ntriggers: [{type: flow, workflow: charge, on: [failed]}]\nsteps: [{id: tell, type: transform, value: {who: '{{ trigger.input.body.customer }}', step: '{{ trigger.failed_step.id }}', said: '{{ trigger.failed_step.response.body.error }}'}}]\n",
    )
    .await;
    let (status, _, body) = s
        .post_hook("aws-flow-charge-token-00001", &json!({"customer": "ana"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().expect("run id").to_string();
    s.pump.drain(&s.executor, Duration::from_secs(30)).await;
    let failed = s.run(&run_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let child = failed["children"][0]
        .as_str()
        .expect("the handler")
        .to_string();
    let handled = s.run(&child).await;
    assert_eq!(handled["status"], "succeeded", "{handled}");
    assert_eq!(
        handled["final_output"],
        json!({"who": "ana", "step": "pay", "said": "card declined"})
    );
}
