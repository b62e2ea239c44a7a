//! What the listings ask the stores for: the filters of runs and inbox messages, and the
//! one rule (`matches`) by which every store applies those it cannot index.

use tripline_core::{Run, Timestamp};

use crate::ports::InboxMessage;

#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub workflow: Option<String>,
    pub status: Option<tripline_core::RunStatus>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: usize,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// The id of the trigger that started it.
    pub trigger: Option<String>,
    /// Its `error_type` (`step_failed`, `template_error`, …).
    pub error_type: Option<String>,
    /// Text inside its trigger input (see [`contains_text`]).
    pub text: Option<String>,
    /// The run that started it: its parent (a `trigger_workflow` step or a flow trigger),
    /// or the run it retries.
    pub parent: Option<String>,
}

impl RunQuery {
    /// Whether `run` passes the filters beyond workflow, status and time (trigger, error
    /// type, text, parent): the one rule every store applies.
    pub fn matches(&self, run: &Run) -> bool {
        let parent = |id: &String| {
            run.parent.as_ref().is_some_and(|p| &p.run_id == id)
                || run.retry_of.as_ref().is_some_and(|r| &r.run_id == id)
        };
        self.trigger.as_ref().is_none_or(|t| &run.trigger.id == t)
            && self
                .error_type
                .as_ref()
                .is_none_or(|e| run.error_type.is_some_and(|x| x.as_str() == e))
            && self.parent.as_ref().is_none_or(parent)
            && self.text.as_ref().is_none_or(|t| {
                let input = serde_json::to_vec(&run.trigger_input).unwrap_or_default();
                contains_text(&input, t)
            })
    }

    /// Whether it has filters a store applies by reading each record ([`RunQuery::matches`]).
    pub fn reads_records(&self) -> bool {
        self.trigger.is_some()
            || self.error_type.is_some()
            || self.text.is_some()
            || self.parent.is_some()
    }
}

#[derive(Clone, Debug, Default)]
pub struct InboxQuery {
    pub workflow: Option<String>,
    pub trigger: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: usize,
    pub cursor: Option<String>,
    /// Text inside its body (see [`contains_text`]).
    pub text: Option<String>,
    /// The run whose end (flow trigger), step (`trigger_workflow`) or retry made it.
    pub run: Option<String>,
}

impl InboxQuery {
    /// Whether `m` passes the filters beyond workflow, trigger, outcome and time (text,
    /// run): the one rule every store applies.
    pub fn matches(&self, m: &InboxMessage) -> bool {
        self.run.as_ref().is_none_or(|id| {
            m.path
                .strip_prefix("/v1/runs/")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|r| r == id)
        }) && self.text.as_ref().is_none_or(|t| contains_text(&m.body, t))
    }

    /// Whether it has filters a store applies by reading each record.
    pub fn reads_records(&self) -> bool {
        self.text.is_some() || self.run.is_some()
    }
}

/// A search: `text` inside `bytes`, ignoring ASCII case (a run's input as JSON, a
/// message's raw body).
pub fn contains_text(bytes: &[u8], text: &str) -> bool {
    let needle = text.as_bytes().to_ascii_lowercase();
    needle.is_empty()
        || bytes
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(&needle))
}
