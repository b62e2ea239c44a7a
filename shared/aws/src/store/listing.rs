//! Listings: pages of runs and messages newest first, over an index's shards,
//! with the filters the index cannot apply.

use std::collections::HashMap;

use async_trait::async_trait;
use tripline_app::ports::{InboxMessage, InboxQuery, Page, RunQuery, StoreError};
use tripline_core::Run;

use super::*;

impl DynamoStore {
    /// Up to `limit` entries below `below`, newest first, merged over the partitions of
    /// the listing (and of its `through` table); and whether any partition may hold more.
    /// The runs table's partitions are the index table's pages (`index.rs`), the inbox's
    /// its secondary indexes.
    pub(super) async fn keys_below(
        &self,
        l: &Listing<'_>,
        below: &str,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        let tables =
            std::iter::once(((l.table, l.sort_key), false)).chain(l.through.map(|t| (t, true)));
        let (paged, indexed): (Vec<_>, Vec<_>) =
            tables.partition(|((table, _), _)| *table == self.settings.runs_table);
        let partitions: Vec<(String, bool)> = paged
            .into_iter()
            .flat_map(|(_, through)| {
                let parts: Vec<String> = match l.workflow {
                    Some(w) => vec![index::workflow_partition(w)],
                    None => index::time_partitions().collect(),
                };
                parts.into_iter().map(move |p| (p, through))
            })
            .collect();
        let reads = partitions
            .iter()
            .map(|(p, through)| self.partition_below(p, *through, below, limit));
        let pages = futures::future::try_join_all(reads).await?;
        let (mut keys, mut more) = self.index_keys_below(l, &indexed, below, limit).await?;
        // Each partition is complete down to its frontier (the start of the last bucket it
        // read whole), and holds at least `limit` distinct entries above it: so the newest
        // `limit` of all the entries, the page, are all above the highest frontier, where
        // every partition is complete. Below it, a partition may hold more.
        more |= pages.iter().any(|(_, frontier)| frontier.is_some());
        keys.extend(pages.into_iter().flat_map(|(entries, _)| entries));
        newest_first_once(&mut keys);
        if keys.len() > limit {
            keys.truncate(limit);
            more = true;
        }
        Ok((keys, more))
    }

    /// [`Self::keys_below`] on secondary indexes: each partition's newest `limit` entries
    /// below `below`.
    async fn index_keys_below(
        &self,
        l: &Listing<'_>,
        tables: &[((&str, &str), bool)],
        below: &str,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        let parts: Vec<_> = tables
            .iter()
            .flat_map(|&(table, through)| {
                (0..SHARDS).map(move |i| match l.workflow {
                    Some(w) => (table, through, "by_workflow", "wkey", format!("{w}#{i}")),
                    None => (table, through, "by_time", "shard", i.to_string()),
                })
            })
            .collect();
        let queries = parts
            .iter()
            .map(|((table, sort_key), _, index, pk, value)| {
                self.db
                    .query()
                    .table_name(*table)
                    .index_name(*index)
                    .key_condition_expression("#pk = :pk AND #sk < :below")
                    .expression_attribute_names("#pk", *pk)
                    .expression_attribute_names("#sk", *sort_key)
                    .expression_attribute_values(":pk", s(value))
                    .expression_attribute_values(":below", s(below))
                    .scan_index_forward(false)
                    .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                    .send()
            });
        let mut keys = Vec::new();
        let mut more = false;
        let answers = futures::future::join_all(queries).await;
        for (out, ((_, sort_key), through, ..)) in answers.into_iter().zip(&parts) {
            let out = out.map_err(|e| failed("Query", e))?;
            more |= out.last_evaluated_key.is_some();
            for item in out.items.unwrap_or_default() {
                if let (Some(k), Some(id)) = (get_s(&item, sort_key), get_s(&item, "id")) {
                    keys.push(Entry {
                        key: k.to_string(),
                        id: id.to_string(),
                        through: *through,
                    });
                }
            }
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
            let in_range: Vec<Entry> = keys
                .into_iter()
                .take_while(|e| floor.as_ref().is_none_or(|f| &e.key >= f))
                .collect();
            let exhausted = in_range.len() < want || !more;
            let (own, joined) = self.listed_items(&l, &in_range).await?;
            for e in &in_range {
                let item = match (e.through, joined.get(&e.id), own.get(&e.id)) {
                    (true, Some(item), _) => item,
                    // An item with index keys of its own is listed by them, never twice.
                    (true, None, Some(item)) if !item.contains_key(l.sort_key) => item,
                    (false, _, Some(item)) => item,
                    _ => continue,
                };
                if let Some(v) = keep.keep(self, item).await? {
                    items.push(v);
                    if items.len() == limit {
                        return Ok(Page {
                            items,
                            next_cursor: Some(e.key.clone()),
                        });
                    }
                }
            }
            match in_range.last() {
                Some(e) if !exhausted => below = e.key.clone(),
                _ => {
                    return Ok(Page {
                        items,
                        next_cursor: None,
                    });
                }
            }
        }
    }

    /// The items a page's entries name: the listing table's, and the `through` table's
    /// that hold the listed record themselves (a run's item with its message inside,
    /// `joined.rs`), by id.
    async fn listed_items(
        &self,
        l: &Listing<'_>,
        entries: &[Entry],
    ) -> Result<(HashMap<String, Item>, HashMap<String, Item>), StoreError> {
        let ids = |through: Option<bool>| {
            let mut ids: Vec<String> = entries
                .iter()
                .filter(|e| through.is_none_or(|t| e.through == t))
                .map(|e| e.id.clone())
                .collect();
            // An id can come from both tables (a message with entries of its own whose run
            // took its id); BatchGetItem refuses a key twice.
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let Some((through, _)) = l.through else {
            return Ok((self.batch_get(l.table, &ids(None)).await?, HashMap::new()));
        };
        let mut joined = self.batch_get(through, &ids(Some(true))).await?;
        joined.retain(|_, item| Self::is_joined(item));
        let mut rest: Vec<String> = ids(Some(true))
            .into_iter()
            .filter(|id| !joined.contains_key(id))
            .chain(ids(Some(false)))
            .collect();
        rest.sort_unstable();
        rest.dedup();
        Ok((self.batch_get(l.table, &rest).await?, joined))
    }
}

/// An index entry of a listing: its sort key (time and id), its item's id, and whether it
/// is the `through` table's.
pub(super) struct Entry {
    pub key: String,
    pub id: String,
    pub through: bool,
}

/// Newest first, each entry once (pages written twice repeat entries); an id listed by
/// both tables stays twice, once for each.
pub(super) fn newest_first_once(entries: &mut Vec<Entry>) {
    entries.sort_by(|a, b| b.key.cmp(&a.key).then(a.through.cmp(&b.through)));
    entries.dedup_by(|a, b| a.key == b.key && a.through == b.through);
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
