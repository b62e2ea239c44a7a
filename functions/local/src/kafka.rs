//! The local shape's Kafka consumer: reads the topics of the deployed `kafka` triggers
//! from a Kafka cluster and hands each partition's records to the Kafka intake, in offset
//! order. A partition's position (the next offset to read) is kept in the store, per
//! consumer group, and moved only after the records before it are in the inbox: a crash
//! reads them again, and the intake recognizes them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use tokio::sync::watch;
use tripline_app::App;
use tripline_app::ports::KafkaRecord;
use tripline_core::Timestamp;

/// Where a consumer group starts on a partition it has no position for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// The first record at or after this time.
    Timestamp(Timestamp),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            // Unix milliseconds, as Kafka's own timestamps (and OpenFn's trigger) write them.
            ms if !ms.is_empty() && ms.len() <= 15 && ms.bytes().all(|b| b.is_ascii_digit()) => ms
                .parse()
                .map(|ms| Self::Timestamp(Timestamp::from_millis(ms)))
                .map_err(|e| format!("`{ms}`: {e}")),
            other => Timestamp::parse_rfc3339(other)
                .map(Self::Timestamp)
                .map_err(|e| {
                    format!("use earliest, latest, an RFC 3339 time or Unix milliseconds: {e}")
                }),
        }
    }
}

/// The cluster `tripline serve` consumes.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    /// Names the positions kept in the store: two servers with one group share them.
    pub group: String,
    pub start: StartAt,
    /// SASL/PLAIN user name and password.
    pub sasl: Option<(String, String)>,
    /// TLS to the brokers (see [`tls_config`]); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How often the deployed triggers' topics and their partitions are looked at again.
    pub refresh: Duration,
    /// What the consumer knows of itself (shared with `/readyz`).
    pub health: Arc<KafkaHealth>,
}

/// The consumer's state as `/readyz` reports it: whether the cluster answers, the last
/// error, and each partition's position, high watermark and lag.
#[derive(Debug, Default)]
pub struct KafkaHealth(std::sync::Mutex<HealthState>);

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HealthState {
    pub connected: bool,
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

    fn set(&self, f: impl FnOnce(&mut HealthState)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    fn failed(&self, why: String) {
        self.set(|s| {
            s.connected = false;
            s.last_error = Some(why);
        });
    }

    fn at(&self, topic: &str, partition: i32, position: i64, high: i64) {
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

/// The TLS configuration of the connections to the brokers: the server certificates are
/// checked against the public web roots (as AWS MSK's are) and, with `ca_file`, the
/// certificates of that PEM file too (a private CA). With `client` (a PEM certificate chain
/// and its PEM private key), the client authenticates with it (mutual TLS, as MSK offers).
/// Errors name the file and what is wrong with it.
pub fn tls_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context as _;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read the CA certificates of {}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            );
        }
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!(
                    "{} holds a certificate that is not a valid CA",
                    path.display()
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no protocol version")?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| {
                    format!("cannot read the client certificate of {}", cert.display())
                })?;
            if chain.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", cert.display());
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .with_context(|| {
                    format!(
                        "the client key {} does not go with the certificate {}",
                        key.display(),
                        cert.display()
                    )
                })?
        }
    };
    Ok(Arc::new(config))
}

/// How long connecting to the cluster may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn position_link(group: &str, topic: &str, partition: i32) -> String {
    format!("kafka-offset/{group}/{topic}/{partition}")
}

/// A client of the cluster, or `None` (logged, and reported by `/readyz`). rskafka
/// retries a broker that does not answer for ever: bounded here, so that the failure is
/// seen.
async fn connect(opts: &KafkaOptions) -> Option<Client> {
    let mut builder = ClientBuilder::new(opts.bootstrap.clone());
    if let Some((user, password)) = &opts.sasl {
        builder = builder.sasl_config(SaslConfig::Plain(Credentials::new(
            user.clone(),
            password.clone(),
        )));
    }
    if let Some(tls) = &opts.tls {
        builder = builder.tls_config(tls.clone());
    }
    let built = match tokio::time::timeout(CONNECT_TIMEOUT, builder.build()).await {
        Ok(b) => b.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no broker answered within {CONNECT_TIMEOUT:?}")),
    };
    match built {
        Ok(c) => {
            opts.health.set(|s| s.connected = true);
            Some(c)
        }
        Err(e) => {
            opts.health.failed(format!("cannot reach the cluster: {e}"));
            tracing::warn!(bootstrap = ?opts.bootstrap, error = %e, "cannot reach the Kafka cluster; trying again");
            None
        }
    }
}

