//! The engine's tests: events in, effects and the run out, on a manual clock.

use serde_json::{Value, json};

use super::retry::jitter_unit;
use super::*;
use crate::definition::DEFAULT_APPROVAL_TIMEOUT;
use crate::run::{CallbackCursor, ErrorType, FailureClass, StepStatus, TriggerKind, TriggerRef};
use crate::validate::{Format, load};

pub(super) const T0: Timestamp = Timestamp(1_800_000_000_000);

pub(super) fn wf(yaml: &str) -> Workflow {
    load(yaml, Format::Yaml).unwrap_or_else(|p| panic!("{p:#?}"))
}

pub(super) fn new_run(input: Value) -> Run {
    Run::new(
        "r1".into(),
        "w",
        1,
        TriggerRef {
            kind: TriggerKind::Manual,
            id: "manual".into(),
        },
        input,
        T0,
    )
}

pub(super) fn after(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

const HTTP_THEN_TRANSFORM: &str = r#"
id: w
max_duration: 1m
steps:
  - id: call
    type: http
    method: POST
    url: "https://example.com/{{ trigger.body.id }}"
    headers: { X-Trace: "t-{{ run.id }}" }
    body: { id: "{{ trigger.body.id }}" }
    retry: { max_attempts: 3, backoff: exponential, initial: 1s, max: 10s }
    extract: { code: "{{ output.status }}" }
  - id: shape
    type: transform
    value: { got: "{{ steps.call.body.ok }}", code: "{{ context.code }}" }
"#;

pub(super) fn succeeded(step: &str, attempt: u32, output: Value) -> Event {
    Event::StepSucceeded {
        step: step.into(),
        attempt,
        started_at: T0,
        request: json!({}),
        output,
    }
}

pub(super) fn failed(step: &str, attempt: u32, class: FailureClass) -> Event {
    Event::StepFailed {
        step: step.into(),
        attempt,
        started_at: T0,
        request: json!({}),
        error: StepError {
            class,
            message: "boom".into(),
        },
        output: None,
    }
}

#[test]
fn starting_renders_the_first_http_step_with_its_idempotency_key() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let (run, effects) = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0);
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.cursor.deadline, Some(after(60_000)));
    let [
        Effect::RunStep {
            step,
            attempt,
            request,
            ..
        },
    ] = effects.as_slice()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((step.as_str(), *attempt), ("call", 1));
    assert_eq!(request.url, "https://example.com/7");
    assert_eq!(request.body, Some(json!({"id": 7})));
    assert_eq!(request.headers["x-trace"], "t-r1");
    assert_eq!(request.idempotency_key, "r1:call");
}

#[test]
fn a_step_result_runs_the_pure_steps_after_it_and_finishes() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let (run, _) = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0);
    let out = json!({"status": 201, "headers": {}, "body": {"ok": true}});
    let (run, effects) = apply(&w, run, succeeded("call", 1, out), after(5));
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Succeeded
            }
        ]
    );
    assert_eq!(run.final_output, Some(json!({"got": true, "code": 201})));
    assert_eq!(run.context["code"], json!(201));
    assert_eq!(run.finished_at, Some(after(5)));
}

#[test]
fn a_retryable_failure_schedules_a_timer_with_backoff() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let (run, _) = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0);
    let (run, effects) = apply(
        &w,
        run,
        failed("call", 1, FailureClass::Status5xx),
        after(10),
    );
    assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(1010) }]);
    // Early wake-up: the timer is scheduled again, nothing runs.
    let (run, effects) = apply(&w, run, Event::Continue, after(500));
    assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(1010) }]);
    let (run, effects) = apply(&w, run, Event::Continue, after(1010));
    assert!(
        matches!(&effects[..], [Effect::RunStep { attempt: 2, .. }]),
        "{effects:?}"
    );
    let (_, effects) = apply(
        &w,
        run,
        failed("call", 2, FailureClass::Timeout),
        after(1100),
    );
    assert_eq!(
        effects,
        vec![Effect::ScheduleTimer {
            at: after(1100 + 2000)
        }]
    );
}

