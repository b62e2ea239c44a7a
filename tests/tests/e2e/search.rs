//! Searching runs and inbox messages by text, trigger, error type and the run that started
//! them, and exporting what a filter selects as CSV or NDJSON, streamed past one page.

use axum::http::StatusCode;
use serde_json::json;
use tripline_tests::*;

const HOOKED: &str = r#"
id: hooked
triggers:
  - { type: webhook, id: hook }
steps:
  - { id: t, type: transform, value: "{{ trigger.body.n }}" }
"#;

async fn text_of(app: &TestApp, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.client.get(app.url(path)).send().await.expect("get");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("text"))
}

#[tokio::test]
async fn runs_and_messages_are_found_by_text_and_exported_whole_past_a_page() {
    let app = spawn_app(Opts::default()).await;
    let (_, wf) = app.deploy("hooked", HOOKED).await;
    let url = wf["triggers"][0]["url"].as_str().expect("url").to_string();
    let n = 520;
    for i in 0..n {
        let email = if i == 7 {
            "Needle@Example.com".to_string()
        } else {
            format!("user{i}@example.com")
        };
        let (status, _, body) = app
            .post_json(
                &url,
                &json!({"n": i, "email": email, "note": "a,\"quoted\"\nline"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (_, found) = app
        .get("/v1/runs?workflow=hooked&text=needle@example")
        .await;
    let items = found["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{found}");
    let (_, run) = app
        .get(&format!(
            "/v1/runs/{}",
            items[0]["run_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(run["trigger_input"]["body"]["n"], 7);
    let (_, msgs) = app.get("/v1/inbox?workflow=hooked&text=NEEDLE").await;
    assert_eq!(msgs["items"].as_array().map(Vec::len), Some(1), "{msgs}");
    let (_, by_trigger) = app.get("/v1/runs?workflow=hooked&trigger=nope").await;
    assert_eq!(by_trigger["items"], json!([]));

    let (status, headers, csv) = text_of(&app, "/v1/runs/export?format=csv&workflow=hooked").await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"runs.csv\""
    );
    assert!(
        csv.starts_with("run_id,workflow,revision,trigger_kind,trigger,status,"),
        "{}",
        &csv[..200]
    );
    // Every run once, each a record of its own even with a line break inside its input.
    let records = csv.matches("\r\n").count();
    assert_eq!(records, n + 1, "a header and one line per run");
    assert!(
        csv.contains(r#"\""quoted\""\nline"#),
        "the input is kept as JSON inside its quoted cell"
    );

    let (status, headers, nd) =
        text_of(&app, "/v1/runs/export?format=ndjson&workflow=hooked").await;
    assert_eq!(
        (status, headers["content-type"].to_str().ok()),
        (StatusCode::OK, Some("application/x-ndjson"))
    );
    let lines: Vec<serde_json::Value> = nd
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), n);
    let mut ids: Vec<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), n, "no run twice");
    assert!(lines.iter().all(|l| l.get("waiting_tokens").is_none()));

    let (_, _, one) = text_of(&app, "/v1/inbox/export?format=csv&text=needle").await;
    assert_eq!(one.matches("\r\n").count(), 2, "{one}");
    assert!(one.contains("Needle@Example.com"), "{one}");

    let (status, _, body) = text_of(&app, "/v1/runs/export?workflow=hooked").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("format=csv"), "{body}");
    let (status, _, body) = text_of(&app, "/v1/runs?format=csv").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = text_of(&app, "/v1/runs?error_type=oops").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("step_failed"), "{body}");
}