/// Consumes until `stop`. Connection failures are logged and retried; they never stop the
/// server.
pub async fn run(app: Arc<App>, opts: KafkaOptions, mut stop: watch::Receiver<bool>) {
    let mut client: Option<Arc<Client>> = None;
    let mut running: HashMap<(String, i32), tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let topics = app.kafka_topics();
        if !topics.is_empty() {
            if client.is_none() {
                let connecting = tokio::select! {
                    c = connect(&opts) => c,
                    _ = stop.changed() => break,
                };
                client = connecting.map(Arc::new);
            }
            if let Some(c) = &client {
                let listed = tokio::select! {
                    l = c.list_topics() => l,
                    _ = stop.changed() => break,
                };
                match listed {
                    Ok(listed) => {
                        for t in listed.iter().filter(|t| topics.contains(&t.name)) {
                            for &p in &t.partitions {
                                let key = (t.name.clone(), p);
                                if running.get(&key).is_some_and(|h| !h.is_finished()) {
                                    continue;
                                }
                                let task = consume_partition(
                                    app.clone(),
                                    c.clone(),
                                    opts.clone(),
                                    t.name.clone(),
                                    p,
                                    stop.clone(),
                                );
                                running.insert(key, tokio::spawn(task));
                            }
                        }
                    }
                    Err(e) => {
                        opts.health
                            .failed(format!("listing the topics failed: {e}"));
                        tracing::warn!(error = %e, "listing the Kafka topics failed; trying again")
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.refresh) => {}
            _ = stop.changed() => {}
        }
    }
    for (_, h) in running {
        let _ = h.await;
    }
}

async fn consume_partition(
    app: Arc<App>,
    client: Arc<Client>,
    opts: KafkaOptions,
    topic: String,
    partition: i32,
    mut stop: watch::Receiver<bool>,
) {
    let pc = match client
        .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
        .await
    {
        Ok(pc) => pc,
        Err(e) => {
            tracing::warn!(topic, partition, error = %e, "cannot read the partition; trying again at the next look");
            return;
        }
    };
    let link = position_link(&opts.group, &topic, partition);
    let mut next = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let position = match next {
            Some(n) => n,
            None => match start_position(&app, &pc, &link, opts.start).await {
                Ok(n) => {
                    next = Some(n);
                    n
                }
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "cannot find where to start; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let fetched = tokio::select! {
            f = fetch(&pc, &opts.health, &topic, partition, position) => f,
            _ = stop.changed() => return,
        };
        let Some(records) = fetched else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if records.is_empty() {
            continue;
        }
        // Every trigger on the topic switched off meanwhile: the batch is left unread
        // (the position is not moved), and the task ends; switched on again, the topic is
        // read from here.
        if !app.kafka_topics().contains(&topic) {
            tracing::info!(
                topic,
                partition,
                position,
                "no enabled trigger consumes the topic now; reading stops here"
            );
            return;
        }
        match record_batch(&app, &topic, partition, &link, records).await {
            Some(after) => next = Some(after),
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// One fetch from `position`, its outcome told to `health`; `None` when it failed
/// (logged).
async fn fetch(
    pc: &rskafka::client::partition::PartitionClient,
    health: &KafkaHealth,
    topic: &str,
    partition: i32,
    position: i64,
) -> Option<Vec<rskafka::record::RecordAndOffset>> {
    match pc.fetch_records(position, 1..1_048_576, 500).await {
        Ok((records, high)) => {
            let read_to = records
                .iter()
                .map(|r| r.offset + 1)
                .max()
                .unwrap_or(position);
            health.at(topic, partition, read_to, high);
            Some(records)
        }
        Err(e) => {
            health.failed(format!("fetching {topic}/{partition} failed: {e}"));
            tracing::warn!(topic, partition, position, error = %e, "fetching from Kafka failed; trying again");
            None
        }
    }
}

/// Records a fetched batch in the inbox, then saves the position after it: the next
/// offset to read, or `None` when the batch must be read again.
async fn record_batch(
    app: &App,
    topic: &str,
    partition: i32,
    link: &str,
    records: Vec<rskafka::record::RecordAndOffset>,
) -> Option<i64> {
    let last = records.iter().map(|r| r.offset).max()?;
    let batch: Vec<KafkaRecord> = records
        .into_iter()
        .map(|r| KafkaRecord {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            timestamp: Timestamp(r.record.timestamp.timestamp_millis()),
            key: r.record.key,
            value: r.record.value,
            headers: r.record.headers.into_iter().collect(),
        })
        .collect();
    match app.kafka_intake(batch).await {
        Ok(report) => {
            // Only now: everything before `last + 1` is in the inbox.
            if let Err(e) = app.store.set_link(link, &(last + 1).to_string()).await {
                tracing::warn!(topic, partition, error = %e, "the position was not saved; these records are read again (and recognized)");
            }
            tracing::debug!(
                topic,
                partition,
                recorded = report.recorded,
                next = last + 1,
                "Kafka records recorded"
            );
            Some(last + 1)
        }
        Err(e) => {
            tracing::warn!(topic, partition, error = %e, "recording Kafka records failed; reading them again");
            None
        }
    }
}

/// The saved position, or the start policy's offset (saved at once, so that `latest`
/// means "from when this group first looked", not "from each restart").
async fn start_position(
    app: &App,
    pc: &rskafka::client::partition::PartitionClient,
    link: &str,
    start: StartAt,
) -> Result<i64, String> {
    if let Some(saved) = app.store.link(link).await.map_err(|e| e.to_string())? {
        return saved
            .parse()
            .map_err(|_| format!("the saved position {saved:?} is not an offset"));
    }
    let at = match start {
        StartAt::Earliest => OffsetAt::Earliest,
        StartAt::Latest => OffsetAt::Latest,
        StartAt::Timestamp(t) => OffsetAt::Timestamp(
            chrono::DateTime::from_timestamp_millis(t.millis()).ok_or("a time out of range")?,
        ),
    };
    let offset = pc.get_offset(at).await.map_err(|e| e.to_string())?;
    app.store
        .set_link(link, &offset.to_string())
        .await
        .map_err(|e| e.to_string())?;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_a_word_an_rfc_3339_time_or_unix_milliseconds() {
        assert_eq!("earliest".parse::<StartAt>(), Ok(StartAt::Earliest));
        let ms: StartAt = "1800000000000".parse().expect("ms");
        let rfc: StartAt = "2027-01-15T08:00:00Z".parse().expect("rfc");
        assert_eq!(ms, rfc);
        let err = "yesterday".parse::<StartAt>().expect_err("refused");
        assert!(err.contains("Unix milliseconds"), "{err}");
    }
}
