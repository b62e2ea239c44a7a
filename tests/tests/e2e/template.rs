//! template.yaml keeps the promises the code relies on: the tables have the keys and
//! indexes the store queries (the same as `provision`, which the moto tests use), the
//! queue's visibility timeout is at least six times the executor's timeout, partial batch
//! failures are reported, every function is built the same way with its own policy.
//! (`tests/run` also runs cfn-lint and `sam validate --lint` on it.)

use tripline_aws::provision::{IDEMPOTENCY, INBOX, INDEX, RUNS, TableSpec, WORKFLOWS};
use tripline_tests::repo_root;
use yaml_rust2::{Yaml, YamlLoader};

fn template() -> Yaml {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
    YamlLoader::load_from_str(&text)
        .expect("template.yaml is YAML")
        .remove(0)
}

fn resource<'a>(t: &'a Yaml, name: &str) -> &'a Yaml {
    let r = &t["Resources"][name];
    assert!(!r.is_badvalue(), "template.yaml has no resource {name}");
    r
}

/// The template's resources of one `Type`, with their names.
fn of_type<'a>(t: &'a Yaml, kind: &str) -> Vec<(&'a str, &'a Yaml)> {
    t["Resources"]
        .as_hash()
        .expect("resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .filter_map(|(name, r)| Some((name.as_str()?, r)))
        .collect()
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// An index: its name, key schema and projection.
type Index = (String, Vec<(String, String)>, String);

fn key_schema(y: &Yaml) -> Vec<(String, String)> {
    y.as_vec()
        .expect("KeySchema")
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().expect("name").to_string(),
                k["KeyType"].as_str().expect("type").to_string(),
            )
        })
        .collect()
}

