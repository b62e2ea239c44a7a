//! The local shape's Kafka consumer against a real Kafka-protocol broker on loopback
//! (tansu, installed and started by `tests/run`): consume, filter, run; a restart in the
//! middle of a stream loses nothing and runs nothing twice; each start policy.

use std::time::Duration;

use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use serde_json::{Value, json};
use tripline_local::kafka::{KafkaOptions, StartAt};
use tripline_tests::{Opts, TestApp, spawn_app};

/// The broker's address. `tests/run` starts one and sets `TRIPLINE_TEST_KAFKA_BOOTSTRAP`.
pub(crate) fn bootstrap() -> String {
    std::env::var("TRIPLINE_TEST_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "TRIPLINE_TEST_KAFKA_BOOTSTRAP is not set: these tests need a Kafka-protocol broker; run `tests/run`, which installs and starts one"
        )
    })
}

pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub(crate) async fn create_topic(topic: &str, partitions: i32) -> rskafka::client::Client {
    let client = ClientBuilder::new(vec![bootstrap()])
        .build()
        .await
        .expect("the broker answers");
    client
        .controller_client()
        .expect("controller")
        .create_topic(topic, partitions, 1, 5_000)
        .await
        .expect("create topic");
    client
}

pub(crate) async fn produce(
    client: &rskafka::client::Client,
    topic: &str,
    partition: i32,
    values: &[Value],
) {
    let pc = client
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            key: Some(format!("k{partition}").into_bytes()),
            value: Some(v.to_string().into_bytes()),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    pc.produce(records, Compression::NoCompression)
        .await
        .expect("produce");
}

fn workflow(topic: &str) -> String {
    format!(
        r#"
id: stream
triggers:
  - {{ type: kafka, topics: [{topic}], filter: {{ body: {{ keep: true }} }} }}
steps:
  - {{ id: echo, type: transform, value: "{{{{ trigger.body.n }}}}" }}
"#
    )
}

fn options(group: &str, start: StartAt) -> KafkaOptions {
    KafkaOptions {
        bootstrap: vec![bootstrap()],
        group: group.into(),
        start,
        sasl: None,
        tls: None,
        refresh: Duration::from_millis(200),
        health: Default::default(),
        triggers: Default::default(),
    }
}

