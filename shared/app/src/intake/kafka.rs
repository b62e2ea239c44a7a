//! Kafka intake: records of the topics that `kafka` triggers consume become inbox messages
//! and runs, each record exactly once however often it is delivered.
//!
//! A record's inbox message (one per workflow that consumes its topic) and its run have
//! ids derived from (topic, partition, offset, workflow): a batch delivered again finds
//! its messages recorded and starts nothing. The message and its run are written in one
//! admission, so a record is either wholly recorded or not at all; the caller commits the
//! offsets (AWS: returns success to the event source) only after [`App::kafka_intake`]
//! returned `Ok`.
//!
//! `ordering: key`: each run of a keyed record is admitted `after` the previous run of
//! the same workflow, trigger and key (a link in the store), and the executor starts it
//! only once that one has ended; the end of a run wakes the run linked behind it.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::Digest;
use tripline_core::Run;
use tripline_core::definition::{KafkaOrdering, KafkaTrigger, Trigger};
use tripline_core::run::{TriggerKind, TriggerRef};

use crate::App;
use crate::admission::{KeyFailed, Refused};
use crate::ports::{
    Admitted, IdempotencyClaim, InboxMessage, KafkaMeta, KafkaRecord, Outcome, StoreError,
    WorkflowRecord,
};

/// What a batch did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntakeReport {
    /// Inbox messages written now.
    pub recorded: usize,
    /// Records (per workflow) already in the inbox: a redelivery.
    pub already: usize,
    pub runs_started: usize,
}

/// The id of a record's message and run for `workflow`: a ULID of the record's timestamp
/// (part of the record, so a redelivery gives the same id) and 80 bits of a hash of
/// (topic, partition, offset, workflow).
pub fn record_id(r: &KafkaRecord, workflow: &str) -> String {
    let mut h = sha2::Sha256::new();
    for part in [r.topic.as_bytes(), workflow.as_bytes()] {
        h.update(part);
        h.update([0]);
    }
    // A trigger's own consumer may read another cluster's topic of the same name: its
    // records are told apart (the shared consumer's ids are as they always were).
    if let Some(source) = &r.source {
        h.update(source.as_bytes());
        h.update([1]);
    }
    h.update(r.partition.to_be_bytes());
    h.update(r.offset.to_be_bytes());
    crate::tokens::derived_ulid(r.timestamp.millis(), &h.finalize())
}

/// The link to the last run of a key (`ordering: key`).
fn last_of_key(workflow: &str, trigger: &str, key: &[u8]) -> String {
    let digest = sha2::Sha256::digest(key);
    let short: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("kafka-last/{workflow}/{trigger}/{short}")
}

/// The link from a run to the run ordered behind it.
pub(crate) fn next_link(run_id: &str) -> String {
    format!("next/{run_id}")
}

fn text_or_base64(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// A record whose value is neither JSON nor UTF-8 text: kept raw in the inbox, it starts
/// nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("the value is neither JSON nor UTF-8 text ({0}); it is kept raw")]
pub struct Undecodable(std::str::Utf8Error);

/// The trigger input of a record, or why its value cannot be decoded.
pub fn record_input(r: &KafkaRecord) -> Result<Value, Undecodable> {
    let body = match &r.value {
        None => Value::Null,
        Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => v,
            Err(_) => match std::str::from_utf8(bytes) {
                Ok(s) => json!(s),
                Err(e) => return Err(Undecodable(e)),
            },
        },
    };
    let headers: Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), text_or_base64(v)))
        .collect();
    Ok(json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": r.key.as_deref().map(text_or_base64),
        "headers": headers,
        "body": body,
    }))
}

/// What an inbox message keeps of a record besides its value.
pub fn meta_of(r: &KafkaRecord) -> KafkaMeta {
    let b64 = base64::engine::general_purpose::STANDARD;
    KafkaMeta {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.as_deref().map(|k| b64.encode(k)),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), b64.encode(v)))
            .collect(),
    }
}