#[test]
fn the_last_attempt_failing_fails_the_run() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let mut run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
    for attempt in 1..=2 {
        run = apply(
            &w,
            run,
            failed("call", attempt, FailureClass::Connection),
            T0,
        )
        .0;
        run = apply(&w, run, Event::Continue, after(60_000 - 1)).0;
    }
    let (run, effects) = apply(
        &w,
        run,
        failed("call", 3, FailureClass::Connection),
        after(59_999),
    );
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Failed
            }
        ]
    );
    assert_eq!(run.error_type.map(ErrorType::as_str), Some("step_failed"));
    assert!(run.error.as_deref().unwrap().contains("after 3 attempts"));
    assert_eq!(run.step_executions.len(), 3);
}

#[test]
fn a_non_retryable_failure_fails_at_once() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
    let (run, effects) = apply(
        &w,
        run,
        failed("call", 1, FailureClass::Status4xx),
        after(1),
    );
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Failed
            }
        ]
    );
    assert_eq!(run.status, RunStatus::Failed);
}

#[test]
fn a_duplicate_or_stale_result_changes_nothing() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
    let done = apply(
        &w,
        run.clone(),
        succeeded("call", 1, json!({"body": {"ok": 1}, "status": 200})),
        after(1),
    )
    .0;
    let (again, effects) = apply(&w, done.clone(), succeeded("call", 1, json!({})), after(2));
    assert!(effects.is_empty());
    assert_eq!(again, done);
    let (same, effects) = apply(&w, run.clone(), succeeded("call", 9, json!({})), after(2));
    assert!(effects.is_empty());
    assert_eq!(same, run);
}

#[test]
fn past_max_duration_the_run_times_out() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
    let (run, effects) = apply(
        &w,
        run,
        failed("call", 1, FailureClass::Timeout),
        after(60_000),
    );
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::TimedOut
            }
        ]
    );
    assert_eq!(run.status, RunStatus::TimedOut);
}

#[test]
fn the_step_timeout_is_cut_to_the_time_left() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
    let run = apply(
        &w,
        run,
        failed("call", 1, FailureClass::Timeout),
        after(50_000),
    )
    .0;
    let (_, effects) = apply(&w, run, Event::Continue, after(58_000));
    let [Effect::RunStep { timeout, .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(*timeout, StdDuration::from_secs(2));
}

#[test]
fn a_repeated_delivery_reissues_the_step_in_flight() {
    let w = wf(HTTP_THEN_TRANSFORM);
    let run = apply(&w, new_run(json!({"body": {"id": 7}})), Event::Started, T0).0;
    let (_, effects) = apply(&w, run, Event::Continue, after(3));
    let [
        Effect::RunStep {
            attempt: 1,
            request,
            ..
        },
    ] = effects.as_slice()
    else {
        panic!("{effects:?}")
    };
    assert_eq!(request.idempotency_key, "r1:call");
}

#[test]
fn when_false_skips_a_step_and_fail_ends_the_run() {
    let w = wf(r#"
id: w
steps:
  - { id: skipped, type: transform, when: "trigger.n > 5", value: 1 }
  - { id: stop, type: fail, message: "n was {{ trigger.n }}" }
  - { id: never, type: transform, value: 2 }
"#);
    let (run, _) = run_pure(&w, new_run(json!({"n": 1})), T0);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("n was 1"));
    assert_eq!(run.error_type.map(ErrorType::as_str), Some("fail_step"));
    let statuses: Vec<_> = run.step_executions.iter().map(|e| e.status).collect();
    assert_eq!(statuses, vec![StepStatus::Skipped, StepStatus::Failed]);
}

#[test]
fn a_template_error_at_run_time_fails_the_run_with_its_cause() {
    let w = wf(
        "id: w\nsteps:\n  - { id: t, type: transform, value: '{{ trigger.body.missing.x }}' }\n",
    );
    let (run, _) = run_pure(&w, new_run(json!({"body": {}})), T0);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.error_type.map(ErrorType::as_str),
        Some("template_error")
    );
    assert!(
        run.error.as_deref().unwrap().contains("step `t`"),
        "{:?}",
        run.error
    );
}

