//! The CLI: `tripline validate` and `tripline schema`.

use std::process::Command;

use tripline_tests::*;

#[test]
fn validate_reports_every_problem_with_file_line_and_column_and_fails() {
    let dir = tempfile::TempDir::new().expect("dir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "id: x\nsteps:\n  - id: a\n    type: transform\n    valeu: 1\n  - id: a\n    type: fail\n    message: m\n").expect("write");
    let out = Command::new(tripline_bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5:5: steps[0].valeu: unknown field `valeu`"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:6:") && err.contains("used twice"),
        "{err}"
    );
    assert!(
        err.contains("3 problem(s)") && err.contains("missing field `value`"),
        "{err}"
    );
}

#[test]
fn validate_accepts_the_examples() {
    let mut cmd = Command::new(tripline_bin());
    cmd.arg("validate");
    for f in tripline_local::definition_files(&repo_root().join("examples")).expect("examples") {
        cmd.arg(f);
    }
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_names_a_missing_file() {
    let out = Command::new(tripline_bin())
        .args(["validate", "/nonexistent/w.yaml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn schema_prints_a_json_schema_of_the_format() {
    let out = Command::new(tripline_bin())
        .arg("schema")
        .output()
        .expect("run");
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        schema["$schema"]
            .as_str()
            .unwrap_or_default()
            .contains("json-schema.org")
    );
    for field in ["id", "triggers", "steps", "output", "max_duration"] {
        assert!(schema["properties"].get(field).is_some(), "{field} missing");
    }
    let text = schema.to_string();
    for word in ["api_key", "transform", "success_status", "exponential"] {
        assert!(text.contains(word), "{word} missing from the schema");
    }
}

#[test]
fn serve_refuses_a_missing_workflows_folder_it_was_given() {
    let data = tempfile::TempDir::new().expect("dir");
    let out = Command::new(tripline_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workflows",
            "/nonexistent/flows",
            "--data",
        ])
        .arg(data.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read the workflows folder /nonexistent/flows")
    );
}

#[test]
fn serve_refuses_to_start_with_an_invalid_definition_and_lists_its_problems() {
    let data = tempfile::TempDir::new().expect("dir");
    let flows = tempfile::TempDir::new().expect("dir");
    std::fs::write(
        flows.path().join("good.yaml"),
        "id: good\nsteps:\n  - {id: a, type: transform, value: 1}\n",
    )
    .expect("write");
    std::fs::write(
        flows.path().join("bad.yaml"),
        "id: bad\nsteps:\n  - {id: a, type: transfrom, value: 1}\n",
    )
    .expect("write");
    let out = Command::new(tripline_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--workflows"])
        .arg(flows.path())
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing was deployed")
            && err.contains("bad.yaml:3:")
            && err.contains("did you mean `transform`"),
        "{err}"
    );
}

/// `tripline secrets ARGS --data DIR` with `stdin`: (success, stdout + stderr).
fn secrets_cli(data: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut cmd = Command::new(tripline_bin());
    cmd.arg("secrets")
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("TRIPLINE_SECRETS_KEY");
    run_with_stdin(&mut cmd, stdin)
}

#[test]
fn secrets_are_set_on_a_data_folder_from_standard_input_and_listed_without_values() {
    let dir = tempfile::TempDir::new().expect("dir");
    let data = dir.path().join("data");
    let (ok, out) = secrets_cli(&data, &["set", "crm_token"], "tok-value-0123456789\n");
    assert!(ok && out.contains("set secret `crm_token`"), "{out}");
    let (ok, out) = secrets_cli(&data, &["set", "bad-name"], "x");
    assert!(!ok && out.contains("not a valid secret name"), "{out}");
    let (ok, out) = secrets_cli(&data, &["set", "empty"], "");
    assert!(!ok && out.contains("no value on standard input"), "{out}");
    let (ok, out) = secrets_cli(&data, &["list"], "");
    assert!(ok && out.contains("crm_token"), "{out}");
    assert!(!out.contains("tok-value"), "{out}");
    let (ok, out) = secrets_cli(&data, &["rm", "nope"], "");
    assert!(!ok && out.contains("no secret `nope`"), "{out}");

    // While a server has the folder open, the CLI says to go through it.
    let wf = dir.path().join("wf");
    std::fs::create_dir_all(&wf).expect("dir");
    std::fs::write(
        wf.join("crm.yaml"),
        "id: crm\ntriggers: [{type: manual}]\nsteps:\n  - {id: a, type: http, url: \"http://127.0.0.1:9/\", headers: {authorization: \"Bearer {{ secrets.crm_token }}\"}}\n",
    )
    .expect("write");
    let server = ServeProc::start(&wf, &data, &[]);
    let (ok, out) = secrets_cli(&data, &["list"], "");
    assert!(!ok && out.contains("--server"), "{out}");
    let listed = Command::new(tripline_bin())
        .args(["secrets", "list", "--server", &server.base])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("crm_token") && text.contains("crm"), "{text}");
    drop(server);
    let (ok, out) = secrets_cli(&data, &["rm", "crm_token"], "");
    assert!(!ok && out.contains("read by crm"), "{out}");
    let (ok, out) = secrets_cli(&data, &["rm", "crm_token", "--force"], "");
    assert!(ok, "{out}");
}

