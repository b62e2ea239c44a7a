//! The `tripline` client against the AWS shape: the control function behind an HTTP front
//! (as API Gateway is), against moto. The same commands as against `tripline serve`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tripline_tests::aws::endpoint;
use tripline_tests::lambda::{Function, function_env, http_front};
use tripline_tests::shape::shape;
use tripline_tests::{Reply, cli};

#[tokio::test]
async fn the_client_deploys_lists_retries_and_exports_through_the_control_function() {
    let s = shape(&[]).await;
    // A control function whose answers hold about one page (the export comes in parts).
    let mut env = function_env(&s.settings, &endpoint());
    env.push((
        "TRIPLINE_ANSWER_LIMIT".into(),
        (1024 * 1024 + 2000).to_string(),
    ));
    let control = Arc::new(Function::start("control-api", &env).await);
    let base = http_front(control).await;

    let dir = tempfile::tempdir().expect("tmp");
    let yaml = format!(
        "id: charge\ntriggers: [{{ type: manual }}]\nsteps:\n  - {{ id: pay, type: http, url: \"{}/pay\", method: POST }}\n",
        s.stub.url
    );
    std::fs::write(dir.path().join("charge.yaml"), yaml).expect("write");
    let folder = dir.path().to_string_lossy().to_string();
    let (code, out, err) = cli(&base, &["diff", &folder]).await;
    assert_eq!(code, 5, "{out}{err}");
    let (code, out, err) = cli(&base, &["deploy", &folder]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(&base, &["diff", &folder]).await;
    assert_eq!((code, out.trim()), (0, "= charge (unchanged)"));

    s.stub.set_default(Reply::status(400));
    let mut failed = Vec::new();
    for n in 0..25 {
        failed.push(s.start("charge", &json!({ "n": n })).await);
    }
    for id in &failed {
        s.pump_until(id, "failed", Duration::from_secs(30)).await;
    }
    s.index().await;
    let (code, out, _) = cli(
        &base,
        &[
            "runs",
            "list",
            "--workflow",
            "charge",
            "--status",
            "failed",
            "--json",
            "--limit",
            "100",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(25));

    let (code, nd, err) = cli(
        &base,
        &[
            "export",
            "runs",
            "--workflow",
            "charge",
            "--format",
            "ndjson",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(nd.lines().count(), 25, "every run once, across the parts");
    let (code, csv, _) = cli(
        &base,
        &["export", "runs", "--workflow", "charge", "--format", "csv"],
    )
    .await;
    assert_eq!(
        (code, csv.matches("\r\n").count()),
        (0, 26),
        "one header, whatever the parts"
    );

    s.stub.set_default(Reply::status(200));
    let (code, out, err) = cli(&base, &["runs", "retry", &failed[0]]).await;
    assert_eq!(code, 0, "{err}");
    s.pump_until(out.trim(), "succeeded", Duration::from_secs(30))
        .await;
    let (code, out, _) = cli(
        &base,
        &[
            "bulk",
            "retry",
            "--workflow",
            "charge",
            "--status",
            "failed",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (0, "it would act on 25 item(s)"));
    let (code, _, err) = cli(&base, &["runs", "get", "nope"]).await;
    assert_eq!(code, 3, "{err}");
}
