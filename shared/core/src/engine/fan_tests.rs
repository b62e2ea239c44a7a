//! `map` and `parallel` steps on effects: lanes, the bound, retries, failure policies,
//! and a repeated delivery after a crash.

use serde_json::{Value, json};

use super::tests::{T0, after, failed, new_run, succeeded, wf};
use super::*;
use crate::run::{ErrorType, FailureClass, StepStatus};

const MAP: &str = r#"
id: w
steps:
  - id: each
    type: map
    items: trigger.body.ids
    concurrency: 2
    on_failure: fail_fast
    steps:
      - id: get
        type: http
        url: "https://example.com/orders/{{ item }}?n={{ index }}"
        retry: { max_attempts: 2, initial: 1s }
      - id: shape
        type: transform
        value: { id: "{{ item }}", status: "{{ steps.get.body.status }}" }
  - id: total
    type: transform
    value: "{{ steps.each | length }}"
"#;

/// The calls of the one `RunSteps` among `effects`, as (step, attempt, url, key).
fn calls(effects: &[Effect]) -> Vec<(String, u32, String, String)> {
    let runs: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::RunSteps { calls } => Some(calls),
            _ => None,
        })
        .collect();
    assert!(runs.len() <= 1, "{effects:?}");
    runs.into_iter()
        .flatten()
        .map(|c| {
            (
                c.step.clone(),
                c.attempt,
                c.request.url.clone(),
                c.request.idempotency_key.clone(),
            )
        })
        .collect()
}

fn order(status: &str) -> Value {
    json!({"status": 200, "headers": {}, "body": {"status": status}})
}

fn started(w: &Workflow, ids: Value) -> (Run, Vec<Effect>) {
    apply(
        w,
        new_run(json!({"body": {"ids": ids}})),
        Event::Started,
        T0,
    )
}

#[test]
fn a_map_starts_as_many_items_as_its_concurrency_with_keys_of_their_own() {
    let w = wf(MAP);
    let (run, effects) = started(&w, json!(["a", "b", "c"]));
    assert_eq!(
        calls(&effects),
        vec![
            (
                "each[0].get".into(),
                1,
                "https://example.com/orders/a?n=0".into(),
                "r1:each[0].get".into()
            ),
            (
                "each[1].get".into(),
                1,
                "https://example.com/orders/b?n=1".into(),
                "r1:each[1].get".into()
            ),
        ]
    );
    assert_eq!(run.cursor.fan.as_ref().unwrap().lanes.len(), 2);
}

#[test]
fn an_item_that_ends_starts_the_next_without_waiting_for_the_others() {
    let w = wf(MAP);
    let (run, _) = started(&w, json!(["a", "b", "c"]));
    let (run, effects) = apply(
        &w,
        run,
        succeeded("each[1].get", 1, order("paid")),
        after(5),
    );
    assert_eq!(calls(&effects)[0].0, "each[2].get");
    let (run, effects) = apply(&w, run, succeeded("each[2].get", 1, order("new")), after(6));
    assert!(effects.is_empty(), "item 0 is still out: {effects:?}");
    let (run, effects) = apply(
        &w,
        run,
        succeeded("each[0].get", 1, order("open")),
        after(9),
    );
    assert!(matches!(
        effects.last(),
        Some(Effect::Finish {
            status: RunStatus::Succeeded
        })
    ));
    let each = &run.step_outputs()["each"];
    assert_eq!(
        each,
        &json!([
            {"id": "a", "status": "open"},
            {"id": "b", "status": "paid"},
            {"id": "c", "status": "new"}
        ])
    );
    assert_eq!(run.final_output, Some(json!(3)));
    assert!(run.cursor.fan.is_none());
    // Each item's steps are recorded under their own names; `steps` shows the map's.
    let names: Vec<_> = run
        .step_executions
        .iter()
        .map(|e| e.step_id.as_str())
        .collect();
    assert!(names.contains(&"each[2].shape"), "{names:?}");
    assert!(!run.step_outputs().contains_key("each[2].shape"));
}

#[test]
fn a_failed_item_retries_on_its_own_back_off_while_the_others_go_on() {
    let w = wf(MAP);
    let (run, _) = started(&w, json!(["a", "b"]));
    let (run, effects) = apply(
        &w,
        run,
        failed("each[0].get", 1, FailureClass::Status5xx),
        after(10),
    );
    assert!(
        effects.is_empty(),
        "item 1 is out, no timer yet: {effects:?}"
    );
    let (run, effects) = apply(
        &w,
        run,
        succeeded("each[1].get", 1, order("paid")),
        after(20),
    );
    assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(1010) }]);
    let (run, effects) = apply(&w, run, Event::Continue, after(500));
    assert_eq!(effects, vec![Effect::ScheduleTimer { at: after(1010) }]);
    let (run, effects) = apply(&w, run, Event::Continue, after(1010));
    assert_eq!(
        calls(&effects),
        vec![(
            "each[0].get".into(),
            2,
            "https://example.com/orders/a?n=0".into(),
            "r1:each[0].get".into()
        )]
    );
    let (run, _) = apply(
        &w,
        run,
        succeeded("each[0].get", 2, order("open")),
        after(1100),
    );
    assert_eq!(run.status, RunStatus::Succeeded);
    let attempts: Vec<_> = run
        .step_executions
        .iter()
        .filter(|e| e.step_id == "each[0].get")
        .map(|e| (e.attempt, e.status))
        .collect();
    assert_eq!(
        attempts,
        vec![(1, StepStatus::Failed), (2, StepStatus::Succeeded)]
    );
}