#[test]
fn without_an_output_template_the_last_output_is_the_output() {
    let w = wf(
        "id: w\nsteps:\n  - { id: t, type: transform, value: { sum: '{{ trigger.a + trigger.b }}' } }\n",
    );
    let (run, _) = run_pure(&w, new_run(json!({"a": 1, "b": 2})), T0);
    assert_eq!(run.final_output, Some(json!({"sum": 3})));
    assert_eq!(envelope(&run)["meta"]["status"], json!("succeeded"));
}

#[test]
fn a_terminal_run_ignores_every_event() {
    let w = wf("id: w\nsteps:\n  - { id: t, type: transform, value: 1 }\n");
    let (run, _) = run_pure(&w, new_run(json!({})), T0);
    for ev in [Event::Started, Event::Continue] {
        let (same, effects) = apply(&w, run.clone(), ev, after(1));
        assert!(effects.is_empty());
        assert_eq!(same, run);
    }
}

const PARKING: &str = r#"
id: w
max_duration: 1h
on_failure: { url: "https://example.com/cb/{{ run.id }}", retry: { max_attempts: 2, initial: 1s } }
steps:
  - { id: wait, type: wait_for_webhook, timeout: 10m, extract: { who: "{{ output.name }}" } }
  - id: ok
    type: approval
    summary: "pay {{ steps.wait.amount }}"
    notify: { method: POST, url: "https://chat.example/hook", body: { text: "{{ approval.review_url }}" } }
  - { id: pause, type: delay, duration: 5m }
  - { id: done, type: transform, value: { who: "{{ context.who }}", decision: "{{ steps.ok.decision }}" } }
"#;

/// Exposes the wait's URLs with the secret `{purpose}-s1`, and shows them on the run.
fn expose_urls(run: &mut Run, base: &str) {
    expose(run, "salt".into(), |p| format!("{p}-s1"));
    show_urls(run, base, |p, salt| {
        assert_eq!(salt, "salt");
        format!("{p}-s1")
    });
}

#[test]
fn a_wait_parks_with_single_use_urls_and_a_resume_continues_with_the_body() {
    let w = wf(PARKING);
    let (mut run, effects) = apply(&w, new_run(json!({})), Event::Started, T0);
    assert_eq!(
        effects,
        vec![
            Effect::Expose,
            Effect::Park {
                step: "wait".into(),
                reason: WaitReason::Webhook,
                until: Some(after(600_000)),
            }
        ]
    );
    assert_eq!(run.status, RunStatus::Waiting);
    assert_eq!(run.waiting_expires_at, Some(after(600_000)));
    expose_urls(&mut run, "http://h/");
    let payload = run.waiting_payload.clone().unwrap();
    assert_eq!(payload["resume_url"], json!("http://h/resume/r1.resume-s1"));
    assert_eq!(run.waiting_tokens["resume"], token_hash("resume-s1"));
    assert!(run.waiting_tokens["resume"].starts_with("sha256:"));

    let (run, effects) = apply(
        &w,
        run,
        Event::Resumed {
            payload: json!({"name": "ann", "amount": 5}),
        },
        after(10),
    );
    assert_eq!(effects, vec![Effect::Continue]);
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.context["who"], json!("ann"));
    assert_eq!(run.used_tokens, vec![token_hash("resume-s1")]);
    assert!(run.waiting_payload.is_none() && run.waiting_tokens.is_empty());
    assert!(run.waiting_salt.is_none());
    // A second resume of the same wait changes nothing.
    let (same, effects) = apply(
        &w,
        run.clone(),
        Event::Resumed { payload: json!({}) },
        after(11),
    );
    assert!(effects.is_empty());
    assert_eq!(same, run);
    // The executor goes on to the approval, which parks with its summary.
    let (run, effects) = apply(&w, run, Event::Continue, after(12));
    assert!(
        matches!(
            &effects[..],
            [
                Effect::Expose,
                Effect::Park {
                    reason: WaitReason::Approval,
                    ..
                },
                Effect::Notify { step },
            ] if step == "ok"
        ),
        "{effects:?}"
    );
    assert_eq!(
        run.waiting_payload.as_ref().unwrap()["summary"],
        json!("pay 5")
    );
}

