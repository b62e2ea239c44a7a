//! Triggers as the console shows them: the control API's summary of a workflow, with
//! each webhook's URL to copy and each cron schedule in words with its next fires.

use std::time::Duration;

use serde_json::{Value, json};
use tripline_core::Timestamp;
use tripline_core::time::cron::CronSchedule;
use tripline_core::time::words;

use crate::App;
use crate::ports::WorkflowRecord;

/// How far ahead next fires are looked for.
const HORIZON: Duration = Duration::from_secs(400 * 86_400);

/// A workflow's summary (see [`crate::http::control::summary`]) with `copy_url` on
/// webhooks (the public URL, or the path when the server has none: the page's script
/// puts the page's origin before it), and `words` and `next` on cron triggers.
pub(super) fn described(app: &App, rec: &WorkflowRecord, now: Timestamp) -> Value {
    let mut v = crate::http::control::summary(rec);
    if let Some(triggers) = v["triggers"].as_array_mut() {
        for t in triggers {
            if let (Some("webhook"), Some(path)) = (t["type"].as_str(), t["url"].as_str()) {
                t["copy_url"] = json!(format!(
                    "{}{path}",
                    app.config.public_url.trim_end_matches('/')
                ));
            }
            if let Some(expr) = t["schedule"].as_str().map(str::to_string) {
                let zone = t["timezone"].as_str().filter(|z| *z != "UTC");
                let fires = next(&expr, zone, now, 3);
                t["words"] = json!(words::describe(&expr));
                t["next"] = json!(fires);
            }
        }
    }
    v
}

/// The next `n` fire times of a schedule, as RFC 3339 in UTC.
fn next(expr: &str, zone: Option<&str>, now: Timestamp, n: usize) -> Vec<String> {
    CronSchedule::parse(expr, zone)
        .map(|s| {
            s.fire_times(now, now.plus(HORIZON), n)
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The next `n` cron fires among all enabled workflows and triggers, soonest first.
pub(super) fn next_fires(app: &App, now: Timestamp, n: usize) -> Vec<Value> {
    let mut fires: Vec<(Timestamp, Value)> = Vec::new();
    for rec in app.deployments.all() {
        for t in &rec.definition.triggers {
            let tripline_core::definition::Trigger::Cron(c) = t else {
                continue;
            };
            if !rec.is_on(&c.id) {
                continue;
            }
            let Ok(s) = CronSchedule::parse(&c.schedule, c.timezone.as_deref()) else {
                continue;
            };
            for at in s.fire_times(now, now.plus(HORIZON), n) {
                fires.push((
                    at,
                    json!({"workflow": rec.id, "trigger": c.id, "at": at.to_string(),
                           "words": words::describe(&c.schedule)}),
                ));
            }
        }
    }
    fires.sort_by_key(|f| f.0);
    fires.into_iter().take(n).map(|f| f.1).collect()
}
