//! Bulk jobs: retry runs, cancel runs, or reprocess inbox messages, every one a listing's
//! filters select (`POST /v1/jobs`). The items are chosen when the job is made (at most
//! [`JOB_MAX_ITEMS`]) and kept in its record; the job is then done a chunk at a time by
//! work items on the queue (`job:{id}`), so that it survives a restart and goes on where
//! it was. An item done again (a chunk delivered twice after a crash) starts nothing new:
//! retries and reprocessings carry the idempotency key `job:{id}`, and a cancel is
//! cancelled once.

use serde::{Deserialize, Serialize};
use tripline_core::Timestamp;
use tripline_core::retry::RetryFrom;

use crate::App;
use crate::executor::CancelError;
use crate::intake::reprocess::ReprocessError;
use crate::intake::retry::{RetryError, RetryRequest, RetryRevision};
use crate::ports::{InboxQuery, Outcome, RunQuery, StoreError, WorkItem};

/// The most items one job takes: narrow the filter (a time range) for more.
pub const JOB_MAX_ITEMS: usize = 2000;
/// Items done per work item before the job's record is written and the next one sent.
const JOB_CHUNK: usize = 50;

/// What a job does to each item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum JobAction {
    Retry {
        #[serde(default)]
        from: RetryFrom,
        #[serde(default)]
        revision: RetryRevision,
    },
    Cancel,
    Reprocess,
}

impl JobAction {
    fn on_runs(&self) -> bool {
        !matches!(self, JobAction::Reprocess)
    }
}

/// What happened to one item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobItem {
    /// The run or message acted on.
    pub id: String,
    /// `started` (a new run), `duplicate` (done before: the run it started then),
    /// `filtered` (a reprocessed message that starts nothing now), `cancelled`,
    /// `already_ended`, or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A bulk job's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Job {
    pub id: String,
    #[serde(flatten)]
    pub action: JobAction,
    /// The filters as given.
    pub filter: serde_json::Value,
    /// `running` or `done`.
    pub status: String,
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    /// The items chosen, in order; `results` has one entry for each done so far. Kept in
    /// the record, not shown.
    #[schemars(skip)]
    pub targets: Vec<String>,
    pub results: Vec<JobItem>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(skip)]
    pub version: u64,
}

/// What a job would touch, or touches.
pub enum Selection {
    Runs(RunQuery),
    Messages(InboxQuery),
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The filter selects too much, or nothing acts on it; the text says what to do.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl App {
    /// The ids a selection picks, newest first; `Refused` past [`JOB_MAX_ITEMS`].
    pub async fn select(&self, selection: Selection) -> Result<Vec<String>, JobError> {
        let mut ids = Vec::new();
        match selection {
            Selection::Runs(mut q) => loop {
                q.limit = 500;
                let page = self.store.runs(&q).await?;
                ids.extend(page.items.into_iter().map(|r| r.id));
                q.cursor = page.next_cursor;
                if q.cursor.is_none() || ids.len() > JOB_MAX_ITEMS {
                    break;
                }
            },
            Selection::Messages(mut q) => loop {
                q.limit = 500;
                let page = self.store.messages(&q).await?;
                ids.extend(page.items.into_iter().map(|m| m.id));
                q.cursor = page.next_cursor;
                if q.cursor.is_none() || ids.len() > JOB_MAX_ITEMS {
                    break;
                }
            },
        }
        if ids.len() > JOB_MAX_ITEMS {
            return Err(JobError::Refused(format!(
                "the filter selects more than {JOB_MAX_ITEMS} items; narrow it (a workflow, a status, a time range with since/until) and make several jobs"
            )));
        }
        Ok(ids)
    }

    /// Records a job over `targets` and sends its first work item.
    pub async fn start_job(
        &self,
        action: JobAction,
        filter: serde_json::Value,
        targets: Vec<String>,
    ) -> Result<Job, JobError> {
        let now = self.clock.now();
        let empty = targets.is_empty();
        let mut job = Job {
            id: self.new_id(),
            action,
            filter,
            // Nothing selected: done as it is made.
            status: if empty { "done" } else { "running" }.into(),
            total: targets.len(),
            done: 0,
            failed: 0,
            targets,
            results: Vec::new(),
            created_at: now,
            finished_at: empty.then_some(now),
            version: 0,
        };
        self.save_job(&mut job).await?;
        if !empty {
            self.queue
                .send(&WorkItem::job(&job.id), std::time::Duration::ZERO)
                .await?;
        }
        tracing::info!(job = %job.id, total = job.total, "bulk job started");
        Ok(job)
    }

    pub async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let Some((value, version)) = self.store.job(id).await? else {
            return Ok(None);
        };
        let mut job: Job = serde_json::from_value(value).map_err(|e| {
            StoreError::Unavailable(format!("job `{id}` is unreadable: {e}").into())
        })?;
        job.version = version;
        Ok(Some(job))
    }

