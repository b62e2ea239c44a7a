//! The executor within an invocation's time limit (AWS Lambda): steps run one after another
//! while the next one's timeout still fits; past that, the run is written and enqueued to
//! continue in a new invocation. A step whose timeout no invocation could fit runs with the
//! time there is instead of being deferred forever.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use tower::ServiceExt;
use tripline_app::executor::DEADLINE_MARGIN;
use tripline_app::ports::{Clock, Queue, SystemClock};
use tripline_app::{App, Config};
use tripline_core::RunStatus;
use tripline_embedded::{EmbeddedQueue, EmbeddedStore};
use tripline_tests::{Reply, Stub};

async fn app(stub: &Stub, timeout: &str) -> (Arc<App>, Arc<EmbeddedQueue>, tempfile::TempDir) {
    let yaml = format!(
        "id: two\ntriggers:\n  - type: manual\nsteps:\n  - {{id: a, type: http, method: POST, url: \"{url}/a\", timeout: {timeout}}}\n  - {{id: b, type: http, method: POST, url: \"{url}/b\", timeout: {timeout}}}\n",
        url = stub.url
    );
    app_with(&yaml).await
}

/// An App on the embedded store and queue with `yaml` deployed, whose executor the test
/// drives itself (as a Lambda invocation with a deadline would).
pub(crate) async fn app_with(yaml: &str) -> (Arc<App>, Arc<EmbeddedQueue>, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().expect("dir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let queue = Arc::new(EmbeddedQueue::new(store.clone(), clock.clone()));
    let mut config = Config::default();
    config.outbound.allow_private_networks = true;
    let app = Arc::new(App::new(Arc::new(store), queue.clone(), clock, config));
    app.deployments
        .deploy_text(
            app.store.as_ref(),
            yaml,
            tripline_core::validate::Format::Yaml,
            None,
            app.clock.now(),
        )
        .await
        .unwrap_or_else(|_| panic!("deploy"));
    (app, queue, dir)
}

async fn start(app: &Arc<App>) -> String {
    start_with(app, "two", "").await
}

/// Starts a run of `workflow` through the control API with `body` as its input.
pub(crate) async fn start_with(app: &Arc<App>, workflow: &str, body: &str) -> String {
    let mut req = axum::http::Request::post(format!("/v1/workflows/{workflow}/runs"));
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Body::from(body.to_string())).expect("request");
    let resp = app.router().oneshot(req).await.expect("answer");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    v["run_id"].as_str().expect("run id").to_string()
}

/// The work items waiting, taken off the queue: their runs' ids.
pub(crate) async fn take_item(queue: &EmbeddedQueue) -> Vec<String> {
    let got = queue
        .receive(10, Duration::from_millis(50), Duration::from_secs(60))
        .await
        .expect("receive");
    for d in &got {
        queue.ack(d).await.expect("ack");
    }
    got.into_iter().map(|d| d.item.run_id).collect()
}

#[tokio::test]
async fn a_step_that_no_longer_fits_waits_for_the_next_invocation() {
    let stub = Stub::start().await;
    stub.script([Reply::slow(Duration::from_millis(600))]);
    let (app, queue, _dir) = app(&stub, "1s").await;
    let run_id = start(&app).await;
    assert_eq!(take_item(&queue).await, vec![run_id.clone()]);
    // Time for the first step (1 s), not for the second after the first took 0.6 s.
    let deadline = tokio::time::Instant::now() + DEADLINE_MARGIN + Duration::from_millis(1300);
    app.advance_run_until(&run_id, Some(deadline))
        .await
        .expect("advance");
    let run = app.store.run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.step_executions.len(), 1, "the first step is recorded");
    assert_eq!(stub.requests().len(), 1);
    assert_eq!(
        take_item(&queue).await,
        vec![run_id.clone()],
        "enqueued to continue"
    );
    // The next invocation goes on from the second step.
    app.advance_run_until(
        &run_id,
        Some(tokio::time::Instant::now() + Duration::from_secs(60)),
    )
    .await
    .expect("advance");
    let run = app.store.run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded);
    let paths: Vec<String> = stub.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, vec!["/a", "/b"]);
}

#[tokio::test]
async fn a_first_step_longer_than_any_invocation_runs_with_the_time_there_is() {
    let stub = Stub::start().await;
    let (app, queue, _dir) = app(&stub, "10m").await;
    let run_id = start(&app).await;
    take_item(&queue).await;
    let deadline = tokio::time::Instant::now() + DEADLINE_MARGIN + Duration::from_secs(5);
    app.advance_run_until(&run_id, Some(deadline))
        .await
        .expect("advance");
    let run = app.store.run(&run_id).await.expect("read").expect("run");
    assert_eq!(
        run.step_executions.len(),
        1,
        "the first step ran rather than being deferred: {:?}",
        run.status
    );
    assert_eq!(stub.requests().len(), 1);
}
