//! Store failures: the real server over an embedded store that fails on demand. A request
//! that could not be recorded is refused (503, nothing started) and a run whose write
//! failed is tried again once the store recovers: nothing acknowledged is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::StatusCode;
use serde_json::json;
use tripline_app::ports::*;
use tripline_core::{Run, Timestamp};
use tripline_embedded::{EmbeddedQueue, EmbeddedStore};
use tripline_local::{ServeOptions, Server};
use tripline_tests::*;

/// The embedded store, with admissions and run writes that fail while a switch is on, and
/// a run write that another writer beats once (it annotates the run first).
struct FaultyStore {
    inner: EmbeddedStore,
    fail_admit: AtomicBool,
    fail_save: AtomicBool,
    interfere_once: AtomicBool,
}

fn injected() -> StoreError {
    StoreError::Unavailable("injected failure".into())
}

#[async_trait]
impl Store for FaultyStore {
    async fn deploy(&self, record: &WorkflowRecord) -> Result<(), StoreError> {
        self.inner.deploy(record).await
    }
    async fn latest_workflows(&self) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.inner.latest_workflows().await
    }
    async fn workflow(
        &self,
        id: &str,
        revision: Option<u32>,
    ) -> Result<Option<WorkflowRecord>, StoreError> {
        self.inner.workflow(id, revision).await
    }
    async fn revisions(&self, id: &str) -> Result<Vec<(u32, Timestamp)>, StoreError> {
        self.inner.revisions(id).await
    }
    async fn admit(&self, admission: Admission) -> Result<Admitted, StoreError> {
        if self.fail_admit.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.admit(admission).await
    }
    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        self.inner.run(id).await
    }
    async fn save_run(&self, run: &Run) -> Result<Run, StoreError> {
        if self.fail_save.load(Ordering::SeqCst) {
            return Err(injected());
        }
        if self.interfere_once.swap(false, Ordering::SeqCst)
            && let Some(mut current) = self.inner.run(&run.id).await?
        {
            // Another writer records an annotation (as a wait's notification result is).
            if let Some(p) = current.waiting_payload.as_mut() {
                p["note"] = json!("written meanwhile");
            }
            self.inner.save_run(&current).await?;
        }
        self.inner.save_run(run).await
    }
    async fn runs(&self, query: &RunQuery) -> Result<Page<Run>, StoreError> {
        self.inner.runs(query).await
    }
    async fn message(&self, id: &str) -> Result<Option<InboxMessage>, StoreError> {
        self.inner.message(id).await
    }
    async fn messages(&self, query: &InboxQuery) -> Result<Page<InboxMessage>, StoreError> {
        self.inner.messages(query).await
    }
    async fn queued_runs(&self, from: Timestamp, to: Timestamp) -> Result<Vec<String>, StoreError> {
        self.inner.queued_runs(from, to).await
    }
    async fn marker(&self, name: &str) -> Result<Option<Timestamp>, StoreError> {
        self.inner.marker(name).await
    }
    async fn set_marker(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        self.inner.set_marker(name, at).await
    }
    async fn link(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.link(name).await
    }
    async fn set_link(&self, name: &str, target: &str) -> Result<(), StoreError> {
        self.inner.set_link(name, target).await
    }
    async fn state(&self, workflow: &str) -> Result<Option<SavedState>, StoreError> {
        self.inner.state(workflow).await
    }
    async fn save_state(
        &self,
        workflow: &str,
        state: &SavedState,
    ) -> Result<SavedState, StoreError> {
        self.inner.save_state(workflow, state).await
    }
    async fn slots(&self, name: &str) -> Result<Option<Slots>, StoreError> {
        self.inner.slots(name).await
    }
    async fn save_slots(&self, name: &str, slots: &Slots) -> Result<Slots, StoreError> {
        self.inner.save_slots(name, slots).await
    }
    async fn context(
        &self,
        workflow: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        self.inner.context(workflow).await
    }
    async fn patch_context(
        &self,
        workflow: &str,
        changes: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<(), StoreError> {
        self.inner.patch_context(workflow, changes).await
    }
    async fn stranded_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.stranded_runs(limit).await
    }
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.inner.record_audit(entry).await
    }
    async fn audit(&self, q: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.inner.audit(q).await
    }
    async fn purge(&self, w: &str, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.inner.purge(w, before, limit).await
    }
}

