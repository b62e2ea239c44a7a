//! Validation's tests: definitions in, every problem out with its path and position.

use super::*;

fn problems(text: &str) -> Vec<Problem> {
    load(text, Format::Yaml).expect_err("should not validate")
}

const GOOD: &str = r#"
id: orders
triggers:
  - type: webhook
    token: aaaaaaaaaaaaaaaaaaaaaaaa
    response: sync
  - type: manual
steps:
  - id: fetch
    type: http
    method: POST
    url: "https://example.com/orders/{{ trigger.body.id }}"
    body: { id: "{{ trigger.body.id }}" }
    retry: { max_attempts: 3, backoff: exponential, initial: 200ms }
    extract: { status: "{{ output.status }}" }
  - id: shape
    type: transform
    value: { n: "{{ steps.fetch.body.count }}", s: "{{ context.status }}" }
output: "{{ steps.shape }}"
max_duration: 5m
"#;

#[test]
fn a_good_definition_loads() {
    let wf = load(GOOD, Format::Yaml).expect("valid");
    assert_eq!(wf.steps.len(), 2);
    assert_eq!(wf.triggers[1].id(), "manual");
    assert_eq!(wf.steps[0].retry.as_ref().unwrap().max_attempts, 3);
}

#[test]
fn every_problem_is_reported_at_once_with_its_line() {
    let text = r#"
id: Bad Id
steps:
  - id: a
    type: transform
    value: "{{ steps.b.x }}"
    tiemout: 5s
  - id: b
    type: http
    url: "{{ steps.nope.url }}"
    timeout: soon
  - id: a
    type: fail
    message: "{{ trigger.body. }}"
"#;
    let ps = problems(text);
    let has = |path: &str, needle: &str| {
        ps.iter()
            .any(|p| p.path == path && p.message.contains(needle))
    };
    assert!(has("id", "not a valid workflow id"), "{ps:#?}");
    assert!(has("steps[0].value", "has not run yet"), "{ps:#?}");
    assert!(has("steps[0].tiemout", "did you mean `timeout`"), "{ps:#?}");
    assert!(has("steps[1].timeout", "not a duration"), "{ps:#?}");
    assert!(has("steps[2].message", "does not parse"), "{ps:#?}");
    let tiemout = ps.iter().find(|p| p.path == "steps[0].tiemout").unwrap();
    assert_eq!((tiemout.line, tiemout.column), (Some(7), Some(5)));
}

#[test]
fn a_bad_field_does_not_hide_the_problems_of_the_others() {
    let ps = problems(
        "id: x\nsteps:\n  - id: a\n    type: http\n    url: '{{ steps.zz }}'\n    timeout: soon\n    retry: {max_attempts: many}\n",
    );
    assert!(ps.iter().any(|p| p.path == "steps[0].timeout"), "{ps:#?}");
    assert!(
        ps.iter().any(|p| p.path == "steps[0].retry.max_attempts"),
        "{ps:#?}"
    );
    assert!(
        ps.iter()
            .any(|p| p.path == "steps[0].url" && p.message.contains("does not exist")),
        "{ps:#?}"
    );
}

#[test]
fn duplicate_and_unknown_step_references_are_named() {
    let ps = problems(
        "id: x\nsteps:\n  - {id: a, type: transform, value: 1}\n  - {id: a, type: transform, value: '{{ steps.zzz }}'}\n",
    );
    assert!(
        ps.iter().any(|p| p.message.contains("used twice")),
        "{ps:#?}"
    );
    assert!(
        ps.iter().any(|p| p.message.contains("does not exist")),
        "{ps:#?}"
    );
}

#[test]
fn an_unknown_step_type_suggests_the_nearest() {
    let ps = problems("id: x\nsteps:\n  - {id: a, type: transfrom, value: 1}\n");
    assert!(
        ps[0].message.contains("did you mean `transform`"),
        "{ps:#?}"
    );
}

#[test]
fn templates_may_only_read_known_roots() {
    let ps = problems("id: x\nsteps:\n  - {id: a, type: transform, value: '{{ secretz.k }}'}\n");
    assert!(
        ps[0].message.contains("`secretz` is not available"),
        "{ps:#?}"
    );
}