fn check_table(t: &Yaml, name: &str, spec: &TableSpec) {
    let p = &resource(t, name)["Properties"];
    assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"), "{name}");
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true),
        "{name}: point-in-time recovery"
    );
    let mut expected = vec![(spec.hash.to_string(), "HASH".to_string())];
    if let Some(r) = spec.range {
        expected.push((r.to_string(), "RANGE".into()));
    }
    assert_eq!(key_schema(&p["KeySchema"]), expected, "{name}: key");
    let indexes: Vec<Index> = p["GlobalSecondaryIndexes"]
        .as_vec()
        .map(|v| {
            v.iter()
                .map(|i| {
                    (
                        i["IndexName"].as_str().expect("name").to_string(),
                        key_schema(&i["KeySchema"]),
                        i["Projection"]["ProjectionType"]
                            .as_str()
                            .expect("projection")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<Index> = spec
        .indexes
        .iter()
        .map(|(n, h, r)| {
            (
                n.to_string(),
                vec![
                    (h.to_string(), "HASH".into()),
                    (r.to_string(), "RANGE".into()),
                ],
                "KEYS_ONLY".to_string(),
            )
        })
        .collect();
    assert_eq!(indexes, expected, "{name}: indexes");
    for def in p["AttributeDefinitions"].as_vec().expect("attributes") {
        let attr = def["AttributeName"].as_str().expect("name");
        let kind = if spec.numbers.contains(&attr) {
            "N"
        } else {
            "S"
        };
        assert_eq!(def["AttributeType"].as_str(), Some(kind), "{name}.{attr}");
    }
    assert_eq!(
        p["TimeToLiveSpecification"]["AttributeName"].as_str(),
        spec.ttl,
        "{name}: TTL attribute"
    );
    let stream = p["StreamSpecification"]["StreamViewType"].as_str();
    assert_eq!(
        stream,
        spec.stream.then_some("NEW_IMAGE"),
        "{name}: its stream"
    );
}

#[test]
fn the_tables_have_the_keys_and_indexes_the_store_uses() {
    let t = template();
    check_table(&t, "WorkflowsTable", &WORKFLOWS);
    check_table(&t, "RunsTable", &RUNS);
    check_table(&t, "InboxTable", &INBOX);
    check_table(&t, "IdempotencyTable", &IDEMPOTENCY);
    check_table(&t, "IndexTable", &INDEX);
}

/// The runs table's stream reaches the step executor, which writes the listings' index:
/// new items only, every batch delivered until it succeeds, and every function that may
/// save a run may write the pages of one that ended late (`store/index.rs`).
#[test]
fn the_runs_tables_stream_feeds_the_index() {
    let t = template();
    let executor = &resource(&t, "StepExecutorFunction")["Properties"];
    let index = &executor["Events"]["Index"];
    assert_eq!(index["Type"].as_str(), Some("DynamoDB"));
    let p = &index["Properties"];
    assert_eq!(p["Stream"].as_str(), Some("RunsTable.StreamArn"));
    assert_eq!(p["StartingPosition"].as_str(), Some("TRIM_HORIZON"));
    assert!(
        p["MaximumRetryAttempts"].is_badvalue(),
        "a failed batch is retried until it succeeds"
    );
    let pattern = p["FilterCriteria"]["Filters"][0]["Pattern"]
        .as_str()
        .expect("a filter");
    let pattern: serde_json::Value = serde_json::from_str(pattern).expect("JSON");
    assert_eq!(pattern, serde_json::json!({"eventName": ["INSERT"]}));
    for (name, _) in of_type(&t, "AWS::Serverless::Function") {
        let statements = &resource(&t, name)["Properties"]["Policies"][0]["Statement"];
        let writes_pages = statements.as_vec().expect("statements").iter().any(|s| {
            s["Action"].as_str() == Some("dynamodb:PutItem")
                && s["Resource"].as_str() == Some("IndexTable.Arn")
        });
        assert!(writes_pages, "{name} may write index pages");
    }
}

#[test]
fn the_queue_outlasts_six_executor_timeouts_and_redrives_to_a_dead_letter_queue() {
    let t = template();
    let executor = &resource(&t, "StepExecutorFunction")["Properties"];
    let timeout = executor["Timeout"]
        .as_i64()
        .expect("the executor's timeout is a number");
    let queue = &resource(&t, "WorkQueue")["Properties"];
    let visibility = queue["VisibilityTimeout"].as_i64().expect("visibility");
    assert!(visibility >= 6 * timeout, "{visibility} < 6 × {timeout}");
    assert!(queue["RedrivePolicy"]["maxReceiveCount"].as_i64().is_some());
    let sqs = &executor["Events"]["Work"];
    assert_eq!(sqs["Type"].as_str(), Some("SQS"));
    assert_eq!(
        strings(&sqs["Properties"]["FunctionResponseTypes"]),
        vec!["ReportBatchItemFailures"]
    );
    assert_eq!(
        executor["Events"]["Sweep"]["Properties"]["Input"].as_str(),
        Some(r#"{"sweep": true}"#),
        "the sweeper's schedule sends what the executor recognises"
    );
}

#[test]
fn every_function_is_a_rust_arm64_binary_with_its_own_policy() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    // The architecture is a parameter (x86_64 where arm64's Rust target cannot be
    // installed, as in tests/run's `sam build`), arm64 unless asked otherwise.
    assert_eq!(strings(&globals["Architectures"]), vec!["Architecture"]);
    let architecture = &t["Parameters"]["Architecture"];
    assert_eq!(architecture["Default"].as_str(), Some("arm64"));
    assert_eq!(
        strings(&architecture["AllowedValues"]),
        vec!["arm64", "x86_64"]
    );
    for (name, binary) in [
        ("WebhookIngressFunction", "webhook-ingress"),
        ("ResumeApprovalFunction", "resume-approval"),
        ("StepExecutorFunction", "step-executor"),
        ("ControlApiFunction", "control-api"),
        ("CronTickFunction", "cron-tick"),
        ("MskConsumerFunction", "msk-consumer"),
    ] {
        let f = resource(&t, name);
        assert_eq!(
            f["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{name}"
        );
        assert_eq!(
            f["Metadata"]["BuildProperties"]["Binary"].as_str(),
            Some(binary),
            "{name}"
        );
        let statements = f["Properties"]["Policies"][0]["Statement"]
            .as_vec()
            .unwrap_or_else(|| panic!("{name} has no policy of its own"));
        for s in statements {
            let actions = match &s["Action"] {
                Yaml::String(a) => vec![a.clone()],
                other => strings(other),
            };
            assert!(
                actions.iter().all(|a| !a.ends_with('*')),
                "{name}: least privilege, no wildcard actions: {actions:?}"
            );
        }
        assert!(
            std::path::Path::new(&repo_root().join("functions").join(binary)).is_dir(),
            "{binary} is a crate under functions/"
        );
    }
}

/// Every action of a function's own policy.
fn actions(t: &Yaml, function: &str) -> Vec<String> {
    let statements = resource(t, function)["Properties"]["Policies"][0]["Statement"]
        .as_vec()
        .unwrap_or_else(|| panic!("{function} has no policy of its own"));
    statements
        .iter()
        .flat_map(|s| match &s["Action"] {
            Yaml::String(a) => vec![a.clone()],
            other => strings(other),
        })
        .collect()
}

#[test]
fn the_resume_function_serves_the_urls_parked_runs_hand_out() {
    let t = template();
    let events = &resource(&t, "ResumeApprovalFunction")["Properties"]["Events"];
    let mut routes: Vec<(String, String)> = events
        .as_hash()
        .expect("events")
        .values()
        .map(|e| {
            (
                e["Properties"]["Method"]
                    .as_str()
                    .expect("method")
                    .to_string(),
                e["Properties"]["Path"].as_str().expect("path").to_string(),
            )
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        vec![
            ("ANY".to_string(), "/approve/{token}".to_string()),
            ("ANY".into(), "/reject/{token}".into()),
            ("GET".into(), "/review/{token}".into()),
            ("POST".into(), "/resume/{token}".into()),
        ]
    );
    let granted = actions(&t, "ResumeApprovalFunction");
    for needed in ["dynamodb:GetItem", "dynamodb:PutItem", "sqs:SendMessage"] {
        assert!(granted.iter().any(|a| a == needed), "{needed}: {granted:?}");
    }
}

#[test]
fn long_timers_can_be_scheduled_by_the_executor_and_only_send_to_the_queue() {
    let t = template();
    let executor = &resource(&t, "StepExecutorFunction")["Properties"];
    let env = &executor["Environment"]["Variables"];
    // Every variable the timer settings are read from is set for the executor.
    let settings = tripline_aws::Settings::with_prefix("x");
    for (name, _) in settings.to_env() {
        if name.starts_with("TRIPLINE_CRON_") {
            continue; // the control API's (see the cron test below)
        }
        let in_globals = !t["Globals"]["Function"]["Environment"]["Variables"][name].is_badvalue();
        assert!(
            in_globals || !env[name].is_badvalue(),
            "the executor does not get {name}"
        );
    }
    assert!(
        !env["TRIPLINE_PUBLIC_URL"].is_badvalue(),
        "the executor makes resume URLs"
    );
    let granted = actions(&t, "StepExecutorFunction");
    for needed in ["scheduler:CreateSchedule", "iam:PassRole"] {
        assert!(granted.iter().any(|a| a == needed), "{needed}: {granted:?}");
    }
    assert_eq!(
        resource(&t, "TimerScheduleGroup")["Type"].as_str(),
        Some("AWS::Scheduler::ScheduleGroup")
    );
    let role = &resource(&t, "TimerSchedulerRole")["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"].as_str(),
        Some("scheduler.amazonaws.com")
    );
    let statements = &role["Policies"][0]["PolicyDocument"]["Statement"];
    let allowed: Vec<String> = statements
        .as_vec()
        .expect("statements")
        .iter()
        .flat_map(|s| match &s["Action"] {
            Yaml::String(a) => vec![a.clone()],
            other => strings(other),
        })
        .collect();
    assert_eq!(allowed, vec!["sqs:SendMessage"]);
}

#[test]
fn cron_schedules_are_kept_by_the_control_api_and_invoke_only_the_cron_tick_function() {
    let t = template();
    // The control API gets every cron setting and may manage the group's schedules.
    let control = &resource(&t, "ControlApiFunction")["Properties"];
    let env = &control["Environment"]["Variables"];
    for (name, _) in tripline_aws::Settings::with_prefix("x").to_env() {
        if name.starts_with("TRIPLINE_CRON_") {
            assert!(
                !env[name].is_badvalue(),
                "the control API does not get {name}"
            );
        }
    }
    let granted = actions(&t, "ControlApiFunction");
    for needed in [
        "scheduler:CreateSchedule",
        "scheduler:UpdateSchedule",
        "scheduler:DeleteSchedule",
        "iam:PassRole",
    ] {
        assert!(granted.iter().any(|a| a == needed), "{needed}: {granted:?}");
    }
    assert_eq!(
        resource(&t, "CronScheduleGroup")["Type"].as_str(),
        Some("AWS::Scheduler::ScheduleGroup")
    );
    // The role the schedules assume may invoke the cron-tick function and reach the
    // dead-letter queue, nothing else.
    let role = &resource(&t, "CronSchedulerRole")["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"].as_str(),
        Some("scheduler.amazonaws.com")
    );
    let mut allowed: Vec<String> = role["Policies"][0]["PolicyDocument"]["Statement"]
        .as_vec()
        .expect("statements")
        .iter()
        .flat_map(|s| match &s["Action"] {
            Yaml::String(a) => vec![a.clone()],
            other => strings(other),
        })
        .collect();
    allowed.sort();
    assert_eq!(allowed, vec!["lambda:InvokeFunction", "sqs:SendMessage"]);
    // A tick the function failed on three times goes to the dead-letter queue.
    let tick = &resource(&t, "CronTickFunction")["Properties"];
    let config = &tick["EventInvokeConfig"];
    assert_eq!(config["MaximumRetryAttempts"].as_i64(), Some(2));
    assert_eq!(
        config["DestinationConfig"]["OnFailure"]["Type"].as_str(),
        Some("SQS")
    );
    assert_eq!(
        resource(&t, "CronDeadLetterQueue")["Type"].as_str(),
        Some("AWS::SQS::Queue")
    );
    let granted = actions(&t, "CronTickFunction");
    for needed in [
        "dynamodb:GetItem",
        "dynamodb:TransactWriteItems",
        "sqs:SendMessage",
    ] {
        assert!(granted.iter().any(|a| a == needed), "{needed}: {granted:?}");
    }
}

#[test]
fn the_msk_consumer_exists_only_with_a_cluster_and_sends_failed_batches_to_a_queue() {
    let t = template();
    let f = resource(&t, "MskConsumerFunction");
    assert_eq!(f["Condition"].as_str(), Some("HasMskCluster"));
    let event = &f["Properties"]["Events"]["Records"];
    assert_eq!(event["Type"].as_str(), Some("MSK"));
    let p = &event["Properties"];
    for (field, parameter) in [
        ("Stream", "MskClusterArn"),
        ("Topics", "MskTopics"),
        ("StartingPosition", "MskStartingPosition"),
        ("BatchSize", "MskBatchSize"),
    ] {
        assert_eq!(
            p[field]["Ref"].as_str().or_else(|| p[field].as_str()),
            Some(parameter),
            "{field} comes from a parameter"
        );
        assert!(!t["Parameters"][parameter].is_badvalue(), "{parameter}");
    }
    assert!(!p["DestinationConfig"]["OnFailure"]["Destination"].is_badvalue());
    assert_eq!(
        t["Parameters"]["MskClusterArn"]["Default"].as_str(),
        Some("")
    );
    let granted = actions(&t, "MskConsumerFunction");
    for needed in [
        "kafka:DescribeClusterV2",
        "kafka-cluster:ReadData",
        "kafka-cluster:AlterGroup",
        "ec2:CreateNetworkInterface",
        "dynamodb:TransactWriteItems",
        "sqs:SendMessage",
    ] {
        assert!(granted.iter().any(|a| a == needed), "{needed}: {granted:?}");
    }
    // The control API checks at deploy that the event source can deliver a kafka
    // trigger's topics: it reads the cluster and knows the topics.
    assert!(
        actions(&t, "ControlApiFunction")
            .iter()
            .any(|a| a == "kafka:DescribeClusterV2")
    );
    let vars = &resource(&t, "ControlApiFunction")["Properties"]["Environment"]["Variables"];
    assert!(!vars["TRIPLINE_MSK_CLUSTER_ARN"].is_badvalue());
    assert!(!vars["TRIPLINE_MSK_TOPICS"].is_badvalue());
}

/// Each function's DynamoDB statements: (actions, resources as written).
fn dynamodb_statements(t: &Yaml, name: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let statements = resource(t, name)["Properties"]["Policies"][0]["Statement"]
        .as_vec()
        .expect("statements")
        .clone();
    statements
        .iter()
        .map(|s| {
            let actions = match &s["Action"] {
                Yaml::String(a) => vec![a.clone()],
                other => strings(other),
            };
            let resources = match &s["Resource"] {
                Yaml::String(r) => vec![r.clone()],
                other => strings(other),
            };
            (actions, resources)
        })
        .filter(|(a, _)| a.iter().any(|x| x.starts_with("dynamodb:")))
        .collect()
}

#[test]
fn each_function_may_do_only_what_it_does_to_the_tables() {
    let t = template();
    for name in [
        "WebhookIngressFunction",
        "ResumeApprovalFunction",
        "StepExecutorFunction",
        "ControlApiFunction",
        "CronTickFunction",
        "MskConsumerFunction",
    ] {
        for (actions, resources) in dynamodb_statements(&t, name) {
            let has = |a: &str| actions.iter().any(|x| x == a);
            assert!(
                !has("dynamodb:BatchWriteItem"),
                "{name}: nothing writes in batches"
            );
            if has("dynamodb:Scan") {
                let reindex = name == "StepExecutorFunction" && resources == ["RunsTable.Arn"];
                assert!(
                    reindex || resources == ["WorkflowsTable.Arn"],
                    "{name}: only the workflows table is scanned, and the runs table by the executor's re-index: {resources:?}"
                );
            }
            let writes = [
                "dynamodb:PutItem",
                "dynamodb:TransactWriteItems",
                "dynamodb:UpdateItem",
            ];
            if name != "ControlApiFunction" && resources.iter().any(|r| r == "WorkflowsTable.Arn") {
                assert!(
                    !writes.iter().any(|w| has(w)),
                    "{name}: only the control API deploys: {actions:?}"
                );
            }
            if name == "ResumeApprovalFunction" {
                assert_eq!(
                    resources
                        .iter()
                        .filter(|r| r.contains("Inbox") || r.contains("Idempotency"))
                        .count(),
                    0,
                    "the resume function touches runs only"
                );
            }
        }
    }
}

/// An operator hears when listings fall behind the runs (the stream's iterator age) and
/// when anything lands in a dead-letter queue, through the topic they name if they name one.
#[test]
fn alarms_watch_the_index_stream_and_every_dead_letter_queue() {
    let t = template();
    let alarm_on = |metric: &str, dimension: &str, value: &str| -> Vec<String> {
        of_type(&t, "AWS::CloudWatch::Alarm")
            .into_iter()
            .filter(|(_, r)| r["Properties"]["MetricName"].as_str() == Some(metric))
            .filter(|(_, r)| {
                let d = &r["Properties"]["Dimensions"][0];
                d["Name"].as_str() == Some(dimension) && d["Value"].as_str() == Some(value)
            })
            .map(|(name, _)| name.to_string())
            .collect()
    };
    let lag = alarm_on("IteratorAge", "FunctionName", "StepExecutorFunction");
    assert_eq!(lag.len(), 1, "one alarm on the stream's iterator age");
    let p = &resource(&t, &lag[0])["Properties"];
    assert!(p["Threshold"].as_i64().is_some_and(|ms| ms <= 300_000));
    let queues: Vec<&str> = of_type(&t, "AWS::SQS::Queue")
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.contains("DeadLetter"))
        .collect();
    assert_eq!(queues.len(), 3, "{queues:?}");
    let mut alarms = lag;
    for q in queues {
        let on = alarm_on(
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            &format!("{q}.QueueName"),
        );
        assert_eq!(on.len(), 1, "one alarm on {q}");
        let p = &resource(&t, &on[0])["Properties"];
        assert_eq!(p["Threshold"].as_i64(), Some(0), "{q}: the first item");
        alarms.extend(on);
    }
    for name in alarms {
        let actions = &resource(&t, &name)["Properties"]["AlarmActions"];
        assert!(
            format!("{actions:?}").contains("AlarmTopicArn"),
            "{name} notifies the operator's topic: {actions:?}"
        );
    }
}
