//! Runs that wait, in the AWS shape: the real function binaries (the resume-approval
//! function among them) against moto; the pump plays the SQS event source mapping, and its
//! delayed messages are the timers; a 20-minute delay goes through an EventBridge
//! Scheduler schedule.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use tripline_tests::Reply;
use tripline_tests::shape::{PUBLIC_URL, Shape, shape};

const LIMIT: Duration = Duration::from_secs(30);

fn url_of(run: &Value, key: &str) -> String {
    let url = run["waiting_payload"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {run}"));
    assert!(url.starts_with(PUBLIC_URL), "{url}");
    Shape::path_of(url)
}

async fn call(s: &Shape, method: &str, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let (status, _, body) = s
        .http(
            &s.resume,
            method,
            path,
            &[("content-type", ct)],
            body.as_bytes(),
        )
        .await;
    (status, body)
}

const WAIT: &str = r#"
id: wait
triggers: [{ type: manual }]
steps:
  - { id: callback, type: wait_for_webhook, timeout: 10m }
  - { id: done, type: transform, value: { got: "{{ steps.callback }}" } }
"#;

#[tokio::test]
async fn a_run_parks_and_the_resume_function_continues_it_once() {
    let s = shape(&[]).await;
    s.deploy("wait", WAIT).await;
    let id = s.start("wait", &json!({})).await;
    let run = s.pump_until(&id, "waiting", LIMIT).await;
    assert_eq!(run["waiting_reason"], "webhook");
    let resume = url_of(&run, "resume_url");

    let (status, body) = call(&s, "POST", &resume, "application/json", r#"{"ok": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    let run = s.pump_until(&id, "succeeded", LIMIT).await;
    assert_eq!(run["final_output"], json!({"got": {"ok": 1}}));

    let (status, _) = call(&s, "POST", &resume, "application/json", "{}").await;
    assert_eq!(status, 410);
    let forged = format!("/resume/{id}.AAAAAAAAAAAAAAAAAAAAAAAA");
    let (status, _) = call(&s, "POST", &forged, "application/json", "{}").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_expired_wait_fails_or_continues_when_its_timer_message_arrives() {
    let s = shape(&[]).await;
    let short = WAIT.replace("timeout: 10m", "timeout: 2s");
    let going_on = short
        .replace("id: wait\n", "id: wait_on\n")
        .replace("timeout: 2s", "timeout: 2s, on_timeout: continue");
    s.deploy("wait", &short).await;
    s.deploy("wait_on", &going_on).await;
    let failing = s.start("wait", &json!({})).await;
    let continuing = s.start("wait_on", &json!({})).await;
    let resume = url_of(
        &s.pump_until(&failing, "waiting", LIMIT).await,
        "resume_url",
    );
    s.pump_until(&continuing, "waiting", LIMIT).await;
    // The timers are SQS messages delayed by the wait's timeout.
    let run = s.pump_until(&failing, "failed", LIMIT).await;
    assert_eq!(run["error_type"], "wait_timed_out");
    let run = s.pump_until(&continuing, "succeeded", LIMIT).await;
    assert_eq!(run["final_output"], json!({"got": null}));
    let (status, _) = call(&s, "POST", &resume, "application/json", "{}").await;
    assert_eq!(status, 410);
}

fn approval(timeout: &str, url: &str) -> String {
    format!(
        r#"
id: pay
triggers: [{{ type: manual }}]
steps:
  - id: ok
    type: approval
    timeout: {timeout}
    summary: "Pay {{{{ trigger.body.amount }}}}"
    notify: {{ method: POST, url: "{url}/chat", body: {{ link: "{{{{ approval.review_url }}}}" }} }}
  - {{ id: pay, type: transform, value: "{{{{ steps.ok.decision }}}}" }}
"#
    )
}

#[tokio::test]
async fn approve_reject_and_the_review_page_through_the_resume_function() {
    let s = shape(&[]).await;
    s.deploy("pay", &approval("1h", &s.stub.url)).await;
    let first = s.start("pay", &json!({"amount": 5})).await;
    let run = s.pump_until(&first, "waiting", LIMIT).await;
    let (review, approve, reject) = (
        url_of(&run, "review_url"),
        url_of(&run, "approve_url"),
        url_of(&run, "reject_url"),
    );
    let chat = s.stub.wait_for(1).await;
    assert_eq!(chat[0].body["link"], json!(format!("{PUBLIC_URL}{review}")));

    let (status, page) = call(&s, "GET", &review, "text/plain", "").await;
    assert_eq!(status, 200);
    let html = page.as_str().expect("html");
    assert!(html.contains("Pay 5"), "{html}");
    assert!(
        html.contains(&format!("action=\"{PUBLIC_URL}{approve}\"")),
        "{html}"
    );
    assert!(
        html.contains(&format!("action=\"{PUBLIC_URL}{reject}\"")),
        "{html}"
    );

    let (status, page) = call(
        &s,
        "POST",
        &approve,
        "application/x-www-form-urlencoded",
        "comment=fine",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let run = s.pump_until(&first, "succeeded", LIMIT).await;
    assert_eq!(run["final_output"], "approved");
    let (status, _) = call(&s, "POST", &reject, "application/json", "{}").await;
    assert_eq!(status, 410);

    let second = s.start("pay", &json!({"amount": 6})).await;
    let reject = url_of(&s.pump_until(&second, "waiting", LIMIT).await, "reject_url");
    let (status, _) = call(
        &s,
        "POST",
        &reject,
        "application/json",
        r#"{"comment": "no"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let run = s.pump_until(&second, "failed", LIMIT).await;
    assert_eq!(run["error_type"], "rejected");
}

#[tokio::test]
async fn an_approval_expires_when_its_timer_arrives() {
    let s = shape(&[]).await;
    s.deploy("pay", &approval("2s", &s.stub.url)).await;
    let id = s.start("pay", &json!({"amount": 1})).await;
    let approve = url_of(&s.pump_until(&id, "waiting", LIMIT).await, "approve_url");
    let run = s.pump_until(&id, "failed", LIMIT).await;
    assert_eq!(run["error_type"], "wait_timed_out");
    let (status, _) = call(&s, "POST", &approve, "application/json", "{}").await;
    assert_eq!(status, 410);
}

/// The names of the schedules in a group.
async fn schedules(s: &Shape, group: &str) -> Vec<String> {
    let listed = s
        .clients
        .scheduler()
        .list_schedules()
        .group_name(group)
        .send()
        .await
        .expect("list schedules");
    listed
        .schedules()
        .iter()
        .filter_map(|x| x.name().map(str::to_string))
        .collect()
}

/// The one schedule of the timers' group (its name, and the schedule).
async fn the_timer(
    s: &Shape,
) -> (
    Vec<String>,
    aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput,
) {
    let timers = s.settings.timers.clone().expect("timer settings");
    let names = schedules(s, &timers.schedule_group).await;
    assert_eq!(names.len(), 1, "one schedule for the timer: {names:?}");
    let schedule = s
        .clients
        .scheduler()
        .get_schedule()
        .group_name(&timers.schedule_group)
        .name(&names[0])
        .send()
        .await
        .expect("get schedule");
    (names, schedule)
}

#[tokio::test]
async fn a_20_minute_delay_is_an_eventbridge_scheduler_schedule() {
    let s = shape(&[]).await;
    s.deploy(
        "later",
        "id: later\ntriggers: [{ type: manual }]\nsteps:\n  - { id: pause, type: delay, duration: 20m }\n",
    )
    .await;
    let id = s.start("later", &json!({})).await;
    let run = s.pump_until(&id, "waiting", LIMIT).await;
    let until = tripline_core::Timestamp::parse_rfc3339(
        run["waiting_payload"]["until"].as_str().expect("until"),
    )
    .expect("time");

    let timers = s.settings.timers.clone().expect("timer settings");
    let (names, schedule) = the_timer(&s).await;
    let due_secs = (until.millis() + 999) / 1000;
    assert_eq!(
        schedule.schedule_expression(),
        Some(tripline_aws::queue::at_expression(due_secs).as_str())
    );
    assert_eq!(schedule.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        schedule.action_after_completion(),
        Some(&aws_sdk_scheduler::types::ActionAfterCompletion::Delete),
        "a one-time schedule deletes itself once run"
    );
    let target = schedule.target().expect("target");
    assert_eq!(target.arn(), timers.queue_arn);
    assert_eq!(target.role_arn(), timers.role_arn);
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        timers.dead_letter_arn.as_deref(),
        "an undeliverable timer goes to the dead-letter queue"
    );
    assert!(target.retry_policy().is_some());
    let input: Value = serde_json::from_str(target.input().expect("input")).expect("json");
    assert_eq!(input, json!({"run_id": id}));
    // No SQS message waits for it: the schedule is the timer.
    assert_eq!(s.pump.drain(&s.executor, Duration::from_secs(3)).await, 0);

    // The schedule firing early (or twice) changes nothing: the run waits on, and asking
    // for the same timer again is the same schedule.
    s.clients
        .sqs
        .send_message()
        .queue_url(&s.settings.queue_url)
        .message_body(target.input().expect("input"))
        .send()
        .await
        .expect("send");
    assert_eq!(s.pump.drain(&s.executor, Duration::from_secs(10)).await, 1);
    let run = s.run(&id).await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(schedules(&s, &timers.schedule_group).await, names);
}

const CHILD: &str = r#"
id: child
triggers: [{ type: manual }]
steps:
  - { id: check, type: fail, when: "trigger.body.n < 0", message: "negative" }
  - { id: double, type: transform, value: "{{ trigger.body.n * 2 }}" }
"#;

#[tokio::test]
async fn trigger_workflow_with_and_without_wait() {
    let s = shape(&[]).await;
    s.deploy("child", CHILD).await;
    s.deploy(
        "parent",
        r#"
id: parent
triggers: [{ type: manual }]
steps:
  - { id: fire, type: trigger_workflow, workflow: child, input: { n: 1 } }
  - { id: call, type: trigger_workflow, workflow: child, input: { n: "{{ trigger.body.n }}" }, wait: true }
  - { id: out, type: transform, value: { fired: "{{ steps.fire.run_id }}", doubled: "{{ steps.call }}" } }
"#,
    )
    .await;
    let id = s.start("parent", &json!({"n": 4})).await;
    let run = s.pump_until(&id, "succeeded", LIMIT).await;
    assert_eq!(run["final_output"]["doubled"], 8, "{run}");
    let children = run["children"].as_array().expect("children").clone();
    assert_eq!(children.len(), 2);
    let fired = s.run(children[0].as_str().expect("id")).await;
    assert_eq!(fired["parent"]["run_id"], json!(id));

    let id = s.start("parent", &json!({"n": -4})).await;
    let run = s.pump_until(&id, "failed", LIMIT).await;
    assert!(
        run["error"].as_str().expect("error").contains("negative"),
        "{run}"
    );
}

#[tokio::test]
async fn callbacks_are_signed_and_retried_through_delayed_messages() {
    let s = shape(&[]).await;
    s.stub.script([Reply::status(503)]);
    s.deploy(
        "cb",
        &format!(
            "id: cb\ntriggers: [{{ type: manual }}]\non_success: {{ url: \"{}/done\", retry: {{ max_attempts: 3, initial: 1s }} }}\nsteps:\n  - {{ id: t, type: transform, value: 7 }}\n",
            s.stub.url
        ),
    )
    .await;
    // The generated signing secret is a secret of its own (never shown); the receiver
    // sets one it knows.
    let (_, _, wf) = s
        .http(&s.control, "GET", "/v1/workflows/cb", &[], b"")
        .await;
    assert_eq!(
        wf["definition"]["callback_secret"],
        "{{ secrets.callback_cb }}"
    );
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
    let (status, _, _) = s
        .http(
            &s.control,
            "PUT",
            "/v1/secrets/callback_cb",
            &[("content-type", "application/json")],
            json!({ "value": secret }).to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    let id = s.start("cb", &json!({})).await;
    let until = std::time::Instant::now() + LIMIT;
    let run = loop {
        s.pump.once(&s.executor, Duration::from_secs(1)).await;
        let run = s.run(&id).await;
        if run["callbacks"].as_array().is_some_and(|c| c.len() == 2) {
            break run;
        }
        assert!(std::time::Instant::now() < until, "{run}");
    };
    assert_eq!(run["callbacks"][0]["status"], 503);
    assert_eq!(run["callbacks"][1]["succeeded"], true);
    let reqs = s.stub.requests();
    assert_eq!(reqs.len(), 2);
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("key");
    for r in &reqs {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("mac");
        mac.update(
            format!(
                "{}.{}.",
                r.headers["webhook-id"], r.headers["webhook-timestamp"]
            )
            .as_bytes(),
        );
        mac.update(&serde_json::to_vec(&r.body).expect("body"));
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(r.headers["webhook-signature"], format!("v1,{expected}"));
    }
}

#[tokio::test]
async fn cancel_through_the_control_function_ends_a_waiting_run() {
    let s = shape(&[]).await;
    s.deploy("wait", WAIT).await;
    let id = s.start("wait", &json!({})).await;
    let resume = url_of(&s.pump_until(&id, "waiting", LIMIT).await, "resume_url");
    let (status, _, body) = s
        .http(
            &s.control,
            "POST",
            &format!("/v1/runs/{id}/cancel"),
            &[],
            b"",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.run(&id).await["status"], "cancelled");
    let (status, _) = call(&s, "POST", &resume, "application/json", "{}").await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn a_once_trigger_is_recorded_at_deploy_and_waits_on_an_eventbridge_scheduler_schedule() {
    let s = shape(&[]).await;
    let at = tripline_core::Timestamp::from_system_time(std::time::SystemTime::now())
        .plus(Duration::from_secs(3600));
    let (status, _, body) = s
        .http(
            &s.control,
            "PUT",
            "/v1/workflows/launch",
            &[("content-type", "application/yaml")],
            format!("id: launch\ntriggers:\n  - {{ type: once, at: \"{at}\" }}\nsteps:\n  - {{ id: t, type: transform, value: 1 }}\n").as_bytes(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["triggers"][0]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    let run = s.run(&id).await;
    assert_eq!(run["status"], "queued", "recorded by the deploy: {run}");
    // The admission's work item reaches the executor, which leaves the run for its time:
    // a one-time schedule an hour ahead.
    s.pump.drain(&s.executor, Duration::from_secs(3)).await;
    assert_eq!(s.run(&id).await["status"], "queued");
    let timers = s.settings.timers.clone().expect("timer settings");
    let names = schedules(&s, &timers.schedule_group).await;
    assert_eq!(names.len(), 1, "{names:?}");
    let schedule = s
        .clients
        .scheduler()
        .get_schedule()
        .group_name(&timers.schedule_group)
        .name(&names[0])
        .send()
        .await
        .expect("get schedule");
    assert_eq!(
        schedule.schedule_expression(),
        Some(tripline_aws::queue::at_expression((at.millis() + 999) / 1000).as_str())
    );
    // Deployed again: the same run, not a second.
    let (status, _, again) = s
        .http(
            &s.control,
            "PUT",
            "/v1/workflows/launch",
            &[("content-type", "application/yaml")],
            format!("id: launch\ntriggers:\n  - {{ type: once, at: \"{at}\" }}\nsteps:\n  - {{ id: t, type: transform, value: 1 }}\n").as_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    s.index().await;
    let (_, _, listed) = s
        .http(&s.control, "GET", "/v1/runs?workflow=launch", &[], b"")
        .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

/// A one-time run (`?at=`) in the AWS shape: recorded `queued` at once, its time an
/// EventBridge Scheduler one-time schedule (it is over SQS's 15 minutes), listed, and
/// cancellable before it fires.
#[tokio::test]
async fn a_one_time_run_waits_on_a_scheduler_schedule_and_can_be_cancelled() {
    let s = shape(&[]).await;
    s.deploy(
        "once",
        "id: once\ntriggers: [{ type: manual }]\nsteps:\n  - { id: t, type: transform, value: \"{{ trigger.body.n }}\" }\n",
    )
    .await;
    let at_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        / 1000
        + 30 * 60)
        * 1000;
    let at = tripline_core::Timestamp(at_ms).to_string();
    let (status, _, body) = s
        .http(
            &s.control,
            "POST",
            &format!("/v1/workflows/once/runs?at={at}"),
            &[("content-type", "application/json")],
            br#"{"n": 7}"#,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["run_id"].as_str().expect("run id").to_string();
    s.pump.drain(&s.executor, Duration::from_secs(5)).await;
    let run = s.run(&id).await;
    assert_eq!(
        run["status"], "queued",
        "not started before its time: {run}"
    );
    assert_eq!(run["not_before"], json!(at), "{run}");
    let (_, schedule) = the_timer(&s).await;
    // At its time (rounded up to the next whole second).
    let expression = schedule.schedule_expression().expect("expression");
    assert!(
        [at_ms / 1000, at_ms / 1000 + 1]
            .iter()
            .any(|secs| expression == tripline_aws::queue::at_expression(*secs)),
        "{expression} for {at}"
    );
    s.index().await;
    let (_, _, listed) = s
        .http(
            &s.control,
            "GET",
            "/v1/runs?workflow=once&status=queued",
            &[],
            b"",
        )
        .await;
    assert_eq!(listed["items"][0]["run_id"], json!(id), "{listed}");
    let (status, _, body) = s
        .http(
            &s.control,
            "POST",
            &format!("/v1/runs/{id}/cancel"),
            &[],
            b"",
        )
        .await;
    assert!(status < 300, "{status} {body}");
    s.pump.drain(&s.executor, Duration::from_secs(5)).await;
    let run = s.run(&id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
}
