//! Step semantics end to end: retries with back-off, timeouts, max_duration, the
//! private-network guard.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tripline_app::Config;
use tripline_tests::*;

fn workflow(stub: &Stub, extra: &str) -> String {
    format!(
        r#"
id: steps
triggers:
  - type: manual
steps:
  - id: call
    type: http
    method: POST
    url: "{}/work"
    body: {{ n: 1 }}
{extra}
"#,
        stub.url
    )
}

async fn start(app: &TestApp) -> serde_json::Value {
    let (status, _, body) = app.post_json("/v1/workflows/steps/runs", &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_run(body["run_id"].as_str().expect("id")).await
}

#[tokio::test]
async fn a_failing_step_is_retried_with_backoff_and_the_same_idempotency_key() {
    let stub = Stub::start().await;
    stub.script([Reply::status(503), Reply::status(429)]);
    let app = spawn_app(Opts::default().workflow(
        "w.yaml",
        &workflow(
            &stub,
            "    retry: { max_attempts: 4, backoff: exponential, initial: 100ms, max: 1s }",
        ),
    ))
    .await;
    let run = start(&app).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let execs = run["step_executions"].as_array().expect("executions");
    let attempts: Vec<(u64, &str)> = execs
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap_or(0),
                e["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        vec![(1, "failed"), (2, "failed"), (3, "succeeded")]
    );
    assert_eq!(execs[0]["error"]["class"], "status5xx");
    assert_eq!(execs[1]["error"]["class"], "status429");
    assert_eq!(
        execs[0]["output"]["status"], 503,
        "the failed response is recorded"
    );

    let reqs = stub.requests();
    assert_eq!(reqs.len(), 3);
    let key = format!("{}:call", run["id"].as_str().unwrap_or_default());
    assert!(reqs.iter().all(|r| r.headers["idempotency-key"] == key));
    // Back-off: 100ms before the 2nd attempt, 200ms before the 3rd.
    let t = |i: usize| {
        execs[i]["started_at"]
            .as_str()
            .and_then(|s| tripline_core::Timestamp::parse_rfc3339(s).ok())
            .expect("time")
            .millis()
    };
    assert!(t(1) - t(0) >= 100, "{} ms", t(1) - t(0));
    assert!(t(2) - t(1) >= 200, "{} ms", t(2) - t(1));
}

#[tokio::test]
async fn a_step_that_sets_its_own_idempotency_key_sends_only_that_one() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default().workflow(
        "w.yaml",
        &workflow(
            &stub,
            "    headers: { Idempotency-Key: \"order-{{ trigger.body.n }}\" }",
        ),
    ))
    .await;
    let (status, _, body) = app
        .post_json("/v1/workflows/steps/runs", &json!({"n": 7}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let reqs = stub.requests();
    assert_eq!(reqs[0].headers["idempotency-key"], "order-7");
    app.stop().await;
}

#[tokio::test]
async fn a_client_error_is_not_retried_by_default() {
    let stub = Stub::start().await;
    stub.set_default(Reply::status(422));
    let app = spawn_app(Opts::default().workflow(
        "w.yaml",
        &workflow(&stub, "    retry: { max_attempts: 3, initial: 10ms }"),
    ))
    .await;
    let run = start(&app).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(stub.requests().len(), 1);
    assert!(
        run["error"].as_str().unwrap_or_default().contains("422"),
        "{run}"
    );
}

#[tokio::test]
async fn success_status_widens_what_counts_as_success() {
    let stub = Stub::start().await;
    stub.set_default(Reply::status(404));
    let app = spawn_app(
        Opts::default().workflow("w.yaml", &workflow(&stub, "    success_status: [2xx, 404]")),
    )
    .await;
    let run = start(&app).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"]["status"], 404);
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_is_retried() {
    let stub = Stub::start().await;
    stub.script([Reply::slow(Duration::from_secs(3))]);
    let app = spawn_app(Opts::default().workflow(
        "w.yaml",
        &workflow(
            &stub,
            "    timeout: 300ms\n    retry: { max_attempts: 2, initial: 10ms }",
        ),
    ))
    .await;
    let run = start(&app).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["step_executions"][0]["error"]["class"], "timeout");
}

#[tokio::test]
async fn a_run_past_max_duration_ends_timed_out() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_secs(5)));
    let yaml = format!(
        "{}max_duration: 400ms\n",
        workflow(
            &stub,
            "    timeout: 10s\n    retry: { max_attempts: 5, initial: 10ms }"
        )
    );
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml)).await;
    let run = start(&app).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error_type"], "timed_out");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let stub = Stub::start().await;
    let mut opts = Opts::default().workflow(
        "w.yaml",
        &workflow(&stub, "    retry: { max_attempts: 3, initial: 10ms }"),
    );
    opts.config = Config::default();
    let app = spawn_app(opts).await;
    let run = start(&app).await;
    assert_eq!(run["status"], "failed");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("private or loopback"),
        "{run}"
    );
    assert_eq!(
        stub.requests().len(),
        0,
        "nothing reached the private address"
    );
    assert_eq!(
        run["step_executions"].as_array().map(Vec::len),
        Some(1),
        "a refusal is not retried"
    );
}

