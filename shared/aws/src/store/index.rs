//! The listings' index of the runs table, written from the table's stream.
//!
//! A secondary index writes an entry for every item created: one write unit per run for
//! each listing. Instead, the step executor takes the runs table's stream (its `INSERT`s,
//! in batches) and writes *pages* to the index table: each page holds the entries of one
//! listing partition within one bucket of time ([`BUCKET_MS`]), as many as fit one write
//! unit (about 22). A workflow's listing reads the partition `w#{workflow}`; the listing of
//! every run reads [`TIME_PAGES`] partitions `t#{n}` and merges them.
//!
//! A listing reads a partition's pages newest bucket first. Pages within a bucket are in
//! no useful order (batches overlap in time), so a bucket is read whole: entries at or
//! above a bucket's start are complete once the next older bucket is reached
//! ([`DynamoStore::partition_below`]). A page is written once per batch, under a key made
//! of its bucket, first entry and size: a batch delivered again writes the same pages,
//! and one split differently writes other pages with the same entries, which a listing
//! reads once.
//!
//! A page expires [`PAGE_MARGIN`] after the stack's retention has passed for its bucket;
//! a run that ends more than [`PAGE_MARGIN`] after it started gets pages of its own that
//! expire with it ([`DynamoStore::late_end_pages`]). A run still unended when its page expires
//! is read by its id but no longer listed (infra/dynamodb.md).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tripline_app::ports::StoreError;
use tripline_core::Run;

use super::listing::{Entry, newest_first_once};
use super::*;

/// The span of time a page's entries fall in.
pub const BUCKET_MS: i64 = 10_000;

/// How many partitions the listing of every run spreads its pages over.
pub const TIME_PAGES: u64 = 4;

/// How long a page outlives the stack's retention for its bucket.
pub const PAGE_MARGIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a page may weigh as DynamoDB bills it: one write unit.
const PAGE_BYTES: usize = 1024;

/// What a page weighs besides its partition, sort key, prefix and entries: the attribute
/// names (`p`, `k`, `e`, `x`, `expires`), the list's and the number's bytes, and slack.
const PAGE_OVERHEAD: usize = 40;

/// An item that listings name, as its stream record's new image shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed {
    pub id: String,
    /// Time and id: the listings' sort key (`ckey`).
    pub ckey: String,
    /// The workflow whose listing names it.
    pub workflow: String,
    /// Whether the listing of every run names it: runs do; records kept beside them
    /// under a name that is not a workflow's (`#audit`) do not.
    pub timed: bool,
}

impl Indexed {
    /// From an item: `None` for an item no listing names (markers, states, slots: they
    /// have no `ckey`).
    pub(super) fn of(item: &Item) -> Option<Self> {
        Self::from_parts(
            get_s(item, "id")?,
            get_s(item, "ckey")?,
            get_s(item, "workflow")?,
        )
    }

    /// From a stream record's new image, in DynamoDB's JSON (`{"id": {"S": "..."}}`).
    pub fn of_image(image: &serde_json::Value) -> Option<Self> {
        let s = |name: &str| image.get(name)?.get("S")?.as_str();
        Self::from_parts(s("id")?, s("ckey")?, s("workflow")?)
    }

    fn from_parts(id: &str, ckey: &str, workflow: &str) -> Option<Self> {
        Some(Self {
            id: id.to_string(),
            ckey: ckey.to_string(),
            workflow: workflow.to_string(),
            timed: !workflow.starts_with('#'),
        })
    }

    /// Whether it was admitted before `at` (its `ckey`'s time).
    pub fn admitted_before(&self, at: tripline_core::Timestamp) -> bool {
        self.ckey.as_str() < format!("{:013}", at.millis().max(0)).as_str()
    }

    /// What the id adds before the id in `ckey` (`#audit/` for audit entries; empty for
    /// runs): pages keep it once, not per entry.
    fn prefix(&self) -> Option<&str> {
        let (_, suffix) = self.ckey.split_once('#')?;
        self.id.strip_suffix(suffix)
    }
}

/// A workflow's partition of the index.
pub(super) fn workflow_partition(workflow: &str) -> String {
    format!("w#{workflow}")
}

/// The partitions of the listing of every run.
pub(super) fn time_partitions() -> impl Iterator<Item = String> {
    (0..TIME_PAGES).map(|n| format!("t#{n}"))
}

fn bucket_of(key: &str) -> i64 {
    let ms: i64 = key.get(..13).and_then(|t| t.parse().ok()).unwrap_or(0);
    ms - ms.rem_euclid(BUCKET_MS)
}

/// One page: partition, sort key, the id prefix and the entries (`ckey`s, sorted).
#[derive(Debug, PartialEq)]
pub(super) struct IndexPage {
    pub p: String,
    pub k: String,
    pub prefix: String,
    pub entries: Vec<String>,
}