#[test]
fn a_trigger_condition_cannot_read_steps() {
    let ps = problems(
        "id: x\ntriggers:\n  - {type: webhook, condition: 'steps.a'}\nsteps:\n  - {id: a, type: transform, value: 1}\n",
    );
    assert!(
        ps[0].message.contains("`steps` is not available"),
        "{ps:#?}"
    );
}

#[test]
fn a_short_token_is_refused() {
    let ps = problems(
        "id: x\ntriggers:\n  - {type: webhook, token: short}\nsteps:\n  - {id: a, type: transform, value: 1}\n",
    );
    assert!(ps[0].message.contains("128"), "{ps:#?}");
}

#[test]
fn a_missing_field_is_named() {
    let ps = problems("id: x\nsteps:\n  - {id: a, type: http}\n");
    assert!(
        ps.iter().any(|p| p.message.contains("missing field `url`")),
        "{ps:#?}"
    );
}

#[test]
fn json_definitions_get_line_numbers() {
    let ps = load("{\n \"id\": \"x\",\n \"steps\": [\n  {\"id\": \"a\", \"type\": \"transform\", \"valu\": 1}\n ]\n}", Format::Json)
            .expect_err("bad");
    assert!(
        ps.iter()
            .any(|p| p.line == Some(4) && p.message.contains("unknown field `valu`")),
        "{ps:#?}"
    );
}

#[test]
fn a_syntax_error_is_one_problem_with_a_position() {
    let ps = load("id: [", Format::Yaml).expect_err("bad");
    assert_eq!(ps.len(), 1);
    assert!(ps[0].line.is_some());
}

#[test]
fn parking_steps_and_callbacks_are_checked() {
    let ps = problems(
        r#"
id: w
on_success: { url: "ftp://x", retries: 3 }
callback_secret: nope
steps:
  - { id: d, type: delay }
  - { id: w, type: wait_for_webhook, retry: { max_attempts: 2 } }
  - id: a
    type: approval
    summary: "{{ approval.review_url }}"
    notify: { url: "https://chat/{{ approval.review_url }}", body: { x: "{{ steps.later.x }}" } }
  - { id: t, type: trigger_workflow, workflow: "Not Valid" }
  - { id: later, type: transform, value: 1 }
"#,
    );
    let text: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    let has = |needle: &str| {
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "no `{needle}` in {text:#?}"
        )
    };
    has("on_success.url: `ftp://x` is not an http");
    has("unknown field `retries` in a callback");
    has("callback_secret: a callback secret is `{{ secrets.NAME }}`");
    has("exactly one of `duration`");
    has("a `wait_for_webhook` step is not retried");
    has("steps[2].summary: the template reads `approval.review_url`");
    has("steps.later`, which has not run yet");
    has("`Not Valid` is not a valid workflow id");
    assert!(!text.iter().any(|t| t.contains("notify.url")), "{text:#?}");
}

#[test]
fn cron_triggers_are_checked_with_the_fix_named() {
    let ps = problems(
        r#"
id: x
triggers:
  - { type: cron, schedule: "0 25 * * *" }
  - { type: cron, id: b, schedule: "@fortnightly" }
  - { type: cron, id: c, schedule: "0 8 * * *", timezone: Europe/Pariss }
  - { type: cron, id: d, schedul: "0 8 * * *" }
  - { type: cron, id: e, schedule: "0 8 * * *", overlap: wait }
steps: [{ id: a, type: transform, value: 1 }]
"#,
    );
    let at = |path: &str| {
        ps.iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}: {ps:#?}"))
            .message
            .clone()
    };
    assert!(at("triggers[0].schedule").contains("hour 0-23"));
    assert!(at("triggers[1].schedule").contains("@hourly, @daily"));
    assert!(at("triggers[2].timezone").contains("IANA"));
    assert!(at("triggers[3].schedul").contains("did you mean `schedule`?"));
    assert!(
        at("triggers[4]").contains("`skip`, `queue`, `allow`"),
        "{ps:#?}"
    );
    for p in &ps {
        assert!(p.line.is_some(), "every problem has its line: {p:?}");
    }
}

