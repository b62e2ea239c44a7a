//! What rendering a secret adds to an `http` step in the local shape: the engine renders
//! the step's request (a marker for the secret), the executor swaps in the value (from the
//! per-process cache, filled by one decrypting read of the embedded store) and records
//! the request with the placeholder. Timed over many steps, with and without a secret.
//!
//! Usage: cargo run --release -p tripline-tests --example secret-cost

use std::sync::Arc;
use std::time::Instant;

use tripline_app::secrets::{Secrets, recorded};
use tripline_core::engine::{self, Effect, Event};
use tripline_core::run::{TriggerKind, TriggerRef};
use tripline_core::validate::{Format, load};
use tripline_core::{Run, Timestamp};

const STEPS: usize = 100_000;

fn workflow(header: &str) -> tripline_core::Workflow {
    load(
        &format!(
            "id: w\ntriggers: [{{type: manual}}]\nsteps:\n  - {{id: a, type: http, method: POST, url: \"https://api.example.com/x\", headers: {{authorization: \"{header}\"}}, body: {{id: \"{{{{ trigger.body.id }}}}\"}}}}\n"
        ),
        Format::Yaml,
    )
    .expect("workflow")
}

async fn per_step(secrets: &Secrets, wf: &tripline_core::Workflow) -> f64 {
    let now = Timestamp::from_millis(1_700_000_000_000);
    let trigger = TriggerRef {
        kind: TriggerKind::Manual,
        id: "manual".into(),
    };
    let run = Run::new(
        "r1".into(),
        "w",
        1,
        trigger,
        serde_json::json!({"body": {"id": 7}}),
        now,
    );
    let mut sink = 0usize;
    let started = Instant::now();
    for _ in 0..STEPS {
        let (_, effects) = engine::apply(wf, run.clone(), Event::Started, now);
        let Some(Effect::RunStep { request, .. }) = effects.into_iter().next() else {
            panic!("the step is issued");
        };
        let record = recorded(&request);
        let Ok(sent) = secrets.resolve(&request, now).await else {
            panic!("the secret resolves");
        };
        sink += record.to_string().len() + sent.request.headers.len();
    }
    assert!(sink > 0);
    started.elapsed().as_secs_f64() * 1e9 / STEPS as f64
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = tripline_embedded::EmbeddedStore::open(dir.path()).expect("store");
    let embedded = tripline_local::embedded_secrets(&store, dir.path(), None).expect("key");
    let secrets = Secrets::new(Arc::new(embedded), None);
    secrets
        .set(
            "crm_token",
            "tok-0123456789abcdef",
            Timestamp::from_millis(0),
        )
        .await
        .expect("set");
    let plain = workflow("Bearer tok-0123456789abcdef");
    let secret = workflow("Bearer {{ secrets.crm_token }}");
    // Warm: the first resolve reads and decrypts the secret once.
    per_step(&secrets, &secret).await;
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..5 {
        without.push(per_step(&secrets, &plain).await);
        with.push(per_step(&secrets, &secret).await);
    }
    without.sort_by(f64::total_cmp);
    with.sort_by(f64::total_cmp);
    let (a, b) = (without[2], with[2]);
    println!("\n## A step that renders a secret, local shape ({STEPS} steps × 5, median)\n");
    println!("| step request (render, swap in secrets, record) | µs per step |");
    println!("|---|---:|");
    println!("| header written inline (no secret) | {:.2} |", a / 1000.0);
    println!(
        "| header `Bearer {{{{ secrets.crm_token }}}}` | {:.2} |",
        b / 1000.0
    );
    println!("| difference | {:+.2} |", (b - a) / 1000.0);
    println!(
        "\nStore reads: one decrypting read per secret per process (the cache lives until the secret is set again), none per step."
    );
}
