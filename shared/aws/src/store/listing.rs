//! Listings: pages of runs and messages newest first, over an index's shards,
//! with the filters the index cannot apply.

use async_trait::async_trait;
use tripline_app::ports::{InboxMessage, InboxQuery, Page, RunQuery, StoreError};
use tripline_core::Run;

use super::*;

impl DynamoStore {
    /// Up to `limit` (sort key, id) pairs below `below`, newest first, merged over the
    /// partitions of the listing; and whether any partition may hold more.
    pub(super) async fn keys_below(
        &self,
        l: &Listing<'_>,
        below: &str,
        limit: usize,
    ) -> Result<(Vec<(String, String)>, bool), StoreError> {
        let parts: Vec<(&str, &str, String)> = match l.workflow {
            Some(w) => (0..SHARDS)
                .map(|i| ("by_workflow", "wkey", format!("{w}#{i}")))
                .collect(),
            None => (0..SHARDS)
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
    pub(super) async fn page<T>(
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
pub(super) trait AsyncKeep<T>: Send {
    async fn keep(&mut self, store: &DynamoStore, item: &Item) -> Result<Option<T>, StoreError>;
}

/// The runs a [`RunQuery`] selects: its status from the item's attribute, the rest
/// ([`RunQuery::matches`]: trigger, error type, text, parent) from the decoded run.
pub(super) struct KeepRun(pub RunQuery);

#[async_trait]
impl AsyncKeep<Run> for KeepRun {
    async fn keep(&mut self, store: &DynamoStore, item: &Item) -> Result<Option<Run>, StoreError> {
        if expired(item) {
            return Ok(None);
        }
        if let Some(want) = self.0.status
            && get_s(item, "status") != Some(want.as_str())
        {
            return Ok(None);
        }
        let run = store.read_run(item).await?;
        Ok(run.filter(|r| self.0.matches(r)))
    }
}

/// The messages an [`InboxQuery`] selects: trigger and outcome from the item's
/// attributes, the rest ([`InboxQuery::matches`]: text, run) from the decoded message.
pub(super) struct KeepMessage(pub InboxQuery);

#[async_trait]
impl AsyncKeep<InboxMessage> for KeepMessage {
    async fn keep(
        &mut self,
        store: &DynamoStore,
        item: &Item,
    ) -> Result<Option<InboxMessage>, StoreError> {
        let q = &self.0;
        if expired(item)
            || q.trigger
                .as_deref()
                .is_some_and(|t| get_s(item, "trigger") != Some(t))
            || q.outcome
                .as_deref()
                .is_some_and(|o| get_s(item, "outcome") != Some(o))
        {
            return Ok(None);
        }
        let m = store.read_message(item).await?;
        Ok(q.matches(&m).then_some(m))
    }
}
