//! Fills a `tripline serve` data folder with stored traffic, for measuring a store that
//! has lived: COUNT webhook messages and the ended runs they started (the 208-byte
//! benchmark body), over the 30 days before now, across ten workflows (the benchmark's
//! three among them), most succeeded, some failed or cancelled.
//!
//! Usage: cargo run --release -p tripline-tests --example seed-store -- DIR COUNT

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tripline_embedded::EmbeddedStore;

const WORKFLOWS: &[&str] = &[
    "ingest", "three", "sync", "orders", "billing", "crm", "shipping", "refunds", "alerts", "audit",
];

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(count)) = (args.get(1), args.get(2).and_then(|c| c.parse().ok())) else {
        eprintln!("usage: seed-store DIR COUNT");
        std::process::exit(2);
    };
    let store = EmbeddedStore::open(std::path::Path::new(dir)).expect("open the store");
    let body = std::fs::read(tripline_tests::repo_root().join("tests/data/body-208.json"))
        .expect("tests/data/body-208.json");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let began = Instant::now();
    // Ends a minute ago, so what the benchmark then sends is the newest.
    let to = now - 60_000;
    tripline_tests::seed::seed(&store, count, to - 30 * 86_400_000, to, WORKFLOWS, &body).await;
    eprintln!(
        "seeded {count} messages and runs in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}