    async fn save_job(&self, job: &mut Job) -> Result<(), StoreError> {
        let value = serde_json::to_value(&*job)
            .map_err(|e| StoreError::Unavailable(format!("job `{}`: {e}", job.id).into()))?;
        job.version = self
            .store
            .save_job(&job.id, value, job.version, self.clock.now())
            .await?;
        Ok(())
    }

    /// Does the job's next chunk, writes how far it got, and sends the next work item
    /// while items are left. A conflict (another delivery of the same chunk got there
    /// first) drops this one's results: its items were done under the same keys.
    pub async fn job_step(&self, id: &str) -> Result<(), StoreError> {
        let Some(mut job) = self.job(id).await? else {
            tracing::warn!(job = %id, "a work item for a job that is not recorded; dropped");
            return Ok(());
        };
        let start = job.results.len();
        let chunk: Vec<String> = job
            .targets
            .iter()
            .skip(start)
            .take(JOB_CHUNK)
            .cloned()
            .collect();
        for target in chunk {
            let item = self.job_item(&job, &target).await?;
            if item.result == "failed" {
                job.failed += 1;
            } else {
                job.done += 1;
            }
            job.results.push(item);
        }
        let more = job.results.len() < job.targets.len();
        if !more {
            job.status = "done".into();
            job.finished_at = Some(self.clock.now());
        }
        match self.save_job(&mut job).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Ok(()),
            Err(e) => return Err(e),
        }
        if more {
            self.queue
                .send(&WorkItem::job(id), std::time::Duration::ZERO)
                .await?;
        } else {
            tracing::info!(job = %id, done = job.done, failed = job.failed, "bulk job done");
        }
        Ok(())
    }

    /// Acts on one item; a store failure is returned (the chunk is delivered again).
    async fn job_item(&self, job: &Job, target: &str) -> Result<JobItem, StoreError> {
        let key = format!("job:{}", job.id);
        let item = |result: &str, run_id: Option<String>, error: Option<String>| JobItem {
            id: target.to_string(),
            result: result.into(),
            run_id,
            error,
        };
        Ok(match &job.action {
            JobAction::Retry { from, revision } => {
                let req = RetryRequest {
                    from: *from,
                    revision: *revision,
                    key: Some(key),
                };
                match self.retry(target, &req).await {
                    Ok(r) if r.duplicate => item("duplicate", Some(r.run_id), None),
                    Ok(r) => item("started", Some(r.run_id), None),
                    Err(RetryError::Store(e)) => return Err(e),
                    Err(e) => item("failed", None, Some(e.to_string())),
                }
            }
            JobAction::Cancel => match self.cancel_run(target).await {
                Ok(_) => item("cancelled", None, None),
                Err(CancelError::Ended(status)) => item(
                    "already_ended",
                    None,
                    Some(format!("it had ended {}", status.as_str())),
                ),
                Err(CancelError::Store(e)) => return Err(e),
                Err(e) => item("failed", None, Some(e.to_string())),
            },
            JobAction::Reprocess => {
                let Some(message) = self.store.message(target).await? else {
                    return Ok(item("failed", None, Some(format!("no message `{target}`"))));
                };
                match self.reprocess_once(&message, Some(&key)).await {
                    Ok(r) => match r.outcome {
                        Outcome::Started { run_ids } => {
                            item("started", run_ids.into_iter().next(), None)
                        }
                        Outcome::Duplicate { run_id } => item("duplicate", Some(run_id), None),
                        other => item("filtered", None, outcome_reason(&other)),
                    },
                    Err(ReprocessError::Store(e)) => return Err(e),
                    Err(e) => item("failed", None, Some(e.to_string())),
                }
            }
        })
    }
}

impl Job {
    /// Whether its items are runs (retry, cancel) rather than inbox messages.
    pub fn on_runs(&self) -> bool {
        self.action.on_runs()
    }
}

fn outcome_reason(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Filtered { reason }
        | Outcome::Rejected { reason }
        | Outcome::Skipped { reason }
        | Outcome::Missed { reason } => Some(reason.clone()),
        _ => None,
    }
}
