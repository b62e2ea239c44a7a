//! The port conformance suite against the embedded (SQLite) adapters.

use std::sync::Arc;

use tripline_app::ports::ManualClock;
use tripline_embedded::{EmbeddedQueue, EmbeddedStore};
use tripline_tests::conformance::{Ports, T0};

async fn embedded() -> (Ports, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().expect("dir");
    let clock = Arc::new(ManualClock::new(T0));
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let queue = EmbeddedQueue::new(store.clone(), clock.clone());
    let waker = queue.clone();
    let ticker = clock.clone();
    let ports = Ports {
        store: Arc::new(store),
        queue: Arc::new(queue),
        clock,
        advance: Box::new(move |d| {
            ticker.advance(d);
            waker.wake();
            Box::pin(async {})
        }),
        index: Box::new(|| Box::pin(async {})),
    };
    (ports, dir)
}

tripline_tests::conformance_suite!(embedded);
