//! The terminal client (`tripline workflows|runs|inbox|bulk|export|deploy|diff`) against a
//! real `tripline serve`: tables and `--json`, a folder as the source of truth, retries,
//! switches, bulk jobs, exports, and the exit codes scripts rely on.

use std::path::Path;

use serde_json::{Value, json};
use tripline_tests::*;

fn charge(stub: &Stub, description: &str) -> String {
    format!(
        "id: charge\ndescription: {description}\ntriggers:\n  - {{ type: webhook, id: hook }}\n  - {{ type: manual }}\nsteps:\n  - {{ id: a, type: transform, value: 1 }}\n  - {{ id: pay, type: http, url: \"{}/pay\", method: POST }}\n",
        stub.url
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), text).expect("write");
}

#[tokio::test]
async fn a_folder_is_diffed_and_deployed_and_the_exit_codes_say_what_happened() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (served, repo) = (dir.path().join("served"), dir.path().join("repo"));
    write(&served, "charge.yaml", &charge(&stub, "first"));
    write(
        &served,
        "old.yaml",
        "id: old\ntriggers: [{ type: manual }]\nsteps:\n  - { id: t, type: transform, value: 1 }\n",
    );
    let server = ServeProc::start(&served, &dir.path().join("data"), &[]);
    let base = server.base.as_str();

    write(
        &repo,
        "charge.yaml",
        &charge(&stub, "second").replace(
            "- { type: manual }",
            "- { type: cron, id: nightly, schedule: \"0 2 * * *\" }",
        ),
    );
    write(
        &repo,
        "fresh.yaml",
        "id: fresh\ntriggers: [{ type: manual }]\nsteps:\n  - { id: t, type: transform, value: 2 }\n",
    );
    let repo_s = repo.to_string_lossy().to_string();
    let (code, out, err) = cli(base, &["diff", &repo_s]).await;
    assert_eq!(code, 5, "{out}{err}");
    assert!(
        out.contains("~ charge (+trigger cron:nightly, -trigger manual:manual)"),
        "{out}"
    );
    assert!(
        out.contains("-  \"description\": \"first\",")
            && out.contains("+  \"description\": \"second\","),
        "{out}"
    );
    assert!(
        out.contains("+ fresh (new; triggers: manual:manual)"),
        "{out}"
    );
    assert!(
        out.contains("- old (not in the folder: kept; --prune removes it)"),
        "{out}"
    );
    let (code, json_out, _) = cli(base, &["diff", &repo_s, "--json"]).await;
    let plan: Value = serde_json::from_str(&json_out).expect("json plan");
    assert_eq!(code, 5);
    assert!(
        plan.as_array()
            .expect("plan")
            .contains(&json!({"workflow": "old", "change": "remove"}))
    );

    let (code, out, err) = cli(base, &["deploy", &repo_s, "--prune"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("deployed charge: revision 2") && out.contains("removed old"),
        "{out}"
    );
    let (code, out, _) = cli(base, &["diff", &repo_s]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("= charge (unchanged)") && out.contains("= fresh (unchanged)"),
        "{out}"
    );

    let (code, out, _) = cli(base, &["workflows", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("WORKFLOW") && out.contains("webhook:hook") && !out.contains("old"),
        "{out}"
    );

    write(
        &repo,
        "broken.yaml",
        "id: broken\nsteps: [{ id: x, type: nope }]\n",
    );
    let (code, _, err) = cli(base, &["deploy", &repo_s]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("broken.yaml") && err.contains("nothing was sent"),
        "{err}"
    );
    let (code, _, err) = cli(base, &["runs", "get", "nope"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = cli("http://127.0.0.1:9", &["runs", "list"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn runs_are_listed_retried_watched_switched_bulk_retried_and_exported() {
    let stub = Stub::start().await;
    stub.set_default(Reply::status(400));
    let dir = tempfile::tempdir().expect("tmp");
    let wf = dir.path().join("wf");
    write(&wf, "charge.yaml", &charge(&stub, "x"));
    let server = ServeProc::start(&wf, &dir.path().join("data"), &[]);
    let base = server.base.as_str();
    let http = reqwest::Client::new();
    let hook: Value = http
        .get(format!("{base}/v1/workflows/charge"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let hook = format!(
        "{base}{}",
        hook["triggers"][0]["url"].as_str().expect("url")
    );
    for n in 0..3 {
        http.post(&hook)
            .json(&json!({ "n": n }))
            .send()
            .await
            .expect("post");
    }
    let failed = loop {
        let (_, out, _) = cli(
            base,
            &[
                "runs",
                "list",
                "--workflow",
                "charge",
                "--status",
                "failed",
                "--json",
            ],
        )
        .await;
        let v: Value = serde_json::from_str(&out).expect("json");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 3 {
            break items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (_, table, _) = cli(base, &["runs", "list", "--status", "failed"]).await;
    assert!(
        table.starts_with("RUN") && table.matches("failed").count() >= 3,
        "{table}"
    );

    stub.set_default(Reply::status(200));
    let first = failed[0]["run_id"].as_str().expect("id");
    let (code, out, err) = cli(base, &["runs", "retry", first, "--from-failed-step"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, watched, err) = cli(base, &["runs", "watch", out.trim()]).await;
    assert_eq!(code, 0, "{watched}{err}");
    assert!(
        watched.contains("pay attempt 1 succeeded") && watched.contains("succeeded"),
        "{watched}"
    );

    let (code, _, err) = cli(
        base,
        &["workflows", "disable", "charge", "--trigger", "hook"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let refused = http
        .post(&hook)
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status().as_u16(), 503);
    cli(
        base,
        &["workflows", "enable", "charge", "--trigger", "hook"],
    )
    .await;

    let (code, out, _) = cli(
        base,
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
    assert_eq!((code, out.trim()), (0, "it would act on 3 item(s)"));
    let (code, out, err) = cli(
        base,
        &[
            "bulk",
            "retry",
            "--workflow",
            "charge",
            "--status",
            "failed",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("item(s)") && out.contains("3 done, 0 failed"),
        "{out}{err}"
    );

    let (code, csv, _) = cli(
        base,
        &["export", "runs", "--workflow", "charge", "--format", "csv"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(csv.starts_with("run_id,workflow,"), "{csv}");
    assert_eq!(
        csv.matches("\r\n").count(),
        1 + 3 + 1 + 3,
        "header, 3 failed, 1 retry, 3 bulk retries"
    );
    let (_, nd, _) = cli(
        base,
        &[
            "export",
            "inbox",
            "--workflow",
            "charge",
            "--format",
            "ndjson",
            "--trigger",
            "hook",
        ],
    )
    .await;
    assert_eq!(nd.lines().count(), 3, "{nd}");
}
