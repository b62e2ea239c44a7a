//! The web console over HTTP: signing in with a key for a session cookie, the pages a
//! person reads (runs found by text, a run's timeline, workflows and their switches), the
//! actions their forms post (retry, switch off), each form bound to its session, and a
//! read-only key that sees no buttons and may not post.

use axum::http::StatusCode;
use serde_json::{Value, json};
use tripline_tests::*;

const KEY: &str = "console-test-key-0123456789abcdef";

/// A browser-like client of one session: it keeps the cookie the sign-in set.
struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: String,
}

impl<'a> Browser<'a> {
    async fn sign_in(app: &'a TestApp, key: &str) -> Browser<'a> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let resp = http
            .post(app.url("/login"))
            .form(&[("key", key)])
            .send()
            .await
            .expect("sign in");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let set = resp.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().expect("pair").to_string();
        Browser { app, http, cookie }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(self.app.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("get");
        (resp.status(), resp.text().await.expect("text"))
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let resp = self
            .http
            .post(self.app.url(path))
            .header("cookie", &self.cookie)
            .form(fields)
            .send()
            .await
            .expect("post");
        let to = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (resp.status(), to)
    }
}

/// The form token a page carries.
fn token_of(html: &str) -> String {
    html.split("name=token value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form token in the page")
        .to_string()
}

fn flaky(stub: &Stub) -> String {
    format!(
        "id: shop\ntriggers:\n  - {{ type: webhook, id: hook }}\nsteps:\n  - {{ id: pay, type: http, url: \"{}/pay\", method: POST }}\n",
        stub.url
    )
}

#[tokio::test]
async fn a_person_signs_in_finds_a_failed_run_by_text_and_retries_it_from_its_page() {
    let stub = Stub::start().await;
    let mut opts = Opts::default();
    opts.config.api_key = Some(KEY.into());
    let app = spawn_app(opts).await;
    let http = reqwest::Client::new();
    let deploy = http
        .put(app.url("/v1/workflows/shop"))
        .bearer_auth(KEY)
        .header("content-type", "application/yaml")
        .body(flaky(&stub))
        .send()
        .await
        .expect("deploy");
    let wf: Value = deploy.json().await.expect("json");
    let hook = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    stub.script([Reply::status(400)]);
    let (_, _, body) = app
        .post_json(&hook, &json!({"email": "needle@example.com"}))
        .await;
    let failed = body["run_id"].as_str().expect("id").to_string();
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = anon.get(app.url("/runs")).send().await.expect("get");
    assert_eq!(
        (r.status(), r.headers()["location"].to_str().ok()),
        (StatusCode::SEE_OTHER, Some("/login"))
    );
    let bad = anon
        .post(app.url("/login"))
        .form(&[("key", "wrong-key-wrong-key-wrong-key")])
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    let b = Browser::sign_in(&app, KEY).await;
    let run_page = loop {
        let (_, html) = b.get(&format!("/runs/{failed}")).await;
        if html.contains("class=\"failed\">failed") {
            break html;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        run_page.contains("<rect class=\"bar failed\""),
        "a timeline bar for the failed attempt"
    );
    let (status, html) = b.get("/runs?text=NEEDLE").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&failed) && html.contains("Retry selected"),
        "{html}"
    );
    let (_, hostile) = b.get("/runs?text=%3Cscript%3E").await;
    assert!(
        !hostile.contains("<script>") && hostile.contains("&lt;script&gt;"),
        "the search is escaped back"
    );

