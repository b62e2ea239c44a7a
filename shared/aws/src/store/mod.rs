//! The [`Store`] on DynamoDB, with S3 for what does not fit in an item. The key design and
//! the reason for every key and index are in `infra/dynamodb.md`.
//!
//! Where things are: the `Store` methods (here), admission (`admit.rs`), one item for a
//! message and its run (`joined.rs`), item encoding and S3 offload (`items.rs`), listings
//! by time over the sharded index (`listing.rs`).

mod admit;
mod audit;
pub mod index;
mod items;
mod joined;
mod listing;

use listing::{KeepMessage, KeepRun};

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use tripline_app::ports::{
    Admission, Admitted, AuditEntry, AuditQuery, InboxMessage, InboxQuery, Outcome, Page, RunQuery,
    SavedState, Slots, Store, StoreError, WorkflowRecord,
};
use tripline_core::{Run, RunStatus, Timestamp};

use crate::settings::Settings;

type Item = HashMap<String, AttributeValue>;

/// How many partitions each index of the inbox table spreads its writes over (`by_time`
/// all messages, `by_workflow` each workflow's); a listing queries them all and merges. An
/// index partition takes 1,000 writes a second, and DynamoDB cannot split one whose sort
/// key only grows (ours begin with the time): 16 carry 16,000 new messages a second, and
/// as many of one workflow (infra/capacity.md). Runs are listed from the index table's
/// pages instead (`index.rs`).
pub const SHARDS: u64 = 16;

/// Run records longer than this are stored deflated (when that is smaller).
const DEFLATE_OVER: usize = 512;

/// The largest run record inflated back (a corrupt or hostile item cannot exhaust memory).
const MAX_RUN_BYTES: usize = 256 * 1024 * 1024;

/// DynamoDB + S3 store.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    db: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    settings: Settings,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

use crate::store_error as failed;

/// An error that is not an AWS service's answer (building a request, reading a body).
fn other(op: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    let said = aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string();
    StoreError::Unavailable(Box::new(crate::AwsError {
        op: op.to_string(),
        said,
        cause: Box::new(e),
    }))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("a stored {what} could not be read: {e}").into())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The sort key of the time indexes: the time, zero-padded so that strings sort like
/// numbers, then the id to make it unique.
fn time_key(at: Timestamp, id: &str) -> String {
    format!("{:013}#{id}", at.millis().max(0))
}

fn time_prefix(at: Timestamp) -> String {
    format!("{:013}", at.millis().max(0))
}

/// True when the item is past its TTL (`expires`, Unix seconds): DynamoDB deletes such
/// items within days, not at once, and their S3 bodies may be gone already; they are
/// read as deleted.
fn expired(item: &Item) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    get_n(item, "expires").is_some_and(|e| e <= i64::try_from(now).unwrap_or(i64::MAX))
}

/// A stable shard of an id (FNV-1a), so that a record's shard never changes.
fn shard(id: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % SHARDS).to_string()
}

/// The `by_workflow` partition of a record: its workflow and its id's shard, so that one
/// busy workflow's records spread over [`SHARDS`] partitions (see infra/capacity.md).
fn workflow_key(workflow: &str, id: &str) -> String {
    format!("{workflow}#{}", shard(id))
}

/// Which index and partitions a listing reads.
struct Listing<'a> {
    table: &'a str,
    /// `Some(workflow)`: the `by_workflow` index; `None`: every shard of `by_time`.
    workflow: Option<&'a str>,
    sort_key: &'a str,
    /// Another table's indexes (table, sort key) whose entries also list items of `table`
    /// by id: messages listed through the run that took their id (`message_item`'s
    /// `by_run`). Such an entry counts only for an item without index keys of its own.
    through: Option<(&'a str, &'a str)>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    cursor: Option<String>,
    limit: usize,
}

fn conditional_failed<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// True when a transaction was cancelled because one of its conditions failed.
fn transaction_condition_failed(
    e: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
) -> bool {
    match e {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => c
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ConditionalCheckFailed")),
        _ => false,
    }
}

