//! Runs that wait, end to end over the local shape: `wait_for_webhook`, `approval` (with
//! its review page and notification), `delay`, `trigger_workflow`, signed callbacks,
//! `max_duration` while waiting, and cancel. Expiry is driven by a manual clock.

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use tripline_tests::*;

async fn start(app: &TestApp, workflow: &str, input: Value) -> String {
    let (status, _, body) = app
        .post_json(&format!("/v1/workflows/{workflow}/runs"), &input)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["run_id"].as_str().expect("run id").to_string()
}

fn url_of(run: &Value, key: &str) -> String {
    run["waiting_payload"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {run}"))
        .to_string()
}

async fn post_to(app: &TestApp, url: &str, ct: &str, body: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(url)
        .header("content-type", ct)
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let (s, _, v) = read(resp).await;
    (s, v)
}

const WAIT: &str = r#"
id: wait
triggers: [{ type: manual }]
steps:
  - { id: callback, type: wait_for_webhook, timeout: 10m, extract: { order: "{{ output.order }}" } }
  - { id: done, type: transform, value: { got: "{{ steps.callback }}", order: "{{ context.order }}" } }
"#;

#[tokio::test]
async fn a_run_parks_and_resumes_with_the_callback_body() {
    let app = spawn_app(Opts::default().workflow("w.yaml", WAIT)).await;
    let id = start(&app, "wait", json!({})).await;
    let run = app.wait_status(&id, "waiting").await;
    assert_eq!(run["waiting_reason"], "webhook");
    assert!(run["waiting_expires_at"].is_string(), "{run}");
    let resume = url_of(&run, "resume_url");
    assert!(
        resume.starts_with(&format!("{}/resume/{id}.", app.base)),
        "{resume}"
    );
    let secret = resume.rsplit('.').next().expect("secret");
    assert!(secret.len() >= 22, "at least 128 random bits: {secret}");

    let (status, body) = post_to(&app, &resume, "application/json", r#"{"order": 42}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["final_output"],
        json!({"got": {"order": 42}, "order": 42})
    );
    assert!(run["waiting_payload"].is_null());
}

#[tokio::test]
async fn a_resume_url_works_once_and_an_unknown_one_is_404() {
    let app = spawn_app(Opts::default().workflow("w.yaml", WAIT)).await;
    let id = start(&app, "wait", json!({})).await;
    let resume = url_of(&app.wait_status(&id, "waiting").await, "resume_url");
    let (status, _) = post_to(
        &app,
        &resume,
        "application/x-www-form-urlencoded",
        "order=7",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let done = app.wait_run(&id).await;
    assert_eq!(done["final_output"]["got"], json!({"order": "7"}));

    let (status, body) = post_to(&app, &resume, "application/json", r#"{"order": 8}"#).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    let (_, again) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(again, done, "a second call changes nothing");

    let forged = format!("{}/resume/{id}.AAAAAAAAAAAAAAAAAAAAAAAA", app.base);
    let (status, _) = post_to(&app, &forged, "text/plain", "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post_to(
        &app,
        &format!("{}/resume/nothing", app.base),
        "text/plain",
        "x",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_malformed_resume_body_is_refused_and_the_url_still_works() {
    let plain = WAIT
        .replace(", extract: { order: \"{{ output.order }}\" }", "")
        .replace(", order: \"{{ context.order }}\"", "");
    let app = spawn_app(Opts::default().workflow("w.yaml", &plain)).await;
    let id = start(&app, "wait", json!({})).await;
    let resume = url_of(&app.wait_status(&id, "waiting").await, "resume_url");
    let (status, body) = post_to(&app, &resume, "application/json", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("still waiting"), "{body}");
    let (status, _) = post_to(&app, &resume, "text/plain", "plain words").await;
    assert_eq!(status, StatusCode::OK);
    let run = app.wait_run(&id).await;
    assert_eq!(run["final_output"]["got"], json!("plain words"));
}

#[tokio::test]
async fn an_expired_wait_fails_or_continues_by_its_on_timeout() {
    let cont = WAIT
        .replace("id: wait\n", "id: wait_continue\n")
        .replace("timeout: 10m,", "timeout: 10m, on_timeout: continue,")
        .replace(", extract: { order: \"{{ output.order }}\" }", "")
        .replace(", order: \"{{ context.order }}\"", "");
    let (app, time) = spawn_app_with_manual_clock(
        Opts::default()
            .workflow("a.yaml", WAIT)
            .workflow("b.yaml", &cont),
    )
    .await;
    let failing = start(&app, "wait", json!({})).await;
    let going_on = start(&app, "wait_continue", json!({})).await;
    let resume = url_of(&app.wait_status(&failing, "waiting").await, "resume_url");
    app.wait_status(&going_on, "waiting").await;

    time.advance(Duration::from_secs(9 * 60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, still) = app.get(&format!("/v1/runs/{failing}")).await;
    assert_eq!(still["status"], "waiting", "not expired yet: {still}");

    time.advance(Duration::from_secs(61));
    let failed = app.wait_run(&failing).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_type"], "wait_timed_out");
    let continued = app.wait_run(&going_on).await;
    assert_eq!(continued["status"], "succeeded", "{continued}");
    assert_eq!(continued["final_output"], json!({"got": null}));

    let (status, _) = post_to(&app, &resume, "application/json", "{}").await;
    assert_eq!(status, StatusCode::GONE, "an expired URL is gone");
}

fn approval(stub: &Stub, extra: &str) -> String {
    format!(
        r#"
id: pay
triggers: [{{ type: manual }}]
steps:
  - id: ok
    type: approval
    timeout: 1h
    summary: "Pay {{{{ trigger.body.amount }}}} EUR to <{{{{ trigger.body.to }}}}>"
    notify:
      method: POST
      url: "{url}/chat"
      body: {{ text: "Approve? {{{{ approval.review_url }}}}", approve: "{{{{ approval.approve_url }}}}" }}
{extra}
  - {{ id: pay, type: transform, value: {{ decision: "{{{{ steps.ok.decision }}}}", comment: "{{{{ steps.ok.comment }}}}" }} }}
"#,
        url = stub.url
    )
}

#[tokio::test]
async fn an_approval_notifies_renders_its_review_page_and_approves_once() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default().workflow("w.yaml", &approval(&stub, ""))).await;
    let id = start(&app, "pay", json!({"amount": 120, "to": "ACME"})).await;
    let run = app.wait_status(&id, "waiting").await;
    assert_eq!(run["waiting_reason"], "approval");
    let (review, approve, reject) = (
        url_of(&run, "review_url"),
        url_of(&run, "approve_url"),
        url_of(&run, "reject_url"),
    );
    assert!(review != approve && approve != reject);

    // The notification carries the links.
    let note = &stub.wait_for(1).await[0];
    assert_eq!(note.path, "/chat");
    assert_eq!(note.body["text"], json!(format!("Approve? {review}")));
    assert_eq!(note.body["approve"], json!(approve));

    // The review page shows what is approved, escaped, with both buttons.
    let page = app.client.get(&review).send().await.expect("get");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("text");
    for needle in [
        "pay",
        "Pay 120 EUR to &lt;ACME&gt;",
        &format!("action=\"{approve}\""),
        &format!("action=\"{reject}\""),
        ">Approve</button>",
        ">Reject</button>",
    ] {
        assert!(html.contains(needle), "no {needle:?} in {html}");
    }
    // A GET of the approve link only shows the page: nothing is decided.
    let (_, still) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(still["status"], "waiting");

    // The page's form post, as a browser sends it.
    let resp = app
        .client
        .post(&approve)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("comment=looks+right")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.expect("text").contains("approved"));
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["final_output"],
        json!({"decision": "approved", "comment": "looks right"})
    );
    for url in [&approve, &reject] {
        let (status, _) = post_to(&app, url, "application/json", "{}").await;
        assert_eq!(status, StatusCode::GONE, "{url}");
    }
    let page = app.client.get(&review).send().await.expect("get");
    assert_eq!(page.status().as_u16(), 410);
}

#[tokio::test]
async fn a_rejection_fails_the_run_or_continues_with_on_reject() {
    let stub = Stub::start().await;
    let app = spawn_app(Opts::default().workflow("w.yaml", &approval(&stub, ""))).await;
    let id = start(&app, "pay", json!({"amount": 1, "to": "x"})).await;
    let reject = url_of(&app.wait_status(&id, "waiting").await, "reject_url");
    let (status, body) = post_to(
        &app,
        &reject,
        "application/json",
        r#"{"comment": "no budget"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error_type"], "rejected");
    assert!(run["error"].as_str().expect("error").contains("no budget"));

    let stub = Stub::start().await;
    let app =
        spawn_app(Opts::default().workflow("w.yaml", &approval(&stub, "    on_reject: continue")))
            .await;
    let id = start(&app, "pay", json!({"amount": 1, "to": "x"})).await;
    let reject = url_of(&app.wait_status(&id, "waiting").await, "reject_url");
    let (status, _) = post_to(&app, &reject, "application/json", "").await;
    assert_eq!(status, StatusCode::OK);
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["final_output"]["decision"], "rejected");
}

#[tokio::test]
async fn an_approval_expires_at_its_timeout() {
    let stub = Stub::start().await;
    let (app, time) =
        spawn_app_with_manual_clock(Opts::default().workflow("w.yaml", &approval(&stub, ""))).await;
    let id = start(&app, "pay", json!({"amount": 1, "to": "x"})).await;
    let approve = url_of(&app.wait_status(&id, "waiting").await, "approve_url");
    time.advance(Duration::from_secs(3600));
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_type"], "wait_timed_out");
    let (status, _) = post_to(&app, &approve, "application/json", "{}").await;
    assert_eq!(status, StatusCode::GONE);
}

#[tokio::test]
async fn a_delay_parks_the_run_until_its_time() {
    let (app, time) = spawn_app_with_manual_clock(Opts::default().workflow(
        "w.yaml",
        r#"
id: later
triggers: [{ type: manual }]
steps:
  - { id: pause, type: delay, duration: 2h }
  - { id: until, type: delay, until: "{{ trigger.body.at }}" }
  - { id: done, type: transform, value: "{{ steps.pause.waited_until }}" }
"#,
    ))
    .await;
    let at = time.clock_now_plus(Duration::from_secs(3 * 3600));
    let id = start(&app, "later", json!({"at": at})).await;
    let run = app.wait_status(&id, "waiting").await;
    assert_eq!(run["waiting_reason"], "delay");
    time.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, run) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(run["waiting_payload"]["step"], "pause");
    time.advance(Duration::from_secs(3600));
    let start_wait = std::time::Instant::now();
    loop {
        let (_, run) = app.get(&format!("/v1/runs/{id}")).await;
        if run["waiting_payload"]["step"] == "until" {
            break;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(10), "{run}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    time.advance(Duration::from_secs(3600));
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
}

const CHILD: &str = r#"
id: child
triggers: [{ type: manual }]
steps:
  - { id: check, type: fail, when: "trigger.body.n < 0", message: "negative: {{ trigger.body.n }}" }
  - { id: double, type: transform, value: { n: "{{ trigger.body.n * 2 }}" } }
"#;

const PARENT: &str = r#"
id: parent
triggers: [{ type: manual }]
steps:
  - { id: fire, type: trigger_workflow, workflow: child, input: { n: 0 } }
  - { id: call, type: trigger_workflow, workflow: child, input: { n: "{{ trigger.body.n }}" }, wait: true }
  - { id: out, type: transform, value: { fired: "{{ steps.fire.run_id }}", doubled: "{{ steps.call.n }}" } }
"#;

#[tokio::test]
async fn trigger_workflow_starts_runs_and_waits_for_their_output() {
    let app = spawn_app(
        Opts::default()
            .workflow("a.yaml", CHILD)
            .workflow("b.yaml", PARENT),
    )
    .await;
    let id = start(&app, "parent", json!({"n": 21})).await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"]["doubled"], 42);
    let children: Vec<String> = run["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| c.as_str().expect("id").to_string())
        .collect();
    assert_eq!(children.len(), 2, "{run}");
    assert_eq!(run["final_output"]["fired"], json!(children[0]));
    for c in &children {
        let child = app.wait_run(c).await;
        assert_eq!(child["status"], "succeeded");
        assert_eq!(child["parent"]["run_id"], json!(id));
        assert_eq!(child["trigger"]["kind"], "workflow");
    }

    let id = start(&app, "parent", json!({"n": -1})).await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .expect("error")
            .contains("negative: -1"),
        "{run}"
    );
}

#[tokio::test]
async fn a_missing_child_workflow_fails_the_step_clearly() {
    let app = spawn_app(Opts::default().workflow("b.yaml", PARENT)).await;
    let id = start(&app, "parent", json!({"n": 1})).await;
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "failed");
    assert!(
        run["error"]
            .as_str()
            .expect("error")
            .contains("`child` is not deployed"),
        "{run}"
    );
}

/// Verifies a Standard Webhooks signature the way a receiver does.
fn verify(secret: &str, headers: &std::collections::HashMap<String, String>, body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret");
    let id = &headers["webhook-id"];
    let ts = &headers["webhook-timestamp"];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    headers["webhook-signature"]
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

#[tokio::test]
async fn callbacks_are_signed_retried_and_recorded() {
    let stub = Stub::start().await;
    stub.script([Reply::status(500), Reply::status(503)]);
    let yaml = format!(
        r#"
id: notify
triggers: [{{ type: manual }}]
on_success: {{ url: "{0}/done/{{{{ run.id }}}}", retry: {{ max_attempts: 4, initial: 100ms }} }}
on_failure: {{ url: "{0}/failed" }}
steps:
  - {{ id: t, type: transform, value: {{ ok: "{{{{ trigger.body.ok }}}}" }} }}
"#,
        stub.url
    );
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml)).await;
    // The generated signing secret is a secret of its own, never shown; the receiver sets
    // one it knows (a rotation), which the next delivery uses.
    let (_, wf) = app.get("/v1/workflows/notify").await;
    assert_eq!(
        wf["definition"]["callback_secret"],
        "{{ secrets.callback_notify }}"
    );
    let (_, listed) = app.get("/v1/secrets").await;
    assert_eq!(listed["items"][0]["name"], "callback_notify");
    assert_eq!(listed["items"][0]["used_by"], json!(["notify"]));
    assert!(listed["items"][0].get("value").is_none());
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
    let (status, _) = app
        .put_json("/v1/secrets/callback_notify", &json!({ "value": secret }))
        .await;
    assert_eq!(status, 200);

    let id = start(&app, "notify", json!({"ok": true})).await;
    let start_wait = std::time::Instant::now();
    let run = loop {
        let (_, run) = app.get(&format!("/v1/runs/{id}")).await;
        if run["callbacks"].as_array().is_some_and(|c| c.len() == 3) {
            break run;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(10), "{run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let attempts: Vec<(u64, bool)> = run["callbacks"]
        .as_array()
        .expect("callbacks")
        .iter()
        .map(|c| (c["status"].as_u64().unwrap_or(0), c["succeeded"] == true))
        .collect();
    assert_eq!(attempts, vec![(500, false), (503, false), (200, true)]);
    assert!(run["cursor"]["callback"].is_null(), "delivered: {run}");

    let reqs = stub.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.path, format!("/done/{id}"));
        assert_eq!(
            r.headers["webhook-id"],
            format!("msg_{id}"),
            "one id across retries"
        );
        let body = serde_json::to_vec(&r.body).expect("body");
        assert!(verify(&secret, &r.headers, &body), "signature of {r:?}");
        assert!(!verify(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &r.headers,
            &body
        ));
    }
    assert_eq!(reqs[2].body["type"], "run.succeeded");
    assert_eq!(reqs[2].body["data"], json!({"ok": true}));
    assert_eq!(reqs[2].body["meta"]["run_id"], json!(id));
}

#[tokio::test]
async fn cancel_ends_a_waiting_run_and_its_urls() {
    let app = spawn_app(Opts::default().workflow("w.yaml", WAIT)).await;
    let id = start(&app, "wait", json!({})).await;
    let resume = url_of(&app.wait_status(&id, "waiting").await, "resume_url");
    let (status, _, body) = app
        .post_json(&format!("/v1/runs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "cancelled");
    let (status, _) = post_to(&app, &resume, "application/json", "{}").await;
    assert_eq!(status, StatusCode::GONE);
    let (status, _, body) = app
        .post_json(&format!("/v1/runs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, _) = app.post_json("/v1/runs/nope/cancel", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_drops_the_result_of_a_step_in_flight() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(500)));
    let yaml = format!(
        "id: slow\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: call, type: http, url: \"{}/slow\" }}\n",
        stub.url
    );
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml)).await;
    let id = start(&app, "slow", json!({})).await;
    stub.wait_for(1).await;
    let (status, _, _) = app
        .post_json(&format!("/v1/runs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, run) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        run["step_executions"]
            .as_array()
            .is_some_and(|e| e.is_empty())
    );
}

#[tokio::test]
async fn max_duration_times_out_a_waiting_run() {
    let (app, time) = spawn_app_with_manual_clock(Opts::default().workflow(
        "w.yaml",
        "id: bounded\nmax_duration: 30m\ntriggers: [{ type: manual }]\nsteps:\n  - { id: w, type: wait_for_webhook }\n",
    ))
    .await;
    let id = start(&app, "bounded", json!({})).await;
    let run = app.wait_status(&id, "waiting").await;
    assert!(
        run["waiting_expires_at"].is_null(),
        "the wait itself has no timeout"
    );
    time.advance(Duration::from_secs(30 * 60));
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "timed_out", "{run}");
}

#[tokio::test]
async fn a_parent_checking_on_a_running_child_writes_nothing_and_waits_on() {
    let (app, time) = spawn_app_with_manual_clock(
        Opts::default()
            .workflow("a.yaml", "id: slow_child\nsteps:\n  - { id: w, type: wait_for_webhook }\n  - { id: t, type: transform, value: done }\n")
            .workflow(
                "b.yaml",
                "id: waiting_parent\ntriggers: [{ type: manual }]\nsteps:\n  - { id: call, type: trigger_workflow, workflow: slow_child, wait: true }\n",
            ),
    )
    .await;
    let id = start(&app, "waiting_parent", json!({})).await;
    let parent = app.wait_status(&id, "waiting").await;
    let child_id = parent["children"][0].as_str().expect("child").to_string();
    let child = app.wait_status(&child_id, "waiting").await;
    // The parent's check comes and finds the child still waiting: no write.
    time.advance(tripline_core::engine::CHILD_CHECK_INTERVAL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, again) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(again["status"], "waiting");
    assert_eq!(again["version"], parent["version"], "{again}");
    // The child ends: the parent takes its output.
    let resume = url_of(&child, "resume_url");
    let (status, _) = post_to(&app, &resume, "application/json", "{}").await;
    assert_eq!(status, StatusCode::OK);
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"], "done");
}

#[tokio::test]
async fn a_pure_sync_runs_callback_is_delivered_after_its_reply() {
    // A sync webhook whose steps are all pure runs in the ingress and is written once,
    // ended; its callback is left to the executor through a work item sent after the
    // admission.
    let stub = Stub::start().await;
    let yaml = format!(
        r#"
id: quick
triggers: [{{ type: webhook, token: quick-sync-token-00000000001, response: sync }}]
on_success: {{ url: "{}/done/{{{{ run.id }}}}" }}
steps:
  - {{ id: t, type: transform, value: {{ doubled: "{{{{ trigger.body.n * 2 }}}}" }} }}
"#,
        stub.url
    );
    let app = spawn_app(Opts::default().workflow("w.yaml", &yaml)).await;
    let (status, _, body) = app
        .post_json("/hooks/quick-sync-token-00000000001", &json!({"n": 21}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!({"doubled": 42}));
    let run_id = body["meta"]["run_id"].as_str().expect("run id").to_string();
    let got = stub.wait_for(1).await;
    assert_eq!(got[0].path, format!("/done/{run_id}"));
    assert_eq!(got[0].body["type"], "run.succeeded");
    assert_eq!(got[0].body["data"], json!({"doubled": 42}));
    // The delivery is recorded on the run once the callback's answer is in.
    let mut run = app.wait_run(&run_id).await;
    for _ in 0..100 {
        if run["callbacks"].as_array().is_some_and(|c| !c.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        run = app.get(&format!("/v1/runs/{run_id}")).await.1;
    }
    assert_eq!(run["callbacks"][0]["succeeded"], json!(true), "{run}");
}