#[tokio::test]
async fn a_hostname_resolving_to_loopback_is_refused_too() {
    let stub = Stub::start().await;
    let yaml = workflow(&stub, "").replace("127.0.0.1", "localhost");
    let mut opts = Opts::default().workflow("w.yaml", &yaml);
    opts.config = Config::default();
    let app = spawn_app(opts).await;
    let run = start(&app).await;
    assert_eq!(run["status"], "failed");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("private or loopback"),
        "{run}"
    );
    assert_eq!(stub.requests().len(), 0);
}

#[tokio::test]
async fn every_loopback_spelling_is_refused_and_recorded_with_the_reason() {
    // Targets that can only reach this machine, whatever the guard does.
    let stub = Stub::start().await;
    let port = stub.url.rsplit(':').next().expect("port").to_string();
    for host in [
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "[::1]",
        "127.1.2.3",
        "[::127.0.0.1]",
    ] {
        let yaml = workflow(&stub, "").replace(&stub.url, &format!("http://{host}:{port}"));
        let mut opts = Opts::default().workflow("w.yaml", &yaml);
        opts.config = Config::default();
        let app = spawn_app(opts).await;
        let run = start(&app).await;
        assert_eq!(run["status"], "failed", "{host}: {run}");
        let recorded = run["step_executions"][0]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(recorded.contains("private or loopback"), "{host}: {run}");
    }
    assert_eq!(
        stub.requests().len(),
        0,
        "nothing reached this machine's stub"
    );
}

async fn start_with(app: &TestApp, input: &serde_json::Value) -> serde_json::Value {
    let (status, _, body) = app.post_json("/v1/workflows/steps/runs", input).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_run(body["run_id"].as_str().expect("id")).await
}

#[tokio::test]
async fn values_in_a_urls_path_and_query_are_encoded_unless_marked_raw() {
    let stub = Stub::start().await;
    let yaml = workflow(&stub, "").replace(
        &format!("{}/work", stub.url),
        &format!(
            "{}/items/{{{{ trigger.body.id }}}}/{{{{ trigger.body.path | raw }}}}?q={{{{ trigger.body.q }}}}",
            stub.url
        ),
    );
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml)).await;
    let input = json!({"id": "a/../admin?x=1", "path": "v2/list", "q": "x&y=1 z"});
    let run = start_with(&app, &input).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let req = &stub.requests()[0];
    assert_eq!(req.path, "/items/a%2F..%2Fadmin%3Fx%3D1/v2/list");
    assert_eq!(req.query, "q=x%26y%3D1%20z");
    // The run records the URL as it was sent.
    let sent = run["step_executions"][0]["request"]["url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        sent.ends_with("/items/a%2F..%2Fadmin%3Fx%3D1/v2/list?q=x%26y%3D1%20z"),
        "{sent}"
    );
}

#[tokio::test]
async fn a_workflows_allowed_hosts_refuse_other_hosts_and_redirects() {
    let stub = Stub::start().await;
    let elsewhere = Stub::start().await;
    // A host not on the list: refused before anything is sent, with the reason.
    let yaml = workflow(&stub, "allowed_hosts: [api.example.com, \"*.example.org\"]");
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml)).await;
    let run = start(&app).await;
    assert_eq!(run["status"], "failed", "{run}");
    let said = run["step_executions"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("allowed_hosts") && said.contains("127.0.0.1"),
        "{said}"
    );
    assert_eq!(stub.requests().len(), 0);

    // A listed host's redirect to another server is not followed.
    stub.script([Reply::redirect(&format!("{}/moved", elsewhere.url))]);
    let yaml = workflow(&stub, "allowed_hosts: [\"127.0.0.1\"]");
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml)).await;
    let run = start(&app).await;
    assert_eq!(run["status"], "failed", "{run}");
    let said = run["step_executions"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("302"), "{said}");
    assert_eq!(stub.requests().len(), 1);
    assert_eq!(
        elsewhere.requests().len(),
        0,
        "the redirect was not followed"
    );

    // A definition with a URL where a host belongs is refused at deploy.
    let (status, body) = app
        .deploy("bad", "id: bad\nallowed_hosts: [\"https://api.example.com/x\"]\ntriggers: [{type: manual}]\nsteps: [{id: t, type: transform, value: 1}]\n")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("allowed_hosts[0]"), "{body}");
}
