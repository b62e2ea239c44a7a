//! The [`Store`] on DynamoDB, with S3 for what does not fit in an item. The key design and
//! the reason for every key and index are in `infra/dynamodb.md`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, TransactWriteItem, WriteRequest,
};
use tripline_app::ports::{
    Admission, Admitted, InboxMessage, InboxQuery, Outcome, Page, RunQuery, SavedState, Slots,
    Store, StoreError, WorkflowRecord,
};
use tripline_core::{Run, RunStatus, Timestamp};

use crate::settings::{Clients, Settings};

type Item = HashMap<String, AttributeValue>;

/// How many partitions the time indexes of runs and messages spread their writes over; a
/// listing queries them all and merges.
pub const TIME_SHARDS: u64 = 4;

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
    StoreError::Unavailable(
        format!("{op}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)).into(),
    )
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

/// A stable shard of an id (FNV-1a), so that a record's shard never changes.
fn shard(id: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % TIME_SHARDS).to_string()
}

/// Which index and partitions a listing reads.
struct Listing<'a> {
    table: &'a str,
    /// `Some(workflow)`: the `by_workflow` index; `None`: every shard of `by_time`.
    workflow: Option<&'a str>,
    sort_key: &'a str,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    cursor: Option<String>,
    limit: usize,
}