/// The pages that list `records`: grouped by partition, bucket and id prefix, each cut
/// where the next entry would take it over [`PAGE_BYTES`] (about 22 entries of 26-letter
/// ids). The same records always make the same pages.
pub(super) fn pages(records: &[Indexed]) -> Vec<IndexPage> {
    let mut groups: BTreeMap<(String, i64, &str), Vec<&str>> = BTreeMap::new();
    for r in records {
        let Some(prefix) = r.prefix() else { continue };
        let bucket = bucket_of(&r.ckey);
        let group = (workflow_partition(&r.workflow), bucket, prefix);
        groups.entry(group).or_default().push(&r.ckey);
        if r.timed {
            let group = ("t".to_string(), bucket, prefix);
            groups.entry(group).or_default().push(&r.ckey);
        }
    }
    let mut out = Vec::new();
    for ((p, bucket, prefix), mut keys) in groups {
        keys.sort_unstable();
        keys.dedup();
        let mut chunk: Vec<String> = Vec::new();
        let mut size = 0;
        for key in keys {
            if !chunk.is_empty() && size + key.len() + 1 > PAGE_BYTES {
                out.push(page(&p, bucket, prefix, std::mem::take(&mut chunk)));
            }
            if chunk.is_empty() {
                // The sort key repeats the first entry: `{bucket}#{first}#{count}`.
                size = PAGE_OVERHEAD + p.len() + 2 + prefix.len() + (key.len() + 18);
            }
            size += key.len() + 1;
            chunk.push(key.to_string());
        }
        if !chunk.is_empty() {
            out.push(page(&p, bucket, prefix, chunk));
        }
    }
    out
}

fn page(base: &str, bucket: i64, prefix: &str, entries: Vec<String>) -> IndexPage {
    let first = &entries[0];
    let p = if base == "t" {
        // Spread by a hash of the first entry: a batch delivered again makes the same page.
        let n: u64 = shard(first).parse().unwrap_or(0);
        format!("t#{}", n % TIME_PAGES)
    } else {
        base.to_string()
    };
    IndexPage {
        p,
        k: format!("{bucket:013}#{first}#{}", entries.len()),
        prefix: prefix.to_string(),
        entries,
    }
}

impl DynamoStore {
    /// Writes the pages that list `records` (a batch of the runs table's stream).
    pub async fn index(&self, records: &[Indexed]) -> Result<usize, StoreError> {
        let keep = self.settings.retention;
        let pages = pages(records);
        let items: Vec<Item> = pages
            .iter()
            .map(|page| {
                let ends = bucket_of(&page.k) + BUCKET_MS;
                let expires = keep.map(|r| {
                    let life = i64::try_from((r + PAGE_MARGIN).as_millis()).unwrap_or(i64::MAX);
                    ends.saturating_add(life) / 1000
                });
                page_item(page, expires)
            })
            .collect();
        // 16 at a time: a batch of 1,000 runs makes about 90 pages.
        use futures::stream::{self, StreamExt, TryStreamExt};
        stream::iter(items)
            .map(|item| self.put_page(item))
            .buffer_unordered(16)
            .try_for_each(|()| async { Ok(()) })
            .await?;
        Ok(pages.len())
    }

    /// Indexes the runs table again from its items, one `Scan` page (up to `limit` items,
    /// at most 1,000) from `from` (an item id where the last call stopped): for a stack
    /// whose runs were written before it had the index, or whose stream's records expired
    /// unread (24 hours). Returns the items it indexed and where to go on (`None`: done).
    pub async fn reindex(
        &self,
        from: Option<String>,
        limit: i32,
    ) -> Result<(Vec<Indexed>, Option<String>), StoreError> {
        let out = self
            .db
            .scan()
            .table_name(&self.settings.runs_table)
            .projection_expression("id, ckey, workflow")
            .limit(limit.clamp(1, 1000))
            .set_exclusive_start_key(from.map(|id| HashMap::from([("id".to_string(), s(id))])))
            .send()
            .await
            .map_err(|e| failed("Scan (runs, to index them)", e))?;
        let records: Vec<Indexed> = out.items().iter().filter_map(Indexed::of).collect();
        self.index(&records).await?;
        let next = out
            .last_evaluated_key
            .as_ref()
            .and_then(|k| get_s(k, "id"))
            .map(str::to_string);
        Ok((records, next))
    }

