//! DynamoDB items: encoding runs and messages (with S3 for what does not fit an item),
//! batched reads and writes, and the versioned singleton items.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use tripline_app::ports::{InboxMessage, StoreError};
use tripline_core::Run;

use crate::settings::{Clients, Settings};

use super::*;

/// The tag the payload bucket's lifecycle rule expires run records by.
pub const EXPIRE_TAG: &str = "tripline-expire=yes";

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

    /// Puts a body; `expire`: tagged for the bucket's retention rule (an ended run's
    /// record; message bodies expire by their `inbox/` prefix, and a live run's record is
    /// never tagged).
    pub(super) async fn put_blob(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expire: bool,
    ) -> Result<(), StoreError> {
        self.s3
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .body(bytes.into())
            .set_tagging(expire.then(|| EXPIRE_TAG.to_string()))
            .send()
            .await
            .map_err(|e| failed("S3 PutObject", e))?;
        Ok(())
    }

    pub(super) async fn get_blob(&self, key: &str) -> Result<Vec<u8>, StoreError> {
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
    pub(super) async fn run_item(&self, run: &Run) -> Result<Item, StoreError> {
        let doc = serde_json::to_string(run).map_err(|e| corrupt("run", e))?;
        let mut item = Item::from([
            ("id".into(), s(&run.id)),
            ("workflow".into(), s(&run.workflow)),
            ("status".into(), s(run.status.as_str())),
            ("v".into(), n(run.version)),
            ("at".into(), n(run.inserted_at.millis())),
            ("ckey".into(), s(time_key(run.inserted_at, &run.id))),
        ]);
        if run.status.is_terminal()
            && let Some(keep) = run.retain.map(|d| d.std()).or(self.settings.retention)
        {
            let ended = run.finished_at.unwrap_or(run.inserted_at);
            item.insert("expires".into(), n(ended.plus(keep).millis() / 1000));
        }
        let packed = (doc.len() > DEFLATE_OVER)
            .then(|| miniz_oxide::deflate::compress_to_vec(doc.as_bytes(), 6))
            .filter(|z| z.len() < doc.len());
        let stored = packed.as_ref().map_or(doc.len(), Vec::len);
        if stored > self.settings.item_budget {
            let key = format!("runs/{}/{}.json", run.id, run.version);
            self.put_blob(&key, doc.into_bytes(), run.status.is_terminal())
                .await?;
            item.insert("blob".into(), s(key));
        } else if let Some(z) = packed {
            item.insert("z".into(), AttributeValue::B(Blob::new(z)));
        } else {
            item.insert("doc".into(), s(doc));
        }
        Ok(item)
    }

    pub(super) async fn read_run(&self, item: &Item) -> Result<Option<Run>, StoreError> {
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

    /// When `m`'s record expires (`None`: kept until deleted).
    pub(super) fn message_expires(&self, m: &InboxMessage) -> Option<Timestamp> {
        let keep = m.retain.map(|d| d.std()).or(self.settings.retention)?;
        Some(m.received_at.plus(keep))
    }

    /// Whether `m`'s own record keeps `claim`'s key taken for as long as the claim would
    /// (see [`IdempotencyClaim::held_by_message`]).
    pub(super) fn held_by_message(
        &self,
        claim: &tripline_app::ports::IdempotencyClaim,
        m: &InboxMessage,
    ) -> bool {
        claim.held_by_message
            && self
                .message_expires(m)
                .is_none_or(|expires| expires >= claim.expires_at)
    }

    /// The item of a message. `by_run`: a run written with it has its id, time and
    /// workflow, so the message is listed through that run's index entries and has none of
    /// its own (no index keys: two write units fewer); see [`Listing::through`].
    pub(super) async fn message_item(
        &self,
        m: &InboxMessage,
        by_run: bool,
    ) -> Result<Item, StoreError> {
        let meta = serde_json::to_string(m).map_err(|e| corrupt("inbox message", e))?;
        let mut item = Item::from([
            ("id".into(), s(&m.id)),
            ("workflow".into(), s(&m.workflow)),
            ("trigger".into(), s(&m.trigger)),
            ("outcome".into(), s(m.outcome.kind())),
            ("meta".into(), s(meta)),
        ]);
        if !by_run {
            item.insert("rkey".into(), s(time_key(m.received_at, &m.id)));
            item.insert("shard".into(), s(shard(&m.id)));
            item.insert("wkey".into(), s(workflow_key(&m.workflow, &m.id)));
        }
        if let Some(expires) = self.message_expires(m) {
            item.insert("expires".into(), n(expires.millis() / 1000));
        }
        if m.body.len() > self.settings.item_budget {
            let key = format!("inbox/{}", m.id);
            self.put_blob(&key, m.body.clone(), false).await?;
            item.insert("blob".into(), s(key));
        } else {
            item.insert("body".into(), AttributeValue::B(Blob::new(m.body.clone())));
        }
        Ok(item)
    }

    /// The message of an inbox item, or of a run's item that holds its message.
    pub(super) async fn read_message(&self, item: &Item) -> Result<InboxMessage, StoreError> {
        if Self::is_joined(item) {
            return self.joined_message(item).await;
        }
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

    /// Items by id from one table (ids not found are absent).
    pub(super) async fn batch_get(
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

    /// A message's item as stored, read consistently; `None` when there is none or it has
    /// expired.
    pub(super) async fn inbox_item(&self, id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.settings.inbox_table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed("GetItem (inbox)", e))?;
        Ok(out.item.filter(|item| !expired(item)))
    }

    /// An item of the runs table, read consistently: a run (with its message, when
    /// joined) or a singleton (`#marker/…`, `#link/…`, `#state/…`, `#slots/…`,
    /// `#context/…`).
    pub(super) async fn runs_item(
        &self,
        id: String,
        what: &str,
    ) -> Result<Option<Item>, StoreError> {
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
    pub(super) async fn versioned(
        &self,
        id: &str,
        what: &str,
    ) -> Result<Option<(String, u64)>, StoreError> {
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
    pub(super) async fn put_versioned(
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
