//! Triggers: ids, gates (conditions and keys are templates over `trigger`), and what each
//! kind needs (topics, a flow's source, a schedule, a webhook's token, auth and reply).

use std::collections::HashSet;

use super::templates::{
    REPLY_ROOTS, Scope, TRIGGER_ROOTS, check_expression, check_string_template,
    check_value_template,
};
use super::valid_workflow_id;
use super::{Collector, valid_callback_secret, valid_identifier, valid_token, valid_topic};
use crate::definition::{
    CronTrigger, CustomReply, FlowTrigger, KafkaTrigger, Trigger, WebhookAuth, WebhookTrigger,
};
use crate::source::join;

pub(super) fn check_triggers(c: &mut Collector, triggers: &[(String, Trigger)]) {
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    for (path, t) in triggers {
        if !ids.insert(t.id().to_string()) {
            c.at(
                &join(path, "id"),
                format!(
                    "trigger id `{}` is used twice; give each trigger its own `id`",
                    t.id()
                ),
            );
        }
        if !valid_identifier(t.id()) {
            c.at(
                &join(path, "id"),
                format!(
                    "`{}` is not a valid trigger id: use letters, digits and `_`",
                    t.id()
                ),
            );
        }
        check_gate(c, path, t);
        match t {
            Trigger::Kafka(k) => check_kafka(c, path, k),
            Trigger::Flow(f) => check_flow(c, path, f),
            Trigger::Cron(cron) => check_cron(c, path, cron),
            Trigger::Webhook(w) => check_webhook(c, path, w, &mut tokens),
            Trigger::Manual(_) => {}
        }
    }
}

/// A trigger's condition and idempotency key are templates over `trigger`.
fn check_gate(c: &mut Collector, path: &str, t: &Trigger) {
    let scope = Scope {
        roots: TRIGGER_ROOTS,
        steps_before: &[],
        all_steps: &[],
    };
    let gate = t.gate();
    if let Some(cond) = gate.condition {
        check_expression(c, cond, &join(path, "condition"), &scope);
    }
    if let Some(key) = gate.idempotency_key {
        check_string_template(c, key, &join(path, "idempotency_key"), &scope);
    }
}

fn check_kafka(c: &mut Collector, path: &str, k: &KafkaTrigger) {
    if k.topics.is_empty() {
        c.at(
            &join(path, "topics"),
            "`topics` must name at least one topic",
        );
    }
    for (i, topic) in k.topics.iter().enumerate() {
        if !valid_topic(topic) {
            c.at(
                &format!("{}[{i}]", join(path, "topics")),
                format!("`{topic}` is not a Kafka topic name: use 1 to 249 of a-z A-Z 0-9 . _ -"),
            );
        }
    }
}

fn check_flow(c: &mut Collector, path: &str, f: &FlowTrigger) {
    if !valid_workflow_id(&f.workflow) {
        c.at(
            &join(path, "workflow"),
            format!("`{}` is not a workflow id", f.workflow),
        );
    }
    if f.on.is_empty() {
        c.at(
            &join(path, "on"),
            "`on` must name at least one of succeeded, failed, timed_out, cancelled",
        );
    }
}

fn check_cron(c: &mut Collector, path: &str, cron: &CronTrigger) {
    if let Err(e) = cron.parsed() {
        let field = if e.contains("time zone") {
            "timezone"
        } else {
            "schedule"
        };
        c.at(&join(path, field), e);
    }
}

fn check_webhook(c: &mut Collector, path: &str, w: &WebhookTrigger, tokens: &mut HashSet<String>) {
    if let Some(token) = &w.token {
        if !valid_token(token) {
            c.at(&join(path, "token"), "a webhook token needs 22 to 128 characters of A-Z a-z 0-9 - _ (at least 128 random bits); leave it out to have one generated");
        } else if !tokens.insert(token.clone()) {
            c.at(
                &join(path, "token"),
                "this token is used by another trigger of the workflow",
            );
        }
    }
    if w.methods.is_empty() {
        c.at(
            &join(path, "methods"),
            "`methods` must name at least one HTTP method",
        );
    }
    check_auth(c, path, &w.auth);
    if let Some(reply) = &w.reply {
        check_reply(c, &join(path, "reply"), reply);
    }
}

fn check_auth(c: &mut Collector, path: &str, auth: &WebhookAuth) {
    match auth {
        WebhookAuth::ApiKey { header, keys } => {
            if keys.is_empty() || keys.iter().any(|k| k.len() < 16) {
                c.at(
                    &join(path, "auth.keys"),
                    "`keys` needs at least one key of 16 characters or more",
                );
            }
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                c.at(
                    &join(path, "auth.header"),
                    format!("`{header}` is not a valid header name"),
                );
            }
        }
        WebhookAuth::Basic { username, password } => {
            if username.is_empty() || username.contains(':') || password.len() < 8 {
                c.at(&join(path, "auth"), "basic auth needs a username without `:` and a password of 8 characters or more");
            }
        }
        WebhookAuth::StandardWebhooks { secrets, tolerance } => {
            if secrets.is_empty() {
                c.at(
                    &join(path, "auth.secrets"),
                    "`secrets` needs at least one `whsec_…` secret",
                );
            }
            for (i, s) in secrets.iter().enumerate() {
                if !valid_callback_secret(s) {
                    c.at(
                        &format!("{}[{i}]", join(path, "auth.secrets")),
                        "a signing secret is `whsec_` followed by the base64 of 24 to 64 random bytes",
                    );
                }
            }
            if tolerance.std().is_zero() {
                c.at(
                    &join(path, "auth.tolerance"),
                    "`tolerance` must be longer than zero",
                );
            }
        }
        WebhookAuth::None => {}
    }
}

fn check_reply(c: &mut Collector, rp: &str, reply: &CustomReply) {
    if let Some(s) = reply.status
        && !(100..=599).contains(&s)
    {
        c.at(&join(rp, "status"), format!("{s} is not an HTTP status"));
    }
    let reply_scope = Scope {
        roots: REPLY_ROOTS,
        steps_before: &[],
        all_steps: &[],
    };
    for (name, v) in &reply.headers {
        let hp = join(&join(rp, "headers"), name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.at(&hp, format!("`{name}` is not a valid header name"));
        }
        check_string_template(c, v, &hp, &reply_scope);
    }
    if let Some(body) = &reply.body {
        check_value_template(c, body, &join(rp, "body"), &reply_scope);
    }
}
