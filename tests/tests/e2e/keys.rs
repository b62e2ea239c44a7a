//! Scoped control API keys and the audit log, through the real server: each scope does
//! what it names and no more, keys rotate, a removed key stops at once, and every
//! state-changing action is logged with its key's name, route, status and address.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tripline_tests::*;

const MAIN: &str = "main-key-0123456789abcdefgh";
const WORKFLOW: &str =
    "id: w\ntriggers: [{type: manual}]\nsteps:\n  - {id: t, type: transform, value: 1}\n";

async fn call(
    app: &TestApp,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = app.client.request(method, app.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put_yaml(app: &TestApp, key: &str, yaml: &str) -> StatusCode {
    app.client
        .put(app.url("/v1/workflows/w"))
        .bearer_auth(key)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .expect("request")
        .status()
}

async fn make_key(app: &TestApp, name: &str, scope: &str) -> String {
    let (status, body) = call(
        app,
        Some(MAIN),
        Method::POST,
        "/v1/keys",
        Some(json!({"name": name, "scope": scope})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["key"].as_str().expect("the key, once").to_string()
}

async fn keyed_app() -> TestApp {
    let mut opts = Opts::default();
    opts.config.api_key = Some(MAIN.into());
    spawn_app(opts.workflow("w.yaml", WORKFLOW)).await
}

#[tokio::test]
async fn each_scope_does_what_it_names_and_no_more() {
    let app = keyed_app().await;
    let read = make_key(&app, "dashboard", "read").await;
    let operate = make_key(&app, "oncall", "operate").await;
    let deploy = make_key(&app, "ci", "deploy").await;

    // read: looks, changes nothing.
    assert_eq!(
        call(&app, Some(&read), Method::GET, "/v1/runs", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = call(
        &app,
        Some(&read),
        Method::POST,
        "/v1/workflows/w/runs",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "insufficient_scope");
    let said = body["detail"].as_str().unwrap_or_default();
    assert!(
        said.contains("dashboard") && said.contains("operate"),
        "{said}"
    );

    // operate: starts runs, deploys nothing.
    let (status, body) = call(
        &app,
        Some(&operate),
        Method::POST,
        "/v1/workflows/w/runs",
        Some(json!({})),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let changed = WORKFLOW.replace("value: 1", "value: 2");
    assert_eq!(
        put_yaml(&app, &operate, &changed).await,
        StatusCode::FORBIDDEN
    );

    // deploy: changes workflows and secrets, manages no keys, reads no audit log.
    assert!(put_yaml(&app, &deploy, &changed).await.is_success());
    let (status, _) = call(
        &app,
        Some(&deploy),
        Method::PUT,
        "/v1/secrets/tok",
        Some(json!({"value": "v-123"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in [(Method::GET, "/v1/keys"), (Method::GET, "/v1/audit")] {
        assert_eq!(
            call(&app, Some(&deploy), method, path, None).await.0,
            StatusCode::FORBIDDEN
        );
    }
    let (status, _) = call(
        &app,
        Some(&deploy),
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "x", "scope": "admin"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // No key, or one the server does not know: 401.
    assert_eq!(
        call(&app, None, Method::GET, "/v1/runs", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let made_up = format!("{read}x");
    assert_eq!(
        call(&app, Some(&made_up), Method::GET, "/v1/runs", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn keys_rotate_and_a_removed_key_stops_at_once_and_is_never_shown() {
    let app = keyed_app().await;
    let old = make_key(&app, "dash_old", "read").await;
    let new = make_key(&app, "dash_new", "read").await;
    for k in [&old, &new] {
        assert_eq!(
            call(&app, Some(k), Method::GET, "/v1/runs", None).await.0,
            StatusCode::OK
        );
    }
    let (status, listed) = call(&app, Some(MAIN), Method::GET, "/v1/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = listed.to_string();
    assert!(
        text.contains("dash_old") && text.contains("\"read\""),
        "{text}"
    );
    assert!(
        !text.contains(&old) && !text.contains(&new),
        "a key's value is never listed"
    );
    // A second key of the same name is refused; names the audit log uses are taken.
    let (status, _) = call(
        &app,
        Some(MAIN),
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "dash_new", "scope": "read"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = call(
        &app,
        Some(MAIN),
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "main", "scope": "read"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &app,
        Some(MAIN),
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "z", "scope": "root"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.to_string().contains("read, operate, deploy or admin"),
        "{body}"
    );
    // Not a secret either: the keys are Tripline's own records.
    let (_, secrets) = call(&app, Some(MAIN), Method::GET, "/v1/secrets", None).await;
    assert!(!secrets.to_string().contains("dash_old"), "{secrets}");

    let (status, _) = call(&app, Some(MAIN), Method::DELETE, "/v1/keys/dash_old", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, Some(&old), Method::GET, "/v1/runs", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, Some(&new), Method::GET, "/v1/runs", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = call(&app, Some(MAIN), Method::DELETE, "/v1/keys/dash_old", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_state_changing_action_is_in_the_audit_log_which_cannot_be_edited() {
    let app = keyed_app().await;
    let operate = make_key(&app, "oncall", "operate").await;
    let read = make_key(&app, "dashboard", "read").await;
    let (status, _) = call(
        &app,
        Some(&operate),
        Method::POST,
        "/v1/workflows/w/runs",
        Some(json!({})),
    )
    .await;
    assert!(status.is_success());
    call(
        &app,
        Some(&read),
        Method::POST,
        "/v1/workflows/w/runs",
        Some(json!({})),
    )
    .await;
    call(&app, Some(&read), Method::GET, "/v1/runs", None).await;

    let (status, log) = call(&app, Some(MAIN), Method::GET, "/v1/audit", None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let items = log["items"].as_array().expect("items").clone();
    let seen: Vec<(String, String, u64)> = items
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap_or_default().to_string(),
                e["action"].as_str().unwrap_or_default().to_string(),
                e["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    // Newest first; a refused change is logged with its 403; looking is not logged.
    let want = [
        ("dashboard", "POST /v1/workflows/{id}/runs", 403),
        ("oncall", "POST /v1/workflows/{id}/runs", 202),
        ("main", "POST /v1/keys", 201),
        ("main", "POST /v1/keys", 201),
    ];
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(k, a, s)| (k.to_string(), a.to_string(), *s))
        .collect();
    assert_eq!(seen, want, "{log}");
    assert_eq!(items[1]["path"], "/v1/workflows/w/runs");
    assert_eq!(items[1]["from"], "127.0.0.1");
    assert!(items[1]["at"].is_string());

    // No route changes or removes an entry.
    for method in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH] {
        let (status, _) = call(
            &app,
            Some(MAIN),
            method.clone(),
            "/v1/audit",
            Some(json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    let (status, _) = call(
        &app,
        Some(MAIN),
        Method::DELETE,
        &format!("/v1/audit/{}", items[0]["id"].as_str().unwrap_or_default()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_key_loopback_callers_are_logged_as_local() {
    let app = spawn_app(Opts::default().workflow("w.yaml", WORKFLOW)).await;
    let (status, _) = call(
        &app,
        None,
        Method::POST,
        "/v1/workflows/w/runs",
        Some(json!({})),
    )
    .await;
    assert!(status.is_success());
    let (_, log) = call(&app, None, Method::GET, "/v1/audit", None).await;
    assert_eq!(log["items"][0]["key"], "local", "{log}");
    // A key made on such a server works, with its scope.
    let (status, made) = call(
        &app,
        None,
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "ro", "scope": "read"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let ro = made["key"].as_str().expect("key");
    let (status, _) = call(
        &app,
        Some(ro),
        Method::POST,
        "/v1/workflows/w/runs",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[test]
fn the_cli_makes_lists_and_removes_keys_in_a_data_folder() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let tripline = |args: &[&str]| {
        let out = std::process::Command::new(tripline_bin())
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, key, said) = tripline(&["keys", "create", "ci", "--scope", "deploy"]);
    assert!(ok, "{said}");
    let key = key.trim();
    assert!(
        key.starts_with("tl_") && key.len() > 40,
        "the key alone on stdout: {key}"
    );
    let (ok, listed, _) = tripline(&["keys", "list"]);
    assert!(
        ok && listed.contains("ci") && listed.contains("deploy"),
        "{listed}"
    );
    assert!(!listed.contains(key));
    let (ok, _, said) = tripline(&["keys", "create", "x", "--scope", "root"]);
    assert!(
        !ok && said.contains("read, operate, deploy or admin"),
        "{said}"
    );
    let (ok, _, _) = tripline(&["keys", "rm", "ci"]);
    assert!(ok);
    let (ok, _, said) = tripline(&["keys", "rm", "ci"]);
    assert!(!ok && said.contains("no key `ci`"), "{said}");
}
