//! The benchmark's reference point: a bare axum server on the same runtime settings as
//! `tripline serve`, that parses each POSTed JSON body and answers a small JSON object,
//! storing and running nothing. What it does per second on these cores, measured in the
//! same run, is the ceiling the benchmark compares Tripline with.
//!
//! Usage: axum-reference 127.0.0.1:PORT

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let app = axum::Router::new().route(
        "/hooks/{token}",
        post(|Json(body): Json<Value>| async move { Json(json!({"id": body["id"], "ok": true})) }),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("bind the listen address");
    axum::serve(listener, app).await.expect("serve");
}
