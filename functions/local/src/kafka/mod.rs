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
use tripline_core::definition::KafkaTrigger;
pub use tripline_core::definition::{KafkaStart as StartAt, SaslMechanism};

mod health;
pub use health::{HealthState, KafkaHealth, PartitionState, TriggerHealth};

/// SASL credentials for a cluster.
#[derive(Clone, Debug)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl Sasl {
    fn config(&self) -> SaslConfig {
        let c = Credentials::new(self.username.clone(), self.password.clone());
        match self.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(c),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
        }
    }
}

/// The cluster `tripline serve` consumes (its `--kafka-*` flags), which are also the
/// defaults of the triggers that name a cluster or a start of their own.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// `host:port` of one or more brokers; empty: no shared consumer (the triggers with a
    /// `cluster` of their own are still read).
    pub bootstrap: Vec<String>,
    /// Names the positions kept in the store: two servers with one group share them.
    pub group: String,
    pub start: StartAt,
    pub sasl: Option<Sasl>,
    /// TLS to the brokers (see [`tls_config`]); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How often the deployed triggers' topics and their partitions are looked at again.
    pub refresh: Duration,
    /// What the shared consumer knows of itself (shared with `/readyz`).
    pub health: Arc<KafkaHealth>,
    /// The same, for each trigger read by a consumer of its own, by `workflow/trigger`.
    pub triggers: Arc<TriggerHealth>,
}

impl KafkaOptions {
    /// No shared cluster: only the triggers with a `cluster` of their own are read.
    pub fn none() -> Self {
        KafkaOptions {
            bootstrap: Vec::new(),
            group: "tripline".into(),
            start: StartAt::Latest,
            sasl: None,
            tls: None,
            refresh: Duration::from_secs(5),
            health: Default::default(),
            triggers: Default::default(),
        }
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

/// How long connecting to a cluster may take before it counts as a failure, unless a
/// trigger's `cluster.connect_timeout` says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One consumer: the server's shared one, or one trigger's own.
#[derive(Clone)]
struct Source {
    /// `None`: the server's; else the trigger's `workflow/trigger`.
    own: Option<String>,
    bootstrap: Vec<String>,
    sasl: Option<SaslConfig>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    start: StartAt,
    /// Where its positions are kept: `{links}/{topic}/{partition}`.
    links: String,
    health: Arc<KafkaHealth>,
}

impl Source {
    /// The topics it reads now: the shared consumer's, or its trigger's while it is on.
    fn topics(&self, app: &App) -> Vec<String> {
        let Some(own) = &self.own else {
            return app.kafka_topics();
        };
        app.kafka_triggers()
            .into_iter()
            .find(|(wf, k)| format!("{wf}/{}", k.id) == *own && k.enabled && k.own_consumer())
            .map(|(_, k)| k.topics)
            .unwrap_or_default()
    }

    fn link(&self, topic: &str, partition: i32) -> String {
        format!("{}/{topic}/{partition}", self.links)
    }
}

/// The consumers wanted now, each with a key that changes when its settings do (so that
/// a changed trigger is read with its new settings).
async fn sources(app: &App, opts: &KafkaOptions) -> Vec<(String, Source)> {
    let mut out = Vec::new();
    if !opts.bootstrap.is_empty() {
        opts.health.set(|s| s.bootstrap = opts.bootstrap.clone());
        let source = Source {
            own: None,
            bootstrap: opts.bootstrap.clone(),
            sasl: opts.sasl.as_ref().map(Sasl::config),
            tls: opts.tls.clone(),
            connect_timeout: CONNECT_TIMEOUT,
            start: opts.start,
            links: format!("kafka-offset/{}", opts.group),
            health: opts.health.clone(),
        };
        out.push(("server".to_string(), source));
    }
    let mut names = Vec::new();
    for (workflow, trigger) in app.kafka_triggers() {
        if !(trigger.enabled && trigger.own_consumer()) {
            continue;
        }
        let name = format!("{workflow}/{}", trigger.id);
        let health = opts.triggers.entry(&name);
        names.push(name.clone());
        match own_source(app, opts, &workflow, &trigger, health.clone()).await {
            Ok((fingerprint, source)) => out.push((format!("{name}#{fingerprint}"), source)),
            Err(why) => {
                health.failed(why.clone());
                tracing::warn!(trigger = %name, error = %why, "the kafka trigger cannot be read");
            }
        }
    }
    opts.triggers.keep_only(&names);
    out
}

/// A trigger's own consumer: its `cluster` (else the server's) and its `start` (else
/// the server's), its password read from the secret store.
async fn own_source(
    app: &App,
    opts: &KafkaOptions,
    workflow: &str,
    trigger: &KafkaTrigger,
    health: Arc<KafkaHealth>,
) -> Result<(String, Source), String> {
    use std::hash::{Hash as _, Hasher as _};
    let start = match &trigger.start {
        Some(s) => s.parse()?,
        None => opts.start,
    };
    // In this process only: it tells whether the settings changed since the last look.
    let mut fingerprint = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&(&trigger.cluster, &trigger.start))
        .unwrap_or_default()
        .hash(&mut fingerprint);
    let (bootstrap, sasl, tls, connect_timeout) = match &trigger.cluster {
        None if opts.bootstrap.is_empty() => {
            return Err("the trigger names no `cluster` and the server has no --kafka-bootstrap: add `cluster: { bootstrap: [host:port] }`, or start the server with --kafka-bootstrap".into());
        }
        None => (
            opts.bootstrap.clone(),
            opts.sasl.as_ref().map(Sasl::config),
            opts.tls.clone(),
            CONNECT_TIMEOUT,
        ),
        Some(c) => {
            let sasl = match &c.sasl {
                None => None,
                Some(s) => {
                    let password = password(app, &s.password).await?;
                    password.hash(&mut fingerprint);
                    let sasl = Sasl {
                        mechanism: s.mechanism,
                        username: s.username.clone(),
                        password,
                    };
                    Some(sasl.config())
                }
            };
            let tls = match (c.tls, &opts.tls) {
                (false, _) => None,
                (true, Some(server)) => Some(server.clone()),
                (true, None) => Some(tls_config(None, None).map_err(|e| e.to_string())?),
            };
            let timeout = c.connect_timeout.map_or(CONNECT_TIMEOUT, |t| t.std());
            (c.bootstrap.clone(), sasl, tls, timeout)
        }
    };
    health.set(|s| s.bootstrap = bootstrap.clone());
    let source = Source {
        own: Some(format!("{workflow}/{}", trigger.id)),
        bootstrap,
        sasl,
        tls,
        connect_timeout,
        start,
        links: format!("kafka-offset/{}/{workflow}/{}", opts.group, trigger.id),
        health,
    };
    Ok((format!("{:016x}", fingerprint.finish()), source))
}

/// A SASL password: the secret its `{{ secrets.NAME }}` names.
async fn password(app: &App, reference: &str) -> Result<String, String> {
    let name = tripline_core::secrets::reference(reference)
        .ok_or("the SASL password must be a secret, `{{ secrets.NAME }}`")?;
    match app.secrets.value(name, app.clock.now()).await {
        Ok(Some(v)) => Ok(v.to_string()),
        Ok(None) => Err(format!(
            "the secret `{name}` (the SASL password) is not set: `tripline secrets set {name}`"
        )),
        Err(e) => Err(format!("the secret `{name}` cannot be read: {e}")),
    }
}

/// A client of the cluster, or `None` (logged, and reported by `/readyz`). rskafka
/// retries a broker that does not answer for ever: bounded here, so that the failure is
/// seen.
async fn connect(source: &Source) -> Option<Client> {
    let mut builder = ClientBuilder::new(source.bootstrap.clone());
    if let Some(sasl) = &source.sasl {
        builder = builder.sasl_config(sasl.clone());
    }
    if let Some(tls) = &source.tls {
        builder = builder.tls_config(tls.clone());
    }
    let limit = source.connect_timeout;
    let built = match tokio::time::timeout(limit, builder.build()).await {
        Ok(b) => b.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no broker answered within {limit:?}")),
    };
    match built {
        Ok(c) => {
            source.health.set(|s| s.connected = true);
            Some(c)
        }
        Err(e) => {
            source
                .health
                .failed(format!("cannot reach the cluster: {e}"));
            tracing::warn!(bootstrap = ?source.bootstrap, consumer = source.own.as_deref().unwrap_or("server"), error = %e, "cannot reach the Kafka cluster; trying again");
            None
        }
    }
}

/// Runs the consumers until `stop`: the server's shared one, and one for each trigger
/// with a `cluster` or `start` of its own, started, restarted with new settings and
/// stopped as the deployed triggers change. Connection failures are logged and retried;
/// they never stop the server.
pub async fn run(app: Arc<App>, opts: KafkaOptions, mut stop: watch::Receiver<bool>) {
    let mut running: HashMap<String, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let wanted = sources(&app, &opts).await;
        running.retain(|key, (tx, _)| {
            let keep = wanted.iter().any(|(k, _)| k == key);
            if !keep {
                let _ = tx.send(true);
            }
            keep
        });
        for (key, source) in wanted {
            if running.get(&key).is_some_and(|(_, h)| !h.is_finished()) {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            let task = consume(app.clone(), source, opts.refresh, rx);
            running.insert(key, (tx, tokio::spawn(task)));
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.refresh) => {}
            _ = stop.changed() => {}
        }
    }
    for (tx, _) in running.values() {
        let _ = tx.send(true);
    }
    for (_, (_, h)) in running {
        let _ = h.await;
    }
}