fn put(
    table: &str,
    item: Item,
    condition: Option<(&str, Item)>,
) -> Result<TransactWriteItem, StoreError> {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    if let Some((expr, values)) = condition {
        p = p.condition_expression(expr);
        if !values.is_empty() {
            p = p.set_expression_attribute_values(Some(values));
        }
    }
    Ok(TransactWriteItem::builder()
        .put(p.build().map_err(|e| other("TransactWriteItems", e))?)
        .build())
}

#[async_trait]
impl Store for DynamoStore {
    async fn deploy(&self, record: &WorkflowRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(record).map_err(|e| corrupt("workflow", e))?;
        if doc.len() > self.settings.item_budget {
            return Err(StoreError::Unavailable(
                format!(
                    "the workflow definition is {} bytes; at most {} fit in a record",
                    doc.len(),
                    self.settings.item_budget
                )
                .into(),
            ));
        }
        let table = &self.settings.workflows_table;
        let revision_item = Item::from([
            ("id".into(), s(&record.id)),
            ("rev".into(), n(record.revision)),
            ("at".into(), n(record.deployed_at.millis())),
            ("doc".into(), s(&doc)),
        ]);
        let head = Item::from([
            ("id".into(), s(&record.id)),
            ("rev".into(), n(0)),
            ("latest".into(), n(record.revision)),
            ("at".into(), n(record.deployed_at.millis())),
            ("doc".into(), s(&doc)),
        ]);
        let head_condition = if record.revision <= 1 {
            ("attribute_not_exists(id)", Item::new())
        } else {
            (
                "latest = :prev",
                Item::from([(":prev".into(), n(record.revision - 1))]),
            )
        };
        let result = self
            .db
            .transact_write_items()
            .transact_items(put(
                table,
                revision_item,
                Some(("attribute_not_exists(id)", Item::new())),
            )?)
            .transact_items(put(table, head, Some(head_condition))?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(se) if transaction_condition_failed(se) => Err(StoreError::Conflict),
                _ => Err(failed("TransactWriteItems (deploy)", e)),
            },
        }
    }

    async fn latest_workflows(&self) -> Result<Vec<WorkflowRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .db
                .scan()
                .table_name(&self.settings.workflows_table)
                .filter_expression("rev = :zero")
                .expression_attribute_values(":zero", n(0))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("Scan (workflows)", e))?;
            for item in page.items.unwrap_or_default() {
                if let Some(doc) = get_s(&item, "doc") {
                    out.push(serde_json::from_str(doc).map_err(|e| corrupt("workflow", e))?);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        out.sort_by(|a: &WorkflowRecord, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn workflow(
        &self,
        id: &str,
        revision: Option<u32>,
    ) -> Result<Option<WorkflowRecord>, StoreError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.settings.workflows_table)
            .key("id", s(id))
            .key("rev", n(revision.unwrap_or(0)))
            .send()
            .await
            .map_err(|e| failed("GetItem (workflow)", e))?;
        out.item
            .as_ref()
            .and_then(|i| get_s(i, "doc"))
            .map(|doc| serde_json::from_str(doc).map_err(|e| corrupt("workflow", e)))
            .transpose()
    }

    async fn revisions(&self, id: &str) -> Result<Vec<(u32, Timestamp)>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .db
                .query()
                .table_name(&self.settings.workflows_table)
                .key_condition_expression("id = :id AND rev > :zero")
                .expression_attribute_values(":id", s(id))
                .expression_attribute_values(":zero", n(0))
                .projection_expression("rev, #at")
                .expression_attribute_names("#at", "at")
                .scan_index_forward(false)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("Query (revisions)", e))?;
            for item in page.items.unwrap_or_default() {
                if let (Some(rev), Some(at)) = (get_n(&item, "rev"), get_n(&item, "at")) {
                    out.push((rev as u32, Timestamp(at)));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn admit(&self, admission: Admission) -> Result<Admitted, StoreError> {
        let Admission {
            message,
            runs,
            idempotency,
        } = admission;
        let to_enqueue: Vec<String> = runs
            .iter()
            .filter(|r| r.status == RunStatus::Queued)
            .map(|r| r.id.clone())
            .collect();
        let mut run_items = Vec::with_capacity(runs.len());
        for run in &runs {
            run_items.push(self.run_item(run).await?);
        }
        // A claim the message's own item holds for longer is not written: the message is
        // admitted only where none has its id (a cron tick's claim, while retention is
        // longer than its window: 4 write units of its transaction saved).
        let idempotency = idempotency.filter(|c| !self.held_by_message(c, &message));
        // One item for the message and its run, where they fit one (`joined.rs`).
        let joined = match (runs.as_slice(), run_items.as_slice()) {
            ([run], [item]) => self.joined_item(run, item, &message),
            _ => None,
        };
        let (Some(claim), Some(first)) = (&idempotency, runs.first()) else {
            let admitted = match joined {
                Some(item) => self.admit_joined(&message, item).await?,
                None => self.admit_in_order(&message, run_items).await?,
            };
            return Ok(admitted.unwrap_or(Admitted::New { to_enqueue }));
        };
        let runs_table = &self.settings.runs_table;
        let writes = match joined {
            Some(item) => vec![(runs_table.clone(), item)],
            None => {
                let by_run = admit::listed_by_run(&message, &run_items);
                let inbox = self.settings.inbox_table.clone();
                let message_item = self.message_item(&message, by_run).await?;
                std::iter::once((inbox, message_item))
                    .chain(run_items.into_iter().map(|i| (runs_table.clone(), i)))
                    .collect()
            }
        };
        let first = first.id.clone();
        match self.admit_claimed(claim, &first, message, writes).await? {
            Some(duplicate) => Ok(duplicate),
            None => Ok(Admitted::New { to_enqueue }),
        }
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        match self.runs_item(id.to_string(), "run").await? {
            Some(item) if !expired(&item) => self.read_run(&item).await,
            _ => Ok(None),
        }
    }

    async fn save_run(&self, run: &Run) -> Result<Run, StoreError> {
        let mut next = run.clone();
        next.version = run.version + 1;
        let item = self.run_item(&next).await?;
        // Written first: a save that then loses its condition leaves an entry of a run that
        // is there anyway, where the other order could leave a saved end unlisted.
        let late = Self::late_end_pages(&next, &item);
        if !late.is_empty() {
            self.write_pages(late).await?;
        }
        self.update_run(item, run.version).await?;
        Ok(next)
    }

    async fn runs(&self, q: &RunQuery) -> Result<Page<Run>, StoreError> {
        let listing = Listing {
            table: &self.settings.runs_table,
            workflow: q.workflow.as_deref(),
            sort_key: "ckey",
            through: None,
            since: q.since,
            until: q.until,
            cursor: q.cursor.clone(),
            limit: q.limit,
        };
        self.page(listing, KeepRun(q.clone())).await
    }

    /// A message is in the item of the run it started (`joined.rs`), or in the inbox
    /// table (one that started none, or several, or was recorded before they were joined).
    async fn message(&self, id: &str) -> Result<Option<InboxMessage>, StoreError> {
        if let Some(item) = self.runs_item(id.to_string(), "message").await?
            && Self::is_joined(&item)
        {
            if expired(&item) {
                return Ok(None);
            }
            return self.joined_message(&item).await.map(Some);
        }
        match self.inbox_item(id).await? {
            Some(item) => self.read_message(&item).await.map(Some),
            None => Ok(None),
        }
    }

    async fn messages(&self, q: &InboxQuery) -> Result<Page<InboxMessage>, StoreError> {
        let listing = Listing {
            table: &self.settings.inbox_table,
            workflow: q.workflow.as_deref(),
            sort_key: "rkey",
            through: Some((&self.settings.runs_table, "ckey")),
            since: q.since,
            until: q.until,
            cursor: q.cursor.clone(),
            limit: q.limit,
        };
        self.page(listing, KeepMessage(q.clone())).await
    }

    async fn queued_runs(&self, from: Timestamp, to: Timestamp) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let listing = Listing {
                table: &self.settings.runs_table,
                workflow: None,
                sort_key: "ckey",
                through: None,
                since: Some(from),
                until: Some(to.minus(std::time::Duration::from_millis(1))),
                cursor,
                limit: 1000,
            };
            let queued = RunQuery {
                status: Some(RunStatus::Queued),
                ..RunQuery::default()
            };
            let page = self.page(listing, KeepRun(queued)).await?;
            ids.extend(page.items.into_iter().map(|r| r.id));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        ids.reverse();
        Ok(ids)
    }

    async fn marker(&self, name: &str) -> Result<Option<Timestamp>, StoreError> {
        let item = self.runs_item(format!("#marker/{name}"), "marker").await?;
        Ok(item.as_ref().and_then(|i| get_n(i, "at")).map(Timestamp))
    }

    async fn link(&self, name: &str) -> Result<Option<String>, StoreError> {
        let item = self.runs_item(format!("#link/{name}"), "link").await?;
        Ok(item
            .as_ref()
            .and_then(|i| get_s(i, "target"))
            .map(str::to_string))
    }

    async fn set_link(&self, name: &str, target: &str) -> Result<(), StoreError> {
        self.db
            .put_item()
            .table_name(&self.settings.runs_table)
            .item("id", s(format!("#link/{name}")))
            .item("target", s(target))
            .send()
            .await
            .map_err(|e| failed("PutItem (link)", e))?;
        Ok(())
    }

    async fn state(&self, workflow: &str) -> Result<Option<SavedState>, StoreError> {
        let Some((doc, version)) = self
            .versioned(&format!("#state/{workflow}"), "state")
            .await?
        else {
            return Ok(None);
        };
        let mut state: SavedState = serde_json::from_str(&doc).map_err(|e| corrupt("state", e))?;
        state.version = version;
        Ok(Some(state))
    }

    async fn save_state(
        &self,
        workflow: &str,
        state: &SavedState,
    ) -> Result<SavedState, StoreError> {
        let mut next = state.clone();
        next.version = state.version + 1;
        let doc = serde_json::to_string(&next).map_err(|e| corrupt("state", e))?;
        self.put_versioned(&format!("#state/{workflow}"), state.version, doc, "state")
            .await?;
        Ok(next)
    }

    async fn slots(&self, name: &str) -> Result<Option<Slots>, StoreError> {
        let Some((doc, version)) = self.versioned(&format!("#slots/{name}"), "slots").await? else {
            return Ok(None);
        };
        let mut slots: Slots = serde_json::from_str(&doc).map_err(|e| corrupt("slots", e))?;
        slots.version = version;
        Ok(Some(slots))
    }

    /// A conditional put on the version: of two executors taking the last slot at once,
    /// one write fails and that executor reads again and waits.
    async fn save_slots(&self, name: &str, slots: &Slots) -> Result<Slots, StoreError> {
        let mut next = slots.clone();
        next.version = slots.version + 1;
        let doc = serde_json::to_string(&next).map_err(|e| corrupt("slots", e))?;
        self.put_versioned(&format!("#slots/{name}"), slots.version, doc, "slots")
            .await?;
        Ok(next)
    }

    async fn context(&self, workflow: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let item = self
            .runs_item(format!("#context/{workflow}"), "context")
            .await?;
        Ok(item
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, v)| {
                let key = name.strip_prefix(CONTEXT_PREFIX)?.to_string();
                Some((key, v.as_s().ok()?.clone()))
            })
            .collect())
    }

    /// One item per workflow, one attribute per key (`k.{key}`): an UpdateItem sets and
    /// removes only the attributes of its keys, so writers of other keys keep theirs.
    async fn patch_context(
        &self,
        workflow: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        let mut update = self
            .db
            .update_item()
            .table_name(&self.settings.runs_table)
            .key("id", s(format!("#context/{workflow}")));
        for (i, (key, value)) in changes.iter().enumerate() {
            update = update
                .expression_attribute_names(format!("#k{i}"), format!("{CONTEXT_PREFIX}{key}"));
            match value {
                Some(v) => {
                    sets.push(format!("#k{i} = :v{i}"));
                    update = update.expression_attribute_values(format!(":v{i}"), s(v.as_str()));
                }
                None => removes.push(format!("#k{i}")),
            }
        }
        let mut expr = String::new();
        if !sets.is_empty() {
            expr.push_str(&format!("SET {}", sets.join(", ")));
        }
        if !removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        update
            .update_expression(expr.trim())
            .send()
            .await
            .map_err(|e| failed("UpdateItem (context)", e))?;
        Ok(())
    }

    async fn set_marker(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        self.db
            .put_item()
            .table_name(&self.settings.runs_table)
            .item("id", s(format!("#marker/{name}")))
            .item("at", n(at.millis()))
            .send()
            .await
            .map_err(|e| failed("PutItem (marker)", e))?;
        Ok(())
    }

    /// The queue is SQS: a run left without a work item is found by the sweeper (queued)
    /// or moved again by the retried request (see `App::wake_wait`).
    async fn stranded_runs(&self, _: usize) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.put_audit(entry).await
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.audit_page(q).await
    }

    /// DynamoDB's TTL deletes runs and messages past their `expires` time.
    async fn purge(&self, _: &str, _: Timestamp, _: usize) -> Result<usize, StoreError> {
        Ok(0)
    }
}

