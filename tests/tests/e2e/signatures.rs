//! Webhook signatures through the local server: the senders' presets with their secrets
//! by name, redeliveries recognized by the sender's delivery id (an unsigned
//! `Idempotency-Key` cannot override it), each failed check named in a 401 that stores
//! nothing, rotation, and `ip_allowlist`.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tripline_tests::{Opts, TestApp, spawn_app};

fn hmac_hex(key: &str, parts: &[&[u8]]) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    for p in parts {
        m.update(p);
    }
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn set_secret(app: &TestApp, name: &str, value: &str) {
    let (status, body) = app
        .put_json(&format!("/v1/secrets/{name}"), &json!({ "value": value }))
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn post(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, Value) {
    let mut req = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.body(body.to_vec()).send().await.expect("post");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn inbox_count(app: &TestApp) -> usize {
    let (_, inbox) = app.get("/v1/inbox").await;
    inbox["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn github_deliveries_are_checked_and_a_redelivery_starts_nothing_new() {
    let app = spawn_app(Opts::default()).await;
    set_secret(&app, "gh_old", "old-secret-value-1").await;
    set_secret(&app, "gh_hook", "It's a Secret to Everybody").await;
    let (status, body) = app
        .deploy(
            "gh",
            r#"
id: gh
triggers:
  - type: webhook
    token: githubtokenaaaaaaaaaaaaa
    auth: { type: hmac, preset: github, secrets: ["{{ secrets.gh_old }}", "{{ secrets.gh_hook }}"] }
steps:
  - { id: t, type: transform, value: "{{ trigger.body.ref }}" }
"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["warnings"], json!([]), "no inline credential");
    let path = "/hooks/githubtokenaaaaaaaaaaaaa";
    let payload = br#"{"ref":"refs/heads/main"}"#;
    let sig = format!(
        "sha256={}",
        hmac_hex("It's a Secret to Everybody", &[payload])
    );
    let headers = |delivery: &str| {
        vec![
            ("x-hub-signature-256", sig.clone()),
            ("x-github-delivery", delivery.to_string()),
            ("x-github-event", "push".to_string()),
        ]
    };
    let (status, first) = post(&app, path, &headers("d-1"), payload).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // GitHub redelivers the same delivery; a caller's own Idempotency-Key changes nothing.
    let mut again = headers("d-1");
    again.push(("idempotency-key", "something-else".to_string()));
    let (status, second) = post(&app, path, &again, payload).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(second["run_id"], first["run_id"], "the same run");
    let (_, third) = post(&app, path, &headers("d-2"), payload).await;
    assert_ne!(
        third["run_id"], first["run_id"],
        "a new delivery, a new run"
    );

    // Each failed check is named, and nothing is stored.
    let before = inbox_count(&app).await;
    let (status, e) = post(&app, path, &[("x-github-delivery", "d-3".into())], payload).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("missing header"),
        "{e}"
    );
    let tampered = br#"{"ref":"refs/heads/evil"}"#;
    let (status, e) = post(&app, path, &headers("d-4"), tampered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no match"),
        "{e}"
    );
    let (status, e) = post(
        &app,
        path,
        &[("x-hub-signature-256", "sha1=abc".into())],
        payload,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("bad format"),
        "{e}"
    );
    assert_eq!(
        inbox_count(&app).await,
        before,
        "a refused request stores nothing"
    );

    // Rotation: a new value is used by the next request.
    set_secret(&app, "gh_hook", "the-new-secret-value").await;
    let (status, _) = post(&app, path, &headers("d-5"), payload).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old value no longer signs"
    );
    let new_sig = format!("sha256={}", hmac_hex("the-new-secret-value", &[payload]));
    let (status, _) = post(
        &app,
        path,
        &[
            ("x-hub-signature-256", new_sig),
            ("x-github-delivery", "d-5".into()),
        ],
        payload,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn stripe_events_are_checked_with_their_timestamp_and_keyed_by_event_id() {
    let app = spawn_app(Opts::default()).await;
    set_secret(&app, "stripe_whsec", "whsec_test_abcdef0123456789").await;
    let (status, body) = app
        .deploy(
            "pay",
            r#"
id: pay
triggers:
  - type: webhook
    token: stripetokenaaaaaaaaaaaaa
    auth: { type: hmac, preset: stripe, secrets: ["{{ secrets.stripe_whsec }}"] }
steps:
  - { id: t, type: transform, value: "{{ trigger.body.type }}" }
"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let path = "/hooks/stripetokenaaaaaaaaaaaaa";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let event = br#"{"id":"evt_123","type":"charge.succeeded"}"#;
    let sign = |t: u64| {
        let ts = t.to_string();
        format!(
            "t={t},v1={}",
            hmac_hex("whsec_test_abcdef0123456789", &[ts.as_bytes(), b".", event])
        )
    };
    let (status, first) = post(&app, path, &[("stripe-signature", sign(now))], event).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // A retry of the same event, signed again later: the same run.
    let (_, again) = post(&app, path, &[("stripe-signature", sign(now + 5))], event).await;
    assert_eq!(again["run_id"], first["run_id"]);
    let (status, e) = post(&app, path, &[("stripe-signature", sign(now - 600))], event).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("stale timestamp"),
        "{e}"
    );
}

#[tokio::test]
async fn shopify_and_a_generic_scheme_and_inline_secrets_warn() {
    let app = spawn_app(Opts::default()).await;
    let (status, body) = app
        .deploy(
            "shop",
            r#"
id: shop
triggers:
  - type: webhook
    token: shopifytokenaaaaaaaaaaaa
    auth: { type: hmac, preset: shopify, secrets: ["shpss_inline_secret"] }
  - type: webhook
    id: custom
    token: customtokenaaaaaaaaaaaaa
    auth:
      type: hmac
      secrets: ["shpss_inline_secret"]
      header: X-Signature
      prefix: "v1="
      signed: "{timestamp}.{body}"
      timestamp_header: X-Timestamp
steps:
  - { id: t, type: transform, value: 1 }
"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let warned: Vec<&str> = body["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["path"].as_str())
        .collect();
    assert_eq!(
        warned,
        ["triggers[0].auth.secrets[0]", "triggers[1].auth.secrets[0]"]
    );
    let (_, wf) = app.get("/v1/workflows/shop").await;
    assert!(!wf.to_string().contains("shpss_inline_secret"), "{wf}");

    let payload = br#"{"id":1}"#;
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"shpss_inline_secret").expect("key");
    m.update(payload);
    let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
    let (status, _) = post(
        &app,
        "/hooks/shopifytokenaaaaaaaaaaaa",
        &[
            ("x-shopify-hmac-sha256", sig),
            ("x-shopify-webhook-id", "w-1".into()),
        ],
        payload,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let ts = "1700000000";
    let custom = format!(
        "v1={}",
        hmac_hex("shpss_inline_secret", &[ts.as_bytes(), b".", payload])
    );
    // The generic scheme's tolerance is 5 minutes by default: this timestamp is stale.
    let (status, e) = post(
        &app,
        "/hooks/customtokenaaaaaaaaaaaaa",
        &[("x-signature", custom), ("x-timestamp", ts.into())],
        payload,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e.to_string().contains("stale timestamp"), "{e}");
}

#[tokio::test]
async fn a_missing_secret_is_refused_at_deploy_naming_the_closest() {
    let app = spawn_app(Opts::default()).await;
    set_secret(&app, "github_hook", "value-0123456789").await;
    let (status, body) = app
        .deploy(
            "gh",
            r#"
id: gh
triggers:
  - type: webhook
    auth: { type: hmac, preset: github, secrets: ["{{ secrets.github_hok }}"] }
steps:
  - { id: t, type: transform, value: 1 }
"#,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let p = &body["problems"][0];
    assert_eq!(p["path"], "triggers[0].auth.secrets[0]", "{body}");
    let msg = p["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("`github_hok` does not exist") && msg.contains("`github_hook`"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_ip_allowlist_reads_the_socket_or_a_trusted_forwarded_header() {
    let yaml = |list: &str| {
        format!(
            "id: ips\ntriggers:\n  - {{ type: webhook, token: ipstokenaaaaaaaaaaaaaaaa, ip_allowlist: {list} }}\nsteps:\n  - {{ id: t, type: transform, value: 1 }}\n"
        )
    };
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml("[\"10.0.0.0/8\"]"))).await;
    let path = "/hooks/ipstokenaaaaaaaaaaaaaaaa";
    let before = inbox_count(&app).await;
    let (status, _) = post(&app, path, &[], b"{}").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "127.0.0.1 is not in 10.0.0.0/8"
    );
    // Without trusting a proxy, a forwarded header changes nothing.
    let (status, _) = post(&app, path, &[("x-forwarded-for", "10.1.2.3".into())], b"{}").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(inbox_count(&app).await, before);
    app.deploy("ips", &yaml("[\"127.0.0.0/8\", \"::1\"]")).await;
    let (status, _) = post(&app, path, &[], b"{}").await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let mut opts = Opts::default().workflow("w.yaml", &yaml("[\"10.0.0.0/8\"]"));
    opts.config.trust_forwarded_for = true;
    let proxied = spawn_app(opts).await;
    let (status, _) = post(
        &proxied,
        path,
        &[("x-forwarded-for", "192.0.2.1, 10.1.2.3".into())],
        b"{}",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the proxy's entry (the last) is the client"
    );
    let (status, _) = post(
        &proxied,
        path,
        &[("x-forwarded-for", "10.1.2.3, 192.0.2.1".into())],
        b"{}",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an entry the client wrote is not trusted"
    );
}

#[tokio::test]
async fn an_oversized_body_to_a_signed_webhook_is_refused_without_being_recorded() {
    let mut opts = Opts::default();
    opts.config.max_body_bytes = 1024;
    let app = spawn_app(opts).await;
    set_secret(&app, "gh_hook", "a-signing-secret-value").await;
    let (status, body) = app
        .deploy(
            "gh",
            "id: gh\ntriggers:\n  - {type: webhook, token: bigsignedtokenaaaaaaaaaa, auth: {type: hmac, preset: github, secrets: [\"{{ secrets.gh_hook }}\"]}}\n  - {type: webhook, id: open, token: bigopentokenaaaaaaaaaaaa}\nsteps:\n  - {id: t, type: transform, value: 1}\n",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let big = vec![b'x'; 4096];
    let (status, _) = post(&app, "/hooks/bigsignedtokenaaaaaaaaaa", &[], &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        inbox_count(&app).await,
        0,
        "an unauthenticated sender records nothing"
    );
    // Without a signature to check, the oversized request is recorded as before.
    let (status, _) = post(&app, "/hooks/bigopentokenaaaaaaaaaaaa", &[], &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(inbox_count(&app).await, 1);
}