#[test]
fn an_expired_wait_fails_the_run_or_continues_with_null() {
    let w = wf(PARKING);
    let run = apply(&w, new_run(json!({})), Event::Started, T0).0;
    // Early: the timer is set again.
    let (run, effects) = apply(&w, run, Event::Continue, after(1_000));
    assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(600_000) }]);
    let (failed, effects) = apply(&w, run.clone(), Event::Continue, after(600_000));
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.error_type.map(ErrorType::as_str),
        Some("wait_timed_out")
    );
    assert_eq!(effects[0], Effect::StartFlows);
    assert!(matches!(
        effects[1],
        Effect::Finish {
            status: RunStatus::Failed
        }
    ));
    assert!(
        matches!(effects[2], Effect::Callback { attempt: 1, .. }),
        "{effects:?}"
    );

    let w2 = wf(&PARKING
        .replace(
            "type: wait_for_webhook,",
            "type: wait_for_webhook, on_timeout: continue,",
        )
        .replace("{ who: \"{{ output.name }}\" }", "{}")
        .replace("who: \"{{ context.who }}\", ", ""));
    let run = apply(&w2, new_run(json!({})), Event::Started, T0).0;
    let (run, effects) = apply(&w2, run, Event::Continue, after(600_000));
    assert_eq!(effects, vec![Effect::Continue]);
    assert_eq!(run.step_executions[0].output, Some(Value::Null));
    assert_eq!(run.step_executions[0].status, StepStatus::Succeeded);
}

fn at_approval(w: &Workflow) -> Run {
    let run = apply(w, new_run(json!({})), Event::Started, T0).0;
    let run = apply(
        w,
        run,
        Event::Resumed {
            payload: json!({"name": "a", "amount": 1}),
        },
        after(1),
    )
    .0;
    let mut run = apply(w, run, Event::Continue, after(2)).0;
    expose_urls(&mut run, "http://h");
    run
}

#[test]
fn an_approval_exposes_three_urls_and_renders_its_notification() {
    let w = wf(PARKING);
    let run = at_approval(&w);
    let p = run.waiting_payload.clone().unwrap();
    for k in ["review_url", "approve_url", "reject_url"] {
        assert!(p[k].as_str().unwrap().starts_with("http://h/"), "{k}: {p}");
    }
    assert_eq!(run.waiting_tokens.len(), 3);
    assert_eq!(
        run.waiting_expires_at,
        Some(after(2).plus(DEFAULT_APPROVAL_TIMEOUT.std()))
    );
    let req = wait_notification(&w, &run).unwrap().unwrap();
    assert_eq!(
        req.body,
        Some(json!({"text": "http://h/review/r1.review-s1"}))
    );
}