/// The record an inbox message was made from.
pub fn record_of(meta: &KafkaMeta, value: &[u8]) -> KafkaRecord {
    let b64 = base64::engine::general_purpose::STANDARD;
    KafkaRecord {
        topic: meta.topic.clone(),
        partition: meta.partition,
        offset: meta.offset,
        timestamp: meta.timestamp,
        key: meta.key.as_ref().and_then(|k| b64.decode(k).ok()),
        value: Some(value.to_vec()),
        headers: meta
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), b64.decode(v).unwrap_or_default()))
            .collect(),
        source: None,
    }
}

/// Which of a workflow's kafka triggers a record's input matches, or why none does (each
/// trigger's filter or condition).
pub fn matching<'a>(
    triggers: &'a [KafkaTrigger],
    input: &Value,
) -> Result<&'a KafkaTrigger, Refused> {
    let mut reasons = Vec::new();
    for t in triggers {
        match mismatch(t, input) {
            None => return Ok(t),
            Some(why) => reasons.push(why),
        }
    }
    Err(Refused::Filtered(reasons.join("; ")))
}

fn mismatch(trigger: &KafkaTrigger, input: &Value) -> Option<String> {
    crate::admission::unmet(trigger.filter.as_ref(), trigger.condition.as_deref(), input)
        .map(|why| format!("trigger `{}`: {why}", trigger.id))
}

impl App {
    /// The kafka triggers of the deployed workflows that consume `topic`.
    pub fn consumers_of(
        &self,
        topic: &str,
        source: Option<&str>,
    ) -> Vec<(std::sync::Arc<WorkflowRecord>, Vec<KafkaTrigger>)> {
        let own = source.and_then(|s| s.split_once('/'));
        self.deployments
            .all()
            .into_iter()
            .filter(|rec| own.is_none_or(|(wf, _)| rec.id == wf))
            .filter_map(|rec| {
                let triggers: Vec<KafkaTrigger> = rec
                    .definition
                    .triggers
                    .iter()
                    .filter_map(|t| match t {
                        Trigger::Kafka(k)
                            if k.topics.iter().any(|x| x == topic)
                                && match own {
                                    Some((_, id)) => k.id == id,
                                    None => !k.own_consumer(),
                                } =>
                        {
                            let mut k = k.clone();
                            // Switched off by an operator: as `enabled: false`.
                            k.enabled = k.enabled && rec.is_on(&k.id);
                            Some(k)
                        }
                        _ => None,
                    })
                    .collect();
                (!triggers.is_empty()).then_some((rec, triggers))
            })
            .collect()
    }

    /// The topics the server's shared consumer reads: those of the enabled kafka
    /// triggers without a consumer of their own.
    pub fn kafka_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .kafka_triggers()
            .into_iter()
            // A topic only switched-off triggers consume is not read: its position
            // waits for them.
            .filter(|(_, k)| k.enabled && !k.own_consumer())
            .flat_map(|(_, k)| k.topics)
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Every deployed kafka trigger, with its workflow's id.
    pub fn kafka_triggers(&self) -> Vec<(String, KafkaTrigger)> {
        self.deployments
            .all()
            .iter()
            .flat_map(|r| {
                r.definition.triggers.iter().filter_map(|t| match t {
                    Trigger::Kafka(k) => {
                        let mut k = k.clone();
                        // Switched off by an operator: as `enabled: false`.
                        k.enabled = k.enabled && r.is_on(&k.id);
                        Some((r.id.clone(), k))
                    }
                    _ => None,
                })
            })
            .collect()
    }