#[test]
fn serve_writes_its_banner_to_stdout_and_its_logs_to_stderr() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().expect("dir");
    let mut child = std::process::Command::new(tripline_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--workflows"])
        .arg(repo_root().join("examples"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read");
    assert!(
        first.starts_with("tripline listening on "),
        "stdout starts with the banner: {first}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let mut logs = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs);
    assert!(
        !first.contains("INFO") && !rest.contains("INFO"),
        "no log line on stdout: {rest}"
    );
    assert!(logs.contains("INFO"), "the logs are on stderr: {logs}");
}

#[tokio::test]
async fn serve_watch_redeploys_a_changed_definition_and_keeps_the_running_one_when_it_is_invalid() {
    let dir = tempfile::tempdir().expect("dir");
    let wfs = dir.path().join("flows");
    std::fs::create_dir(&wfs).expect("mkdir");
    let file = wfs.join("w.yaml");
    let def = |v: &str| {
        format!(
            "id: w\ntriggers: [{{type: manual}}]\nsteps:\n  - {{id: t, type: transform, value: {v}}}\n"
        )
    };
    std::fs::write(&file, def("1")).expect("write");
    let server = ServeProc::start(&wfs, &dir.path().join("data"), &["--watch"]);
    let client = reqwest::Client::new();
    let revision = || async {
        let v: serde_json::Value = client
            .get(format!("{}/v1/workflows/w", server.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        v["revision"].as_u64().unwrap_or(0)
    };
    assert_eq!(revision().await, 1);
    std::fs::write(&file, def("2")).expect("write");
    let begin = std::time::Instant::now();
    while revision().await != 2 {
        assert!(
            begin.elapsed() < std::time::Duration::from_secs(10),
            "not redeployed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // An invalid edit is reported and changes nothing.
    std::fs::write(&file, "id: w\nsteps: [{id: t, type: nope}]\n").expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(revision().await, 2, "the running revision stays");
    let started = client
        .post(format!("{}/v1/workflows/w/runs", server.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(started.status().as_u16(), 202, "the workflow still runs");
}

#[test]
fn sigterm_stops_serve_quickly_even_while_the_kafka_broker_is_down() {
    // A port on this machine that nothing listens on: the consumer keeps retrying.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("dir");
    let bootstrap = format!("127.0.0.1:{port}");
    let mut server = ServeProc::start(
        &repo_root().join("examples"),
        &dir.path().join("data"),
        &["--kafka-bootstrap", &bootstrap],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let begin = std::time::Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            begin.elapsed() < std::time::Duration::from_secs(20),
            "serve did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn readyz_says_not_ready_while_the_kafka_broker_is_down_and_healthz_stays_live() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("dir");
    let bootstrap = format!("127.0.0.1:{port}");
    let server = ServeProc::start(
        &repo_root().join("examples"),
        &dir.path().join("data"),
        &["--kafka-bootstrap", &bootstrap],
    );
    let client = reqwest::Client::new();
    let begin = std::time::Instant::now();
    let ready = loop {
        let resp = client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .expect("readyz");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.expect("json");
        if body["kafka"]["last_error"].is_string() {
            assert_eq!(status, 503, "{body}");
            break body;
        }
        assert!(
            begin.elapsed() < std::time::Duration::from_secs(20),
            "{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["store"], "ok");
    assert_eq!(ready["kafka"]["connected"], false);
    assert!(
        ready["kafka"]["topics"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{ready}"
    );
    let live = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(live.status().as_u16(), 200, "live while not ready");
}