#[test]
fn approving_goes_on_and_rejecting_fails_the_run_with_the_comment() {
    let w = wf(PARKING);
    let run = at_approval(&w);
    let (ok, effects) = apply(
        &w,
        run.clone(),
        Event::Decided {
            approved: true,
            comment: Some("fine".into()),
        },
        after(3),
    );
    assert_eq!(effects, vec![Effect::Continue]);
    assert_eq!(ok.step_outputs()["ok"]["decision"], json!("approved"));
    assert_eq!(ok.used_tokens.len(), 3);
    let (no, _) = apply(
        &w,
        run,
        Event::Decided {
            approved: false,
            comment: Some("too much".into()),
        },
        after(3),
    );
    assert_eq!(no.status, RunStatus::Failed);
    assert_eq!(no.error_type.map(ErrorType::as_str), Some("rejected"));
    assert!(no.error.as_deref().unwrap().contains("too much"));
    assert_eq!(
        no.cursor.callback,
        Some(CallbackCursor {
            attempt: 1,
            retry_at: None
        })
    );
}

#[test]
fn a_rejection_with_on_reject_continue_is_the_steps_output() {
    let w = wf(&PARKING.replace("type: approval", "type: approval\n    on_reject: continue"));
    let run = at_approval(&w);
    let (run, effects) = apply(
        &w,
        run,
        Event::Decided {
            approved: false,
            comment: None,
        },
        after(3),
    );
    assert_eq!(effects, vec![Effect::Continue]);
    assert_eq!(run.step_outputs()["ok"]["decision"], json!("rejected"));
}

#[test]
fn a_delay_parks_until_its_end_and_then_the_run_finishes() {
    let w = wf(PARKING);
    let run = at_approval(&w);
    let run = apply(
        &w,
        run,
        Event::Decided {
            approved: true,
            comment: None,
        },
        after(3),
    )
    .0;
    let (run, effects) = apply(&w, run, Event::Continue, after(4));
    assert_eq!(
        effects,
        vec![Effect::Park {
            step: "pause".into(),
            reason: WaitReason::Delay,
            until: Some(after(4 + 300_000))
        }]
    );
    let (run, effects) = apply(&w, run, Event::Continue, after(100));
    assert_eq!(
        effects,
        vec![Effect::ScheduleTimer {
            at: after(4 + 300_000)
        }]
    );
    let (run, effects) = apply(&w, run, Event::Continue, after(4 + 300_000));
    assert_eq!(effects, vec![Effect::Continue]);
    let (run, effects) = apply(&w, run, Event::Continue, after(300_010));
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Succeeded
            }
        ]
    );
    assert_eq!(
        run.final_output,
        Some(json!({"who": "a", "decision": "approved"}))
    );
}

#[test]
fn a_delay_until_a_past_time_does_not_park() {
    let w = wf(
        "id: w\nsteps:\n  - { id: d, type: delay, until: '{{ trigger.at }}' }\n  - { id: t, type: transform, value: 1 }\n",
    );
    let (run, effects) = apply(
        &w,
        new_run(json!({"at": "2020-01-01T00:00:00Z"})),
        Event::Started,
        T0,
    );
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Succeeded
            }
        ]
    );
    assert_eq!(run.final_output, Some(json!(1)));
    let (run, _) = apply(&w, new_run(json!({"at": "not a time"})), Event::Started, T0);
    assert_eq!(
        run.error_type.map(ErrorType::as_str),
        Some("template_error")
    );
}

#[test]
fn max_duration_ends_a_waiting_run_timed_out() {
    let w = wf("id: w\nmax_duration: 1m\nsteps:\n  - { id: wait, type: wait_for_webhook }\n");
    let (run, effects) = apply(&w, new_run(json!({})), Event::Started, T0);
    assert_eq!(
        effects,
        vec![
            Effect::Expose,
            Effect::Park {
                step: "wait".into(),
                reason: WaitReason::Webhook,
                until: Some(after(60_000))
            }
        ]
    );
    let (run, effects) = apply(&w, run, Event::Continue, after(60_000));
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::TimedOut
            }
        ]
    );
    assert!(run.waiting_reason.is_none());
}

