//! Faults: `kill -9` the real `tripline` process under load, SIGTERM it with steps in
//! flight, stop it with retry timers pending; after a restart on the same data folder every
//! acknowledged request's run ends `succeeded`, and the downstream saw each step's
//! idempotency key (a repeated call only ever with the same key).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;
use tripline_tests::*;

type Proc = ServeProc;

fn serve(workflows: &Path, data: &Path) -> Proc {
    ServeProc::start(workflows, data, &["--workers", "32"])
}

fn kill9(p: &mut Proc) {
    p.kill9();
}

fn sigterm(p: &mut Proc) -> std::process::ExitStatus {
    let pid = p.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    let start = Instant::now();
    loop {
        if let Some(s) = p.child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn two_step_workflow(stub: &Stub, token: &str) -> String {
    format!(
        r#"
id: crashy
triggers:
  - type: webhook
    token: {token}
steps:
  - id: first
    type: http
    method: POST
    url: "{url}/a"
    body: {{ n: "{{{{ trigger.body.n }}}}" }}
    retry: {{ max_attempts: 5, initial: 50ms }}
  - id: second
    type: http
    method: POST
    url: "{url}/b"
    body: {{ n: "{{{{ trigger.body.n }}}}" }}
    retry: {{ max_attempts: 5, initial: 50ms }}
"#,
        url = stub.url
    )
}

async fn wait_all_succeeded(client: &reqwest::Client, base: &str, ids: &[String]) {
    let start = Instant::now();
    for id in ids {
        loop {
            let resp = client
                .get(format!("{base}/v1/runs/{id}"))
                .send()
                .await
                .expect("request");
            let run: serde_json::Value = resp.json().await.expect("json");
            match run["status"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "timed_out" | "cancelled") => panic!("run {id} ended badly: {run}"),
                _ => {}
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "run {id} never finished: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every run's two steps reached the stub, and every request carried its step's key.
fn check_downstream(stub: &Stub, ids: &[String]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in stub.requests() {
        let key = r
            .headers
            .get("idempotency-key")
            .cloned()
            .expect("every request has an idempotency key");
        let step = if r.path == "/a" { "first" } else { "second" };
        assert!(
            key.ends_with(&format!(":{step}")),
            "{key} sent to {}",
            r.path
        );
        *seen.entry(key).or_default() += 1;
    }
    for id in ids {
        for step in ["first", "second"] {
            assert!(
                seen.contains_key(&format!("{id}:{step}")),
                "the downstream never saw {id}:{step}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_run() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(30)));
    let wf = tempfile::TempDir::new().expect("dir");
    let data = tempfile::TempDir::new().expect("dir");
    let token = "crash-token-aaaaaaaaaaaaaaaa";
    std::fs::write(wf.path().join("w.yaml"), two_step_workflow(&stub, token)).expect("write");

    let mut proc = serve(wf.path(), data.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = format!("{}/hooks/{token}", proc.base);
    let mut senders = Vec::new();
    for w in 0..16 {
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..40 {
                let resp = client
                    .post(&url)
                    .json(&json!({"n": w * 1000 + i}))
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                if resp.status().as_u16() != 202 {
                    return;
                }
                let body: serde_json::Value = resp.json().await.expect("json");
                acked
                    .lock()
                    .await
                    .push(body["run_id"].as_str().expect("id").to_string());
            }
        }));
    }
    // Let runs get in flight, then kill without warning.
    while acked.lock().await.len() < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill9(&mut proc);
    for s in senders {
        let _ = s.await;
    }
    let ids = acked.lock().await.clone();
    let before = stub.requests().len();
    assert!(
        before < ids.len() * 2,
        "runs were still in flight at the kill ({before} calls for {} runs)",
        ids.len()
    );

    let mut proc = serve(wf.path(), data.path());
    wait_all_succeeded(&client, &proc.base, &ids).await;
    check_downstream(&stub, &ids);
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "one run per acknowledged request");
    kill9(&mut proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_in_flight_steps_finish_and_the_rest_resume_after_restart() {
    let stub = Stub::start().await;
    stub.set_default(Reply::slow(Duration::from_millis(400)));
    let wf = tempfile::TempDir::new().expect("dir");
    let data = tempfile::TempDir::new().expect("dir");
    let token = "term-token-aaaaaaaaaaaaaaaaa";
    std::fs::write(wf.path().join("w.yaml"), two_step_workflow(&stub, token)).expect("write");

    let mut proc = serve(wf.path(), data.path());
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..10 {
        let resp = client
            .post(format!("{}/hooks/{token}", proc.base))
            .json(&json!({"n": n}))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 202);
        let body: serde_json::Value = resp.json().await.expect("json");
        ids.push(body["run_id"].as_str().expect("id").to_string());
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Runs whose first step had reached the downstream: they are being worked on.
    let started: Vec<String> = stub
        .requests()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("idempotency-key")?
                .strip_suffix(":first")
                .map(str::to_string)
        })
        .collect();
    assert!(!started.is_empty(), "steps were in flight");
    let status = sigterm(&mut proc);
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    // The stop let each of them finish: its second step ran before the process exited.
    let keys: HashSet<String> = stub
        .requests()
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key").cloned())
        .collect();
    for id in &started {
        assert!(
            keys.contains(&format!("{id}:second")),
            "run {id} was abandoned at shutdown"
        );
    }

    let mut proc = serve(wf.path(), data.path());
    wait_all_succeeded(&client, &proc.base, &ids).await;
    check_downstream(&stub, &ids);
    kill9(&mut proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_timer_survives_a_restart() {
    let stub = Stub::start().await;
    stub.script([Reply::status(503)]);
    let wf = tempfile::TempDir::new().expect("dir");
    let data = tempfile::TempDir::new().expect("dir");
    let yaml = r#"
id: later
triggers:
  - type: manual
steps:
  - id: call
    type: http
    method: POST
    url: "URL/x"
    retry: { max_attempts: 2, initial: 2s }
"#
    .replace("URL", &stub.url);
    std::fs::write(wf.path().join("w.yaml"), yaml).expect("write");
    let mut proc = serve(wf.path(), data.path());
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/workflows/later/runs", proc.base))
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    let id = resp.json::<serde_json::Value>().await.expect("json")["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    let start = Instant::now();
    while stub.requests().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill9(&mut proc);
    assert_eq!(stub.requests().len(), 1, "the retry was not due yet");

    let mut proc = serve(wf.path(), data.path());
    wait_all_succeeded(&client, &proc.base, std::slice::from_ref(&id)).await;
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "the timer kept its due time"
    );
    kill9(&mut proc);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_folder_is_refused_clearly() {
    let wf = tempfile::TempDir::new().expect("dir");
    let data = tempfile::TempDir::new().expect("dir");
    let mut first = serve(wf.path(), data.path());
    let out = Command::new(tripline_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--workflows")
        .arg(wf.path())
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("run");
    kill9(&mut first);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another tripline process is using the data folder"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_runs_resume_after_a_kill_9() {
    let wf = tempfile::TempDir::new().expect("dir");
    let data = tempfile::TempDir::new().expect("dir");
    std::fs::write(
        wf.path().join("w.yaml"),
        r#"
id: parked
triggers: [{ type: manual }]
steps:
  - { id: wait, type: wait_for_webhook }
  - { id: out, type: transform, value: "{{ steps.wait.n }}" }
"#,
    )
    .expect("write");
    std::fs::write(
        wf.path().join("d.yaml"),
        "id: delayed\ntriggers: [{ type: manual }]\nsteps:\n  - { id: pause, type: delay, duration: 2s }\n",
    )
    .expect("write");
    let mut proc = serve(wf.path(), data.path());
    let client = reqwest::Client::new();
    let start = |base: String, workflow: &'static str| {
        let client = client.clone();
        async move {
            let resp = client
                .post(format!("{base}/v1/workflows/{workflow}/runs"))
                .json(&json!({}))
                .send()
                .await
                .expect("post");
            resp.json::<serde_json::Value>().await.expect("json")["run_id"]
                .as_str()
                .expect("id")
                .to_string()
        }
    };
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(start(proc.base.clone(), "parked").await);
    }
    let mut delayed = Vec::new();
    for _ in 0..3 {
        delayed.push(start(proc.base.clone(), "delayed").await);
    }
    // Every run is parked before the crash.
    let mut paths = Vec::new();
    for id in waiting.iter().chain(&delayed) {
        let begin = Instant::now();
        loop {
            let run: serde_json::Value = client
                .get(format!("{}/v1/runs/{id}", proc.base))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if run["status"] == "waiting" {
                if let Some(url) = run["waiting_payload"]["resume_url"].as_str() {
                    let path = url.strip_prefix(&proc.base).expect("own base").to_string();
                    paths.push(path);
                }
                break;
            }
            assert!(begin.elapsed() < Duration::from_secs(10), "{run}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(paths.len(), 5);
    kill9(&mut proc);

    let mut proc = serve(wf.path(), data.path());
    for (n, path) in paths.iter().enumerate() {
        let resp = client
            .post(format!("{}{path}", proc.base))
            .json(&json!({"n": n}))
            .send()
            .await
            .expect("resume");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let all: Vec<String> = waiting.iter().chain(&delayed).cloned().collect();
    wait_all_succeeded(&client, &proc.base, &all).await;
    kill9(&mut proc);
}
