//! Safe by default: the control API keeps browsers out without a key and refuses weak
//! keys; hostile definitions and templates cost bounded time and memory.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tripline_tests::*;

async fn guarded() -> TestApp {
    let mut opts = Opts::default();
    opts.config.browser_guard = true;
    spawn_app(opts.workflow(
        "w.yaml",
        "id: w\ntriggers: [{type: manual}]\nsteps:\n  - {id: t, type: transform, value: 1}\n",
    ))
    .await
}

#[tokio::test]
async fn without_a_key_a_cross_site_form_a_foreign_origin_and_a_rebound_host_are_refused() {
    let app = guarded().await;
    let runs = app.url("/v1/workflows/w/runs");
    // A cross-site form post: a simple content type, no custom header.
    for ct in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let resp = app
            .client
            .post(&runs)
            .header("content-type", ct)
            .body("a=1")
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{ct}");
    }
    // A page of another origin, even with a JSON body (a preflight would be refused too).
    let resp = app
        .client
        .post(&runs)
        .header("origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // DNS rebinding: the page's own host name reaches 127.0.0.1; reads are refused too.
    let resp = app
        .client
        .get(app.url("/v1/runs"))
        .header("host", "rebind.evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = resp.text().await.expect("body");
    assert!(body.contains("rebinding"), "{body}");
    assert_eq!(
        app.get("/v1/runs").await.0,
        StatusCode::OK,
        "nothing started"
    );
    let (_, listed) = app.get("/v1/runs").await;
    assert_eq!(listed["items"], json!([]));

    // What tools send passes: JSON, or the header on a request without a body.
    let (status, _, started) = app.post_json("/v1/workflows/w/runs", &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["run_id"].as_str().expect("id").to_string();
    app.wait_run(&id).await;
    let resp = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/cancel")))
        .header("x-tripline-request", "1")
        .header("origin", app.base.clone())
        .send()
        .await
        .expect("cancel");
    assert_eq!(
        resp.status(),
        StatusCode::CONFLICT,
        "reached the route: the run has ended"
    );
    // Webhooks are not the control API: any site may call them.
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("host", "x.example")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn serve_refuses_an_empty_or_short_api_key() {
    for key in ["", "short-key"] {
        let out = std::process::Command::new(tripline_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--api-key", key])
            .output()
            .expect("run");
        assert!(!out.status.success(), "{key:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("at least 24 characters"), "{key:?}: {err}");
    }
}

#[tokio::test]
async fn a_kilobyte_of_nested_aliases_is_refused_at_once() {
    let app = spawn_app(Opts::default()).await;
    let mut text = String::from(
        "id: bomb\nsteps: &a [{id: t, type: transform, value: [1,2,3,4,5,6,7,8,9,10]}]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let mut prev = "a";
    for n in names {
        text.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = n;
    }
    assert!(text.len() < 1024, "{}", text.len());
    let started = Instant::now();
    let (status, body) = app.deploy("bomb", &text).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("YAML aliases"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_template_that_runs_away_fails_its_step_as_template_limit() {
    let app = spawn_app(Opts::default().workflow(
        "w.yaml",
        "id: spin\ntriggers: [{type: manual}]\nsteps:\n  - {id: t, type: transform, value: \"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\"}\n",
    ))
    .await;
    let started = Instant::now();
    let (status, _, body) = app.post_json("/v1/workflows/spin/runs", &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_type"], "template_limit", "{run}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_huge_answer_or_input_is_cut_where_it_is_recorded() {
    let stub = Stub::start().await;
    let big = "y".repeat(1024 * 1024);
    stub.set_default(Reply {
        status: 200,
        body: json!({ "blob": big }),
        delay: Duration::ZERO,
    });
    let app = spawn_app(
        Opts::default()
            .workflow(
                "a.yaml",
                &format!("id: big\ntriggers: [{{type: manual}}]\nsteps:\n  - {{id: call, type: http, url: \"{}/big\"}}\n", stub.url),
            )
            .workflow(
                "b.yaml",
                "id: picky\ntriggers:\n  - {type: webhook, token: pickytokenaaaaaaaaaaaaaa, filter: {body: {event: order.created}}}\nsteps:\n  - {id: t, type: transform, value: 1}\n",
            ),
    )
    .await;
    let (_, _, body) = app.post_json("/v1/workflows/big/runs", &json!({})).await;
    let run = app.wait_run(body["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "succeeded", "{}", &run.to_string()[..300]);
    let output = &run["step_executions"][0]["output"];
    assert_eq!(
        output["truncated"]["total_bytes"].as_u64(),
        Some(1024 * 1024 + 11)
    );
    let text = output["body"].as_str().expect("cut text");
    assert!(
        text.ends_with("more bytes]"),
        "{}",
        &text[text.len() - 40..]
    );
    assert!(run.to_string().len() < 600 * 1024, "the record is bounded");

    let (status, headers, _) = app
        .post_json(
            "/hooks/pickytokenaaaaaaaaaaaaaa",
            &json!({ "event": "x".repeat(100_000) }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = headers["x-tripline-message-id"]
        .to_str()
        .expect("id")
        .to_string();
    let (_, message) = app.get(&format!("/v1/inbox/{id}")).await;
    let reason = message["outcome"]["reason"].as_str().expect("reason");
    assert!(reason.len() < 1200, "{}", reason.len());
}

#[tokio::test]
async fn a_webhook_over_its_rate_limit_gets_429_with_retry_after_and_records_nothing() {
    let mut opts = Opts::default().workflow(
        "w.yaml",
        "id: w\ntriggers:\n  - {type: webhook, token: ratetokenaaaaaaaaaaaaaaa}\nsteps:\n  - {id: t, type: transform, value: 1}\n",
    );
    opts.config.rate_limits = tripline_app::limits::RateLimits {
        per_token: 5,
        per_client: 0,
    };
    let app = spawn_app(opts).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..15 {
        let resp = app
            .client
            .post(app.url("/hooks/ratetokenaaaaaaaaaaaaaaa"))
            .json(&json!({}))
            .send()
            .await
            .expect("post");
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_string());
        }
        statuses.push(resp.status().as_u16());
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!(
        (10..=11).contains(&accepted),
        "a burst of twice the rate: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let (_, inbox) = app.get("/v1/inbox").await;
    assert_eq!(
        inbox["items"].as_array().map(Vec::len),
        Some(accepted),
        "the refused are not recorded"
    );

    // Per client address, across tokens.
    let mut opts = Opts::default().workflow(
        "w.yaml",
        "id: w\ntriggers:\n  - {type: webhook, token: ratetokenaaaaaaaaaaaaaaa}\nsteps:\n  - {id: t, type: transform, value: 1}\n",
    );
    opts.config.rate_limits = tripline_app::limits::RateLimits {
        per_token: 0,
        per_client: 2,
    };
    let app = spawn_app(opts).await;
    let mut limited = false;
    for i in 0..10 {
        let resp = app
            .client
            .post(app.url(&format!("/hooks/unknown-token-{i}")))
            .json(&json!({}))
            .send()
            .await
            .expect("post");
        limited |= resp.status() == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(
        limited,
        "a spray of made-up tokens from one address is limited"
    );
}