#[test]
fn trigger_workflow_starts_a_run_and_with_wait_takes_its_output() {
    let w = wf(
        "id: w\nsteps:\n  - { id: go, type: trigger_workflow, workflow: other, input: { n: '{{ trigger.n }}' }, wait: true }\n",
    );
    let (run, effects) = apply(&w, new_run(json!({"n": 3})), Event::Started, T0);
    assert_eq!(
        effects,
        vec![Effect::StartRun {
            step: "go".into(),
            workflow: "other".into(),
            input: json!({"n": 3})
        }]
    );
    // A repeated delivery asks again (the caller starts one run per run and step).
    let (_, again) = apply(&w, run.clone(), Event::Continue, after(1));
    assert_eq!(again, effects);
    let started = Event::ChildStarted {
        step: "go".into(),
        run_id: "c1".into(),
        workflow: "other".into(),
    };
    let (run, effects) = apply(&w, run, started, after(2));
    assert!(
        matches!(
            &effects[..],
            [Effect::Park {
                reason: WaitReason::Workflow,
                until: Some(at),
                ..
            }] if *at == after(2).plus(CHILD_CHECK_INTERVAL)
        ),
        "{effects:?}"
    );
    // The check finds the child still running: it looks again later.
    let (_, effects) = apply(
        &w,
        run.clone(),
        Event::Continue,
        after(2).plus(CHILD_CHECK_INTERVAL),
    );
    assert_eq!(
        effects,
        vec![Effect::ScheduleTimer {
            at: after(2).plus(CHILD_CHECK_INTERVAL * 2)
        }]
    );
    assert_eq!(run.children, vec!["c1".to_string()]);
    let ended = |status, output| Event::ChildEnded {
        run_id: "c1".into(),
        status,
        output,
        error: Some("boom".into()),
    };
    let (other, effects) = apply(
        &w,
        run.clone(),
        Event::ChildEnded {
            run_id: "c2".into(),
            status: RunStatus::Succeeded,
            output: None,
            error: None,
        },
        after(3),
    );
    assert!(effects.is_empty());
    assert_eq!(other, run);
    let (ok, _) = apply(
        &w,
        run.clone(),
        ended(RunStatus::Succeeded, Some(json!({"x": 1}))),
        after(3),
    );
    assert_eq!(ok.step_outputs()["go"], json!({"x": 1}));
    let (bad, _) = apply(&w, run, ended(RunStatus::Failed, None), after(3));
    assert_eq!(bad.status, RunStatus::Failed);
    assert!(
        bad.error.as_deref().unwrap().contains("ended failed: boom"),
        "{:?}",
        bad.error
    );
}

#[test]
fn trigger_workflow_without_wait_outputs_the_started_run() {
    let w = wf("id: w\nsteps:\n  - { id: go, type: trigger_workflow, workflow: other }\n");
    let run = apply(&w, new_run(json!({})), Event::Started, T0).0;
    let (run, effects) = apply(
        &w,
        run,
        Event::ChildStarted {
            step: "go".into(),
            run_id: "c1".into(),
            workflow: "other".into(),
        },
        after(1),
    );
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Succeeded
            }
        ]
    );
    assert_eq!(
        run.final_output,
        Some(json!({"run_id": "c1", "workflow": "other"}))
    );
}

#[test]
fn cancel_ends_a_waiting_run_and_its_urls() {
    let w = wf(PARKING);
    let mut run = apply(&w, new_run(json!({})), Event::Started, T0).0;
    expose_urls(&mut run, "http://h");
    let (run, effects) = apply(&w, run, Event::Cancel, after(1));
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.used_tokens, vec![token_hash("resume-s1")]);
    assert_eq!(effects[0], Effect::StartFlows);
    assert!(matches!(
        effects[1],
        Effect::Finish {
            status: RunStatus::Cancelled
        }
    ));
}

