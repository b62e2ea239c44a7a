//! What the consumers know of themselves, as `/readyz` reports it.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The health of the consumers of single triggers, by `workflow/trigger`.
#[derive(Debug, Default)]
pub struct TriggerHealth(std::sync::Mutex<BTreeMap<String, Arc<KafkaHealth>>>);

impl TriggerHealth {
    /// Each consumer's state.
    pub fn states(&self) -> BTreeMap<String, HealthState> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, h)| (k.clone(), h.state())).collect())
            .unwrap_or_default()
    }

    pub(super) fn entry(&self, name: &str) -> Arc<KafkaHealth> {
        let mut m = self.0.lock().expect("health lock");
        m.entry(name.to_string()).or_default().clone()
    }

    pub(super) fn keep_only(&self, names: &[String]) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|k, _| names.contains(k));
        }
    }
}

/// The consumer's state as `/readyz` reports it: whether the cluster answers, the last
/// error, and each partition's position, high watermark and lag.
#[derive(Debug, Default)]
pub struct KafkaHealth(std::sync::Mutex<HealthState>);

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HealthState {
    pub connected: bool,
    /// The brokers it reads from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// By `topic/partition`.
    pub partitions: std::collections::BTreeMap<String, PartitionState>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PartitionState {
    /// The next offset to read.
    pub position: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

impl KafkaHealth {
    pub fn state(&self) -> HealthState {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(super) fn set(&self, f: impl FnOnce(&mut HealthState)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    pub(super) fn failed(&self, why: String) {
        self.set(|s| {
            s.connected = false;
            s.last_error = Some(why);
        });
    }

    pub(super) fn at(&self, topic: &str, partition: i32, position: i64, high: i64) {
        self.set(|s| {
            s.connected = true;
            s.last_error = None;
            s.partitions.insert(
                format!("{topic}/{partition}"),
                PartitionState {
                    position,
                    high_watermark: high,
                    lag: (high - position).max(0),
                },
            );
        });
    }
}
