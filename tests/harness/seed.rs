//! Stored traffic written straight into an embedded store, for the measurements that need
//! a store that has lived (retention's growth, listings and pages with a million runs): an
//! inbox message and the ended run it started, as admission writes them.

use tripline_app::ports::{Admission, InboxMessage, Outcome, Store};
use tripline_core::run::{ErrorType, TriggerKind, TriggerRef};
use tripline_core::{Run, RunStatus, Timestamp};
use tripline_embedded::EmbeddedStore;

/// Message and run number `n`, received at `at_ms` by `workflow` with `body`: most
/// succeeded, one in fourteen failed (with an error), one in thirty-three cancelled.
pub fn admission(at_ms: u64, n: u64, workflow: &str, body: &[u8]) -> Admission {
    let id = |salt: u64| {
        ulid::Ulid::from_parts(at_ms, u128::from(n) << 8 | u128::from(salt)).to_string()
    };
    let (message_id, run_id) = (id(1), id(2));
    let at = Timestamp(i64::try_from(at_ms).unwrap_or(0));
    let mut run = Run::new(
        run_id.clone(),
        workflow,
        1,
        TriggerRef {
            kind: TriggerKind::Webhook,
            id: "hook".into(),
        },
        serde_json::from_slice(body).unwrap_or_default(),
        at,
    );
    run.status = match n % 100 {
        0..=89 => RunStatus::Succeeded,
        90..=96 => {
            run.error_type = Some(ErrorType::StepFailed);
            run.error = Some(format!("step `call` answered 502 (message {n})"));
            RunStatus::Failed
        }
        _ => RunStatus::Cancelled,
    };
    run.message_id = Some(message_id.clone());
    run.finished_at = Some(at);
    let mut m = InboxMessage::new(message_id, at, workflow, "hook", "POST").at_path("/hooks/x");
    m.body = body.to_vec();
    m.content_type = Some("application/json".into());
    m.outcome = Outcome::Started {
        run_ids: vec![run_id],
    };
    Admission {
        message: m,
        runs: vec![run],
        idempotency: None,
    }
}

/// Writes `count` messages and runs, spread evenly over `[from_ms, to_ms)` and across
/// `workflows`, 256 admissions at a time (they share the store's group commits).
pub async fn seed(
    store: &EmbeddedStore,
    count: u64,
    from_ms: u64,
    to_ms: u64,
    workflows: &[&str],
    body: &[u8],
) {
    let step = ((to_ms - from_ms) / count.max(1)).max(1);
    let mut n = 0;
    while n < count {
        let end = (n + 256).min(count);
        let writes = (n..end).map(|i| {
            let wf = workflows[(i % workflows.len() as u64) as usize];
            store.admit(admission(from_ms + i * step, i, wf, body))
        });
        for r in futures::future::join_all(writes).await {
            r.expect("admit");
        }
        n = end;
    }
}
