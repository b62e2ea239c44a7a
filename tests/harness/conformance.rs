//! The conformance suite of the ports: one set of checks, generic over any `Store` and
//! `Queue`, run against every adapter (the embedded one now; the AWS ones against an
//! AWS-protocol server later). Each check gets a fresh store and a manual clock.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tripline_app::ports::*;
use tripline_core::run::TriggerRef;
use tripline_core::{Run, RunStatus, Timestamp};

/// What a check needs: a fresh store and queue over the given manual clock.
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub clock: Arc<ManualClock>,
    /// Lets time pass for the queue: the embedded queue moves the manual clock (and wakes
    /// its receivers); SQS keeps its own time, so its adapter really waits.
    pub advance: Box<dyn Fn(Duration) -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
    /// Brings the listings up to date with what was written: nothing for a store whose
    /// listings read its own writes; DynamoDB's are written from the runs table's stream.
    pub index: Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
}

impl Ports {
    async fn pass(&self, d: Duration) {
        (self.advance)(d).await;
    }

    /// See [`Ports::index`]: a check calls it after writing and before listing.
    async fn listed(&self) {
        (self.index)().await;
    }
}

pub const T0: Timestamp = Timestamp(1_800_000_000_000);

fn run(id: &str, workflow: &str, at: Timestamp) -> Run {
    Run::new(
        id.into(),
        workflow,
        1,
        TriggerRef {
            kind: tripline_core::run::TriggerKind::Manual,
            id: "manual".into(),
        },
        json!({"n": id}),
        at,
    )
}

/// A JSON webhook message `{"a":1}` of trigger `hook`.
pub fn message(id: &str, workflow: &str, at: Timestamp, outcome: Outcome) -> InboxMessage {
    InboxMessage {
        id: id.into(),
        received_at: at,
        workflow: workflow.into(),
        trigger: "hook".into(),
        method: "POST".into(),
        path: "/hooks/x".into(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        content_type: Some("application/json".into()),
        body: b"{\"a\":1}".to_vec(),
        outcome,
        scheduled_at: None,
        kafka: None,
        reprocess_of: None,
        retain: None,
    }
}

fn admission(run_id: &str, msg_id: &str, at: Timestamp, key: Option<&str>) -> Admission {
    Admission {
        message: message(
            msg_id,
            "wf",
            at,
            Outcome::Started {
                run_ids: vec![run_id.into()],
            },
        ),
        runs: vec![run(run_id, "wf", at)],
        idempotency: key.map(|k| IdempotencyClaim {
            key: k.into(),
            expires_at: at.plus(Duration::from_secs(60)),
            held_by_message: false,
        }),
    }
}

/// Admits and, for stores whose queue is separate, enqueues what the store asks for.
async fn admit(p: &Ports, a: Admission) -> Admitted {
    let out = p.store.admit(a).await.expect("admit");
    if let Admitted::New { to_enqueue } = &out {
        for id in to_enqueue {
            p.queue
                .send(&WorkItem::run(id.clone()), Duration::ZERO)
                .await
                .expect("send");
        }
    }
    out
}

async fn receive_now(p: &Ports, lease: Duration) -> Vec<Delivery> {
    p.queue
        .receive(10, Duration::from_millis(100), lease)
        .await
        .expect("receive")
}

/// A message admitted again under its id (a Kafka record or a cron tick delivered twice:
/// their ids are derived) is a duplicate of the first admission and overwrites nothing,
/// even after the first run moved on.
pub async fn a_message_admitted_again_is_a_duplicate_and_overwrites_nothing(p: Ports) {
    let first = admit(&p, admission("r1", "m1", T0, None)).await;
    assert!(matches!(first, Admitted::New { .. }), "{first:?}");
    let mut moved = p.store.run("r1").await.expect("read").expect("run");
    moved.status = RunStatus::Succeeded;
    p.store.save_run(&moved).await.expect("save");
    let again = admit(&p, admission("r1", "m1", T0, None)).await;
    assert_eq!(
        again,
        Admitted::Duplicate {
            run_id: "r1".into()
        }
    );
    let run = p.store.run("r1").await.expect("read").expect("run");
    assert_eq!((run.status, run.version), (RunStatus::Succeeded, 1));
}

/// A run reads back as it was admitted, its first read and every later one alike (the
/// embedded store keeps a just-admitted run in memory for its first read), and a run
/// saved before it was ever read reads back as saved, never as admitted.
pub async fn a_run_reads_back_as_admitted_until_it_is_saved(p: Ports) {
    let mut a = admission("r1", "m1", T0, None);
    a.runs[0].trigger_input = json!({"n": 1.25, "big": 12345678901234567_u64, "s": "é\u{1F600}", "deep": [[{"x": null}]]});
    let admitted = a.runs[0].clone();
    admit(&p, a).await;
    let first = p.store.run("r1").await.expect("read").expect("run");
    let again = p.store.run("r1").await.expect("read").expect("run");
    assert_eq!(first, again, "the first read is the stored run");
    assert_eq!(
        (first.trigger_input.clone(), first.version),
        (admitted.trigger_input.clone(), 0)
    );

    admit(&p, admission("r2", "m2", T0, None)).await;
    let mut running = run("r2", "wf", T0);
    running.status = RunStatus::Running;
    let saved = p.store.save_run(&running).await.expect("save, unread");
    let read = p.store.run("r2").await.expect("read").expect("run");
    assert_eq!((read.status, read.version), (RunStatus::Running, 1));
    assert_eq!(read, saved);
}

pub async fn a_run_write_is_conditional_on_its_version(p: Ports) {
    admit(&p, admission("r1", "m1", T0, None)).await;
    let loaded = p.store.run("r1").await.expect("read").expect("run");
    assert_eq!((loaded.version, loaded.status), (0, RunStatus::Queued));
    let mut running = loaded.clone();
    running.status = RunStatus::Running;
    let saved = p.store.save_run(&running).await.expect("first write wins");
    assert_eq!(saved.version, 1);
    let stale = p.store.save_run(&running).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict)),
        "a stale version must lose: {stale:?}"
    );
    let now = p.store.run("r1").await.expect("read").expect("run");
    assert_eq!((now.version, now.status), (1, RunStatus::Running));
    let mut missing = running;
    missing.id = "nope".into();
    assert!(matches!(
        p.store.save_run(&missing).await,
        Err(StoreError::Conflict)
    ));
}

