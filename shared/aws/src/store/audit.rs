//! The audit log on DynamoDB: one item per entry in the runs table (`#audit/{id}`), listed
//! newest first through the index's pages as if `#audit` were a workflow (`index.rs`;
//! never in the listing of every run). The store expires nothing itself:
//! DynamoDB's TTL deletes runs and messages (see `expires`), so `purge` has no work here.

use async_trait::async_trait;
use tripline_app::ports::{AuditEntry, AuditQuery, Page, StoreError};

use super::listing::AsyncKeep;
use super::*;

const PARTITION: &str = "#audit";

impl DynamoStore {
    pub(super) async fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let doc = serde_json::to_string(entry).map_err(|e| corrupt("audit entry", e))?;
        self.db
            .put_item()
            .table_name(&self.settings.runs_table)
            .item("id", s(format!("{PARTITION}/{}", entry.id)))
            .item("workflow", s(PARTITION))
            .item("ckey", s(time_key(entry.at, &entry.id)))
            .item("doc", s(doc))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await
            .map_err(|e| failed("PutItem (audit)", e))?;
        Ok(())
    }

    pub(super) async fn audit_page(&self, q: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let listing = Listing {
            table: &self.settings.runs_table,
            workflow: Some(PARTITION),
            sort_key: "ckey",
            through: None,
            since: q.since,
            until: q.until,
            cursor: q.cursor.clone(),
            limit: q.limit,
        };
        self.page(listing, KeepAudit).await
    }
}

struct KeepAudit;

#[async_trait]
impl AsyncKeep<AuditEntry> for KeepAudit {
    async fn keep(
        &mut self,
        _: &DynamoStore,
        item: &Item,
    ) -> Result<Option<AuditEntry>, StoreError> {
        let doc = get_s(item, "doc").unwrap_or_default();
        serde_json::from_str(doc)
            .map(Some)
            .map_err(|e| corrupt("audit entry", e))
    }
}
