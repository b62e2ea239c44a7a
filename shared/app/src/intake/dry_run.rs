//! A dry run of a changed definition (`POST /v1/workflows/{id}/dry-run`): the workflow's
//! last inbox messages matched against the new definition's triggers, through the same
//! gates reprocessing uses (filter, condition; a cron tick's condition), without recording
//! or starting anything. It says which messages would now start a run and why the others
//! would not, beside what happened to each when it arrived.

use serde::Serialize;
use serde_json::Value;
use tripline_core::validate::Format;

use crate::App;
use crate::deploy::{DeployError, parse_definition};
use crate::ports::{InboxMessage, InboxQuery, Outcome, StoreError, WorkflowRecord};

/// What the new definition would do with one message.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DryRunItem {
    pub message_id: String,
    pub received_at: tripline_core::Timestamp,
    pub trigger: String,
    /// What happened when it arrived: `started`, `filtered`, `rejected`, …
    pub was: &'static str,
    /// What would happen now: `starts`, `filtered`, `rejected`, or `no_trigger`.
    pub now: &'static str,
    /// Why it would not start (the filter or condition that failed, and where).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The dry run's answer.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DryRun {
    pub workflow: String,
    pub checked: usize,
    pub would_start: usize,
    /// Messages whose fate changes: filtered before and starting now, or the reverse.
    pub changed: usize,
    pub items: Vec<DryRunItem>,
}

#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("the definition is invalid")]
    Invalid(Vec<tripline_core::validate::Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl App {
    /// Matches the last `limit` inbox messages of workflow `id` against the definition
    /// `text` (validated as a deploy would); records nothing.
    pub async fn dry_run(
        &self,
        id: &str,
        text: &str,
        format: Format,
        limit: usize,
    ) -> Result<DryRun, DryRunError> {
        let (definition, source) =
            parse_definition(text, format, Some(id)).map_err(|e| match e {
                DeployError::Invalid(p) => DryRunError::Invalid(p),
                DeployError::Store(e) => DryRunError::Store(e),
                DeployError::Conflict => DryRunError::Store(StoreError::Conflict),
            })?;
        let rec = WorkflowRecord {
            id: id.to_string(),
            revision: 0,
            definition,
            source,
            deployed_at: self.clock.now(),
            removed: false,
            switches: Default::default(),
        };
        let query = InboxQuery {
            workflow: Some(id.to_string()),
            limit,
            ..InboxQuery::default()
        };
        let page = self.store.messages(&query).await?;
        let items: Vec<DryRunItem> = page
            .items
            .iter()
            // Retries and child runs' messages are not trigger inputs.
            .filter(|m| !matches!(m.trigger.as_str(), "retry" | "workflow"))
            .map(|m| self.would(&rec, m))
            .collect();
        let would_start = items.iter().filter(|i| i.now == "starts").count();
        let changed = items
            .iter()
            .filter(|i| (i.now == "starts") != matches!(i.was, "started" | "duplicate"))
            .count();
        Ok(DryRun {
            workflow: id.to_string(),
            checked: items.len(),
            would_start,
            changed,
            items,
        })
    }

    /// What `rec` would do with message `m`.
    fn would(&self, rec: &WorkflowRecord, m: &InboxMessage) -> DryRunItem {
        let (now, reason) = if let Some(scheduled) = m.scheduled_at {
            tick_again(rec, m, scheduled)
        } else {
            let mut copy = m.clone();
            let trigger = rec.definition.triggers.iter().find(|t| t.id() == m.trigger);
            match self.match_again(rec, trigger, m, &mut copy) {
                Ok(Ok(_)) => ("starts", None),
                Ok(Err(Outcome::Filtered { reason })) => ("filtered", Some(reason)),
                Ok(Err(other)) => ("rejected", reason_of(&other)),
                Err(why) => ("no_trigger", Some(why.to_string())),
            }
        };
        DryRunItem {
            message_id: m.id.clone(),
            received_at: m.received_at,
            trigger: m.trigger.clone(),
            was: m.outcome.kind(),
            now,
            reason,
        }
    }
}

/// A cron tick against the new definition: its trigger must still be there, and its
/// condition holds for the tick's input.
fn tick_again(
    rec: &WorkflowRecord,
    m: &InboxMessage,
    scheduled: tripline_core::Timestamp,
) -> (&'static str, Option<String>) {
    let Some(cron) = crate::intake::cron::cron_trigger(rec, &m.trigger) else {
        let why = format!("the new definition has no cron trigger `{}`", m.trigger);
        return ("no_trigger", Some(why));
    };
    let input: Value = serde_json::from_slice(&m.body).unwrap_or(Value::Null);
    match crate::admission::unmet(None, cron.condition.as_deref(), &input) {
        Some(why) => {
            let at = scheduled.to_string();
            ("filtered", Some(format!("the tick of {at}: {why}")))
        }
        None => ("starts", None),
    }
}

fn reason_of(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Filtered { reason }
        | Outcome::Rejected { reason }
        | Outcome::Skipped { reason }
        | Outcome::Missed { reason } => Some(reason.clone()),
        _ => None,
    }
}