impl DynamoStore {
    pub fn new(clients: &Clients, settings: Settings) -> Self {
        Self {
            db: clients.dynamodb.clone(),
            s3: clients.s3.clone(),
            settings,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn put_blob(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.s3
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| failed("S3 PutObject", e))?;
        Ok(())
    }

    async fn get_blob(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("S3 GetObject", e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| other("S3 GetObject body", e))?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// The item of a run. Its JSON is deflated when that makes the item smaller (DynamoDB
    /// bills writes per KB: a finished three-step run goes from 3 write units to 1), and
    /// goes to S3 when it is over the budget even so.
    async fn run_item(&self, run: &Run) -> Result<Item, StoreError> {
        let doc = serde_json::to_string(run).map_err(|e| corrupt("run", e))?;
        let mut item = Item::from([
            ("id".into(), s(&run.id)),
            ("workflow".into(), s(&run.workflow)),
            ("status".into(), s(run.status.as_str())),
            ("v".into(), n(run.version)),
            ("at".into(), n(run.inserted_at.millis())),
            ("ckey".into(), s(time_key(run.inserted_at, &run.id))),
            ("shard".into(), s(shard(&run.id))),
        ]);
        let packed = (doc.len() > DEFLATE_OVER)
            .then(|| miniz_oxide::deflate::compress_to_vec(doc.as_bytes(), 6))
            .filter(|z| z.len() < doc.len());
        let stored = packed.as_ref().map_or(doc.len(), Vec::len);
        if stored > self.settings.item_budget {
            let key = format!("runs/{}/{}.json", run.id, run.version);
            self.put_blob(&key, doc.into_bytes()).await?;
            item.insert("blob".into(), s(key));
        } else if let Some(z) = packed {
            item.insert("z".into(), AttributeValue::B(Blob::new(z)));
        } else {
            item.insert("doc".into(), s(doc));
        }
        Ok(item)
    }

    async fn read_run(&self, item: &Item) -> Result<Option<Run>, StoreError> {
        let doc = match (get_s(item, "doc"), item.get("z"), get_s(item, "blob")) {
            (Some(doc), _, _) => doc.as_bytes().to_vec(),
            (None, Some(AttributeValue::B(z)), _) => {
                miniz_oxide::inflate::decompress_to_vec_with_limit(z.as_ref(), MAX_RUN_BYTES)
                    .map_err(|e| corrupt("run", format!("deflated record: {e:?}")))?
            }
            (None, _, Some(key)) => self.get_blob(key).await?,
            _ => return Ok(None),
        };
        let mut run: Run = serde_json::from_slice(&doc).map_err(|e| corrupt("run", e))?;
        run.version = get_n(item, "v").unwrap_or(0) as u64;
        Ok(Some(run))
    }

    async fn message_item(&self, m: &InboxMessage) -> Result<Item, StoreError> {
        let meta = serde_json::to_string(m).map_err(|e| corrupt("inbox message", e))?;
        let mut item = Item::from([
            ("id".into(), s(&m.id)),
            ("workflow".into(), s(&m.workflow)),
            ("trigger".into(), s(&m.trigger)),
            ("outcome".into(), s(m.outcome.kind())),
            ("rkey".into(), s(time_key(m.received_at, &m.id))),
            ("shard".into(), s(shard(&m.id))),
            ("meta".into(), s(meta)),
        ]);
        if m.body.len() > self.settings.item_budget {
            let key = format!("inbox/{}", m.id);
            self.put_blob(&key, m.body.clone()).await?;
            item.insert("blob".into(), s(key));
        } else {
            item.insert("body".into(), AttributeValue::B(Blob::new(m.body.clone())));
        }
        Ok(item)
    }

    async fn read_message(&self, item: &Item) -> Result<InboxMessage, StoreError> {
        let meta = get_s(item, "meta").ok_or_else(|| corrupt("inbox message", "no meta"))?;
        let mut m: InboxMessage =
            serde_json::from_str(meta).map_err(|e| corrupt("inbox message", e))?;
        m.body = match (item.get("body"), get_s(item, "blob")) {
            (Some(AttributeValue::B(b)), _) => b.clone().into_inner(),
            (_, Some(key)) => self.get_blob(key).await?,
            _ => Vec::new(),
        };
        Ok(m)
    }

    /// Writes items without conditions (fresh ids), in batches of 25, retrying what
    /// DynamoDB leaves unprocessed.
    async fn batch_put(&self, writes: Vec<(String, Item)>) -> Result<(), StoreError> {
        for chunk in writes.chunks(25) {
            let mut pending: HashMap<String, Vec<WriteRequest>> = HashMap::new();
            for (table, item) in chunk {
                let put = PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .map_err(|e| other("BatchWriteItem", e))?;
                pending
                    .entry(table.clone())
                    .or_default()
                    .push(WriteRequest::builder().put_request(put).build());
            }
            let mut backoff = std::time::Duration::from_millis(20);
            for attempt in 0.. {
                let out = self
                    .db
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|e| failed("BatchWriteItem", e))?;
                match out.unprocessed_items {
                    Some(left) if !left.is_empty() => {
                        if attempt >= 8 {
                            return Err(StoreError::Unavailable(
                                "DynamoDB left items unprocessed after 8 retries (throttled)"
                                    .into(),
                            ));
                        }
                        pending = left;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Items by id from one table (ids not found are absent).
    async fn batch_get(
        &self,
        table: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Item>, StoreError> {
        let mut found: HashMap<String, Item> = HashMap::new();
        for chunk in ids.chunks(100) {
            let mut keys = KeysAndAttributes::builder();
            for id in chunk {
                keys = keys.keys(Item::from([("id".into(), s(id))]));
            }
            let mut request = HashMap::from([(
                table.to_string(),
                keys.build().map_err(|e| other("BatchGetItem", e))?,
            )]);
            for attempt in 0.. {
                let out = self
                    .db
                    .batch_get_item()
                    .set_request_items(Some(request))
                    .send()
                    .await
                    .map_err(|e| failed("BatchGetItem", e))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default()
                {
                    if let Some(id) = get_s(&item, "id") {
                        found.insert(id.to_string(), item);
                    }
                }
                match out.unprocessed_keys {
                    Some(left) if !left.is_empty() && attempt < 8 => {
                        request = left;
                        tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                    }
                    Some(left) if !left.is_empty() => {
                        return Err(StoreError::Unavailable(
                            "DynamoDB left keys unprocessed after 8 retries (throttled)".into(),
                        ));
                    }
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    /// Up to `limit` (sort key, id) pairs below `below`, newest first, merged over the
    /// partitions of the listing; and whether any partition may hold more.
    async fn keys_below(
        &self,
        l: &Listing<'_>,
        below: &str,
        limit: usize,
    ) -> Result<(Vec<(String, String)>, bool), StoreError> {
        let parts: Vec<(&str, &str, String)> = match l.workflow {
            Some(w) => vec![("by_workflow", "workflow", w.to_string())],
            None => (0..TIME_SHARDS)
                .map(|i| ("by_time", "shard", i.to_string()))
                .collect(),
        };
        let queries = parts.into_iter().map(|(index, pk, value)| {
            self.db
                .query()
                .table_name(l.table)
                .index_name(index)
                .key_condition_expression("#pk = :pk AND #sk < :below")
                .expression_attribute_names("#pk", pk)
                .expression_attribute_names("#sk", l.sort_key)
                .expression_attribute_values(":pk", s(value))
                .expression_attribute_values(":below", s(below))
                .scan_index_forward(false)
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .send()
        });
        let mut keys = Vec::new();
        let mut more = false;
        for out in futures::future::join_all(queries).await {
            let out = out.map_err(|e| failed("Query", e))?;
            more |= out.last_evaluated_key.is_some();
            for item in out.items.unwrap_or_default() {
                if let (Some(k), Some(id)) = (get_s(&item, l.sort_key), get_s(&item, "id")) {
                    keys.push((k.to_string(), id.to_string()));
                }
            }
        }
        keys.sort_by(|a, b| b.0.cmp(&a.0));
        if keys.len() > limit {
            keys.truncate(limit);
            more = true;
        }
        Ok((keys, more))
    }

    /// A newest-first page: walks the index from the cursor, reads the items, keeps those
    /// `keep` accepts, until the page is full or the range is exhausted.
    async fn page<T>(
        &self,
        l: Listing<'_>,
        mut keep: impl AsyncKeep<T>,
    ) -> Result<Page<T>, StoreError> {
        let limit = l.limit.clamp(1, 1000);
        let mut below = l
            .until
            .map(|u| time_prefix(u.plus(std::time::Duration::from_millis(1))))
            .unwrap_or_else(|| "~".into());
        if let Some(c) = &l.cursor
            && c.as_str() < below.as_str()
        {
            below = c.clone();
        }
        let floor = l.since.map(time_prefix);
        let mut items = Vec::new();
        loop {
            let want = (limit - items.len()).max(10);
            let (keys, more) = self.keys_below(&l, &below, want).await?;
            let in_range: Vec<(String, String)> = keys
                .into_iter()
                .take_while(|(k, _)| floor.as_ref().is_none_or(|f| k >= f))
                .collect();
            let exhausted = in_range.len() < want || !more;
            let ids: Vec<String> = in_range.iter().map(|(_, id)| id.clone()).collect();
            let by_id = self.batch_get(l.table, &ids).await?;
            for (k, id) in &in_range {
                if let Some(item) = by_id.get(id)
                    && let Some(v) = keep.keep(self, item).await?
                {
                    items.push(v);
                    if items.len() == limit {
                        return Ok(Page {
                            items,
                            next_cursor: Some(k.clone()),
                        });
                    }
                }
            }
            match in_range.last() {
                Some((k, _)) if !exhausted => below = k.clone(),
                _ => {
                    return Ok(Page {
                        items,
                        next_cursor: None,
                    });
                }
            }
        }
    }
}

/// Decides whether a listed item belongs to the page (filters that the index cannot).
#[async_trait]
trait AsyncKeep<T>: Send {
    async fn keep(&mut self, store: &DynamoStore, item: &Item) -> Result<Option<T>, StoreError>;
}

struct KeepRun(Option<RunStatus>);

#[async_trait]
impl AsyncKeep<Run> for KeepRun {
    async fn keep(&mut self, store: &DynamoStore, item: &Item) -> Result<Option<Run>, StoreError> {
        if let Some(want) = self.0
            && get_s(item, "status") != Some(want.as_str())
        {
            return Ok(None);
        }
        store.read_run(item).await
    }
}

struct KeepMessage {
    trigger: Option<String>,
    outcome: Option<String>,
}

#[async_trait]
impl AsyncKeep<InboxMessage> for KeepMessage {
    async fn keep(
        &mut self,
        store: &DynamoStore,
        item: &Item,
    ) -> Result<Option<InboxMessage>, StoreError> {
        if self
            .trigger
            .as_deref()
            .is_some_and(|t| get_s(item, "trigger") != Some(t))
            || self
                .outcome
                .as_deref()
                .is_some_and(|o| get_s(item, "outcome") != Some(o))
        {
            return Ok(None);
        }
        store.read_message(item).await.map(Some)
    }
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
        let mut writes = vec![(
            self.settings.inbox_table.clone(),
            self.message_item(&message).await?,
        )];
        for run in &runs {
            writes.push((self.settings.runs_table.clone(), self.run_item(run).await?));
        }
        let (Some(claim), Some(first)) = (&idempotency, runs.first()) else {
            self.batch_put(writes).await?;
            return Ok(Admitted::New { to_enqueue });
        };
        // The claim, the message and the runs in one transaction: the first run for the key
        // wins, atomically.
        let now = message.received_at.millis();
        let claim_item = Item::from([
            ("key".into(), s(&claim.key)),
            ("run_id".into(), s(&first.id)),
            ("expires_at".into(), n(claim.expires_at.millis())),
            // DynamoDB's TTL deletes the claim (in seconds) some time after it expired;
            // `expires_at` is what decides.
            ("ttl".into(), n(claim.expires_at.millis() / 1000 + 1)),
        ]);
        let mut tx = self.db.transact_write_items().transact_items(put(
            &self.settings.idempotency_table,
            claim_item,
            Some((
                "attribute_not_exists(run_id) OR expires_at <= :now",
                Item::from([(":now".into(), n(now))]),
            )),
        )?);
        for (table, item) in writes {
            tx = tx.transact_items(put(&table, item, None)?);
        }
        let result = match tx.send().await {
            Ok(_) => return Ok(Admitted::New { to_enqueue }),
            Err(e) => e,
        };
        if !result
            .as_service_error()
            .is_some_and(transaction_condition_failed)
        {
            return Err(failed("TransactWriteItems (admit)", result));
        }
        // The key is taken: record the message as a duplicate of the run that holds it.
        let holder = self
            .db
            .get_item()
            .table_name(&self.settings.idempotency_table)
            .key("key", s(&claim.key))
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
        let mut message = message;
        message.outcome = Outcome::Duplicate {
            run_id: run_id.clone(),
        };
        let item = self.message_item(&message).await?;
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
        Ok(Admitted::Duplicate { run_id })
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.settings.runs_table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed("GetItem (run)", e))?;
        match out.item {
            Some(item) => self.read_run(&item).await,
            None => Ok(None),
        }
    }

    async fn save_run(&self, run: &Run) -> Result<Run, StoreError> {
        let mut next = run.clone();
        next.version = run.version + 1;
        let item = self.run_item(&next).await?;
        let result = self
            .db
            .put_item()
            .table_name(&self.settings.runs_table)
            .set_item(Some(item))
            .condition_expression("v = :expected")
            .expression_attribute_values(":expected", n(run.version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(next),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(failed("PutItem (run)", e)),
        }
    }

    async fn runs(&self, q: &RunQuery) -> Result<Page<Run>, StoreError> {
        let listing = Listing {
            table: &self.settings.runs_table,
            workflow: q.workflow.as_deref(),
            sort_key: "ckey",
            since: q.since,
            until: q.until,
            cursor: q.cursor.clone(),
            limit: q.limit,
        };
        self.page(listing, KeepRun(q.status)).await
    }

    async fn message(&self, id: &str) -> Result<Option<InboxMessage>, StoreError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.settings.inbox_table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed("GetItem (inbox)", e))?;
        match out.item {
            Some(item) => self.read_message(&item).await.map(Some),
            None => Ok(None),
        }
    }

    async fn messages(&self, q: &InboxQuery) -> Result<Page<InboxMessage>, StoreError> {
        let listing = Listing {
            table: &self.settings.inbox_table,
            workflow: q.workflow.as_deref(),
            sort_key: "rkey",
            since: q.since,
            until: q.until,
            cursor: q.cursor.clone(),
            limit: q.limit,
        };
        let keep = KeepMessage {
            trigger: q.trigger.clone(),
            outcome: q.outcome.clone(),
        };
        self.page(listing, keep).await
    }

    async fn queued_runs(&self, from: Timestamp, to: Timestamp) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let listing = Listing {
                table: &self.settings.runs_table,
                workflow: None,
                sort_key: "ckey",
                since: Some(from),
                until: Some(to.minus(std::time::Duration::from_millis(1))),
                cursor,
                limit: 1000,
            };
            let page = self.page(listing, KeepRun(Some(RunStatus::Queued))).await?;
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
}

impl DynamoStore {
    /// One of the runs table's singleton items (`#marker/…`, `#link/…`, `#state/…`,
    /// `#slots/…`, `#context/…`), read consistently.
    async fn runs_item(&self, id: String, what: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.settings.runs_table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed(&format!("GetItem ({what})"), e))?;
        Ok(out.item)
    }

    /// A versioned document item of the runs table (cron state, concurrency slots): its
    /// JSON and its version.
    async fn versioned(&self, id: &str, what: &str) -> Result<Option<(String, u64)>, StoreError> {
        let Some(item) = self.runs_item(id.to_string(), what).await? else {
            return Ok(None);
        };
        let doc = get_s(&item, "doc").ok_or_else(|| corrupt(what, "no doc"))?;
        Ok(Some((
            doc.to_string(),
            get_n(&item, "v").unwrap_or(0) as u64,
        )))
    }

    /// Writes a versioned document if its version is still `expected` (0: none yet): of two
    /// writers, one gets `Conflict`.
    async fn put_versioned(
        &self,
        id: &str,
        expected: u64,
        doc: String,
        what: &str,
    ) -> Result<(), StoreError> {
        let mut put = self
            .db
            .put_item()
            .table_name(&self.settings.runs_table)
            .item("id", s(id))
            .item("v", n(expected + 1))
            .item("doc", s(doc));
        put = if expected == 0 {
            put.condition_expression("attribute_not_exists(id)")
        } else {
            put.condition_expression("v = :expected")
                .expression_attribute_values(":expected", n(expected))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(failed(&format!("PutItem ({what})"), e)),
        }
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
        assert_eq!(spread.len() as u64, TIME_SHARDS);
    }
}
