//! Kafka triggers that name their own cluster and SASL mechanism, against a tansu broker
//! with authentication on (started here, on SQLite storage): SCRAM-SHA-256 and SCRAM-SHA-512 users read
//! their trigger's topic, a wrong password is refused and reported by `/readyz`, and a
//! trigger's own `start` (Unix ms) on the server's broker reads from there, for that
//! trigger only.

use std::time::Duration;

use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use serde_json::json;
use tripline_local::kafka::{KafkaOptions, StartAt};
use tripline_tests::{Opts, TestApp, spawn_app};

use crate::kafka_broker::{bootstrap, create_topic, produce, unique};

/// A tansu broker that requires SASL. tansu offers only SCRAM, and keeps SCRAM users in
/// its SQLite storage only, so its users are made first, by tansu's own `user create`, on
/// a broker without authentication over the same SQLite file, which is then restarted
/// with `--authentication`.
struct AuthBroker {
    bootstrap: String,
    broker: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for AuthBroker {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl AuthBroker {
    async fn start(users: &[(&str, &str, &str)]) -> AuthBroker {
        let tansu = std::env::var("TRIPLINE_TEST_TANSU").unwrap_or_else(|_| {
            panic!("TRIPLINE_TEST_TANSU is not set: run `tests/run`, which installs tansu")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let broker = |auth: bool, log: &str| {
            let log = std::fs::File::create(dir.path().join(log)).expect("log");
            let mut cmd = std::process::Command::new(&tansu);
            cmd.arg("broker")
                .current_dir(dir.path())
                .args(["--storage-engine", "sqlite://tansu.db"])
                .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
                .args([
                    "--advertised-listener-url",
                    &format!("tcp://127.0.0.1:{port}"),
                ])
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            if auth {
                cmd.arg("--authentication");
            }
            cmd.spawn().expect("start tansu")
        };
        let mut open = broker(false, "tansu-open.log");
        wait_for(port).await;
        for (name, password, mechanism) in users {
            let made = tokio::process::Command::new(&tansu)
                .args([
                    "user",
                    "create",
                    "--broker",
                    &format!("tcp://127.0.0.1:{port}"),
                ])
                .args(["--mechanism", mechanism, name, password])
                .output()
                .await
                .expect("tansu user create");
            assert!(made.status.success(), "user {name}: {made:?}");
        }
        let _ = open.kill();
        let _ = open.wait();
        let broker = broker(true, "tansu-auth.log");
        wait_for(port).await;
        AuthBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            broker,
            _dir: dir,
        }
    }
}

impl AuthBroker {
    /// The authenticating broker's log, for a failure's message.
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("tansu-auth.log")).unwrap_or_default()
    }
}

async fn wait_for(port: u16) {
    let started = tokio::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the broker did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scram256(user: &str, password: &str) -> SaslConfig {
    SaslConfig::ScramSha256(Credentials::new(user.into(), password.into()))
}

fn workflow(id: &str, topic: &str, extra: &str) -> String {
    format!(
        "id: {id}\ntriggers:\n  - type: kafka\n    topics: [{topic}]\n{extra}\nsteps:\n  - {{ id: n, type: transform, value: \"{{{{ trigger.body.n }}}}\" }}\n"
    )
}

fn cluster(bootstrap: &str, mechanism: &str, user: &str, secret: &str) -> String {
    format!(
        "    start: earliest\n    cluster:\n      bootstrap: [\"{bootstrap}\"]\n      connect_timeout: 3s\n      sasl: {{ mechanism: {mechanism}, username: {user}, password: \"{{{{ secrets.{secret} }}}}\" }}"
    )
}

/// The outputs of a workflow's runs once there are `n`, sorted.
async fn outputs(app: &TestApp, workflow: &str, n: usize) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = app
            .get(&format!("/v1/runs?workflow={workflow}&limit=100"))
            .await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let mut done: Vec<i64> = Vec::new();
        for item in &items {
            let run = app.wait_run(item["run_id"].as_str().expect("id")).await;
            done.push(run["final_output"].as_i64().unwrap_or(-1));
        }
        if done.len() >= n {
            done.sort();
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workflow}: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn quick() -> KafkaOptions {
    KafkaOptions {
        refresh: Duration::from_millis(200),
        ..KafkaOptions::none()
    }
}

#[tokio::test]
async fn scram_users_read_their_triggers_cluster_and_a_wrong_password_is_reported() {
    let broker = AuthBroker::start(&[
        ("alice", "alice-password", "scram256"),
        ("bob", "bob-password", "scram512"),
    ])
    .await;
    // rskafka retries a refused sign-in for ever: bounded here.
    let producer = tokio::time::timeout(
        Duration::from_secs(10),
        ClientBuilder::new(vec![broker.bootstrap.clone()])
            .sasl_config(scram256("alice", "alice-password"))
            .build(),
    )
    .await
    .unwrap_or_else(|_| panic!("alice did not sign in with SCRAM-SHA-256: {}", broker.log()))
    .expect("alice signs in with SCRAM-SHA-256");
    let topic = "payments";
    producer
        .controller_client()
        .expect("controller")
        .create_topic(topic, 1, 1, 5_000)
        .await
        .expect("create topic");
    produce(
        &producer,
        topic,
        0,
        &[json!({"n": 1}), json!({"n": 2}), json!({"n": 3})],
    )
    .await;
    let unsigned = tokio::time::timeout(
        Duration::from_secs(3),
        ClientBuilder::new(vec![broker.bootstrap.clone()]).build(),
    )
    .await;
    let refused = match unsigned {
        Ok(Ok(c)) => c.list_topics().await.is_err(),
        _ => true,
    };
    assert!(refused, "the broker requires SASL");

    let b = &broker.bootstrap;
    let app = spawn_app(Opts {
        kafka: Some(quick()),
        ..Opts::default()
    })
    .await;
    // The secrets first: a deploy refuses a definition naming a secret that is not set.
    let now = tripline_core::Timestamp(chrono::Utc::now().timestamp_millis());
    let secrets = &app.app().secrets;
    secrets
        .set("alice_pw", "alice-password", now)
        .await
        .expect("set");
    secrets
        .set("bob_pw", "bob-password", now)
        .await
        .expect("set");
    secrets
        .set("wrong_pw", "not-alices-password", now)
        .await
        .expect("set");
    for (id, mechanism, user, secret) in [
        ("s256", "scram_sha_256", "alice", "alice_pw"),
        ("s512", "scram_sha_512", "bob", "bob_pw"),
        ("wrong", "scram_sha_256", "alice", "wrong_pw"),
    ] {
        let yaml = workflow(id, topic, &cluster(b, mechanism, user, secret));
        let (status, body) = app.deploy(id, &yaml).await;
        assert!(status.is_success(), "{id}: {body}");
    }
    assert_eq!(outputs(&app, "s256", 3).await, vec![1, 2, 3]);
    assert_eq!(outputs(&app, "s512", 3).await, vec![1, 2, 3]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let (status, ready) = app.get("/readyz").await;
        if ready["kafka_triggers"]["wrong/kafka"]["last_error"].is_string() {
            assert_eq!(status.as_u16(), 503, "{ready}");
            break ready;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let triggers = &ready["kafka_triggers"];
    assert_eq!(triggers["s256/kafka"]["connected"], true, "{ready}");
    assert_eq!(
        triggers["s512/kafka"]["partitions"]["payments/0"]["lag"], 0,
        "{ready}"
    );
    assert_eq!(triggers["wrong/kafka"]["connected"], false, "{ready}");
    assert_eq!(triggers["s256/kafka"]["bootstrap"][0], b.as_str());
    let (_, runs) = app.get("/v1/runs?workflow=wrong").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(0), "{runs}");
}

/// A trigger with its own `start` on the server's broker: read from that time, by a
/// consumer of its own, for that trigger only (the shared consumer's trigger on the same
/// topic reads everything, once).
#[tokio::test]
async fn a_triggers_own_start_in_unix_ms_reads_from_there_for_that_trigger_only() {
    let topic = unique("starts");
    let client = create_topic(&topic, 1).await;
    produce(&client, &topic, 0, &[json!({"n": 1}), json!({"n": 2})]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(&client, &topic, 0, &[json!({"n": 3}), json!({"n": 4})]).await;
    let app = spawn_app(Opts {
        kafka: Some(KafkaOptions {
            bootstrap: vec![bootstrap()],
            group: unique("group"),
            start: StartAt::Earliest,
            ..quick()
        }),
        ..Opts::default()
            .workflow("a.yaml", &workflow("all", &topic, ""))
            .workflow(
                "b.yaml",
                &workflow("later", &topic, &format!("    start: \"{since}\"")),
            )
    })
    .await;
    assert_eq!(outputs(&app, "later", 2).await, vec![3, 4]);
    assert_eq!(outputs(&app, "all", 4).await, vec![1, 2, 3, 4]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, inbox) = app.get("/v1/inbox?workflow=later").await;
    assert_eq!(inbox["items"].as_array().map(Vec::len), Some(2), "{inbox}");
    let (_, inbox) = app.get("/v1/inbox?workflow=all").await;
    assert_eq!(inbox["items"].as_array().map(Vec::len), Some(4), "{inbox}");
}