/// One consumer until `stop`: its topics' partitions, each read by a task of its own.
async fn consume(
    app: Arc<App>,
    source: Source,
    refresh: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<Arc<Client>> = None;
    let mut running: HashMap<(String, i32), tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let topics = source.topics(&app);
        if !topics.is_empty() {
            if client.is_none() {
                let connecting = tokio::select! {
                    c = connect(&source) => c,
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
                                    source.clone(),
                                    t.name.clone(),
                                    p,
                                    stop.clone(),
                                );
                                running.insert(key, tokio::spawn(task));
                            }
                        }
                    }
                    Err(e) => {
                        source
                            .health
                            .failed(format!("listing the topics failed: {e}"));
                        tracing::warn!(error = %e, "listing the Kafka topics failed; trying again")
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
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
    source: Source,
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
    let link = source.link(&topic, partition);
    let mut next = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let position = match next {
            Some(n) => n,
            None => match start_position(&app, &pc, &link, source.start).await {
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
            f = fetch(&pc, &source.health, &topic, partition, position) => f,
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
        if !source.topics(&app).contains(&topic) {
            tracing::info!(
                topic,
                partition,
                position,
                "no enabled trigger consumes the topic now; reading stops here"
            );
            return;
        }
        match record_batch(&app, &source, &topic, partition, &link, records).await {
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
    source: &Source,
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
            source: source.own.clone(),
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
        StartAt::At(t) => OffsetAt::Timestamp(
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
