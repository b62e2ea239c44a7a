//! Operating on runs in the AWS shape: the control function retries a failed run from its
//! failed step against moto; the executor function runs it.

use std::time::Duration;

use serde_json::json;
use tripline_tests::Reply;
use tripline_tests::aws::endpoint;
use tripline_tests::lambda::{Function, function_env};
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

const SWITCHED: &str = r#"
id: switched
triggers:
  - { type: webhook, id: hook }
  - { type: cron, id: nightly, schedule: "0 2 * * *" }
steps:
  - { id: t, type: transform, value: 1 }
"#;

#[tokio::test]
async fn a_switch_through_the_control_function_pauses_the_schedule_and_the_ingress_refuses_the_webhook()
 {
    let s = shape(&[]).await;
    s.deploy("switched", SWITCHED).await;
    let (_, _, wf) = s
        .http(&s.control, "GET", "/v1/workflows/switched", &[], b"")
        .await;
    let token = wf["triggers"][0]["url"]
        .as_str()
        .and_then(|u| u.strip_prefix("/hooks/"))
        .expect("url")
        .to_string();
    let state = || async {
        let cron = s.settings.cron.clone().expect("cron settings");
        let got = s
            .clients
            .scheduler()
            .get_schedule()
            .group_name(&cron.group)
            .name(tripline_aws::schedules::schedule_name(
                "switched", "nightly",
            ))
            .send()
            .await
            .expect("the schedule");
        got.state().map(|st| st.as_str().to_string())
    };
    assert_eq!(state().await.as_deref(), Some("ENABLED"));

    let switch = |path: &'static str| {
        let s = &s;
        async move {
            let (status, _, body) = s
                .http(
                    &s.control,
                    "POST",
                    path,
                    &[("x-tripline-request", "1")],
                    b"",
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    switch("/v1/workflows/switched/triggers/nightly/disable").await;
    assert_eq!(state().await.as_deref(), Some("DISABLED"));
    let body = switch("/v1/workflows/switched/disable").await;
    assert_eq!(body["enabled"], false, "{body}");

    let (status, headers, body) = s.post_hook(&token, &json!({"n": 1})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "trigger_disabled");
    assert_eq!(headers["retry-after"], "60");

    switch("/v1/workflows/switched/enable").await;
    switch("/v1/workflows/switched/triggers/nightly/enable").await;
    assert_eq!(state().await.as_deref(), Some("ENABLED"));
    // The ingress function looks at the deploy marker at most every 5 s: until it has,
    // it still refuses (and records nothing).
    let since = std::time::Instant::now();
    loop {
        let (status, _, body) = s.post_hook(&token, &json!({"n": 2})).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "still refused: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_functions_print_what_each_invocation_counted_as_emf_lines() {
    let s = shape(&[]).await;
    s.deploy("switched", SWITCHED).await;
    let (_, _, wf) = s
        .http(&s.control, "GET", "/v1/workflows/switched", &[], b"")
        .await;
    let url = wf["triggers"][0]["url"].as_str().expect("url");
    let token = url.strip_prefix("/hooks/").expect("hook url");
    let (status, _, body) = s.post_hook(token, &json!({"n": 1})).await;
    assert_eq!(status, 202, "{body}");
    s.pump_until(body["run_id"].as_str().expect("id"), "succeeded", LIMIT)
        .await;

    let find = |docs: &[serde_json::Value], metric: &str| {
        docs.iter()
            .find(|d| d.get(metric).is_some())
            .cloned()
            .unwrap_or_else(|| panic!("no `{metric}` among {docs:?}"))
    };
    let ingress = s.ingress.emf();
    let hooks = find(&ingress, "webhooks_total");
    assert_eq!(
        (hooks["workflow"].as_str(), hooks["outcome"].as_str()),
        (Some("switched"), Some("accepted"))
    );
    assert_eq!(hooks["webhooks_total"], 1.0);
    let directive = &hooks["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Tripline");
    assert_eq!(directive["Dimensions"], json!([["workflow", "outcome"]]));
    assert_eq!(find(&ingress, "runs_started_total")["trigger"], "webhook");
    // Its one step is a transform: the ingress ran it before the admission, so the run's
    // end and its step are counted there.
    assert_eq!(find(&ingress, "runs_ended_total")["status"], "succeeded");
    let steps = find(&ingress, "step_duration_seconds");
    assert!(steps["step_duration_seconds"].is_array(), "{steps}");

    // A run with an `http` step ends in the executor, which counts it.
    let yaml = format!(
        "id: called\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: c, type: http, url: \"{}/c\" }}\n",
        s.stub.url
    );
    s.deploy("called", &yaml).await;
    let id = s.start("called", &json!({})).await;
    s.pump_until(&id, "succeeded", LIMIT).await;
    let executor = s.executor.emf();
    let ended = find(&executor, "runs_ended_total");
    assert_eq!(
        (ended["workflow"].as_str(), ended["status"].as_str()),
        (Some("called"), Some("succeeded"))
    );
    let steps = find(&executor, "step_duration_seconds");
    assert!(steps["step_duration_seconds"].is_array(), "{steps}");
}

#[tokio::test]
async fn the_control_function_dry_runs_a_changed_definition_against_the_inbox() {
    let s = shape(&[]).await;
    let filtered = SWITCHED.replace(
        "{ type: webhook, id: hook }",
        "{ type: webhook, id: hook, filter: { body: { n: 1 } } }",
    );
    s.deploy("switched", &filtered).await;
    let (_, _, wf) = s
        .http(&s.control, "GET", "/v1/workflows/switched", &[], b"")
        .await;
    let url = wf["triggers"][0]["url"].as_str().expect("url");
    let token = url.strip_prefix("/hooks/").expect("hook url");
    for n in [1, 2] {
        s.post_hook(token, &json!({ "n": n })).await;
    }
    s.index().await;
    let changed = filtered.replace("n: 1", "n: 2");
    let (status, _, report) = s
        .http(
            &s.control,
            "POST",
            "/v1/workflows/switched/dry-run",
            &[("content-type", "application/yaml")],
            changed.as_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["checked"].clone(),
            report["would_start"].clone(),
            report["changed"].clone()
        ),
        (json!(2), json!(1), json!(2)),
        "{report}"
    );
    assert_eq!(report["items"][0]["now"], "starts", "{report}");
}

#[tokio::test]
async fn the_control_function_searches_and_exports_in_parts_that_name_the_next() {
    let s = shape(&[]).await;
    s.deploy("switched", SWITCHED).await;
    let (_, _, wf) = s
        .http(&s.control, "GET", "/v1/workflows/switched", &[], b"")
        .await;
    let url = wf["triggers"][0]["url"].as_str().expect("url");
    let token = url.strip_prefix("/hooks/").expect("hook url");
    for n in 0..45 {
        let email = if n == 30 {
            "needle@example.com".to_string()
        } else {
            format!("u{n}@example.com")
        };
        let (status, _, body) = s.post_hook(token, &json!({ "n": n, "email": email })).await;
        assert_eq!(status, 202, "{body}");
    }
    s.index().await;
    let (status, _, found) = s
        .http(
            &s.control,
            "GET",
            "/v1/runs?workflow=switched&text=NEEDLE",
            &[],
            b"",
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");

    // A control function whose answers hold about one page: the export comes in parts.
    let mut env = function_env(&s.settings, &endpoint());
    env.push((
        "TRIPLINE_ANSWER_LIMIT".into(),
        (1024 * 1024 + 2000).to_string(),
    ));
    let small = Function::start("control-api", &env).await;
    let mut cursor = String::new();
    let mut lines = Vec::new();
    let mut parts = 0;
    for part in 0.. {
        parts = part + 1;
        assert!(part < 10, "the parts never end");
        let path = format!("/v1/runs/export?format=ndjson&workflow=switched{cursor}");
        let (status, headers, body) = s.http(&small, "GET", &path, &[], b"").await;
        assert_eq!(status, 200, "{body}");
        let text = body
            .as_str()
            .map_or_else(|| body.to_string(), str::to_string);
        lines.extend(text.lines().map(str::to_string));
        match headers.get("x-tripline-next-cursor") {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        (lines.len(), parts),
        (45, 3),
        "pages of 20 runs, one a part"
    );
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 45, "each run once across the parts");
    small.stop().await;
}

#[tokio::test]
async fn a_bulk_retry_job_is_made_by_the_control_function_and_done_by_the_executor() {
    let s = shape(&[]).await;
    let yaml = format!(
        "id: charge\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: pay, type: http, url: \"{}/pay\", method: POST }}\n",
        s.stub.url
    );
    s.deploy("charge", &yaml).await;
    s.stub.set_default(Reply::status(400));
    let mut failed = Vec::new();
    for n in 0..3 {
        let id = s.start("charge", &json!({ "n": n })).await;
        s.pump_until(&id, "failed", LIMIT).await;
        failed.push(id);
    }
    s.stub.set_default(Reply::status(200));
    s.index().await;
    let body = json!({"action": "retry", "filter": {"workflow": "charge", "status": "failed"}});
    let (status, _, job) = s
        .http(
            &s.control,
            "POST",
            "/v1/jobs",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!((status, job["total"].clone()), (202, json!(3)), "{job}");
    let path = format!("/v1/jobs/{}", job["id"].as_str().expect("id"));
    let since = std::time::Instant::now();
    let job = loop {
        let (_, _, job) = s.http(&s.control, "GET", &path, &[], b"").await;
        if job["status"] == "done" {
            break job;
        }
        assert!(since.elapsed() < LIMIT, "the job did not end: {job}");
        s.pump.once(&s.executor, Duration::from_secs(1)).await;
    };
    assert_eq!(job["done"], 3, "{job}");
    for r in job["results"].as_array().expect("results") {
        assert_eq!(r["result"], "started", "{r}");
        s.pump_until(r["run_id"].as_str().expect("run"), "succeeded", LIMIT)
            .await;
    }
}

#[tokio::test]
async fn the_control_function_serves_the_same_openapi_document() {
    let s = shape(&[]).await;
    let (status, headers, doc) = s
        .http(&s.control, "GET", "/v1/openapi.json", &[], b"")
        .await;
    assert_eq!(status, 200, "{doc}");
    assert!(headers["content-type"].starts_with("application/json"));
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
    // An error from the function is a problem too, with its media type.
    let (status, headers, body) = s
        .http(&s.control, "GET", "/v1/runs?limit=0", &[], b"")
        .await;
    assert_eq!(
        (status, headers["content-type"].as_str()),
        (400, "application/problem+json")
    );
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("bad_request"), Some("limit"))
    );
}

#[tokio::test]
async fn the_control_function_serves_the_console_behind_a_session() {
    let s = shape(&[]).await;
    let (status, headers, _) = s.http(&s.control, "GET", "/runs", &[], b"").await;
    assert_eq!(
        (status, headers.get("location").map(String::as_str)),
        (303, Some("/login"))
    );
    // The stack's functions run without an API key here: any key signs in as `local`.
    let (status, headers, _) = s
        .http(
            &s.control,
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"key=anything-at-all",
        )
        .await;
    assert_eq!(status, 303);
    let cookie = headers["set-cookie"]
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    let (status, headers, page) = s
        .http(&s.control, "GET", "/runs", &[("cookie", &cookie)], b"")
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(page.as_str().expect("html").contains("<h1>Runs</h1>"));
}
