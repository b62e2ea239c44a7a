//! The AWS shape's test fixtures: the AWS-protocol server (moto's, started by `tests/run`)
//! and a fresh set of tables, queues and bucket for each test.

use std::sync::atomic::{AtomicU32, Ordering};

use tripline_aws::{CallCounter, Clients, Settings};

/// The AWS-protocol server's URL. `tests/run` starts moto's server and sets
/// `TRIPLINE_TEST_AWS_ENDPOINT`; run by hand, start one yourself:
/// `target/aws-venv/bin/moto_server -H 127.0.0.1 -p 5055` and set
/// `TRIPLINE_TEST_AWS_ENDPOINT=http://127.0.0.1:5055`.
pub fn endpoint() -> String {
    std::env::var("TRIPLINE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "TRIPLINE_TEST_AWS_ENDPOINT is not set: the AWS-shape tests need an AWS-protocol \
             server. Run `tests/run` (it installs and starts moto's server), or start one with \
             `target/aws-venv/bin/moto_server -H 127.0.0.1 -p 5055` and set \
             TRIPLINE_TEST_AWS_ENDPOINT=http://127.0.0.1:5055"
        )
    })
}

/// A name prefix no other test (or earlier run against the same server) uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Clients on the test server, and freshly provisioned resources.
pub async fn fresh(counter: Option<CallCounter>) -> (Clients, Settings) {
    let clients = Clients::for_endpoint(&endpoint(), counter);
    let settings =
        tripline_aws::provision::provision(&clients, &Settings::with_prefix(&unique_prefix()))
            .await
            .unwrap_or_else(|e| panic!("provisioning on {} failed: {e}", endpoint()));
    (clients, settings)
}