#[test]
fn a_failed_callback_is_retried_with_backoff_and_then_given_up() {
    let w = wf(PARKING);
    let run = apply(&w, new_run(json!({})), Event::Started, T0).0;
    let (run, effects) = apply(&w, run, Event::Cancel, after(1));
    let Effect::Callback {
        attempt: 1,
        request,
        ..
    } = &effects[2]
    else {
        panic!("{effects:?}")
    };
    assert_eq!(request.url, "https://example.com/cb/r1");
    assert_eq!(
        request.body.as_ref().unwrap()["type"],
        json!("run.cancelled")
    );
    assert_eq!(
        request.body.as_ref().unwrap()["meta"]["status"],
        json!("cancelled")
    );
    let fail = |attempt| Event::CallbackDone {
        attempt,
        url: "u".into(),
        status: Some(503),
        error: Some(StepError {
            class: FailureClass::Status5xx,
            message: "503".into(),
        }),
    };
    let (run, effects) = apply(&w, run, fail(1), after(2));
    let [Effect::ScheduleTimer { at }] = effects[..] else {
        panic!("{effects:?}")
    };
    assert!(at > after(2) && at <= after(1002), "{at:?}");
    let (run, effects) = apply(&w, run, Event::Continue, after(3));
    assert_eq!(effects, vec![Effect::ScheduleTimer { at }]);
    let (run, effects) = apply(&w, run, Event::Continue, at);
    assert!(matches!(effects[..], [Effect::Callback { attempt: 2, .. }]));
    let (run, effects) = apply(&w, run, fail(2), at);
    assert!(effects.is_empty());
    assert_eq!(run.cursor.callback, None);
    assert_eq!(run.callbacks.len(), 2);
    assert!(run.callbacks.iter().all(|c| !c.succeeded));
    let (_, effects) = apply(&w, run, Event::Continue, after(5_000));
    assert!(effects.is_empty());
}

#[test]
fn jitter_units_are_in_range_and_deterministic() {
    let a = jitter_unit("r", "s", 1);
    assert_eq!(a, jitter_unit("r", "s", 1));
    assert!((0.0..1.0).contains(&a));
    assert_ne!(a, jitter_unit("r", "s", 2));
}

fn cron_run(state: Option<Value>) -> Run {
    let mut run = new_run(json!({"scheduled_time": "2026-03-01T08:00:00.000Z"}));
    run.trigger = TriggerRef {
        kind: TriggerKind::Cron,
        id: "daily".into(),
    };
    run.state = state;
    run
}

#[test]
fn a_cron_run_leaves_the_state_its_template_renders_reading_the_output_and_the_last_state() {
    let w = wf(r#"
id: w
triggers: [{ type: cron, id: daily, schedule: "@daily" }]
steps:
  - { id: page, type: transform, value: { items: 3, next: "{{ (state.cursor if state else 0) + 3 }}" } }
state: { cursor: "{{ output.next }}", at: "{{ trigger.scheduled_time }}" }
"#);
    let (run, effects) = apply(&w, cron_run(Some(json!({"cursor": 7}))), Event::Started, T0);
    assert_eq!(
        effects,
        vec![
            Effect::SaveState {
                value: json!({"cursor": 10, "at": "2026-03-01T08:00:00.000Z"})
            },
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Succeeded
            }
        ]
    );
    assert_eq!(
        run.next_state,
        Some(json!({"cursor": 10, "at": "2026-03-01T08:00:00.000Z"}))
    );
    let (first, _) = apply(&w, cron_run(None), Event::Started, T0);
    assert_eq!(
        first.next_state.as_ref().map(|s| &s["cursor"]),
        Some(&json!(3))
    );
}

#[test]
fn without_a_state_template_the_outputs_state_field_is_the_next_state_if_any() {
    let w = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps:
  - { id: page, type: transform, value: { rows: [], state: { since: "{{ trigger.scheduled_time }}" } } }
"#);
    let (run, _) = apply(&w, cron_run(None), Event::Started, T0);
    assert_eq!(
        run.next_state,
        Some(json!({"since": "2026-03-01T08:00:00.000Z"}))
    );
    let plain = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps: [{ id: page, type: transform, value: [1, 2] }]
"#);
    let (run, _) = apply(&plain, cron_run(Some(json!(1))), Event::Started, T0);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.next_state, None, "the saved state stays as it is");
}

