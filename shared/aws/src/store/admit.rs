//! Admission. A message and the one run that took its id are one item (`joined.rs`),
//! written only where nothing has their id. With an idempotency claim, the claim and the
//! records are one transaction (`admit_claimed`).
//!
//! Otherwise (a message starting several runs, or one whose run has an id of its own, or
//! that does not fit one item with it): the message, then its runs, each written only
//! where nothing is yet. The order is the guarantee: a run is never written before its
//! message is durable, so a failure between the two (a throttled write, a timeout) leaves
//! no run to execute; the caller gets 503 and its retry starts the one run. A
//! `BatchWriteItem` of both could land the run alone and start it twice. The two writes
//! cost what the batch did (write units are per item); the second round trip adds a few
//! milliseconds. Derived ids (Kafka records, cron ticks) make the conditions matter: a
//! concurrent redelivery finds the first admission and is a duplicate, never an
//! overwrite of a run that has moved on. The one message a redelivery does replace is one
//! whose run could not be written (marked `unstarted`): with a derived id, the retry is the
//! only delivery that can start that run.

use tripline_app::ports::{Admitted, IdempotencyClaim, InboxMessage, Outcome, StoreError};

use super::*;

const ABSENT: &str = "attribute_not_exists(id)";

/// The attribute of a message whose run could not be written.
const UNSTARTED: &str = "unstarted";

/// Whether `message` is listed through a run written with it (the run took the message's
/// id, time and workflow: `App::run_of_message`), rather than through index entries of its own.
pub(super) fn listed_by_run(message: &InboxMessage, runs: &[Item]) -> bool {
    let key = time_key(message.received_at, &message.id);
    runs.iter().any(|r| {
        get_s(r, "id") == Some(message.id.as_str())
            && get_s(r, "ckey") == Some(key.as_str())
            && get_s(r, "workflow") == Some(message.workflow.as_str())
    })
}

