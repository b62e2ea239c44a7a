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
    CronTrigger, CustomReply, FlowTrigger, HmacAuth, KafkaTrigger, MAX_SIGNATURE_TOLERANCE,
    Trigger, WebhookAuth, WebhookTrigger,
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
            Trigger::Once(o) => {
                if let Err(e) = o.instant() {
                    c.at(&join(path, "at"), e.0);
                }
            }
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
    if let Some(start) = &k.start
        && let Err(e) = start.parse::<crate::definition::KafkaStart>()
    {
        c.at(&join(path, "start"), e);
    }
    if let Some(cluster) = &k.cluster {
        check_kafka_cluster(c, &join(path, "cluster"), cluster);
    }
}

fn check_kafka_cluster(c: &mut Collector, path: &str, cluster: &crate::definition::KafkaCluster) {
    if cluster.bootstrap.is_empty() {
        c.at(
            &join(path, "bootstrap"),
            "`bootstrap` must name at least one broker, as host:port",
        );
    }
    for (i, b) in cluster.bootstrap.iter().enumerate() {
        let port_ok = b.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            c.at(
                &format!("{}[{i}]", join(path, "bootstrap")),
                format!("`{b}` is not host:port"),
            );
        }
    }
    if cluster
        .connect_timeout
        .is_some_and(|t| t.std().is_zero() || t.std() > std::time::Duration::from_secs(300))
    {
        c.at(
            &join(path, "connect_timeout"),
            "`connect_timeout` is from 1ms to 5m",
        );
    }
    if let Some(sasl) = &cluster.sasl {
        let pp = join(&join(path, "sasl"), "password");
        if crate::secrets::reference(&sasl.password).is_none() {
            c.at(
                &pp,
                "the password is a secret, written `{{ secrets.NAME }}` (set it with `tripline secrets set NAME`), so that it never sits in a definition",
            );
        }
        if sasl.username.is_empty() {
            c.at(
                &join(&join(path, "sasl"), "username"),
                "`username` must not be empty",
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
    check_ip_allowlist(c, path, &w.ip_allowlist);
    if let Some(reply) = &w.reply {
        check_reply(c, &join(path, "reply"), reply);
    }
}

fn check_auth(c: &mut Collector, path: &str, auth: &WebhookAuth) {
    let ap = join(path, "auth");
    // Each credential is `{{ secrets.NAME }}` or a value written inline; a value is held
    // to the checks below, a reference when it is used.
    for (field, value) in auth.credentials() {
        if crate::secrets::reference(value).is_none() && value.contains("{{") {
            c.at(
                &join(&ap, &field),
                "a credential is a value or exactly `{{ secrets.NAME }}` (a secret's name, nothing around it)",
            );
        }
    }
    let inline = |v: &str| crate::secrets::reference(v).is_none();
    match auth {
        WebhookAuth::ApiKey { header, keys } => {
            if keys.is_empty() || keys.iter().any(|k| inline(k) && k.len() < 16) {
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
            if username.is_empty()
                || username.contains(':')
                || (inline(password) && password.len() < 8)
            {
                c.at(&ap, "basic auth needs a username without `:` and a password of 8 characters or more");
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
                if inline(s) && !s.contains("{{") && !valid_callback_secret(s) {
                    c.at(
                        &format!("{}[{i}]", join(path, "auth.secrets")),
                        "a signing secret is `whsec_` followed by the base64 of 24 to 64 random bytes",
                    );
                }
            }
            check_tolerance(c, &join(path, "auth.tolerance"), *tolerance);
        }
        WebhookAuth::Hmac(h) => check_hmac(c, &ap, h),
        WebhookAuth::None => {}
    }
}

fn check_tolerance(c: &mut Collector, path: &str, tolerance: crate::time::Duration) {
    if tolerance.std().is_zero() || tolerance.std() > MAX_SIGNATURE_TOLERANCE {
        c.at(
            path,
            "`tolerance` is how far a signed timestamp may be from now: longer than zero and at most 1h (replays within it are recognized by their delivery id)",
        );
    }
}

fn check_hmac(c: &mut Collector, ap: &str, h: &HmacAuth) {
    if h.secrets.is_empty() {
        c.at(
            &join(ap, "secrets"),
            "`secrets` needs at least one signing secret, e.g. `{{ secrets.github_hook }}`",
        );
    }
    if let Some(t) = h.tolerance {
        check_tolerance(c, &join(ap, "tolerance"), t);
    }
    let generic = [
        ("header", h.header.is_some()),
        ("algorithm", h.algorithm.is_some()),
        ("encoding", h.encoding.is_some()),
        ("prefix", h.prefix.is_some()),
        ("signed", h.signed.is_some()),
        ("timestamp_header", h.timestamp_header.is_some()),
        ("id_header", h.id_header.is_some()),
    ];
    if let Some(preset) = h.preset {
        for (field, given) in generic {
            if given {
                c.at(
                    &join(ap, field),
                    format!("the `{}` preset fixes the scheme; leave out `{field}`, or leave out `preset` and describe the scheme field by field", preset.as_str()),
                );
            }
        }
        return;
    }
    match &h.header {
        None => c.at(
            ap,
            "an `hmac` auth needs a `preset` (github, stripe, slack, shopify) or the `header` that carries the signature",
        ),
        Some(name) => {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                c.at(&join(ap, "header"), format!("`{name}` is not a valid header name"));
            }
        }
    }
    for (field, value) in [
        ("timestamp_header", &h.timestamp_header),
        ("id_header", &h.id_header),
    ] {
        if let Some(name) = value
            && http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            c.at(
                &join(ap, field),
                format!("`{name}` is not a valid header name"),
            );
        }
    }
    let signed = h.signed.as_deref().unwrap_or("{body}");
    if !signed.contains("{body}") {
        c.at(
            &join(ap, "signed"),
            "`signed` must contain `{body}` (the raw body), e.g. `{timestamp}.{body}`",
        );
    }
    let rest = signed.replace("{body}", "").replace("{timestamp}", "");
    if rest.contains('{') || rest.contains('}') {
        c.at(
            &join(ap, "signed"),
            "`signed` knows two placeholders: `{body}` and `{timestamp}`",
        );
    }
    if signed.contains("{timestamp}") && h.timestamp_header.is_none() {
        c.at(
            &join(ap, "timestamp_header"),
            "`signed` reads `{timestamp}`: name the header it comes from in `timestamp_header`",
        );
    }
}

fn check_ip_allowlist(c: &mut Collector, path: &str, list: &[String]) {
    for (i, entry) in list.iter().enumerate() {
        if let Err(why) = crate::net::Cidr::parse(entry) {
            c.at(&format!("{}[{i}]", join(path, "ip_allowlist")), why);
        }
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