pub async fn an_idempotency_key_maps_to_its_first_run_until_it_expires(p: Ports) {
    let first = admit(&p, admission("r1", "m1", T0, Some("k"))).await;
    assert!(matches!(first, Admitted::New { .. }), "{first:?}");
    let dup = admit(
        &p,
        admission("r2", "m2", T0.plus(Duration::from_secs(1)), Some("k")),
    )
    .await;
    assert_eq!(
        dup,
        Admitted::Duplicate {
            run_id: "r1".into()
        }
    );
    assert!(
        p.store.run("r2").await.expect("read").is_none(),
        "a duplicate starts nothing"
    );
    let m2 = p
        .store
        .message("m2")
        .await
        .expect("read")
        .expect("the duplicate is still recorded");
    assert_eq!(
        m2.outcome,
        Outcome::Duplicate {
            run_id: "r1".into()
        }
    );
    let later = admit(
        &p,
        admission("r3", "m3", T0.plus(Duration::from_secs(61)), Some("k")),
    )
    .await;
    assert!(
        matches!(later, Admitted::New { .. }),
        "after expiry the key is free again"
    );
}

pub async fn an_admitted_queued_run_is_delivered_and_gone_once_acked(p: Ports) {
    admit(&p, admission("r1", "m1", T0, None)).await;
    let got = receive_now(&p, Duration::from_secs(2)).await;
    assert_eq!(
        got.iter()
            .map(|d| d.item.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["r1"]
    );
    assert!(
        receive_now(&p, Duration::from_secs(2)).await.is_empty(),
        "leased items are hidden"
    );
    p.queue.ack(&got[0]).await.expect("ack");
    p.pass(Duration::from_secs(3)).await;
    assert!(
        receive_now(&p, Duration::from_secs(2)).await.is_empty(),
        "an acked item never comes back"
    );
}

pub async fn an_unacked_item_is_delivered_again_after_its_lease(p: Ports) {
    p.queue
        .send(&WorkItem::run("r9"), Duration::ZERO)
        .await
        .expect("send");
    let first = receive_now(&p, Duration::from_secs(2)).await;
    assert_eq!(first.len(), 1);
    p.pass(Duration::from_secs(3)).await;
    let again = receive_now(&p, Duration::from_secs(2)).await;
    assert_eq!(
        again
            .iter()
            .map(|d| d.item.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["r9"]
    );
}

pub async fn a_released_item_comes_back_after_the_given_delay(p: Ports) {
    p.queue
        .send(&WorkItem::run("r7"), Duration::ZERO)
        .await
        .expect("send");
    let first = receive_now(&p, Duration::from_secs(600)).await;
    assert_eq!(first.len(), 1);
    p.queue
        .release(&first[0], Duration::from_secs(2))
        .await
        .expect("release");
    assert!(
        receive_now(&p, Duration::from_secs(600)).await.is_empty(),
        "not before the delay"
    );
    p.pass(Duration::from_secs(3)).await;
    let again = receive_now(&p, Duration::from_secs(600)).await;
    assert_eq!(
        again
            .iter()
            .map(|d| d.item.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["r7"]
    );
}

pub async fn a_delayed_item_waits_for_its_time(p: Ports) {
    p.queue
        .send(&WorkItem::run("later"), Duration::from_secs(3))
        .await
        .expect("send");
    p.queue
        .send(&WorkItem::run("now"), Duration::ZERO)
        .await
        .expect("send");
    let got = receive_now(&p, Duration::from_secs(30)).await;
    assert_eq!(
        got.iter()
            .map(|d| d.item.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["now"]
    );
    p.queue.ack(&got[0]).await.expect("ack");
    p.pass(Duration::from_secs(1)).await;
    assert!(
        receive_now(&p, Duration::from_secs(30)).await.is_empty(),
        "not due yet"
    );
    p.pass(Duration::from_secs(3)).await;
    let due = receive_now(&p, Duration::from_secs(30)).await;
    assert_eq!(
        due.iter()
            .map(|d| d.item.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["later"]
    );
}

/// Runs r0 to r6 (messages m0 to m6), a second apart from T0; the odd ones of workflow
/// `other`, the others of `wf`.
async fn admit_seven(p: &Ports) {
    for i in 0..7u64 {
        let at = T0.plus(Duration::from_secs(i));
        let mut a = admission(&format!("r{i}"), &format!("m{i}"), at, None);
        if i % 2 == 1 {
            a.runs[0].workflow = "other".into();
            a.message.workflow = "other".into();
        }
        admit(p, a).await;
    }
    p.listed().await;
}

pub async fn listings_page_newest_first_and_filter(p: Ports) {
    admit_seven(&p).await;
    let q = RunQuery {
        limit: 3,
        ..RunQuery::default()
    };
    let page1 = p.store.runs(&q).await.expect("runs");
    assert_eq!(
        page1
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        vec!["r6", "r5", "r4"]
    );
    let page2 = p
        .store
        .runs(&RunQuery {
            cursor: page1.next_cursor.clone(),
            ..q.clone()
        })
        .await
        .expect("runs");
    assert_eq!(
        page2
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        vec!["r3", "r2", "r1"]
    );
    let page3 = p
        .store
        .runs(&RunQuery {
            cursor: page2.next_cursor.clone(),
            ..q.clone()
        })
        .await
        .expect("runs");
    assert_eq!(page3.items.len(), 1);
    assert!(page3.next_cursor.is_none());

    let wf = p
        .store
        .runs(&RunQuery {
            workflow: Some("other".into()),
            limit: 10,
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(wf.items.len(), 3);
    let since = RunQuery {
        since: Some(T0.plus(Duration::from_secs(5))),
        limit: 10,
        ..RunQuery::default()
    };
    assert_eq!(p.store.runs(&since).await.expect("runs").items.len(), 2);
    let queued = RunQuery {
        status: Some(RunStatus::Queued),
        limit: 10,
        ..RunQuery::default()
    };
    assert_eq!(p.store.runs(&queued).await.expect("runs").items.len(), 7);

    let msgs = p
        .store
        .messages(&InboxQuery {
            workflow: Some("wf".into()),
            limit: 2,
            ..InboxQuery::default()
        })
        .await
        .expect("inbox");
    assert_eq!(
        msgs.items.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        vec!["m6", "m4"]
    );
    assert!(msgs.next_cursor.is_some());
    let started = InboxQuery {
        outcome: Some("filtered".into()),
        limit: 10,
        ..InboxQuery::default()
    };
    assert!(
        p.store
            .messages(&started)
            .await
            .expect("inbox")
            .items
            .is_empty()
    );
}

/// Searches: runs by trigger, error type, text in their input and the run that started
/// them; messages by text in their body and the run that made them; across pages (a
/// search that must read past non-matching records to fill one).
/// The overview's briefs are the listing's runs since a time, newest first, up to the
/// limit, each with its workflow, current status and admission time.
pub async fn recent_runs_are_the_listing_in_brief(p: Ports) {
    admit_seven(&p).await;
    let mut failed = p.store.run("r5").await.expect("read").expect("run");
    failed.status = RunStatus::Failed;
    p.store.save_run(&failed).await.expect("save");
    let brief = |id: u64, workflow: &str, status| RunBrief {
        workflow: workflow.into(),
        status,
        inserted_at: T0.plus(Duration::from_secs(id)),
    };
    let since = T0.plus(Duration::from_secs(2));
    assert_eq!(
        p.store.recent_runs(since, 3).await.expect("briefs"),
        vec![
            brief(6, "wf", RunStatus::Queued),
            brief(5, "other", RunStatus::Failed),
            brief(4, "wf", RunStatus::Queued),
        ]
    );
    let all = p.store.recent_runs(since, 100).await.expect("briefs");
    let listed = p
        .store
        .runs(&RunQuery {
            since: Some(since),
            limit: 100,
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(all.len(), 5, "r2 to r6: the runs admitted since the time");
    assert_eq!(
        all,
        listed.items.iter().map(RunBrief::of).collect::<Vec<_>>()
    );
}

pub async fn searches_filter_by_trigger_error_text_and_parent(p: Ports) {
    for i in 0..30u64 {
        let at = T0.plus(Duration::from_secs(i));
        let mut a = admission(&format!("r{i:02}"), &format!("m{i:02}"), at, None);
        if i % 10 == 3 {
            a.runs[0].trigger_input = json!({"body": {"email": format!("Jane{i}@Example.com")}});
            a.runs[0].trigger.id = "hook".into();
            a.runs[0].error_type = Some(tripline_core::run::ErrorType::StepFailed);
            a.runs[0].parent = Some(tripline_core::run::ParentRef {
                run_id: "r00".into(),
                workflow: "wf".into(),
                step: "s".into(),
                flow: None,
            });
            a.message.body = format!("{{\"email\":\"jane{i}@example.com\"}}").into_bytes();
            a.message.path = "/v1/runs/r00".into();
        }
        admit(&p, a).await;
    }
    p.listed().await;
    let ids = |page: &Page<Run>| page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let search = |q: RunQuery| {
        let store = p.store.clone();
        let limit = if q.limit == 0 { 2 } else { q.limit };
        async move { store.runs(&RunQuery { limit, ..q }).await.expect("runs") }
    };
    let first = search(RunQuery {
        text: Some("jane".into()),
        ..RunQuery::default()
    })
    .await;
    assert_eq!(ids(&first), ["r23", "r13"]);
    let rest = search(RunQuery {
        text: Some("jane".into()),
        cursor: first.next_cursor.clone(),
        ..RunQuery::default()
    })
    .await;
    assert_eq!(ids(&rest), ["r03"]);
    assert!(rest.next_cursor.is_none());
    let by = |q: RunQuery| {
        let s = search(RunQuery { limit: 10, ..q });
        async move { ids(&s.await) }
    };
    assert_eq!(
        by(RunQuery {
            trigger: Some("hook".into()),
            ..RunQuery::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        by(RunQuery {
            error_type: Some("step_failed".into()),
            ..RunQuery::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        by(RunQuery {
            parent: Some("r00".into()),
            ..RunQuery::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        by(RunQuery {
            text: Some("JANE13@example".into()),
            ..RunQuery::default()
        })
        .await,
        ["r13"]
    );
    assert!(
        by(RunQuery {
            text: Some("nobody".into()),
            ..RunQuery::default()
        })
        .await
        .is_empty()
    );

    let msgs = |q: InboxQuery| {
        let store = p.store.clone();
        async move {
            let page = store
                .messages(&InboxQuery { limit: 10, ..q })
                .await
                .expect("inbox");
            page.items.iter().map(|m| m.id.clone()).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        msgs(InboxQuery {
            text: Some("JANE".into()),
            ..InboxQuery::default()
        })
        .await,
        ["m23", "m13", "m03"]
    );
    assert_eq!(
        msgs(InboxQuery {
            run: Some("r00".into()),
            ..InboxQuery::default()
        })
        .await
        .len(),
        3
    );
}

pub async fn an_inbox_message_keeps_its_raw_bytes(p: Ports) {
    let mut m = message(
        "raw",
        "wf",
        T0,
        Outcome::Rejected {
            reason: "not UTF-8".into(),
        },
    );
    m.body = vec![0xff, 0x00, 0xfe];
    p.store
        .admit(Admission {
            message: m.clone(),
            runs: vec![],
            idempotency: None,
        })
        .await
        .expect("admit");
    let back = p
        .store
        .message("raw")
        .await
        .expect("read")
        .expect("message");
    assert_eq!(back, m);
}

pub async fn revisions_are_consecutive_and_conditional(p: Ports) {
    let wf = tripline_core::validate::load(
        "id: w\nsteps:\n  - {id: t, type: transform, value: 1}\n",
        tripline_core::validate::Format::Yaml,
    )
    .expect("valid");
    let rec = |revision| WorkflowRecord {
        id: "w".into(),
        revision,
        definition: wf.clone(),
        source: json!({"r": revision}),
        deployed_at: T0,
        removed: false,
        switches: Default::default(),
    };
    p.store.deploy(&rec(1)).await.expect("rev 1");
    assert!(
        matches!(p.store.deploy(&rec(1)).await, Err(StoreError::Conflict)),
        "a revision exists once"
    );
    assert!(
        matches!(p.store.deploy(&rec(3)).await, Err(StoreError::Conflict)),
        "revisions have no gaps"
    );
    p.store.deploy(&rec(2)).await.expect("rev 2");
    let latest = p.store.latest_workflows().await.expect("latest");
    assert_eq!(
        latest.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        p.store
            .workflow("w", Some(1))
            .await
            .expect("read")
            .expect("rev 1")
            .source,
        json!({"r": 1})
    );
    assert_eq!(
        p.store
            .revisions("w")
            .await
            .expect("revs")
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![2, 1]
    );
}

pub async fn large_payloads_round_trip(p: Ports) {
    // Over DynamoDB's 400 KB item limit: the AWS store must put these in S3.
    let mut a = admission("big", "bigmsg", T0, None);
    a.message.body = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    a.runs[0].trigger_input = json!({"blob": "x".repeat(450_000)});
    let expected_message = a.message.clone();
    let expected_run = a.runs[0].clone();
    admit(&p, a).await;
    assert_eq!(
        p.store.message("bigmsg").await.expect("read"),
        Some(expected_message)
    );
    let back = p.store.run("big").await.expect("read").expect("run");
    assert_eq!(back, expected_run);
    let mut running = back;
    running.status = RunStatus::Running;
    let saved = p.store.save_run(&running).await.expect("save");
    let again = p.store.run("big").await.expect("read").expect("run");
    assert_eq!(
        (again.version, again.status),
        (saved.version, RunStatus::Running)
    );
    assert_eq!(again.trigger_input, running.trigger_input);
    p.listed().await;
    let listed = p
        .store
        .runs(&RunQuery {
            limit: 5,
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].trigger_input, running.trigger_input);
}

pub async fn runs_still_queued_are_found_by_admission_time(p: Ports) {
    for i in 0..3u64 {
        let at = T0.plus(Duration::from_secs(i));
        admit(&p, admission(&format!("q{i}"), &format!("qm{i}"), at, None)).await;
    }
    let mut started = p.store.run("q1").await.expect("read").expect("run");
    started.status = RunStatus::Running;
    p.store.save_run(&started).await.expect("save");
    p.listed().await;
    let found = p
        .store
        .queued_runs(T0, T0.plus(Duration::from_secs(2)))
        .await
        .expect("queued");
    assert_eq!(
        found,
        vec!["q0"],
        "`to` is exclusive; running runs are not queued"
    );
    let found = p
        .store
        .queued_runs(T0, T0.plus(Duration::from_secs(3)))
        .await
        .expect("queued");
    assert_eq!(found, vec!["q0", "q2"], "oldest first");
    assert!(
        p.store
            .queued_runs(
                T0.plus(Duration::from_secs(10)),
                T0.plus(Duration::from_secs(20))
            )
            .await
            .expect("queued")
            .is_empty()
    );
    assert_eq!(p.store.marker("sweeper").await.expect("marker"), None);
    p.store.set_marker("sweeper", T0).await.expect("set");
    p.store
        .set_marker("sweeper", T0.plus(Duration::from_secs(5)))
        .await
        .expect("set again");
    assert_eq!(
        p.store.marker("sweeper").await.expect("marker"),
        Some(T0.plus(Duration::from_secs(5)))
    );
    assert!(
        p.store
            .run("#marker/sweeper")
            .await
            .expect("read")
            .is_none(),
        "a marker is not a run"
    );
    let listed = p
        .store
        .runs(&RunQuery {
            limit: 10,
            ..RunQuery::default()
        })
        .await
        .expect("runs");
    assert_eq!(listed.items.len(), 3, "markers are not listed as runs");
}

pub async fn context_patches_of_different_keys_made_at_once_all_stay(p: Ports) {
    use std::collections::BTreeMap;
    assert!(p.store.context("wf").await.expect("read").is_empty());
    let patches = (0..16).map(|i| {
        let store = p.store.clone();
        async move {
            let mut change = BTreeMap::new();
            change.insert(format!("k{i}"), Some(format!("v{i}")));
            store.patch_context("wf", &change).await.expect("patch");
        }
    });
    futures::future::join_all(patches).await;
    let got = p.store.context("wf").await.expect("read");
    assert_eq!(got.len(), 16, "{got:?}");
    assert_eq!(got["k7"], "v7");
    let mut change = BTreeMap::new();
    change.insert("k1".to_string(), None);
    change.insert("k2".to_string(), Some("two".to_string()));
    change.insert("never".to_string(), None);
    p.store.patch_context("wf", &change).await.expect("patch");
    let got = p.store.context("wf").await.expect("read");
    assert_eq!(got.len(), 15);
    assert!(!got.contains_key("k1"));
    assert_eq!(got["k2"], "two");
    assert!(
        p.store.context("other").await.expect("read").is_empty(),
        "one store per workflow"
    );
}

/// Every check, by name, for adapters to run with a fresh `Ports` each.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        mod conformance {
            use super::*;
            $crate::conformance_suite!(@each $make;
                a_run_reads_back_as_admitted_until_it_is_saved,
                a_run_write_is_conditional_on_its_version,
                a_message_admitted_again_is_a_duplicate_and_overwrites_nothing,
                an_idempotency_key_maps_to_its_first_run_until_it_expires,
                an_admitted_queued_run_is_delivered_and_gone_once_acked,
                an_unacked_item_is_delivered_again_after_its_lease,
                a_released_item_comes_back_after_the_given_delay,
                a_delayed_item_waits_for_its_time,
                listings_page_newest_first_and_filter,
                recent_runs_are_the_listing_in_brief,
                searches_filter_by_trigger_error_text_and_parent,
                an_inbox_message_keeps_its_raw_bytes,
                revisions_are_consecutive_and_conditional,
                large_payloads_round_trip,
                runs_still_queued_are_found_by_admission_time,
                context_patches_of_different_keys_made_at_once_all_stay
            );
        }
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (ports, _guard) = $make().await;
                $crate::conformance::$name(ports).await;
            }
        )*
    };
}
