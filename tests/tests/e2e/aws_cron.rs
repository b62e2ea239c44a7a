//! Cron triggers in the AWS shape, against the AWS-protocol server: a deploy creates,
//! updates and deletes EventBridge Scheduler schedules (and makes no call when nothing
//! changed); the cron-tick function, fed the event a schedule sends, starts one run per
//! scheduled time and carries the state in DynamoDB.

use std::time::Duration;

use serde_json::{Value, json};
use tripline_app::deploy::DeployError;
use tripline_app::ports::Outcome;
use tripline_aws::CallCounter;
use tripline_aws::schedules::schedule_name;
use tripline_core::validate::Format;
use tripline_tests::aws::{endpoint, fresh};
use tripline_tests::lambda::{Function, function_env};
use tripline_tests::shape::{Shape, shape};

const LIMIT: Duration = Duration::from_secs(30);

fn scheduler_calls(counter: &CallCounter) -> Vec<(String, u64)> {
    counter
        .snapshot()
        .into_iter()
        .filter(|(k, _)| k.to_lowercase().starts_with("scheduler"))
        .collect()
}

const PULL: &str = r#"
id: pull
triggers:
  - { type: cron, id: weekdays, schedule: "0 8 * * MON-FRI", timezone: Europe/Paris }
  - { type: cron, id: hourly, schedule: "@hourly" }
steps:
  - { id: a, type: transform, value: 1 }
"#;

#[tokio::test]
async fn a_deploy_creates_updates_and_deletes_the_schedules_of_its_cron_triggers_and_a_removal_deletes_them_all()
 {
    let counter = CallCounter::default();
    let (clients, settings) = fresh(Some(counter.clone())).await;
    let cron = settings.cron.clone().expect("cron settings");
    let app = tripline_aws::build_control_app(&clients, settings, tripline_app::Config::default());
    let scheduler = clients.scheduler();
    let deploy = |text: &'static str| {
        let app = app.clone();
        async move {
            app.deployments
                .deploy_text(
                    app.store.as_ref(),
                    text,
                    Format::Yaml,
                    None,
                    app.clock.now(),
                )
                .await
        }
    };

    // Two triggers: two schedules.
    counter.reset();
    deploy(PULL).await.expect("deploy");
    let created: Vec<_> = scheduler_calls(&counter);
    assert!(
        created
            .iter()
            .any(|(k, n)| k.contains("CreateSchedule") && *n == 2),
        "{created:?}"
    );
    let s = scheduler
        .get_schedule()
        .group_name(&cron.group)
        .name(schedule_name("pull", "weekdays"))
        .send()
        .await
        .expect("the weekdays schedule");
    assert_eq!(s.schedule_expression(), Some("cron(0 8 ? * MON-FRI *)"));
    assert_eq!(s.schedule_expression_timezone(), Some("Europe/Paris"));
    assert_eq!(
        s.flexible_time_window().map(|w| w.mode().as_str()),
        Some("OFF")
    );
    let target = s.target().expect("target");
    assert_eq!(target.arn(), cron.target_arn, "the cron-tick function");
    assert_eq!(target.role_arn(), cron.role_arn);
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        cron.dead_letter_arn.as_deref()
    );
    let retry = target.retry_policy().expect("retry policy");
    assert_eq!(retry.maximum_retry_attempts(), Some(185));
    assert_eq!(retry.maximum_event_age_in_seconds(), Some(86_400));
    let input: Value = serde_json::from_str(target.input().expect("input")).expect("json");
    assert_eq!(
        input,
        json!({"workflow": "pull", "trigger": "weekdays", "scheduled_time": "<aws.scheduler.scheduled-time>"})
    );
    let hourly = scheduler
        .get_schedule()
        .group_name(&cron.group)
        .name(schedule_name("pull", "hourly"))
        .send()
        .await
        .expect("the hourly schedule");
    assert_eq!(hourly.schedule_expression(), Some("cron(0 * * * ? *)"));
    assert_eq!(hourly.schedule_expression_timezone(), Some("UTC"));

    // The same definition again: no Scheduler call at all.
    counter.reset();
    let again = deploy(PULL).await.expect("redeploy");
    assert!(again.unchanged);
    assert_eq!(scheduler_calls(&counter), vec![], "an unchanged redeploy");

    // One trigger changed, one unchanged: only the changed one is written.
    counter.reset();
    deploy(
        r#"
id: pull
triggers:
  - { type: cron, id: weekdays, schedule: "30 9 * * *", timezone: Europe/Paris }
  - { type: cron, id: hourly, schedule: "@hourly" }
steps:
  - { id: a, type: transform, value: 2 }
"#,
    )
    .await
    .expect("deploy a change");
    let calls = scheduler_calls(&counter);
    assert!(
        calls
            .iter()
            .any(|(k, n)| k.contains("UpdateSchedule") && *n == 1),
        "{calls:?}"
    );
    assert!(
        calls.iter().all(|(k, _)| !k.contains("Delete")),
        "{calls:?}"
    );
    let s = scheduler
        .get_schedule()
        .group_name(&cron.group)
        .name(schedule_name("pull", "weekdays"))
        .send()
        .await
        .expect("the weekdays schedule");
    assert_eq!(s.schedule_expression(), Some("cron(30 9 * * ? *)"));

    // A removed trigger's schedule is deleted.
    deploy(
        r#"
id: pull
triggers:
  - { type: cron, id: weekdays, schedule: "30 9 * * *", timezone: Europe/Paris }
steps:
  - { id: a, type: transform, value: 2 }
"#,
    )
    .await
    .expect("deploy without hourly");
    let listed = scheduler
        .list_schedules()
        .group_name(&cron.group)
        .send()
        .await
        .expect("list");
    let names: Vec<&str> = listed.schedules().iter().filter_map(|s| s.name()).collect();
    assert_eq!(names, vec![schedule_name("pull", "weekdays").as_str()]);

    // A removed workflow's schedules are deleted.
    let removed = app
        .deployments
        .remove(app.store.as_ref(), "pull", app.clock.now())
        .await
        .expect("remove");
    assert!(removed.is_some_and(|r| r.removed));
    let listed = scheduler
        .list_schedules()
        .group_name(&cron.group)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.schedules().len(), 0, "{listed:?}");

    // Seconds cannot run on EventBridge: refused, naming the trigger, nothing written.
    counter.reset();
    let refused = deploy(
        r#"
id: fast
triggers:
  - { type: cron, id: every10s, schedule: "*/10 * * * * *" }
steps:
  - { id: a, type: transform, value: 1 }
"#,
    )
    .await;
    let Err(DeployError::Invalid(problems)) = refused else {
        panic!("a 6-field schedule must be refused in the AWS shape");
    };
    assert_eq!(problems[0].path, "triggers[0].schedule");
    assert!(problems[0].message.contains("seconds"), "{problems:?}");
    assert!(problems[0].message.contains("AWS shape"), "{problems:?}");
    assert_eq!(scheduler_calls(&counter), vec![]);
    let (status, _) = (app.store.workflow("fast", None).await.expect("read"), ());
    assert!(status.is_none(), "nothing was deployed");
}

