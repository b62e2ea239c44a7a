//! Whether retention stops the local store's file from growing: ten days of traffic
//! (20,000 webhook messages and their ended runs a day, the 208-byte benchmark body)
//! written to the embedded store, with upkeep's purge keeping three days (in batches of
//! 500, as `tripline serve` does) and, for comparison, without it. Prints the data
//! folder's size after each day.
//!
//! Usage: cargo run --release -p tripline-tests --example retention-growth

use std::path::Path;
use std::time::Duration;

use tripline_app::ports::Store;
use tripline_core::Timestamp;
use tripline_embedded::EmbeddedStore;

const PER_DAY: u64 = 20_000;
const DAYS: u64 = 10;
const KEEP_DAYS: u64 = 3;
const DAY_MS: u64 = 86_400_000;

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn day_of_traffic(store: &EmbeddedStore, day: u64, body: &[u8]) {
    let start = 1_800_000_000_000 + day * DAY_MS;
    tripline_tests::seed::seed(store, PER_DAY, start, start + DAY_MS, &["orders"], body).await;
}

async fn simulate(retention: bool) -> Vec<u64> {
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    let body = std::fs::read(tripline_tests::repo_root().join("tests/data/body-208.json"))
        .expect("tests/data/body-208.json");
    let mut sizes = Vec::new();
    for day in 0..DAYS {
        day_of_traffic(&store, day, &body).await;
        if retention && day >= KEEP_DAYS {
            let before = Timestamp(
                i64::try_from(1_800_000_000_000 + (day + 1 - KEEP_DAYS) * DAY_MS).unwrap_or(0),
            );
            while store.purge("orders", before, 500).await.expect("purge") > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sizes.push(folder_bytes(dir.path()));
    }
    sizes
}

#[tokio::main]
async fn main() {
    let with = simulate(true).await;
    let without = simulate(false).await;
    println!("day  with {KEEP_DAYS}-day retention  without   ({PER_DAY} messages and runs a day)");
    for (day, (w, wo)) in with.iter().zip(&without).enumerate() {
        println!(
            "{:>3}  {:>10.1} MiB  {:>10.1} MiB",
            day + 1,
            *w as f64 / 1048576.0,
            *wo as f64 / 1048576.0
        );
    }
}