#[test]
fn a_good_cron_trigger_loads_with_its_defaults() {
    let wf = load(
            r#"
id: x
triggers:
  - { type: cron, schedule: "*/10 * * * * *" }
  - { type: cron, id: daily, schedule: "@daily", timezone: America/New_York, overlap: queue, catch_up: all }
steps: [{ id: a, type: transform, value: "{{ state.cursor if state else 0 }}" }]
state: { cursor: "{{ output }}" }
"#,
            Format::Yaml,
        )
        .expect("valid");
    let Trigger::Cron(first) = &wf.triggers[0] else {
        panic!("a cron trigger")
    };
    assert_eq!(first.id, "cron");
    assert_eq!(first.overlap, crate::definition::Overlap::Skip);
    assert_eq!(first.catch_up, crate::definition::CatchUp::None);
    assert!(first.parsed().expect("parses").has_seconds());
    let Trigger::Cron(daily) = &wf.triggers[1] else {
        panic!("a cron trigger")
    };
    assert_eq!(daily.overlap, crate::definition::Overlap::Queue);
    assert_eq!(daily.catch_up, crate::definition::CatchUp::All);
}

#[test]
fn a_state_template_needs_a_cron_trigger_and_known_roots() {
    let ps = problems(
        "id: x\ntriggers: [{type: manual}]\nsteps: [{id: a, type: transform, value: 1}]\nstate: '{{ output }}'\n",
    );
    assert!(
        ps[0].message.contains("add a `type: cron` trigger"),
        "{ps:#?}"
    );
    let ps = problems(
        "id: x\ntriggers: [{type: cron, schedule: '@daily'}]\nsteps: [{id: a, type: transform, value: 1}]\nstate: '{{ approval.comment }}'\n",
    );
    assert!(
        ps[0].message.contains("`approval` is not available"),
        "{ps:#?}"
    );
}

#[test]
fn flow_triggers_are_checked() {
    let text = r#"id: x
triggers:
  - { type: flow, workflow: "not an id", on: [] }
  - { type: flow, id: b, workflow: y, condition: "steps.a.x", after: z }
steps: [{id: a, type: transform, value: 1}]
"#;
    let ps = load(text, Format::Yaml).expect_err("invalid");
    let text = format!("{ps:#?}");
    assert!(text.contains("triggers[0].workflow"), "{text}");
    assert!(text.contains("`not an id` is not a workflow id"), "{text}");
    assert!(text.contains("triggers[0].on"), "{text}");
    assert!(text.contains("triggers[1].condition"), "{text}");
    assert!(text.contains("triggers[1].after"), "{text}");
    let ps = load(
            "id: x\ntriggers: [{type: flow, workflow: y, on: [done]}]\nsteps: [{id: a, type: transform, value: 1}]\n",
            Format::Yaml,
        )
        .expect_err("unknown status");
    assert!(format!("{ps:#?}").contains("done"), "{ps:#?}");
    let wf = load(
            "id: x\ntriggers: [{type: flow, workflow: y}]\nsteps: [{id: a, type: transform, value: '{{ trigger.body }}'}]\n",
            Format::Yaml,
        )
        .expect("valid");
    let Trigger::Flow(f) = &wf.triggers[0] else {
        panic!("a flow trigger")
    };
    assert_eq!(f.id, "flow");
    assert_eq!(f.on, vec![crate::definition::FlowOn::Succeeded]);
    assert!(!f.for_each);
}