const TICKED: &str = r#"
id: ticked
triggers:
  - { type: cron, id: daily, schedule: "0 8 * * *", timezone: Europe/Paris }
steps:
  - { id: page, type: transform, value: { since: "{{ state.cursor if state else 'start' }}", state: { cursor: "{{ trigger.scheduled_time }}" } } }
"#;

/// What EventBridge Scheduler sends to the function: the schedule's input with the
/// scheduled time filled in.
fn scheduler_event(scheduled: &str) -> Value {
    let template = tripline_aws::schedules::tick_input("ticked", "daily");
    serde_json::from_str(&template.replace("<aws.scheduler.scheduled-time>", scheduled))
        .expect("json")
}

async fn ticks(s: &Shape) -> Vec<Value> {
    s.index().await;
    let (status, _, body) = s
        .http(&s.control, "GET", "/v1/workflows/ticked/ticks", &[], b"")
        .await;
    assert_eq!(status, 200, "{body}");
    let mut items = body["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|t| t["recorded_at"].as_str().unwrap_or_default().to_string());
    items
}

#[tokio::test]
async fn the_cron_tick_function_starts_one_run_per_scheduled_time_and_carries_the_state() {
    let s = shape(&[]).await;
    let tick = Function::start("cron-tick", &function_env(&s.settings, &endpoint())).await;
    s.deploy("ticked", TICKED).await;

    let first = tick
        .invoke(scheduler_event("2026-11-23T07:00:00Z"))
        .await
        .expect("tick");
    let run_id = match serde_json::from_value::<Outcome>(first["outcome"].clone()) {
        Ok(Outcome::Started { run_ids }) => run_ids[0].clone(),
        other => panic!("the tick starts a run: {other:?} {first}"),
    };
    assert_eq!(
        run_id,
        tripline_app::intake::cron::tick_id(
            "ticked",
            "daily",
            tripline_core::Timestamp::parse_rfc3339("2026-11-23T07:00:00Z").expect("time")
        )
    );
    let run = s.pump_until(&run_id, "succeeded", LIMIT).await;
    assert_eq!(run["final_output"]["since"], "start");

    // The same event again (Scheduler delivers at least once): no second run.
    let again = tick
        .invoke(scheduler_event("2026-11-23T07:00:00Z"))
        .await
        .expect("tick again");
    assert_eq!(again["outcome"]["kind"], "duplicate_tick", "{again}");
    let t = ticks(&s).await;
    let outcomes: Vec<&str> = t
        .iter()
        .map(|x| x["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, ["fired", "duplicate"], "{t:?}");

    // The next day's run gets the state the first left (kept in DynamoDB).
    let (_, _, state) = s
        .http(&s.control, "GET", "/v1/workflows/ticked/state", &[], b"")
        .await;
    assert_eq!(
        state["state"],
        json!({"cursor": "2026-11-23T07:00:00.000Z"})
    );
    let next = tick
        .invoke(scheduler_event("2026-11-24T07:00:00Z"))
        .await
        .expect("next tick");
    let next_id = next["outcome"]["run_ids"][0]
        .as_str()
        .expect("run")
        .to_string();
    let run = s.pump_until(&next_id, "succeeded", LIMIT).await;
    assert_eq!(run["final_output"]["since"], "2026-11-23T07:00:00.000Z");
    assert_eq!(run["state"], json!({"cursor": "2026-11-23T07:00:00.000Z"}));

    // An event that is not a tick fails the invocation (Lambda retries it, then sends it
    // to the dead-letter queue): it is not dropped silently.
    let bad = tick.invoke(json!({"workflow": "ticked"})).await;
    assert!(bad.is_err(), "{bad:?}");
    tick.stop().await;
}
