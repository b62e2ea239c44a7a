//! The API's contract: the OpenAPI document names every route the routers serve, and
//! schemathesis, run against the real server with that document, finds no server error,
//! no answer outside its schema, no schema-valid request refused and no invalid one taken.

use std::collections::BTreeSet;

use tripline_tests::*;

/// The paths the routers serve, read from their source (`.route("…"`).
fn served_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut dirs = vec![repo_root().join("shared/app/src/http")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            // The console's pages are HTML for people, not the API.
            if path.is_dir() {
                if !path.ends_with("console") {
                    dirs.push(path);
                }
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            for part in text.split(".route(").skip(1) {
                if let Some(route) = part
                    .trim_start()
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                {
                    paths.insert(route.to_string());
                }
            }
        }
    }
    paths
}

#[tokio::test]
async fn the_document_names_every_route_the_server_serves() {
    let app = spawn_app(Opts::default()).await;
    let (status, doc) = app.get("/v1/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let served = served_paths();
    assert!(served.len() > 30, "{served:?}");
    let missing: Vec<&String> = served.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes served but not in /v1/openapi.json: {missing:?}"
    );
    let stale: Vec<&String> = documented.difference(&served).collect();
    assert!(stale.is_empty(), "documented but not served: {stale:?}");
    // Every error is in one shape, and the document says so.
    let runs = &doc["paths"]["/v1/runs/{id}"]["get"]["responses"];
    assert_eq!(
        runs["default"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert!(doc["components"]["schemas"]["Run"]["properties"]["step_executions"].is_object());
}

#[tokio::test]
async fn schemathesis_finds_nothing_against_the_real_server() {
    let st = repo_root().join("target/api-venv/bin/schemathesis");
    assert!(
        st.exists(),
        "schemathesis is not installed at {}: tests/run installs it (tests/requirements-api.txt)",
        st.display()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let server = ServeProc::start(&repo_root().join("examples"), &dir.path().join("data"), &[]);
    let seed = std::env::var("TRIPLINE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261206".into());
    let out = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(repo_root().join("tests/schemathesis.toml"))
        .args(["run", &format!("{}/v1/openapi.json", server.base)])
        .args([
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
        ])
        .args(["--seed", &seed, "--no-color"])
        .current_dir(dir.path())
        .output()
        .await
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}