#[test]
fn kafka_triggers_are_checked() {
    let ps = problems(
        r#"
id: x
triggers:
  - { type: kafka, topics: [] }
  - { type: kafka, id: b, topics: ["bad topic!"], ordering: keys }
  - { type: kafka, id: c, topics: [ok], condition: "steps.a.x" }
steps: [{ id: a, type: transform, value: 1 }]
"#,
    );
    let text = format!("{ps:#?}");
    assert!(text.contains("triggers[0].topics"), "{text}");
    assert!(
        text.contains("`topics` must name at least one topic"),
        "{text}"
    );
    assert!(text.contains("expected `none` or `key`"), "{text}");
    let wf = load(
            "id: x\ntriggers: [{type: kafka, topics: [orders.v1, refunds], ordering: key, filter: {body: {type: created}}}]\nsteps: [{id: a, type: transform, value: '{{ trigger.key }}'}]\n",
            Format::Yaml,
        )
        .expect("valid");
    let Trigger::Kafka(k) = &wf.triggers[0] else {
        panic!("a kafka trigger")
    };
    assert_eq!(k.id, "kafka");
    assert_eq!(k.ordering, crate::definition::KafkaOrdering::Key);
    let ps = problems(
        "id: x\ntriggers: [{type: kafka, topics: [ok], condition: 'steps.a.x'}]\nsteps: [{id: a, type: transform, value: 1}]\n",
    );
    assert!(
        ps[0].message.contains("`steps` is not available"),
        "{ps:#?}"
    );
    let ps = problems(
        "id: x\ntriggers: [{type: kafka, topics: ['bad topic!']}]\nsteps: [{id: a, type: transform, value: 1}]\n",
    );
    assert_eq!(ps[0].path, "triggers[0].topics[0]", "{ps:#?}");
}

#[test]
fn secrets_are_read_only_where_a_request_is_rendered() {
    let ps = problems("id: x\nsteps:\n  - {id: a, type: transform, value: '{{ secrets.k }}'}\n");
    assert!(
        ps[0]
            .message
            .contains("secrets are only read where a request is rendered"),
        "{ps:#?}"
    );
    let ps = problems(
        "id: x\nsteps:\n  - {id: a, type: http, url: 'https://a.example/{{ secrets[\"k\"] }}'}\n",
    );
    assert!(ps[0].message.contains("name the secret"), "{ps:#?}");
    let ok = "id: x\nsteps:\n  - {id: a, type: http, url: 'https://a.example/', headers: {authorization: 'Bearer {{ secrets.k }}'}}\n";
    assert!(crate::validate::load(ok, crate::validate::Format::Yaml).is_ok());
}

#[test]
fn hmac_auth_needs_a_preset_or_a_header_and_a_bounded_tolerance() {
    let ps = problems(
        "id: x\ntriggers:\n  - {type: webhook, auth: {type: hmac, secrets: ['{{ secrets.s }}']}}\nsteps: []\n",
    );
    assert!(ps[0].message.contains("needs a `preset`"), "{ps:#?}");
    let ps = problems(
        "id: x\ntriggers:\n  - {type: webhook, auth: {type: hmac, preset: github, header: x, secrets: ['{{ secrets.s }}']}}\nsteps: []\n",
    );
    assert!(ps[0].message.contains("fixes the scheme"), "{ps:#?}");
    let ps = problems(
        "id: x\ntriggers:\n  - {type: webhook, auth: {type: hmac, preset: stripe, tolerance: 2h, secrets: ['{{ secrets.s }}']}}\nsteps: []\n",
    );
    assert!(ps[0].message.contains("at most 1h"), "{ps:#?}");
    let ps = problems(
        "id: x\ntriggers:\n  - {type: webhook, auth: {type: hmac, header: x-sig, signed: '{timestamp}.{body}', secrets: ['{{ secrets.s }} x']}}\nsteps: []\n",
    );
    let text = format!("{ps:#?}");
    assert!(
        text.contains("name it in `timestamp_header`") || text.contains("timestamp_header"),
        "{text}"
    );
    assert!(text.contains("exactly `{{ secrets.NAME }}`"), "{text}");
    let ps = problems(
        "id: x\ntriggers:\n  - {type: webhook, ip_allowlist: ['10.0.0.0/33']}\nsteps: []\n",
    );
    assert!(ps[0].message.contains("prefix length"), "{ps:#?}");
}

const FAN_OUT: &str = r#"
id: fan
steps:
  - id: first
    type: transform
    value: 1
  - id: each
    type: map
    items: trigger.body.orders
    concurrency: 5
    steps:
      - id: get
        type: http
        url: "https://example.com/{{ item.id }}?n={{ index }}&f={{ steps.first }}"
        headers: { Authorization: "Bearer {{ secrets.TOKEN }}" }
      - id: shape
        type: transform
        value: "{{ steps.get.body }}"
  - id: both
    type: parallel
    branches:
      - id: a
        steps: [{ id: one, type: transform, value: "{{ branch }}" }]
      - id: b
        steps: [{ id: two, type: transform, value: "{{ steps.each | length }}" }]
