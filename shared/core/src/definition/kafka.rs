//! Where a kafka trigger reads: a cluster of its own (brokers, TLS, SASL, connect
//! timeout) and where it starts on a partition it has no position for.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kafka cluster a trigger reads from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KafkaCluster {
    /// `host:port` of one or more of its brokers.
    pub bootstrap: Vec<String>,
    /// TLS to the brokers, checked against the public web roots and the server's
    /// `--kafka-tls-ca` (its client certificate too, with `--kafka-tls-cert`).
    #[serde(default)]
    pub tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// How long connecting may take before it counts as failed (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<crate::time::Duration>,
}

/// SASL authentication to a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    /// The password, as a secret: `{{ secrets.NAME }}` (see `tripline secrets`).
    pub password: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaslMechanism {
    #[serde(alias = "PLAIN")]
    Plain,
    #[serde(rename = "scram_sha_256", alias = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "scram_sha_512", alias = "SCRAM-SHA-512")]
    ScramSha512,
}

/// Where a consumer starts on a partition it has no position for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KafkaStart {
    Earliest,
    Latest,
    /// The first record at or after this time.
    At(crate::time::Timestamp),
}

impl std::str::FromStr for KafkaStart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use crate::time::Timestamp;
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            // Unix milliseconds, as Kafka's own timestamps (and OpenFn's trigger) write them.
            ms if !ms.is_empty() && ms.len() <= 15 && ms.bytes().all(|b| b.is_ascii_digit()) => ms
                .parse()
                .map(|ms| Self::At(Timestamp::from_millis(ms)))
                .map_err(|e| format!("`{ms}`: {e}")),
            other => Timestamp::parse_rfc3339(other).map(Self::At).map_err(|e| {
                format!(
                    "`{other}`: use earliest, latest, an RFC 3339 time or Unix milliseconds ({e})"
                )
            }),
        }
    }
}