    /// The pages of a run that ended more than [`PAGE_MARGIN`] after it started, written
    /// by [`Self::write_pages`] once its end is saved: it outlives the pages that list it,
    /// so it gets pages of its own that expire with its item. Empty for any other run.
    pub(super) fn late_end_pages(run: &Run, item: &Item) -> Vec<Item> {
        let Some(expires) = get_n(item, "expires") else {
            return Vec::new();
        };
        let ended = run.finished_at.unwrap_or(run.inserted_at);
        let took = ended.millis().saturating_sub(run.inserted_at.millis());
        if took <= i64::try_from(PAGE_MARGIN.as_millis()).unwrap_or(i64::MAX) {
            return Vec::new();
        }
        let Some(r) = Indexed::of(item) else {
            return Vec::new();
        };
        let Some(prefix) = r.prefix() else {
            return Vec::new();
        };
        let bucket = bucket_of(&r.ckey);
        let mut bases = vec![workflow_partition(&r.workflow)];
        if r.timed {
            bases.push("t".into());
        }
        let expires = Some(expires + BUCKET_MS / 1000);
        bases
            .iter()
            .map(|base| page_item(&page(base, bucket, prefix, vec![r.ckey.clone()]), expires))
            .collect()
    }

    /// Puts the pages one by one (a late-ending run's one or two). `PutItem` rather than
    /// `BatchWriteItem`: the same write units, no unprocessed items to retry, and no
    /// second operation's code in every function (the control API's binary is near
    /// Lambda's 8 MiB budget).
    pub(super) async fn write_pages(&self, items: Vec<Item>) -> Result<(), StoreError> {
        for item in items {
            self.put_page(item).await?;
        }
        Ok(())
    }

    async fn put_page(&self, item: Item) -> Result<(), StoreError> {
        self.db
            .put_item()
            .table_name(&self.settings.index_table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| failed("PutItem (index page)", e))?;
        Ok(())
    }

    /// A partition's entries below `below` (a sort key or time prefix; `~` for none),
    /// newest first: every entry of the buckets read, until at least `limit` are below
    /// `below` and a bucket has ended. Also the key down to which the entries are complete
    /// (the last bucket's start), or `None` when the partition has no more.
    pub(super) async fn partition_below(
        &self,
        p: &str,
        through: bool,
        below: &str,
        limit: usize,
    ) -> Result<(Vec<Entry>, Option<String>), StoreError> {
        let upto = match below.get(..13).and_then(|t| t.parse::<i64>().ok()) {
            Some(_) => format!("{:013}", bucket_of(below) + BUCKET_MS),
            None => "~".to_string(),
        };
        let mut entries = Vec::new();
        // The bucket being read and its entries so far (pages may repeat an entry).
        let mut bucket: Option<String> = None;
        let mut current = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.settings.index_table)
                .key_condition_expression("p = :p AND k < :upto")
                .expression_attribute_values(":p", s(p))
                .expression_attribute_values(":upto", s(&upto))
                .scan_index_forward(false)
                .limit(100)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("Query (index)", e))?;
            for item in out.items.unwrap_or_default() {
                let k = get_s(&item, "k").unwrap_or_default();
                let b = k.get(..13).unwrap_or_default();
                if bucket.as_deref().is_some_and(|cur| cur != b) {
                    end_bucket(&mut current, &mut entries);
                    if entries.len() >= limit {
                        return Ok((entries, bucket));
                    }
                }
                bucket = Some(b.to_string());
                read_page(&item, below, through, &mut current);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                end_bucket(&mut current, &mut entries);
                return Ok((entries, None));
            }
        }
    }
}

/// A bucket read whole: its entries, newest first and each once, join the partition's.
fn end_bucket(current: &mut Vec<Entry>, entries: &mut Vec<Entry>) {
    newest_first_once(current);
    entries.append(current);
}

/// A page's entries below `below`.
fn read_page(item: &Item, below: &str, through: bool, into: &mut Vec<Entry>) {
    let prefix = get_s(item, "x").unwrap_or_default();
    let Some(AttributeValue::L(list)) = item.get("e") else {
        return;
    };
    for key in list.iter().filter_map(|v| v.as_s().ok()) {
        if key.as_str() < below
            && let Some((_, id)) = key.split_once('#')
        {
            into.push(Entry {
                key: key.clone(),
                id: format!("{prefix}{id}"),
                through,
            });
        }
    }
}

