//! Secrets in the local shape, end to end through the real `tripline` binary: set with the
//! CLI (value on standard input) and the control API, used in every place a request is
//! rendered (url, headers, query, body, a notification, a callback and its signature) and
//! by a webhook's credential, with a downstream that echoes them back; then the whole data
//! folder, every API answer and the logs are searched for each value: no hit.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tripline_tests::{Reply, Stub, run_with_stdin, tripline_bin};

const VALUES: &[(&str, &str)] = &[
    ("crm_token", "crmTOK-5d1e0f7a9b33c2"),
    ("tenant", "tenant-a7b6c5d4e3f2"),
    ("q_key", "qkey-8c7d6e5f4a3b2"),
    ("body_secret", "bodysec-1a2b3c4d5e6f"),
    ("notify_key", "notif-9e8d7c6b5a4f"),
    ("cb_header", "cbhdr-0f1e2d3c4b5a"),
    ("hook_key", "hookkey-6a5b4c3d2e1f0a9b"),
    ("cb_signing", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
];

fn value(name: &str) -> &'static str {
    VALUES.iter().find(|(n, _)| *n == name).expect("known").1
}

struct Proc {
    child: std::process::Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tripline serve` with debug logs, stdout and stderr into `logs`.
fn serve(data: &std::path::Path, workflows: &std::path::Path, logs: &std::path::Path) -> Proc {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(tripline_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-private-network",
        ])
        .arg("--workflows")
        .arg(workflows)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(logs.join("stderr.log")).expect("log file"))
        .spawn()
        .expect("start tripline");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut out = std::fs::File::create(logs.join("stdout.log")).expect("log file");
    // Log lines may come before the banner (the logs share standard output today).
    let base = loop {
        let line = lines.next().expect("a line").expect("read");
        if let Some(base) = line.strip_prefix("tripline listening on ") {
            break base.trim().to_string();
        }
        let _ = writeln!(out, "{line}");
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(out, "{line}");
        }
    });
    Proc { child, base }
}

/// `tripline secrets ...` through the server, with `stdin`; (success, stdout + stderr).
fn cli(base: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut cmd = Command::new(tripline_bin());
    cmd.arg("secrets").args(args).args(["--server", base]);
    run_with_stdin(&mut cmd, stdin)
}

fn workflow(stub: &str) -> String {
    format!(
        r#"
id: crm-sync
triggers:
  - type: webhook
    token: crmsynctokenaaaaaaaaaaaa
    auth: {{ type: api_key, header: x-hook-key, keys: ["{{{{ secrets.hook_key }}}}"] }}
callback_secret: "{{{{ secrets.cb_signing }}}}"
on_success:
  url: "{stub}/cb"
  headers: {{ x-cb: "{{{{ secrets.cb_header }}}}" }}
steps:
  - id: push
    type: http
    method: POST
    url: "{stub}/t/{{{{ secrets.tenant }}}}/contacts"
    headers: {{ authorization: "Bearer {{{{ secrets.crm_token }}}}" }}
    query: {{ key: "{{{{ secrets.q_key }}}}" }}
    body: {{ id: "{{{{ trigger.body.id }}}}", token: "{{{{ secrets.body_secret }}}}" }}
  - id: ok
    type: approval
    timeout: 1h
    notify:
      method: POST
      url: "{stub}/notify"
      headers: {{ x-notify: "{{{{ secrets.notify_key }}}}" }}
      body: {{ link: "{{{{ approval.approve_url }}}}" }}
"#
    )
}

#[tokio::test]
async fn no_secret_value_is_readable_from_the_data_folder_the_answers_or_the_logs() {
    let dir = tempfile::tempdir().expect("tmp");
    let (data, wfs, logs) = (
        dir.path().join("data"),
        dir.path().join("wf"),
        dir.path().join("logs"),
    );
    for d in [&wfs, &logs] {
        std::fs::create_dir_all(d).expect("dir");
    }
    let stub = Stub::start().await;
    // The downstream echoes the credentials it was sent, in its body.
    stub.script([Reply {
        status: 200,
        body: json!({
            "echo": format!("Bearer {}", value("crm_token")),
            "seen": [value("tenant"), value("q_key"), value("body_secret")],
        }),
        delay: Duration::ZERO,
    }]);
    let server = serve(&data, &wfs, &logs);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let mut answers: Vec<String> = Vec::new();

    // Half through the CLI (standard input), half through the API.
    for (i, (name, v)) in VALUES.iter().enumerate() {
        if i % 2 == 0 {
            let (ok, out) = cli(&base, &["set", name], &format!("{v}\n"));
            assert!(ok, "{out}");
            answers.push(out);
        } else {
            let resp = client
                .put(format!("{base}/v1/secrets/{name}"))
                .json(&json!({ "value": v }))
                .send()
                .await
                .expect("put");
            assert_eq!(resp.status(), 200);
            answers.push(resp.text().await.expect("body"));
        }
    }
    let (ok, listed) = cli(&base, &["list"], "");
    assert!(
        ok && listed.contains("crm_token") && listed.contains("cb_signing"),
        "{listed}"
    );
    answers.push(listed);

    let resp = client
        .put(format!("{base}/v1/workflows/crm-sync"))
        .header("content-type", "application/yaml")
        .body(workflow(&stub.url))
        .send()
        .await
        .expect("deploy");
    assert_eq!(resp.status(), 201);
    answers.push(resp.text().await.expect("body"));

    let hook = format!("{base}/hooks/crmsynctokenaaaaaaaaaaaa");
    let denied = client
        .post(&hook)
        .json(&json!({"id": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(denied.status(), 401);
    let resp = client
        .post(&hook)
        .header("x-hook-key", value("hook_key"))
        .json(&json!({"id": 42}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let accepted: Value = resp.json().await.expect("json");
    let run_id = accepted["run_id"].as_str().expect("run id").to_string();
    answers.push(accepted.to_string());

    let get = |path: String| {
        let client = client.clone();
        async move {
            client
                .get(path)
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("body")
        }
    };
    let until = Instant::now() + Duration::from_secs(15);
    let run: Value = loop {
        let run: Value =
            serde_json::from_str(&get(format!("{base}/v1/runs/{run_id}")).await).expect("json");
        if run["status"] == "waiting" && run["waiting_payload"]["notification"].is_object() {
            break run;
        }
        assert!(Instant::now() < until, "{run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let approve = run["waiting_payload"]["approve_url"]
        .as_str()
        .expect("approve url")
        .to_string();
    // The single-use URLs' secrets: shown to the API key's holder, kept only as hashes.
    let url_secrets: Vec<String> = ["review_url", "approve_url", "reject_url"]
        .iter()
        .map(|k| {
            let url = run["waiting_payload"][k].as_str().expect("url");
            url.rsplit('.').next().expect("secret").to_string()
        })
        .collect();
    assert!(url_secrets.iter().all(|s| s.len() >= 40), "{url_secrets:?}");
    let resp = client
        .post(&approve)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("approve");
    assert!(resp.status().is_success(), "{}", resp.status());
    let run: Value = loop {
        let run: Value =
            serde_json::from_str(&get(format!("{base}/v1/runs/{run_id}")).await).expect("json");
        if run["status"] == "succeeded" && run["callbacks"][0]["succeeded"] == true {
            break run;
        }
        assert!(Instant::now() < until, "{run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Every place got its value.
    let sent = stub.requests();
    let push = &sent[0];
    assert_eq!(push.path, format!("/t/{}/contacts", value("tenant")));
    assert_eq!(
        push.headers["authorization"],
        format!("Bearer {}", value("crm_token"))
    );
    assert_eq!(push.query, format!("key={}", value("q_key")));
    assert_eq!(push.body["token"], value("body_secret"));
    let notify = sent.iter().find(|r| r.path == "/notify").expect("notified");
    assert_eq!(notify.headers["x-notify"], value("notify_key"));
    let cb = sent.iter().find(|r| r.path == "/cb").expect("called back");
    assert_eq!(cb.headers["x-cb"], value("cb_header"));
    let body = serde_json::to_vec(&cb.body).expect("body");
    let expected = tripline_app::signing::signature(
        value("cb_signing"),
        &cb.headers["webhook-id"],
        cb.headers["webhook-timestamp"].parse().expect("ts"),
        &body,
    )
    .expect("sign");
    assert_eq!(cb.headers["webhook-signature"], format!("v1,{expected}"));

    // The record shows placeholders, the echo included.
    let record = run.to_string();
    assert!(record.contains("Bearer [secret:crm_token]"), "{record}");
    assert!(record.contains("/t/[secret:tenant]/contacts"), "{record}");
    assert!(record.contains("[secret:body_secret]"), "{record}");
    answers.push(record);
    for path in [
        "/v1/runs".to_string(),
        "/v1/inbox".to_string(),
        "/v1/workflows".to_string(),
        "/v1/workflows/crm-sync".to_string(),
        "/v1/secrets".to_string(),
    ] {
        answers.push(get(format!("{base}{path}")).await);
    }
    let (status, _) = (
        client
            .get(format!("{base}/v1/inbox"))
            .send()
            .await
            .expect("inbox")
            .status(),
        (),
    );
    assert_eq!(status, 200);

    drop(server);
    std::thread::sleep(Duration::from_millis(100));
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.starts_with(&wfs) {
                files.push(p);
            }
        }
    }
    let logs_text = std::fs::read_to_string(logs.join("stderr.log")).unwrap_or_default()
        + &std::fs::read_to_string(logs.join("stdout.log")).unwrap_or_default();
    assert!(
        logs_text.contains("secret set"),
        "the logs were captured: {logs_text}"
    );
    for (name, v) in VALUES {
        for f in &files {
            let bytes = std::fs::read(f).expect("read");
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "the value of `{name}` is in {}",
                f.display()
            );
        }
        for a in &answers {
            assert!(!a.contains(v), "the value of `{name}` is in an answer: {a}");
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("tripline.db")),
        "{files:?}"
    );
    // Owner-only.
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["tripline.db", "secrets.key"] {
        let mode = std::fs::metadata(data.join(f))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is {mode:o}");
    }
    let mode = std::fs::metadata(&data).expect("meta").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the data folder is {mode:o}");
}