"#;

#[test]
fn map_and_parallel_steps_load_with_their_lanes_checked() {
    let wf = load(FAN_OUT, Format::Yaml).expect("valid");
    assert_eq!(wf.steps[1].action.kind(), "map");
    assert!(crate::validate::secret_names(&wf).contains("TOKEN"));
}

#[test]
fn a_lane_takes_only_http_transform_and_fail_steps_and_no_extracts() {
    let text = FAN_OUT
        .replace(
            "      - id: shape\n        type: transform\n        value: \"{{ steps.get.body }}\"",
            "      - id: shape\n        type: approval\n      - id: keep\n        type: transform\n        value: 1\n        extract: { x: 1 }",
        )
        .replace("concurrency: 5", "concurrency: 0");
    let p = problems(&text);
    let at = |path: &str| {
        p.iter()
            .find(|x| x.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}: {p:#?}"))
            .message
            .clone()
    };
    assert!(
        at("steps[1].steps[1].type").contains("`approval` steps cannot run inside a `map` step")
    );
    assert!(at("steps[1].steps[2]").contains("no `extract`"));
    assert!(at("steps[1].concurrency").contains("1 to 50"));
}

#[test]
fn lane_templates_are_checked_against_the_lane_and_the_steps_before() {
    let text = FAN_OUT
        .replace("f={{ steps.first }}", "f={{ steps.shape }}")
        .replace("value: \"{{ branch }}\"", "value: \"{{ steps.both }}\"")
        .replace("id: b\n", "id: a\n")
        .replace(
            "type: transform\n        value: \"{{ steps.get.body }}\"",
            "type: transform\n        value: \"{{ steps.get.body }}\"\n        colour: red",
        );
    let p = problems(&text);
    let msgs: Vec<String> = p
        .iter()
        .map(|x| format!("{}: {}", x.path, x.message))
        .collect();
    let has = |s: &str| msgs.iter().any(|m| m.contains(s));
    assert!(
        has("steps[1].steps[0].url: the template reads `steps.shape`, which has not run yet"),
        "{msgs:#?}"
    );
    assert!(
        has("steps[2].branches[0].steps[0].value: the template reads `steps.both`"),
        "{msgs:#?}"
    );
    assert!(has("branch id `a` is used twice"), "{msgs:#?}");
    assert!(has("steps[1].steps[1]") && has("colour"), "{msgs:#?}");
}

#[test]
fn a_kafka_trigger_may_name_its_own_cluster_and_start_checked_field_by_field() {
    let good = r#"
id: k
triggers:
  - type: kafka
    topics: [orders]
    start: "1800000000000"
    cluster:
      bootstrap: ["kafka-1.internal:9096"]
      tls: true
      connect_timeout: 10s
      sasl: { mechanism: scram_sha_512, username: tripline, password: "{{ secrets.kafka_password }}" }
steps: [{ id: a, type: transform, value: 1 }]
"#;
    let wf = load(good, Format::Yaml).expect("valid");
    assert!(crate::validate::secret_names(&wf).contains("kafka_password"));
    let bad = good
        .replace("\"1800000000000\"", "yesterday")
        .replace("kafka-1.internal:9096", "kafka-1.internal")
        .replace("\"{{ secrets.kafka_password }}\"", "hunter2")
        .replace("tls: true", "tls: true\n      sals: 1");
    let p = problems(&bad);
    let at = |path: &str| {
        p.iter()
            .find(|x| x.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}: {p:#?}"))
            .message
            .clone()
    };
    assert!(
        at("triggers[0].start")
            .contains("use earliest, latest, an RFC 3339 time or Unix milliseconds")
    );
    assert!(at("triggers[0].cluster.bootstrap[0]").contains("is not host:port"));
    assert!(at("triggers[0].cluster.sasl.password").contains("{{ secrets.NAME }}"));
    assert!(at("triggers[0].cluster.sals").contains("did you mean `sasl`"));
}