fn page_item(page: &IndexPage, expires: Option<i64>) -> Item {
    let mut item = HashMap::from([
        ("p".to_string(), s(&page.p)),
        ("k".to_string(), s(&page.k)),
        (
            "e".to_string(),
            AttributeValue::L(page.entries.iter().map(s).collect()),
        ),
    ]);
    if !page.prefix.is_empty() {
        item.insert("x".into(), s(&page.prefix));
    }
    if let Some(e) = expires {
        item.insert("expires".into(), n(e));
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ms: i64, id: &str, workflow: &str) -> Indexed {
        Indexed {
            id: id.into(),
            ckey: format!("{ms:013}#{id}"),
            workflow: workflow.into(),
            timed: true,
        }
    }

    #[test]
    fn pages_group_by_partition_and_bucket_and_fit_a_write_unit() {
        let mut records: Vec<Indexed> = (0..60)
            .map(|i| run(1_000 + i, &format!("01JRUN{i:020}"), "orders"))
            .collect();
        records.push(run(25_000, "01JLATER00000000000000000", "orders"));
        records.push(run(1_500, "01JOTHER00000000000000000", "billing"));
        let pages = pages(&records);
        let of = |p: &'static str| pages.iter().filter(move |x| x.p == p);
        let orders: usize = of("w#orders").map(|p| p.entries.len()).sum();
        assert_eq!(orders, 61);
        assert_eq!(of("w#billing").count(), 1);
        let timed: usize = pages
            .iter()
            .filter(|p| p.p.starts_with("t#"))
            .map(|p| p.entries.len())
            .sum();
        assert_eq!(timed, 62, "every timed record once in the time partitions");
        for p in &pages {
            let billed = billed_size(&page_item(p, Some(1_900_000_000)));
            assert!(billed <= 1024, "{billed} B: {p:?}");
            let b = &p.k[..13];
            assert!(p.entries.iter().all(|e| bucket_of(e) == bucket_of(b)));
        }
        assert!(of("w#orders").count() >= 4, "60 entries take several pages");
        assert_eq!(
            pages,
            super::pages(&records),
            "the same records, the same pages"
        );
    }

    /// An item's size as DynamoDB bills it: names and values, a list's 3 bytes and 1 per
    /// element, a number's digits halved and 1.
    fn billed_size(item: &Item) -> usize {
        fn value(v: &AttributeValue) -> usize {
            match v {
                AttributeValue::S(s) => s.len(),
                AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + value(e)).sum::<usize>(),
                _ => 100,
            }
        }
        item.iter().map(|(k, v)| k.len() + value(v)).sum()
    }

    #[test]
    fn a_full_page_is_one_write_unit_whatever_its_names() {
        let workflow = "w".repeat(100);
        let records: Vec<Indexed> = (0..200)
            .map(|i| Indexed {
                id: format!("#audit/{i:040}"),
                ckey: format!("{:013}#{i:040}", 1_000 + i),
                workflow: workflow.clone(),
                timed: true,
            })
            .collect();
        let pages = pages(&records);
        for p in &pages {
            let billed = billed_size(&page_item(p, Some(1_900_000_000)));
            assert!(
                billed <= 1024,
                "{billed} B with {} entries",
                p.entries.len()
            );
        }
        let fullest = pages
            .iter()
            .map(|p| billed_size(&page_item(p, Some(1))))
            .max();
        assert!(
            fullest.is_some_and(|b| b > 900),
            "pages are filled: {fullest:?}"
        );
        let short = super::pages(&[run(1_000, "01JRUN00000000000000000000", "orders")]);
        let many: Vec<Indexed> = (0..100)
            .map(|i| run(1_000 + i, &format!("01JRUN{i:020}"), "orders"))
            .collect();
        let per_page = super::pages(&many)[0].entries.len();
        assert!(per_page >= 21, "{per_page} entries of 26-letter ids a page");
        assert_eq!(short.len(), 2);
    }

    #[test]
    fn an_entry_keeps_its_id_prefix() {
        let audit = Indexed {
            id: "#audit/01JAUDIT000000000000000000".into(),
            ckey: "0000000001000#01JAUDIT000000000000000000".into(),
            workflow: "#audit".into(),
            timed: false,
        };
        let pages = pages(&[audit]);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].p, "w##audit");
        let item = page_item(&pages[0], None);
        let mut read = Vec::new();
        read_page(&item, "~", false, &mut read);
        let read: Vec<(&str, &str)> = read
            .iter()
            .map(|e| (e.key.as_str(), e.id.as_str()))
            .collect();
        assert_eq!(
            read,
            [(
                "0000000001000#01JAUDIT000000000000000000",
                "#audit/01JAUDIT000000000000000000"
            )]
        );
    }

    #[test]
    fn a_stream_image_reads_as_its_item_would() {
        let image = serde_json::json!({
            "id": {"S": "01JRUN"}, "ckey": {"S": "0000000001000#01JRUN"},
            "workflow": {"S": "orders"}, "v": {"N": "0"}
        });
        assert_eq!(
            Indexed::of_image(&image),
            Some(run(1_000, "01JRUN", "orders"))
        );
        let marker = serde_json::json!({"id": {"S": "#marker/sweeper"}, "at": {"N": "5"}});
        assert_eq!(Indexed::of_image(&marker), None);
    }
}