    /// Records a batch: each record in the inbox (once per workflow consuming its topic)
    /// with the runs it starts. The records of one partition are handled in offset order,
    /// partitions at once. `Err` when any record could not be stored: the batch must not be
    /// acknowledged, and delivering it again is harmless.
    pub async fn kafka_intake(
        &self,
        records: Vec<KafkaRecord>,
    ) -> Result<IntakeReport, StoreError> {
        self.refresh_workflows(false).await;
        let mut partitions: BTreeMap<(String, i32), Vec<KafkaRecord>> = BTreeMap::new();
        for r in records {
            partitions
                .entry((r.topic.clone(), r.partition))
                .or_default()
                .push(r);
        }
        let work = partitions.into_values().map(|mut recs| async move {
            recs.sort_by_key(|r| r.offset);
            let mut report = IntakeReport::default();
            for r in &recs {
                self.intake_one(r, &mut report).await?;
            }
            Ok::<_, StoreError>(report)
        });
        let mut total = IntakeReport::default();
        let mut first_error = None;
        for result in futures::future::join_all(work).await {
            match result {
                Ok(r) => {
                    total.recorded += r.recorded;
                    total.already += r.already;
                    total.runs_started += r.runs_started;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// One record, for each workflow that consumes its topic: recorded once, with the run
    /// of the first trigger it passes.
    async fn intake_one(
        &self,
        r: &KafkaRecord,
        report: &mut IntakeReport,
    ) -> Result<(), StoreError> {
        let consumers = self.consumers_of(&r.topic, r.source.as_deref());
        let input = record_input(r);
        if consumers.is_empty() {
            // Kept, so that a record is never silently dropped (a trigger removed while its
            // topic is still consumed).
            let reason = format!("no deployed kafka trigger consumes topic `{}`", r.topic);
            let message = self.kafka_message(r, record_id(r, ""), "", "");
            self.record_kafka(message, Err(Outcome::Filtered { reason }), report)
                .await?;
            return Ok(());
        }
        for (rec, mut triggers) in consumers {
            let id = record_id(r, &rec.id);
            let mut message = self.kafka_message(r, id.clone(), &rec.id, &triggers[0].id);
            triggers.retain(|t| t.enabled);
            if triggers.is_empty() {
                let reason = format!(
                    "the kafka triggers of `{}` on topic `{}` are switched off (`enabled: false`, or by an operator); reprocess the message once one is on",
                    rec.id, r.topic
                );
                self.record_kafka(message, Err(Outcome::Skipped { reason }), report)
                    .await?;
                continue;
            }
            let input = match &input {
                Ok(v) => v.clone(),
                Err(undecodable) => {
                    let outcome = Outcome::Rejected {
                        reason: undecodable.to_string(),
                    };
                    self.record_kafka(message, Err(outcome), report).await?;
                    continue;
                }
            };
            let trigger = match matching(&triggers, &input) {
                Ok(t) => t,
                Err(refused) => {
                    let outcome = refused.outcome();
                    self.record_kafka(message, Err(outcome), report).await?;
                    continue;
                }
            };
            message.trigger = trigger.id.clone();
            // `matching` applied the filter and condition; the key is the gate's last part.
            let gate = trigger.gate();
            let keyed = self.claim_for(&rec.id, &trigger.id, gate.idempotency_key, &input, None);
            let idempotency = match keyed {
                Ok(c) => c,
                Err(KeyFailed(reason)) => {
                    let outcome = Outcome::Rejected { reason };
                    self.record_kafka(message, Err(outcome), report).await?;
                    continue;
                }
            };
            let trigger_ref = TriggerRef {
                kind: TriggerKind::Kafka,
                id: trigger.id.clone(),
            };
            let mut run = self.run_of_message(&message, &rec, trigger_ref, input);
            let key_link = self.order_by_key(&rec.id, trigger, r, &mut run).await?;
            let started = self
                .record_kafka(message, Ok((run, idempotency)), report)
                .await?;
            if started && let Some(link) = key_link {
                self.store.set_link(&link, &id).await?;
            }
        }
        Ok(())
    }

    /// `ordering: key`: the run is admitted `after` the last run of its key (linked so
    /// that the earlier run's end finds it); returns the key's link to move once the run
    /// is admitted.
    async fn order_by_key(
        &self,
        workflow: &str,
        trigger: &KafkaTrigger,
        r: &KafkaRecord,
        run: &mut Run,
    ) -> Result<Option<String>, StoreError> {
        let (KafkaOrdering::Key, Some(key)) = (trigger.ordering, &r.key) else {
            return Ok(None);
        };
        let link = last_of_key(workflow, &trigger.id, key);
        if let Some(prev) = self.store.link(&link).await?
            && prev != run.id
        {
            // Before this run exists: the previous run's end finds it.
            self.store.set_link(&next_link(&prev), &run.id).await?;
            run.after = Some(prev);
        }
        Ok(Some(link))
    }

    /// The inbox message of a record for `workflow` (empty: no workflow consumes it).
    fn kafka_message(
        &self,
        r: &KafkaRecord,
        id: String,
        workflow: &str,
        trigger: &str,
    ) -> InboxMessage {
        let text = |bytes: &[u8]| match text_or_base64(bytes) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let mut headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_lowercase(), text(v)))
            .collect();
        if let Some(key) = &r.key {
            headers.push(("kafka-key".into(), text(key)));
        }
        let mut m = InboxMessage::new(id, self.clock.now(), workflow, trigger, "KAFKA")
            .at_path(format!("{}/{}/{}", r.topic, r.partition, r.offset));
        m.headers = headers;
        m.body = r.value.clone().unwrap_or_default();
        m.kafka = Some(meta_of(r));
        m
    }

    /// Writes one record's message (and run) unless it is already there. True when the run
    /// was admitted now.
    async fn record_kafka(
        &self,
        message: InboxMessage,
        started: Result<(Run, Option<IdempotencyClaim>), Outcome>,
        report: &mut IntakeReport,
    ) -> Result<bool, StoreError> {
        if self.store.message(&message.id).await?.is_some() {
            report.already += 1;
            return Ok(false);
        }
        let started = match started {
            Ok((run, idempotency)) => {
                let admitted = self.admit_runs(message, vec![run], idempotency).await?;
                // A key the trigger's `idempotency_key` saw before: recorded, nothing
                // started.
                matches!(admitted, Admitted::New { .. })
            }
            Err(outcome) => {
                self.record_message(message, outcome).await?;
                false
            }
        };
        report.recorded += 1;
        if started {
            report.runs_started += 1;
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::Timestamp;

    fn record(value: &[u8]) -> KafkaRecord {
        KafkaRecord {
            topic: "orders".into(),
            partition: 2,
            offset: 7,
            timestamp: Timestamp(1_800_000_000_000),
            key: Some(b"customer-1".to_vec()),
            value: Some(value.to_vec()),
            headers: vec![
                ("trace".into(), b"abc".to_vec()),
                ("bin".into(), vec![0xff, 0x00]),
            ],
            source: None,
        }
    }

    #[test]
    fn a_record_id_depends_on_topic_partition_offset_and_workflow_only() {
        let r = record(b"{}");
        let a = record_id(&r, "w");
        assert_eq!(a, record_id(&r.clone(), "w"));
        assert_ne!(a, record_id(&r, "v"));
        // The same coordinates read by a trigger's own consumer (another cluster's topic of
        // the same name, perhaps) make another message.
        let own = KafkaRecord {
            source: Some("w/kafka".into()),
            ..r.clone()
        };
        assert_ne!(a, record_id(&own, "w"));
        for other in [
            KafkaRecord {
                partition: 3,
                ..r.clone()
            },
            KafkaRecord {
                offset: 8,
                ..r.clone()
            },
            KafkaRecord {
                topic: "refunds".into(),
                ..r.clone()
            },
        ] {
            assert_ne!(a, record_id(&other, "w"));
        }
        let same_record_redelivered = KafkaRecord {
            value: Some(b"{}".to_vec()),
            ..r.clone()
        };
        assert_eq!(a, record_id(&same_record_redelivered, "w"));
    }

    #[test]
    fn a_record_becomes_the_trigger_input_json_text_or_refused_when_undecodable() {
        let v = record_input(&record(br#"{"id": 5}"#)).expect("json");
        assert_eq!(v["body"], json!({"id": 5}));
        assert_eq!(v["key"], "customer-1");
        assert_eq!(v["headers"]["trace"], "abc");
        assert_eq!(v["headers"]["bin"], json!({"base64": "/wA="}));
        assert_eq!(
            (v["partition"].clone(), v["offset"].clone()),
            (json!(2), json!(7))
        );
        let text = record_input(&record(b"plain words")).expect("text");
        assert_eq!(text["body"], "plain words");
        let err = record_input(&record(&[0xc3, 0x28])).expect_err("undecodable");
        assert!(err.to_string().contains("kept raw"), "{err}");
    }
}