const WORKFLOW: &str = r#"
id: faulty
triggers:
  - type: webhook
    token: fault-token-aaaaaaaaaaaaaaaaa
  - type: manual
steps:
  - { id: t, type: transform, value: { n: "{{ trigger.body.n }}" } }
"#;

const WAITING: &str = r#"
id: waiting
triggers: [{ type: manual }]
steps:
  - { id: w, type: wait_for_webhook, timeout: 400ms }
"#;

async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// `serve`'s options for a test server on port 0 over these folders.
fn options(workflows: &std::path::Path, data: &std::path::Path) -> ServeOptions {
    ServeOptions {
        workflows: Some(workflows.to_path_buf()),
        data: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 4,
        grace: Duration::from_secs(2),
        config: tripline_app::Config::default(),
        kafka: None,
        secrets_key_file: None,
        secret_store: None,
    }
}

/// Starts a run through the control API; its id.
async fn start_manual(client: &reqwest::Client, base: &str, workflow: &str) -> String {
    let started: serde_json::Value = client
        .post(format!("{base}/v1/workflows/{workflow}/runs"))
        .json(&json!({}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    started["run_id"].as_str().expect("id").to_string()
}

async fn start() -> (
    Server,
    Arc<FaultyStore>,
    tempfile::TempDir,
    tempfile::TempDir,
) {
    let data = tempfile::TempDir::new().expect("dir");
    let wf = tempfile::TempDir::new().expect("dir");
    std::fs::write(wf.path().join("w.yaml"), WORKFLOW).expect("write");
    std::fs::write(wf.path().join("waiting.yaml"), WAITING).expect("write");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let inner = EmbeddedStore::open(data.path()).expect("open");
    let queue = EmbeddedQueue::new(inner.clone(), clock.clone());
    let store = Arc::new(FaultyStore {
        inner,
        fail_admit: AtomicBool::new(false),
        fail_save: AtomicBool::new(false),
        interfere_once: AtomicBool::new(false),
    });
    let opts = options(wf.path(), data.path());
    let server = Server::start_with(opts, store.clone(), Arc::new(queue), clock)
        .await
        .expect("start");
    (server, store, data, wf)
}

#[tokio::test]
async fn a_request_the_store_cannot_record_gets_503_and_starts_nothing() {
    let (server, store, _d, _w) = start().await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    store.fail_admit.store(true, Ordering::SeqCst);
    let resp = client
        .post(format!("{base}/hooks/fault-token-aaaaaaaaaaaaaaaaa"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (_, _, body) = read(resp).await;
    assert_eq!(body["code"], "store_unavailable");
    store.fail_admit.store(false, Ordering::SeqCst);
    let runs = get_json(&client, format!("{base}/v1/runs")).await;
    assert_eq!(
        runs["items"].as_array().map(Vec::len),
        Some(0),
        "nothing was started"
    );
    let resp = client
        .post(format!("{base}/hooks/fault-token-aaaaaaaaaaaaaaaaa"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(
        resp.status().as_u16(),
        202,
        "the retry is accepted once the store is back"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_run_whose_write_failed_completes_once_the_store_recovers() {
    let (server, store, _d, _w) = start().await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    store.fail_save.store(true, Ordering::SeqCst);
    // Started by hand: a webhook's run of only a transform would run before its admission
    // and never be saved by the executor.
    let resp = client
        .post(format!("{base}/v1/workflows/faulty/runs"))
        .json(&json!({"n": 7}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::ACCEPTED.as_u16());
    let run_id = read(resp).await.2["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = get_json(&client, format!("{base}/v1/runs/{run_id}")).await;
    assert_eq!(
        run["status"], "queued",
        "its result could not be written yet"
    );
    store.fail_save.store(false, Ordering::SeqCst);
    let start = Instant::now();
    loop {
        let run = get_json(&client, format!("{base}/v1/runs/{run_id}")).await;
        if run["status"] == "succeeded" {
            assert_eq!(run["final_output"], json!({"n": 7}));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the run was not tried again: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_timer_whose_write_loses_to_an_annotation_is_applied_again() {
    let (server, store, _d, _w) = start().await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let id = start_manual(&client, &base, "waiting").await;
    let begin = Instant::now();
    while get_json(&client, format!("{base}/v1/runs/{id}")).await["status"] != "waiting" {
        assert!(begin.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The expiry timer's write will lose to an annotation: it must not be dropped.
    store.interfere_once.store(true, Ordering::SeqCst);
    let run = loop {
        let run = get_json(&client, format!("{base}/v1/runs/{id}")).await;
        if !matches!(
            run["status"].as_str(),
            Some("waiting" | "running" | "queued")
        ) {
            break run;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(10),
            "the expiry was lost: {run}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error_type"], "wait_timed_out");
    assert!(
        !store.interfere_once.load(Ordering::SeqCst),
        "the interference happened"
    );
    server.stop().await;
}

/// The embedded queue, losing the next message sent without delay (as a crash between a
/// write and its message would).
struct LossyQueue {
    inner: EmbeddedQueue,
    lose_next_immediate: AtomicBool,
    /// Fail the next send without delay (as SQS failing after the run was written).
    fail_next_immediate: AtomicBool,
}

#[async_trait]
impl Queue for LossyQueue {
    async fn send(&self, item: &WorkItem, delay: Duration) -> Result<(), StoreError> {
        if delay.is_zero() && self.lose_next_immediate.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        if delay.is_zero() && self.fail_next_immediate.swap(false, Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.send(item, delay).await
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner.receive(max, wait, lease).await
    }
    async fn ack(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.inner.ack(delivery).await
    }
    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), StoreError> {
        self.inner.release(delivery, delay).await
    }
}

#[tokio::test]
async fn a_parent_whose_wake_up_was_lost_finds_its_ended_child_at_its_next_check() {
    let data = tempfile::TempDir::new().expect("dir");
    let wf = tempfile::TempDir::new().expect("dir");
    std::fs::write(
        wf.path().join("child.yaml"),
        "id: child\nsteps:\n  - { id: t, type: transform, value: 42 }\n",
    )
    .expect("write");
    std::fs::write(
        wf.path().join("parent.yaml"),
        "id: parent\ntriggers: [{ type: manual }]\nsteps:\n  - { id: call, type: trigger_workflow, workflow: child, wait: true }\n",
    )
    .expect("write");
    let clock = Arc::new(ManualClock::new(Timestamp::from_system_time(
        std::time::SystemTime::now(),
    )));
    let store = EmbeddedStore::open(data.path()).expect("open");
    let inner = EmbeddedQueue::new(store.clone(), clock.clone());
    // In this flow the only message sent without delay is the child's wake-up of its parent
    // (admissions enqueue inside the store's transaction).
    let queue = Arc::new(LossyQueue {
        inner: inner.clone(),
        lose_next_immediate: AtomicBool::new(true),
        fail_next_immediate: AtomicBool::new(false),
    });
    let opts = options(wf.path(), data.path());
    let server = Server::start_with(opts, Arc::new(store), queue.clone(), clock.clone())
        .await
        .expect("start");
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let id = start_manual(&client, &base, "parent").await;
    let begin = Instant::now();
    let child = loop {
        let run = get_json(&client, format!("{base}/v1/runs/{id}")).await;
        if let Some(c) = run["children"][0].as_str() {
            let child = get_json(&client, format!("{base}/v1/runs/{c}")).await;
            if child["status"] == "succeeded" {
                break child;
            }
        }
        assert!(begin.elapsed() < Duration::from_secs(5), "{run}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        !queue.lose_next_immediate.load(Ordering::SeqCst),
        "the wake-up was lost"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = get_json(&client, format!("{base}/v1/runs/{id}")).await;
    assert_eq!(run["status"], "waiting", "{run}");

    clock.advance(tripline_core::engine::CHILD_CHECK_INTERVAL);
    inner.wake();
    // The run may be seen `running` between the child's result and its end.
    let run = loop {
        let run = get_json(&client, format!("{base}/v1/runs/{id}")).await;
        if !matches!(
            run["status"].as_str(),
            Some("waiting" | "running" | "queued")
        ) {
            break run;
        }
        assert!(begin.elapsed() < Duration::from_secs(10), "{run}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["final_output"], child["final_output"]);
    server.stop().await;
}

/// A server whose one workflow parks on a wait, then calls the stub; its queue can be
/// told to fail the next immediate send.
struct Parking {
    server: Server,
    queue: Arc<LossyQueue>,
    clock: Arc<ManualClock>,
    stub: Stub,
    base: String,
    client: reqwest::Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Parking {
    async fn start(rescue_after: Option<Duration>) -> Parking {
        let data = tempfile::TempDir::new().expect("dir");
        let wf = tempfile::TempDir::new().expect("dir");
        let stub = Stub::start().await;
        std::fs::write(
            wf.path().join("park.yaml"),
            format!("id: park\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: w, type: wait_for_webhook }}\n  - {{ id: call, type: http, method: POST, url: \"{}/after\" }}\n", stub.url),
        )
        .expect("write");
        let clock = Arc::new(ManualClock::new(Timestamp::from_system_time(
            std::time::SystemTime::now(),
        )));
        let store = EmbeddedStore::open(data.path()).expect("open");
        let queue = Arc::new(LossyQueue {
            inner: EmbeddedQueue::new(store.clone(), clock.clone()),
            lose_next_immediate: AtomicBool::new(false),
            fail_next_immediate: AtomicBool::new(false),
        });
        let mut opts = options(wf.path(), data.path());
        opts.config.outbound.allow_private_networks = true;
        opts.config.rescue_after = rescue_after;
        let server = Server::start_with(opts, Arc::new(store), queue.clone(), clock.clone())
            .await
            .expect("start");
        let base = format!("http://{}", server.addr);
        Parking {
            server,
            queue,
            clock,
            stub,
            base,
            client: reqwest::Client::new(),
            _dirs: (data, wf),
        }
    }

    async fn run(&self, id: &str) -> serde_json::Value {
        get_json(&self.client, format!("{}/v1/runs/{id}", self.base)).await
    }

    /// Starts a run and waits for it to park; its resume URL.
    async fn parked(&self) -> (String, String) {
        let id = start_manual(&self.client, &self.base, "park").await;
        loop {
            if let Some(u) = self.run(&id).await["waiting_payload"]["resume_url"].as_str() {
                return (id, u.to_string());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn resume(&self, url: &str) -> StatusCode {
        let resp = self.client.post(url).json(&json!({"ok": 1})).send();
        resp.await.expect("post").status()
    }

    /// Resumes with the work item after the write failing: 503, the run left running.
    async fn resume_failing(&self, id: &str, url: &str) {
        self.queue.fail_next_immediate.store(true, Ordering::SeqCst);
        assert_eq!(self.resume(url).await, StatusCode::SERVICE_UNAVAILABLE);
        let run = self.run(id).await;
        assert_eq!(
            run["status"], "running",
            "the write landed, the item did not: {run}"
        );
    }

    async fn succeeded(&self, id: &str) {
        let begin = Instant::now();
        loop {
            let run = self.run(id).await;
            if run["status"] == "succeeded" {
                return;
            }
            assert!(begin.elapsed() < Duration::from_secs(10), "stranded: {run}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_resume_whose_work_item_could_not_be_sent_is_answered_503_and_moved_by_a_retry_or_upkeep()
{
    let p = Parking::start(None).await;
    // The caller retries the same URL: it is answered as the first should have been.
    let (first, url) = p.parked().await;
    p.resume_failing(&first, &url).await;
    assert_eq!(p.resume(&url).await, StatusCode::OK);
    p.succeeded(&first).await;

    // Nobody retries: upkeep finds the run with no work item and moves it.
    let (second, url) = p.parked().await;
    p.resume_failing(&second, &url).await;
    assert_eq!(p.server.app.move_stranded().await.expect("upkeep"), 1);
    p.succeeded(&second).await;
    assert_eq!(p.stub.requests().len(), 2, "each run's step ran once");
    p.server.stop().await;
}

#[tokio::test]
async fn a_rescue_item_moves_a_run_whose_work_item_was_lost_and_does_nothing_to_one_that_moved() {
    let p = Parking::start(Some(Duration::from_secs(30))).await;
    let (moved, url) = p.parked().await;
    assert_eq!(p.resume(&url).await, StatusCode::OK);
    p.succeeded(&moved).await;
    let (lost, url) = p.parked().await;
    p.resume_failing(&lost, &url).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        p.run(&lost).await["status"],
        "running",
        "nothing moves it before the delay"
    );

    p.clock.advance(Duration::from_secs(31));
    p.queue.inner.wake();
    p.succeeded(&lost).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        p.stub.requests().len(),
        2,
        "each run's step ran once: the rescue of the run that had moved did nothing"
    );
    p.server.stop().await;
}