    let (status, _) = b
        .post(&format!("/runs/{failed}/retry"), &[("token", "forged")])
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a form without this session's token"
    );
    let (status, to) = b
        .post(
            &format!("/runs/{failed}/retry"),
            &[("token", &token_of(&run_page)), ("from", "failed_step")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let new_run = to.trim_start_matches("/runs/").to_string();
    let run = app.wait_run_with_key(&new_run, KEY).await;
    assert_eq!(
        (run["status"].as_str(), run["retry_of"]["run_id"].as_str()),
        (Some("succeeded"), Some(failed.as_str()))
    );

    // Switch the webhook off from the workflows page: the webhook is refused.
    let (_, page) = b.get("/workflows").await;
    let (status, to) = b
        .post(
            "/workflows/shop/triggers/hook/disable",
            &[("token", &token_of(&page))],
        )
        .await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/workflows"));
    let (status, _, _) = app.post_json(&hook, &json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, page) = b.get("/workflows").await;
    assert!(page.contains("Turn on"), "{page}");
}

#[tokio::test]
async fn a_read_only_key_sees_no_buttons_and_may_not_post() {
    let mut opts = Opts::default();
    opts.config.api_key = Some(KEY.into());
    let app = spawn_app(opts).await;
    let http = reqwest::Client::new();
    let read_key = scoped_key(&app.url("/v1/keys"), "viewer", "read").await;
    http.put(app.url("/v1/workflows/w")).bearer_auth(KEY).header("content-type", "application/yaml")
        .body("id: w\ntriggers: [{ type: webhook, id: hook }]\nsteps:\n  - { id: t, type: transform, value: 1 }\n").send().await.expect("deploy");
    let b = Browser::sign_in(&app, &read_key).await;
    let (_, runs) = b.get("/runs").await;
    let (_, workflows) = b.get("/workflows").await;
    for page in [&runs, &workflows] {
        assert!(
            !page.contains("<button type=submit>Turn") && !page.contains("Retry selected"),
            "{page}"
        );
        assert!(page.contains("viewer (read)"), "{page}");
    }
    let (_, overview) = b.get("/").await;
    assert!(
        overview.contains("Runs per hour") && overview.contains("<svg"),
        "{overview}"
    );
    let (status, _) = b
        .post(
            "/workflows/w/triggers/hook/disable",
            &[("token", &token_of(&runs))],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// A workflow whose filter drops `Order` (it wants `order`) and whose step waits for an
/// approval.
const PICKY: &str = "id: picky\ntriggers:\n  - { type: webhook, id: hook, filter: { body: { kind: order } } }\nsteps:\n  - { id: ok, type: approval, summary: \"ship {{ trigger.body.kind }}?\", timeout: 1h }\n";

#[tokio::test]
async fn filtered_messages_are_reprocessed_from_the_inbox_and_an_approval_is_decided_on_its_page() {
    let app = spawn_app(Opts::default()).await;
    let picky = PICKY;
    let (_, wf) = app.deploy("picky", picky).await;
    let hook = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    for _ in 0..2 {
        let (status, _, _) = app.post_json(&hook, &json!({"kind": "Order"})).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    app.deploy("picky", &picky.replace("kind: order", "kind: Order"))
        .await;
    let b = Browser::sign_in(&app, "any key: this server has none").await;
    let (_, inbox) = b.get("/inbox?outcome=filtered").await;
    let ids: Vec<String> = inbox
        .split("name=message value=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{inbox}");
    let mut fields: Vec<(&str, &str)> = ids.iter().map(|id| ("message", id.as_str())).collect();
    let token = token_of(&inbox);
    fields.push(("token", &token));
    let (status, to) = b.post("/inbox/bulk", &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(to.starts_with("/jobs/"), "{to}");
    let (_, progress) = b.get(&to).await;
    assert!(progress.contains("<progress"), "{progress}");
    let job = loop {
        let (_, job) = app.get(&format!("/v1{to}")).await;
        if job["status"] == "done" {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(job["done"], 2, "{job}");
    let run = job["results"][0]["run_id"]
        .as_str()
        .expect("run")
        .to_string();
    app.wait_status(&run, "waiting").await;

    // A dry run from the workflow's page: the old filter would filter the two again.
    let (_, wf_page) = b.get("/workflows/picky").await;
    assert!(
        wf_page.contains("Revisions") && wf_page.contains("approval"),
        "{wf_page}"
    );
    let resp = b
        .http
        .post(app.url("/workflows/picky/dry-run"))
        .header("cookie", &b.cookie)
        .form(&[
            ("token", token_of(&wf_page).as_str()),
            ("definition", picky),
        ])
        .send()
        .await
        .expect("dry run");
    let dry = resp.text().await.expect("page");
    assert!(
        dry.contains("would start") && dry.contains("filtered"),
        "{dry}"
    );

    let (_, approvals) = b.get("/approvals").await;
    assert!(approvals.contains("ship Order?"), "{approvals}");
    let approve = approvals
        .split("<section>")
        .find(|sec| sec.contains(&format!("/runs/{run}")))
        .and_then(|sec| sec.split("action=\"/approve/").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("the run's approve form");
    let (status, _) = b
        .post(&format!("/approve/{approve}"), &[("comment", "ok")])
        .await;
    assert!(status.is_success(), "{status}");
    let decided = app.wait_status(&run, "succeeded").await;
    assert_eq!(decided["status"], "succeeded");
}

/// The console in headless Chromium (tests/console_browser.py, selenium with Debian's
/// chromium and chromedriver, which tests/run installs), against the real binary; the
/// screenshots are kept under target/console-screenshots.
#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let python = repo_root().join("target/api-venv/bin/python");
    for need in [
        python.clone(),
        "/usr/bin/chromium".into(),
        "/usr/bin/chromedriver".into(),
    ] {
        assert!(
            need.exists(),
            "{} is missing: tests/run installs it (Debian's chromium, chromium-driver; selenium in target/api-venv)",
            need.display()
        );
    }
    let stub = Stub::start().await;
    stub.script([Reply::status(400)]);
    let dir = tempfile::tempdir().expect("tmp");
    let wf = dir.path().join("wf");
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(wf.join("shop.yaml"), flaky(&stub)).expect("write");
    std::fs::write(wf.join("picky.yaml"), PICKY).expect("write");
    let server = ServeProc::start(&wf, &dir.path().join("data"), &["--api-key", KEY]);
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", server.base);
    // Two orders the filter drops (it wants `order`, they say `Order`), then the fix.
    let picky: Value = http
        .get(api("/v1/workflows/picky"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let picky_hook = api(picky["triggers"][0]["url"].as_str().expect("url"));
    for _ in 0..2 {
        let r = http
            .post(&picky_hook)
            .json(&json!({"kind": "Order"}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let fixed = http
        .put(api("/v1/workflows/picky"))
        .bearer_auth(KEY)
        .header("content-type", "application/yaml")
        .body(PICKY.replace("kind: order", "kind: Order"))
        .send()
        .await
        .expect("deploy");
    assert!(fixed.status().is_success());
    let wf: Value = http
        .get(api("/v1/workflows/shop"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let hook = api(wf["triggers"][0]["url"].as_str().expect("url"));
    let started: Value = http
        .post(&hook)
        .json(&json!({"email": "browser-needle@example.com"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let failed = started["run_id"].as_str().expect("run").to_string();
    let since = std::time::Instant::now();
    loop {
        let run: Value = http
            .get(api(&format!("/v1/runs/{failed}")))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if run["status"] == "failed" {
            break;
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "{run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let read_key = scoped_key(&api("/v1/keys"), "viewer", "read").await;
    let shots = repo_root().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("mkdir");
    let out = tokio::process::Command::new(&python)
        .arg(repo_root().join("tests/console_browser.py"))
        .args([
            "--base",
            &server.base,
            "--key",
            KEY,
            "--read-key",
            &read_key,
        ])
        .args([
            "--search",
            "browser-needle",
            "--failed",
            &failed,
            "--hook",
            &hook,
        ])
        .arg("--shots")
        .arg(&shots)
        .output()
        .await
        .expect("run the browser test");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What the audit measured on each page (shown with --no-capture).
    println!("{}", String::from_utf8_lossy(&out.stdout));
    for page in [
        "overview",
        "runs",
        "run-timeline",
        "run-retried",
        "workflows",
        "workflow",
        "inbox",
        "job",
        "approvals",
        "read-only",
        "approvals-phone",
    ] {
        let png = shots.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&png)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "no screenshot {}",
            png.display()
        );
    }
}

#[tokio::test]
async fn secrets_are_set_from_the_console_never_shown_and_every_console_action_is_audited() {
    let mut opts = Opts::default();
    opts.config.api_key = Some(KEY.into());
    let app = spawn_app(opts).await;
    let b = Browser::sign_in(&app, KEY).await;
    let (_, page) = b.get("/secrets").await;
    let value = "s3cret-value-never-shown-again";
    let (status, to) = b
        .post(
            "/secrets",
            &[
                ("token", &token_of(&page)),
                ("name", "crm_token"),
                ("value", value),
            ],
        )
        .await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/secrets"));
    let (_, listed) = b.get("/secrets").await;
    assert!(
        listed.contains("crm_token") && !listed.contains(value),
        "{listed}"
    );
    let (_, audit) = b.get("/audit").await;
    assert!(
        audit.contains("POST /secrets (console)") && audit.contains("main"),
        "{audit}"
    );
    assert!(!audit.contains(value));

    let ops_key = scoped_key(&app.url("/v1/keys"), "ops", "operate").await;
    let ops = Browser::sign_in(&app, &ops_key).await;
    let (_, page) = ops.get("/secrets").await;
    assert!(
        !page.contains("Set or rotate"),
        "an operate key may not set secrets: {page}"
    );
    let (status, _) = ops
        .post(
            "/secrets",
            &[("token", &token_of(&page)), ("name", "x"), ("value", "y")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, audit) = ops.get("/audit").await;
    assert!(audit.contains("needs an admin key"), "{audit}");
}

#[tokio::test]
async fn a_workflows_page_says_its_schedule_draws_its_steps_and_chains_edits_its_store_and_diffs_revisions()
 {
    let app = spawn_app(Opts::default()).await;
    let nightly = "id: nightly\ntriggers:\n  - { type: cron, id: tick, schedule: \"0 9 * * MON-FRI\", timezone: Europe/Berlin }\n  - { type: webhook, id: hook }\nsteps:\n  - { id: shape, type: transform, value: 1 }\n  - { id: report, type: trigger_workflow, workflow: report }\n";
    app.deploy("report", "id: report\ntriggers: [{ type: manual, id: go }]\nsteps:\n  - { id: t, type: transform, value: 1 }\n").await;
    app.deploy("audit", "id: audit\ntriggers: [{ type: flow, id: after, workflow: nightly }]\nsteps:\n  - { id: t, type: transform, value: 1 }\n").await;
    app.deploy("nightly", nightly).await;
    let b = Browser::sign_in(&app, "any key: this server has none").await;
    let (status, page) = b.get("/workflows/nightly").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("at 09:00 on Monday to Friday; next 20"),
        "the schedule in words and its next fires: {page}"
    );
    assert!(
        page.contains("/hooks/") && page.contains("aria-controls=\"url-nightly-hook\""),
        "a copy button for the webhook's URL"
    );
    assert!(
        page.contains("shape · transform") && page.contains("report · trigger_workflow"),
        "the steps drawn in order"
    );
    let chain = page
        .split("aria-label=\"the workflows linked to this one\"")
        .nth(1)
        .and_then(|r| r.split("</svg>").next())
        .expect("a chain drawing");
    assert!(
        chain.contains(">audit<") && chain.contains(">report<") && chain.contains("box current"),
        "{chain}"
    );
    let (_, overview) = b.get("/").await;
    assert!(
        overview.contains("Next cron fires") && overview.contains("/workflows/nightly"),
        "{overview}"
    );

    // The context store: set a key, refuse a bad one, delete it.
    let token = token_of(&page);
    let (status, to) = b
        .post(
            "/workflows/nightly/context",
            &[("token", &token), ("key", "cursor"), ("value", "42")],
        )
        .await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/workflows/nightly#context")
    );
    let (_, store) = app.get("/v1/workflows/nightly/context").await;
    assert_eq!(store["context"], json!({"cursor": "42"}));
    let (status, _) = b
        .post(
            "/workflows/nightly/context",
            &[("token", &token), ("key", "bad\u{7}key"), ("value", "1")],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the API's own rule for keys"
    );
    let (_, page) = b.get("/workflows/nightly").await;
    assert!(
        page.contains("<code>cursor</code></td><td><code>42</code>"),
        "{page}"
    );
    b.post(
        "/workflows/nightly/context",
        &[("token", &token), ("key", "cursor"), ("delete", "1")],
    )
    .await;
    let (_, store) = app.get("/v1/workflows/nightly/context").await;
    assert_eq!(store["context"], json!({}));

    // A second revision, and what changed in it.
    app.deploy("nightly", &nightly.replace("value: 1", "value: 2"))
        .await;
    let (_, diff) = b.get("/workflows/nightly?diff=2").await;
    assert!(
        diff.contains("<span class=\"del\">-") && diff.contains("<span class=\"add\">+"),
        "{diff}"
    );
    let shown: Vec<&str> = diff
        .split("<span class=\"add\">")
        .skip(1)
        .filter_map(|r| r.split("</span>").next())
        .collect();
    assert!(shown.iter().any(|l| l.contains('2')), "{shown:?}");
}

#[tokio::test]
async fn a_sign_in_posted_from_another_site_is_refused_and_the_script_is_served() {
    let app = spawn_app(Opts::default()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = http
            .post(app.url("/login"))
            .header(name, value)
            .form(&[("key", "k")])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    let r = http
        .post(app.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("key", "k")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let js = http.get(app.url("/console.js")).send().await.expect("get");
    assert_eq!(js.status(), StatusCode::OK);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/javascript")
    );
    assert!(js.text().await.expect("text").contains("data-live"));
    let page = http.get(app.url("/login")).send().await.expect("get");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
}

/// A scoped key made through the API (`keys_url` is the server's `/v1/keys`) with the
/// main key.
async fn scoped_key(keys_url: &str, name: &str, scope: &str) -> String {
    let made: Value = reqwest::Client::new()
        .post(keys_url)
        .bearer_auth(KEY)
        .json(&json!({"name": name, "scope": scope}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    made["key"].as_str().expect("key").to_string()
}