#[test]
fn a_failed_cron_run_leaves_no_state_and_a_broken_state_template_fails_the_run() {
    let failing = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps: [{ id: boom, type: fail, message: "no" }]
state: { n: 1 }
"#);
    let (run, _) = apply(&failing, cron_run(None), Event::Started, T0);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.next_state, None);
    let broken = wf(r#"
id: w
triggers: [{ type: cron, schedule: "@daily" }]
steps: [{ id: a, type: transform, value: 1 }]
state: { n: "{{ state.missing.deeper }}" }
"#);
    let (run, _) = apply(&broken, cron_run(None), Event::Started, T0);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.error_type.map(ErrorType::as_str),
        Some("template_error")
    );
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .starts_with("state:"),
        "{run:?}"
    );
}

#[test]
fn a_steps_context_store_writes_are_an_effect_before_the_end_is_written() {
    let w = wf(r#"
id: w
steps:
  - id: count
    type: transform
    value: 3
    extract_to_context: { seen: "{{ output }}", old: null }
"#);
    let (run, effects) = apply(&w, new_run(json!({})), Event::Started, T0);
    let writes = std::collections::BTreeMap::from([
        ("old".to_string(), None),
        ("seen".to_string(), Some("3".to_string())),
    ]);
    assert_eq!(
        effects,
        vec![
            Effect::WriteContext { writes },
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Succeeded
            },
        ]
    );
    // The run's own view of the store has the write, for the steps after it.
    assert_eq!(
        run.store
            .as_ref()
            .and_then(|s| s.get("seen"))
            .map(String::as_str),
        Some("3")
    );
}

#[test]
fn a_limited_workflows_run_gives_its_slot_back_after_its_end_is_written() {
    let w =
        wf("id: w\nconcurrency: { limit: 2 }\nsteps:\n  - { id: a, type: transform, value: 1 }\n");
    let (_, effects) = apply(&w, new_run(json!({})), Event::Started, T0);
    assert_eq!(
        effects,
        vec![
            Effect::StartFlows,
            Effect::Finish {
                status: RunStatus::Succeeded
            },
            Effect::ReleaseSlot,
        ]
    );
    // A cancel of a limited run releases it too.
    let waiting =
        wf("id: w\nconcurrency: { limit: 2 }\nsteps:\n  - { id: wait, type: wait_for_webhook }\n");
    let (run, _) = apply(&waiting, new_run(json!({})), Event::Started, T0);
    let (_, effects) = apply(&waiting, run, Event::Cancel, after(1));
    assert_eq!(effects.last(), Some(&Effect::ReleaseSlot));
}

#[test]
fn a_wait_with_a_notification_exposes_its_urls_parks_and_then_notifies() {
    let w = wf(r#"
id: w
steps:
  - id: wait
    type: wait_for_webhook
    notify: { method: POST, url: "https://chat.example/hook", body: { text: "{{ wait.resume_url }}" } }
"#);
    let (_, effects) = apply(&w, new_run(json!({})), Event::Started, T0);
    assert_eq!(
        effects,
        vec![
            Effect::Expose,
            Effect::Park {
                step: "wait".into(),
                reason: WaitReason::Webhook,
                until: None,
            },
            Effect::Notify {
                step: "wait".into()
            },
        ]
    );
    // A delay parks without URLs to expose or anyone to notify.
    let d = wf("id: d\nsteps:\n  - { id: pause, type: delay, duration: 1m }\n");
    let (_, effects) = apply(&d, new_run(json!({})), Event::Started, T0);
    assert!(matches!(effects[..], [Effect::Park { .. }]), "{effects:?}");
}
