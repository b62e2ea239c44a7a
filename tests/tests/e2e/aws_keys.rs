//! The AWS control API's key: kept in Parameter Store (never in the function's
//! environment), read at cold start; scoped keys made through the API work across
//! functions' caches; the audit log is kept in DynamoDB with the HTTP API's source address.

use serde_json::{Value, json};
use tripline_tests::aws::endpoint;
use tripline_tests::lambda::{Function, function_env};
use tripline_tests::shape::{Shape, shape};

const MAIN: &str = "aws-main-key-0123456789abcdef";

async fn call(
    s: &Shape,
    f: &Function,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, _, answer) = s.http(f, method, path, &headers, &bytes).await;
    (status, answer)
}

#[tokio::test]
async fn the_key_comes_from_parameter_store_and_scoped_keys_and_the_audit_log_work() {
    let s = shape(&[]).await;
    let parameter = format!(
        "/tripline/{}/control/api-key",
        tripline_tests::aws::unique_prefix()
    );
    aws_sdk_ssm::Client::new(s.clients.sdk_config())
        .put_parameter()
        .name(&parameter)
        .value(MAIN)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("put the key");
    let mut env = function_env(&s.settings, &endpoint());
    env.push(("TRIPLINE_API_KEY_PARAMETER".into(), parameter));
    let control = Function::start("control-api", &env).await;

    let (status, _) = call(&s, &control, None, "GET", "/v1/runs", &Value::Null).await;
    assert_eq!(status, 401, "no key");
    let (status, body) = call(&s, &control, Some(MAIN), "GET", "/v1/runs", &Value::Null).await;
    assert_eq!(status, 200, "{body}");

    let (status, made) = call(
        &s,
        &control,
        Some(MAIN),
        "POST",
        "/v1/keys",
        &json!({"name": "viewer", "scope": "read"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let viewer = made["key"].as_str().expect("key").to_string();
    assert_eq!(
        call(
            &s,
            &control,
            Some(&viewer),
            "GET",
            "/v1/inbox",
            &Value::Null
        )
        .await
        .0,
        200
    );
    let (status, body) = call(
        &s,
        &control,
        Some(&viewer),
        "DELETE",
        "/v1/secrets/x",
        &Value::Null,
    )
    .await;
    assert_eq!(status, 403, "{body}");

    s.index().await;
    let (status, log) = call(&s, &control, Some(MAIN), "GET", "/v1/audit", &Value::Null).await;
    assert_eq!(status, 200, "{log}");
    let first = &log["items"][0];
    assert_eq!(first["key"], "viewer", "{log}");
    assert_eq!(first["action"], "DELETE /v1/secrets/{name}");
    assert_eq!(first["status"], 403);
    assert_eq!(first["from"], "203.0.113.7", "the HTTP API's sourceIp");
    assert_eq!(log["items"][1]["action"], "POST /v1/keys");
    assert_eq!(log["items"][1]["key"], "main");
    control.stop().await;
}

#[tokio::test]
async fn a_missing_or_weak_key_parameter_stops_the_control_api_at_start() {
    let s = shape(&[]).await;
    let parameter = format!(
        "/tripline/{}/control/weak",
        tripline_tests::aws::unique_prefix()
    );
    aws_sdk_ssm::Client::new(s.clients.sdk_config())
        .put_parameter()
        .name(&parameter)
        .value("short")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("put the key");
    for name in [parameter, "/tripline/none/control/api-key".to_string()] {
        let mut env = function_env(&s.settings, &endpoint());
        env.push(("TRIPLINE_API_KEY_PARAMETER".into(), name.clone()));
        let mut control = Function::start("control-api", &env).await;
        let ended = control
            .exit_within(std::time::Duration::from_secs(20))
            .await;
        assert!(ended.is_some_and(|e| !e.success()), "{name}: {ended:?}");
    }
}
