//! Secrets in the AWS shape: set through the control API into SSM Parameter Store
//! (SecureString, under the stack's prefix, against moto), read by the webhook ingress (a
//! webhook's key) and the step executor (a step's header), never shown back.

use serde_json::{Value, json};
use tripline_tests::Reply;
use tripline_tests::shape::{Shape, shape};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn put_secret(s: &Shape, name: &str, value: &str) -> (u16, Value) {
    let (status, _, body) = s
        .http(
            &s.control,
            "PUT",
            &format!("/v1/secrets/{name}"),
            &[("content-type", "application/json")],
            json!({ "value": value }).to_string().as_bytes(),
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn secrets_live_in_parameter_store_and_reach_hooks_and_steps_but_never_answers() {
    let s = shape(&[]).await;
    let token = "secretshookaaaaaaaaaaaaa";
    let (status, body) = put_secret(&s, "crm_token", "crm-Tok-4f1c9a77e2").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains("crm-Tok-4f1c9a77e2"));
    assert_eq!(
        put_secret(&s, "hook_key", "hook-key-0123456789abcdef")
            .await
            .0,
        200
    );
    assert_eq!(put_secret(&s, "bad-name", "x").await.0, 400);

    // Kept as a SecureString under the stack's prefix.
    let param = aws_sdk_ssm::Client::new(s.clients.sdk_config())
        .get_parameter()
        .name(format!("{}/crm_token", s.settings.secrets_prefix))
        .send()
        .await
        .expect("the parameter exists")
        .parameter
        .expect("parameter");
    assert_eq!(
        param.r#type,
        Some(aws_sdk_ssm::types::ParameterType::SecureString)
    );

    // A definition naming a secret that does not exist is refused with the closest names.
    let missing = format!(
        "id: crm\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: a, type: http, url: \"{}/x\", headers: {{ authorization: \"Bearer {{{{ secrets.crm_tokn }}}}\" }} }}\n",
        s.stub.url
    );
    let (status, _, body) = s
        .http(
            &s.control,
            "PUT",
            "/v1/workflows/crm",
            &[("content-type", "application/yaml")],
            missing.as_bytes(),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let text = body.to_string();
    assert!(text.contains("`crm_tokn` does not exist"), "{text}");
    assert!(text.contains("`crm_token`"), "{text}");

    s.stub.script([Reply {
        status: 200,
        body: json!({"echo": "Bearer crm-Tok-4f1c9a77e2"}),
        delay: std::time::Duration::ZERO,
    }]);
    s.deploy(
        "crm",
        &format!(
            r#"
id: crm
triggers:
  - type: webhook
    token: {token}
    auth: {{ type: api_key, header: x-hook-key, keys: ["{{{{ secrets.hook_key }}}}"] }}
steps:
  - id: push
    type: http
    method: POST
    url: "{url}/contacts"
    headers: {{ authorization: "Bearer {{{{ secrets.crm_token }}}}" }}
    body: {{ id: "{{{{ trigger.body.id }}}}" }}
"#,
            url = s.stub.url
        ),
    )
    .await;

    let path = format!("/hooks/{token}");
    let body = br#"{"id": 7}"#;
    let (status, _, _) = s
        .http(
            &s.ingress,
            "POST",
            &path,
            &[("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(status, 401, "without the key");
    let (status, _, accepted) = s
        .http(
            &s.ingress,
            "POST",
            &path,
            &[
                ("content-type", "application/json"),
                ("x-hook-key", "hook-key-0123456789abcdef"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().expect("run id").to_string();
    let run = s.pump_until(&run_id, "succeeded", LIMIT).await;

    let sent = s.stub.requests();
    assert_eq!(
        sent[0].headers["authorization"],
        "Bearer crm-Tok-4f1c9a77e2"
    );
    let text = run.to_string();
    assert!(!text.contains("crm-Tok-4f1c9a77e2"), "{text}");
    assert!(!text.contains("hook-key-0123456789abcdef"), "{text}");
    let recorded = run["step_executions"].to_string();
    assert!(recorded.contains("Bearer [secret:crm_token]"), "{recorded}");

    let (_, _, listed) = s.http(&s.control, "GET", "/v1/secrets", &[], b"").await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["crm_token", "hook_key"]);
    assert_eq!(listed["items"][0]["used_by"], json!(["crm"]));
    assert!(!listed.to_string().contains("crm-Tok"), "{listed}");
    let (_, _, wf) = s
        .http(&s.control, "GET", "/v1/workflows/crm", &[], b"")
        .await;
    assert!(!wf.to_string().contains("hook-key-0123"), "{wf}");

    // In use: removing needs force.
    let (status, _, _) = s
        .http(&s.control, "DELETE", "/v1/secrets/crm_token", &[], b"")
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn the_ip_allowlist_reads_the_http_apis_source_ip() {
    // The harness's API Gateway events come from 203.0.113.7.
    let s = shape(&[]).await;
    for (id, token, list, expected) in [
        (
            "inside",
            "ipinsidetokenaaaaaaaaaaa",
            "[\"203.0.113.0/24\"]",
            202,
        ),
        (
            "outside",
            "ipoutsidetokenaaaaaaaaaa",
            "[\"10.0.0.0/8\"]",
            403,
        ),
    ] {
        s.deploy(
            id,
            &format!(
                "id: {id}\ntriggers:\n  - {{ type: webhook, token: {token}, ip_allowlist: {list} }}\nsteps:\n  - {{ id: t, type: transform, value: 1 }}\n"
            ),
        )
        .await;
        // An unknown token looks at the deploy marker at most once a second: the second
        // workflow's token may answer 404 until its look.
        let since = std::time::Instant::now();
        let (status, body) = loop {
            let (status, _, body) = s.post_hook(token, &json!({})).await;
            if status != 404 || since.elapsed() > std::time::Duration::from_secs(3) {
                break (status, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!(status, expected, "{id}: {body}");
    }
}