impl DynamoStore {
    /// A message whose idempotency key another run holds: recorded as its duplicate
    /// (never replacing a message recorded under its id: a cron tick's id is its first
    /// record's); returns the holding run.
    async fn record_duplicate(
        &self,
        key: &str,
        message: InboxMessage,
    ) -> Result<String, StoreError> {
        let holder = self
            .db
            .get_item()
            .table_name(&self.settings.idempotency_table)
            .key("key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed("GetItem (idempotency)", e))?;
        let Some(run_id) = holder
            .item
            .as_ref()
            .and_then(|i| get_s(i, "run_id"))
            .map(str::to_string)
        else {
            return Err(StoreError::Unavailable(
                "the idempotency key was taken and then released; retry".into(),
            ));
        };
        if run_id == message.id {
            // The run holding the key took this message's id: this is that message
            // delivered again (a cron tick's id is derived), recorded with its run.
            return Ok(run_id);
        }
        let mut message = message;
        message.outcome = Outcome::Duplicate {
            run_id: run_id.clone(),
        };
        // Its run was not written (the key is another's): the message has its own entries.
        let item = self.message_item(&message, false).await?;
        // A duplicate never replaces a message recorded under its id (a cron tick's id is
        // its first record's).
        let put = self
            .db
            .put_item()
            .table_name(&self.settings.inbox_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => {}
            Err(e) => return Err(failed("PutItem (inbox)", e)),
        }
        Ok(run_id)
    }
}

/// The attribute-name prefix of a context store's keys in its item.
const CONTEXT_PREFIX: &str = "k.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_like_times() {
        let a = time_key(Timestamp(999), "b");
        let b = time_key(Timestamp(1000), "a");
        assert!(a < b, "{a} < {b}");
        assert!(time_prefix(Timestamp(1000)) < b);
    }

    #[test]
    fn an_id_keeps_its_shard() {
        assert_eq!(shard("01JX"), shard("01JX"));
        let spread: std::collections::BTreeSet<String> =
            (0..100).map(|i| shard(&format!("run{i}"))).collect();
        assert_eq!(spread.len() as u64, SHARDS);
    }

    /// One busy workflow at 10,000 runs a second: ids as a monotonic ULID generator makes
    /// them within one millisecond (the random part counts up by one) spread over every
    /// `by_workflow` partition evenly enough that none takes more than 7% of the runs, 700
    /// writes a second of a partition's 1,000 (infra/capacity.md).
    #[test]
    fn one_busy_workflow_spreads_over_every_partition() {
        const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let ulid = |n: u128| -> String {
            (0..26)
                .rev()
                .map(|i| CROCKFORD[((n >> (5 * i)) & 31) as usize] as char)
                .collect()
        };
        let start = (1_796_000_000_000u128 << 80) | 0x1234_5678_9abc_def0_1234;
        let mut per_key = std::collections::HashMap::new();
        for n in 0..100_000u128 {
            *per_key
                .entry(workflow_key("orders", &ulid(start + n)))
                .or_insert(0u32) += 1;
        }
        assert_eq!(per_key.len() as u64, SHARDS);
        let busiest = per_key.values().max().copied().unwrap_or(0);
        assert!(
            busiest <= 7_000,
            "the busiest partition took {busiest} of 100,000 runs"
        );
    }
}