impl DynamoStore {
    pub(super) async fn admit_in_order(
        &self,
        message: &InboxMessage,
        runs: Vec<Item>,
    ) -> Result<Option<Admitted>, StoreError> {
        let by_run = listed_by_run(message, &runs);
        let inbox = &self.settings.inbox_table;
        let item = self.message_item(message, by_run).await?;
        if !self.put_if(inbox, item, ABSENT).await? {
            // Another message has the id. Only one whose run could not be written
            // ([`Self::mark_unstarted`]) is replaced: a derived id's redelivery (a Kafka
            // record, a cron tick) then starts the run the first delivery could not,
            // instead of being taken for a duplicate of nothing.
            let existing = self.inbox_item(&message.id).await?;
            if !existing.as_ref().is_some_and(|i| i.contains_key(UNSTARTED)) {
                return Ok(Some(self.duplicate_of(existing).await?));
            }
            let item = self.message_item(message, by_run).await?;
            let retake = format!("attribute_exists({UNSTARTED})");
            if !self.put_if(inbox, item, &retake).await? {
                let existing = self.inbox_item(&message.id).await?;
                return Ok(Some(self.duplicate_of(existing).await?));
            }
        }
        let ids: Vec<String> = runs
            .iter()
            .filter_map(|i| get_s(i, "id").map(str::to_string))
            .collect();
        let written = match runs.len() {
            0 => Ok(true),
            1 => {
                let run = runs.into_iter().next().unwrap_or_default();
                self.put_if(&self.settings.runs_table, run, ABSENT).await
            }
            _ => self.put_runs_at_once(runs).await,
        };
        match written {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(Admitted::Duplicate {
                run_id: ids.into_iter().next().unwrap_or_default(),
            })),
            Err(e) => {
                self.mark_unstarted(message).await;
                Err(e)
            }
        }
    }

    /// A message and its run in one item (`joined.rs`), written only where no run has
    /// their id: a redelivery finds it and is a duplicate of it. It is one write, so a
    /// failure leaves nothing to mark: the sender is answered 503, and its retry (or a
    /// derived id's redelivery) writes it.
    pub(super) async fn admit_joined(
        &self,
        message: &InboxMessage,
        item: Item,
    ) -> Result<Option<Admitted>, StoreError> {
        if self.put_if(&self.settings.runs_table, item, ABSENT).await? {
            return Ok(None);
        }
        Ok(Some(Admitted::Duplicate {
            run_id: message.id.clone(),
        }))
    }

    /// Admission with an idempotency claim: the claim and `writes` (the message and its
    /// runs, or their one joined item) in one transaction, so the first run for the key
    /// wins atomically; `first` is the run the claim names.
    pub(super) async fn admit_claimed(
        &self,
        claim: &IdempotencyClaim,
        first: &str,
        message: InboxMessage,
        writes: Vec<(String, Item)>,
    ) -> Result<Option<Admitted>, StoreError> {
        let now = message.received_at.millis();
        let claim_item = Item::from([
            ("key".into(), s(&claim.key)),
            ("run_id".into(), s(first)),
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
            Ok(_) => return Ok(None),
            Err(e) => e,
        };
        if !result
            .as_service_error()
            .is_some_and(transaction_condition_failed)
        {
            return Err(failed("TransactWriteItems (admit)", result));
        }
        // The key is taken: record the message as a duplicate of the run that holds it.
        let run_id = self.record_duplicate(&claim.key, message).await?;
        Ok(Some(Admitted::Duplicate { run_id }))
    }

    /// `PutItem` on `condition`; false when the condition failed.
    async fn put_if(&self, table: &str, item: Item, condition: &str) -> Result<bool, StoreError> {
        let result = self
            .db
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(condition)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => Ok(false),
            Err(e) => Err(failed("PutItem (admit)", e)),
        }
    }

    /// Several runs of one message (a flow trigger's `for_each`): all or none.
    async fn put_runs_at_once(&self, runs: Vec<Item>) -> Result<bool, StoreError> {
        let mut tx = self.db.transact_write_items();
        for run in runs {
            tx = tx.transact_items(put(
                &self.settings.runs_table,
                run,
                Some((ABSENT, Item::new())),
            )?);
        }
        match tx.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(transaction_condition_failed) =>
            {
                Ok(false)
            }
            Err(e) => Err(failed("TransactWriteItems (admit runs)", e)),
        }
    }

    /// The message was admitted before (a redelivery; `existing` is its item): the run it
    /// started.
    async fn duplicate_of(&self, existing: Option<Item>) -> Result<Admitted, StoreError> {
        let message = match existing {
            Some(item) => Some(self.read_message(&item).await?),
            None => None,
        };
        let run_id = match message {
            Some(InboxMessage {
                outcome: Outcome::Started { run_ids },
                ..
            }) => run_ids.into_iter().next().unwrap_or_default(),
            Some(InboxMessage {
                outcome: Outcome::Duplicate { run_id },
                ..
            }) => run_id,
            _ => String::new(),
        };
        Ok(Admitted::Duplicate { run_id })
    }

    /// The message's run could not be written: the inbox says so rather than pointing at
    /// a run that does not exist (best effort: the sender was answered 503 either way).
    async fn mark_unstarted(&self, message: &InboxMessage) {
        let mut m = message.clone();
        m.outcome = Outcome::Rejected {
            reason: "its run could not be recorded (the store failed); the sender was answered 503 and may retry".into(),
        };
        // Indexed now: the run it would have been listed through does not exist.
        let Ok(mut item) = self.message_item(&m, false).await else {
            return;
        };
        // A redelivery of the same id may take its place (see `admit_in_order`).
        item.insert(UNSTARTED.into(), AttributeValue::Bool(true));
        let put = self
            .db
            .put_item()
            .table_name(&self.settings.inbox_table)
            .set_item(Some(item))
            .send()
            .await;
        if let Err(e) = put {
            tracing::warn!(message_id = %m.id, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "the message of an unrecorded run could not be marked");
        }
    }
}