/// The inbox messages of the workflow once there are `n`.
async fn messages(app: &TestApp, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = app.get("/v1/inbox?workflow=stream&limit=500").await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} messages, have {}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runs(app: &TestApp) -> Vec<Value> {
    let (_, body) = app.get("/v1/runs?workflow=stream&limit=500").await;
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn records_are_consumed_filtered_and_run_once_across_a_restart() {
    let topic = unique("orders");
    let client = create_topic(&topic, 2).await;
    let mut app = spawn_app(Opts {
        kafka: Some(options(&unique("group"), StartAt::Earliest)),
        ..Opts::default().workflow("s.yaml", &workflow(&topic))
    })
    .await;
    // 20 records, half kept by the filter, over two partitions.
    for p in 0..2 {
        let values: Vec<Value> = (0..10)
            .map(|i| json!({"n": p * 100 + i, "keep": i % 2 == 0}))
            .collect();
        produce(&client, &topic, p, &values).await;
    }
    messages(&app, 20).await;
    // Ready, with each partition read to its end.
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status.as_u16(), 200, "{ready}");
    assert_eq!(ready["kafka"]["connected"], true, "{ready}");
    for p in 0..2 {
        let part = &ready["kafka"]["partitions"][format!("{topic}/{p}")];
        assert_eq!(part["high_watermark"], 10, "{ready}");
        assert_eq!(part["lag"], 0, "{ready}");
    }

    // More records while the server restarts.
    let producing = {
        let client = ClientBuilder::new(vec![bootstrap()])
            .build()
            .await
            .expect("client");
        let topic = topic.clone();
        tokio::spawn(async move {
            for round in 0..5 {
                for p in 0..2 {
                    let values: Vec<Value> = (0..4)
                        .map(|i| json!({"n": 1000 + round * 10 + p * 5 + i, "keep": true}))
                        .collect();
                    produce(&client, &topic, p, &values).await;
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.restart().await;
    producing.await.expect("producer");
    let all = messages(&app, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_again = messages(&app, 60).await;
    assert_eq!(all.len(), 60, "no record recorded twice");
    assert_eq!(all_again.len(), 60);
    let started = all
        .iter()
        .filter(|m| m["outcome"]["kind"] == "started")
        .count();
    assert_eq!(
        started, 50,
        "10 kept of the first 20, and all 40 later ones"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = runs(&app).await;
        if r.len() == 50 && r.iter().all(|x| x["status"] == "succeeded") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "runs: {}", r.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs(&app).await.len(), 50, "one run per kept record");
    app.stop().await;
}

#[tokio::test]
async fn a_new_group_starts_where_its_policy_says() {
    let topic = unique("events");
    let client = create_topic(&topic, 1).await;
    produce(
        &client,
        &topic,
        0,
        &[json!({"n": 1, "keep": true}), json!({"n": 2, "keep": true})],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = tripline_core::Timestamp::from_system_time(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(&client, &topic, 0, &[json!({"n": 3, "keep": true})]).await;

    for (start, expected) in [
        (StartAt::Earliest, vec![1, 2, 3, 4]),
        (StartAt::At(middle), vec![3, 4]),
        (StartAt::Latest, vec![4]),
    ] {
        let app = spawn_app(Opts {
            kafka: Some(options(&unique("group"), start)),
            ..Opts::default().workflow("s.yaml", &workflow(&topic))
        })
        .await;
        // `latest` starts from when the group first looked: give it that look.
        tokio::time::sleep(Duration::from_millis(800)).await;
        produce(&client, &topic, 0, &[json!({"n": 4, "keep": true})]).await;
        let got = messages(&app, expected.len()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut ns: Vec<i64> = messages(&app, expected.len())
            .await
            .iter()
            .filter_map(|m| {
                serde_json::from_str::<Value>(m["body"].as_str()?)
                    .ok()?
                    .get("n")?
                    .as_i64()
            })
            .collect();
        ns.sort();
        ns.dedup();
        // Each round produces another `4` (later groups may see earlier rounds' too).
        let want = expected.clone();
        assert!(got.len() >= expected.len());
        assert_eq!(ns, want, "{start:?}");
        app.stop().await;
    }
}

/// `examples/payment-events.yaml` as its comment says: captured payments post to the
/// ledger in order per customer, with the record's coordinates as the idempotency key;
/// the others are kept in the inbox as filtered.
#[tokio::test]
async fn the_payment_events_example_posts_captured_payments_in_order_per_customer() {
    let stub = tripline_tests::Stub::start().await;
    let client = ClientBuilder::new(vec![bootstrap()])
        .build()
        .await
        .expect("the broker answers");
    // The example's topic has a fixed name: another run on this broker may have made it.
    let _ = client
        .controller_client()
        .expect("controller")
        .create_topic("payments", 1, 1, 5_000)
        .await;
    let since = tripline_core::Timestamp::from_system_time(std::time::SystemTime::now());
    let app = spawn_app(Opts {
        folder: Some(tripline_tests::repo_root().join("examples")),
        kafka: Some(options(&unique("group"), StartAt::At(since))),
        config: tripline_app::Config {
            outbound: tripline_app::outbound::OutboundPolicy {
                allow_private_networks: true,
                rewrites: vec![("https://httpbin.org".into(), stub.url.clone())],
            },
            ..tripline_app::Config::default()
        },
        ..Opts::default()
    })
    .await;
    let run = unique("p");
    let records = [
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-1"), "amount": 10}),
        ),
        (
            "cust-2",
            json!({"type": "captured", "payment": format!("{run}-2"), "amount": 20}),
        ),
        (
            "cust-1",
            json!({"type": "refunded", "payment": format!("{run}-3"), "amount": 10}),
        ),
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-4"), "amount": 0}),
        ),
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-5"), "amount": 30}),
        ),
        (
            "cust-2",
            json!({"type": "captured", "payment": format!("{run}-6"), "amount": 40}),
        ),
        (
            "cust-1",
            json!({"type": "captured", "payment": format!("{run}-7"), "amount": 50}),
        ),
    ];
    let pc = client
        .partition_client("payments", 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let batch: Vec<Record> = records
        .iter()
        .map(|(key, value)| Record {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_string().into_bytes()),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    pc.produce(batch, Compression::NoCompression)
        .await
        .expect("produce");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let posts = loop {
        let posts: Vec<_> = stub
            .requests()
            .into_iter()
            .filter(|r| {
                r.body["payment"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&run))
            })
            .collect();
        if posts.len() >= 5 {
            break posts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ledger posts: {}",
            posts.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of = |customer: &str| -> Vec<String> {
        posts
            .iter()
            .filter(|r| r.body["customer"] == customer)
            .map(|r| r.body["payment"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        of("cust-1"),
        vec![format!("{run}-1"), format!("{run}-5"), format!("{run}-7")],
        "captured payments of a positive amount, in offset order"
    );
    assert_eq!(of("cust-2"), vec![format!("{run}-2"), format!("{run}-6")]);
    for p in &posts {
        assert_eq!(p.path, "/anything/ledger");
        assert!(
            p.headers
                .get("idempotency-key")
                .is_some_and(|k| k.starts_with("payments-0-")),
            "{:?}",
            p.headers
        );
        assert!(
            p.body["amount"].as_i64().is_some_and(|a| a > 0),
            "{}",
            p.body
        );
    }

    // The refund and the zero amount are kept, filtered, with the reason.
    let (_, inbox) = app
        .get("/v1/inbox?workflow=payment-events&outcome=filtered&limit=500")
        .await;
    let filtered: Vec<&Value> = inbox["items"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let ours = |n: usize| {
        filtered.iter().any(|m| {
            m["body"]
                .as_str()
                .is_some_and(|b| b.contains(&format!("{run}-{n}\"")))
        })
    };
    assert!(ours(3) && ours(4), "{inbox}");
    app.stop().await;
}

/// A broker reached only over mutual TLS: a tansu of its own on a private port, advertising
/// the port of a TLS-terminating proxy in front of it (tansu speaks plain TCP only). The
/// proxy's certificate and the client's are signed by a CA made for the test.
struct TlsBroker {
    bootstrap: String,
    dir: tempfile::TempDir,
    broker: std::process::Child,
    proxy: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
        self.proxy.abort();
    }
}

impl TlsBroker {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The TLS settings of a client with the test CA and the client certificate.
    fn client_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let (ca, cert, key) = (
            self.path("ca.pem"),
            self.path("client.pem"),
            self.path("client.key"),
        );
        tripline_local::kafka::tls_config(Some(&ca), Some((&cert, &key)))
            .expect("the test CA and client certificate")
    }

    /// A producer over TLS, and a new one-partition topic named after `name`.
    async fn producer_and_topic(&self, name: &str) -> (rskafka::client::Client, String) {
        let client = ClientBuilder::new(vec![self.bootstrap.clone()])
            .tls_config(self.client_tls())
            .build()
            .await
            .expect("a producer over TLS");
        let topic = unique(name);
        client
            .controller_client()
            .expect("controller")
            .create_topic(&topic, 1, 1, 5_000)
            .await
            .expect("create topic");
        (client, topic)
    }

    async fn start() -> TlsBroker {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let tansu = std::env::var("TRIPLINE_TEST_TANSU").unwrap_or_else(|_| {
            panic!("TRIPLINE_TEST_TANSU is not set: run `tests/run`, which installs tansu")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tripline test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(vec![name.to_string()])
                .expect("params")
                .signed_by(&key, &ca, &ca_key)
                .expect("signed");
            (cert, key)
        };
        let (server_cert, server_key) = leaf("localhost");
        let (client_cert, client_key) = leaf("tripline");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("client.pem"), client_cert.pem()).expect("write");
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).expect("write");

        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));

        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let front_port = front.local_addr().expect("addr").port();
        let back_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("log");
        let broker = std::process::Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{back_port}"),
                "--advertised-listener-url",
                &format!("tcp://localhost:{front_port}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let proxy = tokio::spawn(async move {
            while let Ok((socket, _)) = front.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client without a certificate of the CA fails here.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    if let Ok(mut back) =
                        tokio::net::TcpStream::connect(("127.0.0.1", back_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
                    }
                });
            }
        });
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", back_port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the TLS test's broker did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        TlsBroker {
            bootstrap: format!("localhost:{front_port}"),
            dir,
            broker,
            proxy,
        }
    }
}

#[tokio::test]
async fn records_are_consumed_over_mutual_tls() {
    let broker = TlsBroker::start().await;
    let tls = broker.client_tls();
    let (client, topic) = broker.producer_and_topic("secure").await;
    produce(
        &client,
        &topic,
        0,
        &[
            json!({"n": 1, "keep": true}),
            json!({"n": 2, "keep": false}),
            json!({"n": 3, "keep": true}),
        ],
    )
    .await;
    let app = spawn_app(Opts {
        kafka: Some(KafkaOptions {
            bootstrap: vec![broker.bootstrap.clone()],
            group: unique("group"),
            start: StartAt::Earliest,
            sasl: None,
            tls: Some(tls),
            refresh: Duration::from_millis(200),
            health: Default::default(),
            triggers: Default::default(),
        }),
        ..Opts::default().workflow("s.yaml", &workflow(&topic))
    })
    .await;
    let all = messages(&app, 3).await;
    assert_eq!(all.len(), 3);
    let started = all
        .iter()
        .filter(|m| m["outcome"]["kind"] == "started")
        .count();
    assert_eq!(started, 2, "{all:?}");
    app.stop().await;

    // Without the client certificate the proxy refuses the handshake (the client keeps
    // trying, so it is given 3 s).
    let no_cert =
        tripline_local::kafka::tls_config(Some(&broker.path("ca.pem")), None).expect("config");
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        ClientBuilder::new(vec![broker.bootstrap.clone()])
            .tls_config(no_cert)
            .build(),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a client without a certificate is refused"
    );
}

/// A trigger naming a TLS cluster of its own, on a server without a cluster: the
/// server's TLS files (its CA, its client certificate) are used for it.
#[tokio::test]
async fn a_trigger_names_a_tls_cluster_of_its_own() {
    let broker = TlsBroker::start().await;
    let tls = broker.client_tls();
    let (client, topic) = broker.producer_and_topic("own-tls").await;
    produce(
        &client,
        &topic,
        0,
        &[json!({"n": 1, "keep": true}), json!({"n": 2, "keep": true})],
    )
    .await;
    let yaml = format!(
        "id: stream\ntriggers:\n  - type: kafka\n    topics: [{topic}]\n    start: earliest\n    cluster: {{ bootstrap: [\"{}\"], tls: true }}\nsteps:\n  - {{ id: echo, type: transform, value: \"{{{{ trigger.body.n }}}}\" }}\n",
        broker.bootstrap
    );
    let app = spawn_app(Opts {
        kafka: Some(KafkaOptions {
            tls: Some(tls),
            refresh: Duration::from_millis(200),
            ..KafkaOptions::none()
        }),
        ..Opts::default().workflow("s.yaml", &yaml)
    })
    .await;
    assert_eq!(messages(&app, 2).await.len(), 2);
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status.as_u16(), 200, "{ready}");
    assert!(ready.get("kafka").is_none(), "no shared consumer: {ready}");
    assert_eq!(
        ready["kafka_triggers"]["stream/kafka"]["connected"], true,
        "{ready}"
    );
    app.stop().await;
}

#[test]
fn bad_tls_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let e = tripline_local::kafka::tls_config(Some(&empty), None)
        .expect_err("no certificate in it")
        .to_string();
    assert!(e.contains("empty.pem holds no PEM certificate"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = format!(
        "{:#}",
        tripline_local::kafka::tls_config(Some(&missing), None).expect_err("missing")
    );
    assert!(
        e.contains("cannot read the CA certificates of") && e.contains("missing.pem"),
        "{e}"
    );
}

/// The real `tripline serve` is killed (SIGKILL) while records are arriving and started
/// again on its data folder: every record is in the inbox once and ran once.
#[tokio::test]
async fn a_kill_9_in_the_middle_of_a_stream_loses_nothing_and_runs_nothing_twice() {
    let topic = unique("killed");
    let client = create_topic(&topic, 2).await;
    let workflows = tempfile::tempdir().expect("tempdir");
    std::fs::write(workflows.path().join("s.yaml"), workflow(&topic)).expect("write");
    let data = tempfile::tempdir().expect("tempdir");
    let group = unique("group");
    let bootstrap = bootstrap();
    let args = [
        "--kafka-bootstrap",
        bootstrap.as_str(),
        "--kafka-group",
        group.as_str(),
        "--kafka-start",
        "earliest",
    ];
    let mut server = tripline_tests::ServeProc::start(workflows.path(), data.path(), &args);
    let http = reqwest::Client::new();

    // 10 rounds of 10 records per partition, 200 in all, every one kept by the filter.
    let producing = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for round in 0..10 {
                for p in 0..2 {
                    let values: Vec<Value> = (0..10)
                        .map(|i| json!({"n": round * 100 + p * 10 + i, "keep": true}))
                        .collect();
                    produce(&client, &topic, p, &values).await;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    // Kill it once it has taken some of the stream, not all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body: Value = http
            .get(format!(
                "{}/v1/inbox?workflow=stream&limit=500",
                server.base
            ))
            .send()
            .await
            .expect("inbox")
            .json()
            .await
            .expect("json");
        if body["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing consumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    producing.await.expect("producer");
    let server = tripline_tests::ServeProc::start(workflows.path(), data.path(), &args);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let runs: Value = http
            .get(format!("{}/v1/runs?workflow=stream&limit=500", server.base))
            .send()
            .await
            .expect("runs")
            .json()
            .await
            .expect("json");
        let runs = runs["items"].as_array().cloned().unwrap_or_default();
        if runs.len() >= 200 && runs.iter().all(|r| r["status"] == "succeeded") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} runs after the restart",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A while longer: nothing more arrives (a record read twice is recognized).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inbox: Value = http
        .get(format!(
            "{}/v1/inbox?workflow=stream&limit=500",
            server.base
        ))
        .send()
        .await
        .expect("inbox")
        .json()
        .await
        .expect("json");
    let items = inbox["items"].as_array().cloned().unwrap_or_default();
    let mut ns: Vec<i64> = items
        .iter()
        .filter_map(|m| {
            serde_json::from_str::<Value>(m["body"].as_str()?)
                .ok()?
                .get("n")?
                .as_i64()
        })
        .collect();
    ns.sort();
    let want: Vec<i64> = (0..10)
        .flat_map(|round| (0..20).map(move |i| round * 100 + i))
        .collect();
    assert_eq!(ns, want, "every record once in the inbox");
    let runs: Value = http
        .get(format!("{}/v1/runs?workflow=stream&limit=500", server.base))
        .send()
        .await
        .expect("runs")
        .json()
        .await
        .expect("json");
    assert_eq!(
        runs["items"].as_array().map(Vec::len),
        Some(200),
        "one run per record"
    );
}

#[tokio::test]
async fn a_switched_off_trigger_reads_nothing_and_goes_on_from_its_position_when_on_again() {
    switched_off_and_on(Switch::Definition).await;
}

#[tokio::test]
async fn a_trigger_switched_off_through_the_api_keeps_its_position_too() {
    switched_off_and_on(Switch::Api).await;
}

/// How a test turns the trigger off and on: `enabled: false` in its definition, or the
/// operator's switch (`POST /v1/workflows/{id}/triggers/{t}/disable`).
enum Switch {
    Definition,
    Api,
}

async fn turn(app: &TestApp, topic: &str, how: &Switch, on: bool) {
    let (status, body) = match how {
        Switch::Definition if on => app.deploy("stream", &workflow(topic)).await,
        Switch::Definition => {
            let off = workflow(topic).replace(
                "filter: { body: { keep: true } } }",
                "filter: { body: { keep: true } }, enabled: false }",
            );
            assert!(off.contains("enabled: false"), "{off}");
            app.deploy("stream", &off).await
        }
        Switch::Api => {
            let verb = if on { "enable" } else { "disable" };
            app.post_with(&format!("/v1/workflows/stream/triggers/kafka/{verb}"), &[])
                .await
        }
    };
    assert!(status.is_success(), "{body}");
}

async fn switched_off_and_on(how: Switch) {
    let topic = unique("switch");
    let client = create_topic(&topic, 1).await;
    // `latest`: had the position been lost, the records sent while off would be missed.
    let app = spawn_app(Opts {
        kafka: Some(options(&unique("group"), StartAt::Latest)),
        ..Opts::default().workflow("s.yaml", &workflow(&topic))
    })
    .await;
    // The consumer reads the partition's end as its start before the first record counts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    produce(&client, &topic, 0, &[json!({"n": 1, "keep": true})]).await;
    messages(&app, 1).await;

    turn(&app, &topic, &how, false).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    produce(
        &client,
        &topic,
        0,
        &[json!({"n": 2, "keep": true}), json!({"n": 3, "keep": true})],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, inbox) = app.get("/v1/inbox?workflow=stream&limit=500").await;
    assert_eq!(
        inbox["items"].as_array().map(Vec::len),
        Some(1),
        "nothing read while off: {inbox}"
    );

    turn(&app, &topic, &how, true).await;
    let all = messages(&app, 3).await;
    let mut ns: Vec<i64> = all
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m["body"].as_str()?).ok()?["n"].as_i64())
        .collect();
    ns.sort();
    assert_eq!(
        ns,
        [1, 2, 3],
        "the records sent while off were read once it was on"
    );
}