#[test]
fn fail_fast_fails_the_run_naming_the_item_and_its_step_and_drops_late_results() {
    let w = wf(MAP);
    let (run, _) = started(&w, json!(["a", "b"]));
    let (run, _) = apply(
        &w,
        run,
        failed("each[1].get", 1, FailureClass::Status4xx),
        after(10),
    );
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_type, Some(ErrorType::StepFailed));
    assert_eq!(
        run.error.as_deref(),
        Some("step `each`, item 1, step `get`: failed: boom")
    );
    let (late, effects) = apply(
        &w,
        run.clone(),
        succeeded("each[0].get", 1, order("x")),
        after(20),
    );
    assert!(effects.is_empty());
    assert_eq!(late.step_executions.len(), run.step_executions.len());
}

#[test]
fn collect_keeps_going_and_puts_each_failure_in_its_place() {
    let w = wf(&MAP.replace("fail_fast", "collect"));
    let (run, _) = started(&w, json!(["a", "b"]));
    let (run, _) = apply(
        &w,
        run,
        failed("each[1].get", 1, FailureClass::Status4xx),
        after(10),
    );
    let (run, _) = apply(
        &w,
        run,
        succeeded("each[0].get", 1, order("open")),
        after(20),
    );
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(
        run.step_outputs()["each"],
        json!([
            {"id": "a", "status": "open"},
            {"error": {"step": "get", "type": "step_failed", "message": "failed: boom"}}
        ])
    );
}

#[test]
fn a_repeated_delivery_issues_the_attempts_out_again_with_the_same_keys() {
    let w = wf(MAP);
    let (run, _) = started(&w, json!(["a", "b", "c"]));
    let (run, _) = apply(
        &w,
        run,
        succeeded("each[0].get", 1, order("open")),
        after(5),
    );
    // The process died with items 1 and 2 out; the run, as last written, is delivered again.
    let (_, effects) = apply(&w, run, Event::Continue, after(60_000));
    let mut out = calls(&effects);
    out.sort();
    assert_eq!(
        out.iter()
            .map(|c| (c.0.as_str(), c.1, c.3.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("each[1].get", 1, "r1:each[1].get"),
            ("each[2].get", 1, "r1:each[2].get")
        ]
    );
}

#[test]
fn an_empty_array_gives_an_empty_output_and_items_must_be_an_array_within_the_limit() {
    let w = wf(MAP);
    let (run, _) = started(&w, json!([]));
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.final_output, Some(json!(0)));
    let (run, _) = started(&w, json!({"a": 1}));
    assert_eq!(run.error_type, Some(ErrorType::TemplateError));
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .contains("`items` must give an array, and `trigger.body.ids` gave an object"),
        "{:?}",
        run.error
    );
    let many: Vec<u32> = (0..1001).collect();
    let (run, _) = started(&w, json!(many));
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .contains("`items` gave 1001 items; a map step takes at most 1000"),
        "{:?}",
        run.error
    );
}

const PARALLEL: &str = r#"
id: w
steps:
  - id: fan
    type: parallel
    branches:
      - id: slack
        steps:
          - { id: post, type: http, method: POST, url: "https://example.com/slack", body: { text: "{{ trigger.body.msg }} via {{ branch }}" } }
      - id: audit
        steps:
          - { id: note, type: transform, value: { seen: "{{ trigger.body.msg }}" } }
"#;

#[test]
fn parallel_branches_run_together_and_join_by_their_ids() {
    let w = wf(PARALLEL);
    let (run, effects) = apply(
        &w,
        new_run(json!({"body": {"msg": "hi"}})),
        Event::Started,
        T0,
    );
    let Some(Effect::RunSteps { calls }) = effects.first() else {
        panic!("{effects:?}")
    };
    assert_eq!(calls.len(), 1, "the pure branch ran at once");
    assert_eq!(calls[0].request.body, Some(json!({"text": "hi via slack"})));
    assert_eq!(calls[0].request.idempotency_key, "r1:fan[slack].post");
    let ok = json!({"status": 200, "headers": {}, "body": "ok"});
    let (run, _) = apply(
        &w,
        run,
        succeeded("fan[slack].post", 1, ok.clone()),
        after(3),
    );
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(
        run.final_output,
        Some(json!({"slack": ok, "audit": {"seen": "hi"}}))
    );
}

#[test]
fn a_map_of_pure_steps_runs_to_its_end_in_one_event() {
    let w = wf(r#"
id: w
steps:
  - id: double
    type: map
    items: "{{ trigger.body.n }}"
    steps:
      - { id: x2, type: transform, value: "{{ item * 2 }}" }
      - { id: skip, type: transform, when: "item > 100", value: 0 }
"#);
    assert!(w.steps[0].action.is_pure());
    let (run, effects) = run_pure(&w, new_run(json!({"body": {"n": [1, 2, 3]}})), T0);
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.final_output, Some(json!([2, 4, 6])));
    assert!(matches!(effects.last(), Some(Effect::Finish { .. })));
}

#[test]
fn cancelling_a_run_mid_map_ends_it_and_drops_the_fan() {
    let w = wf(MAP);
    let (run, _) = started(&w, json!(["a", "b"]));
    let (run, _) = apply(&w, run, Event::Cancel, after(5));
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.cursor.fan.is_none());
}
