//! Plays the event source mapping of the runs table's stream, as `template.yaml` declares
//! it for the step executor: reads the table's DynamoDB stream on the AWS-protocol server
//! (the DynamoDB Streams API, over HTTP), keeps each shard's place, and hands the new
//! items (`INSERT`s: the mapping's filter) to the indexer, in the event Lambda sends.

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tripline_aws::{Clients, DynamoStore, Settings};

use crate::aws::endpoint;
use crate::lambda::Function;

/// One reader of a runs table's stream, from its beginning.
pub struct RunsStream {
    http: reqwest::Client,
    arn: String,
    /// Each shard's next iterator.
    places: Mutex<HashMap<String, String>>,
}

impl RunsStream {
    pub async fn new(clients: &Clients, settings: &Settings) -> Self {
        let table = clients
            .dynamodb
            .describe_table()
            .table_name(&settings.runs_table)
            .send()
            .await
            .expect("describe the runs table");
        let arn = table
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the runs table has a stream");
        Self {
            http: reqwest::Client::new(),
            arn,
            places: Mutex::new(HashMap::new()),
        }
    }

    async fn call(&self, action: &str, body: Value) -> Value {
        let answer = self
            .http
            .post(endpoint())
            .header("x-amz-target", format!("DynamoDBStreams_20120810.{action}"))
            .header("content-type", "application/x-amz-json-1.0")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{action}: {e}"));
        let status = answer.status();
        let text = answer.text().await.expect("body");
        assert!(status.is_success(), "{action}: {status} {text}");
        serde_json::from_str(&text).expect("JSON")
    }

    /// Every new item since the last call, as the event the mapping sends (`None`: none).
    pub async fn next_event(&self) -> Option<Value> {
        let mut places = self.places.lock().await;
        let described = self
            .call("DescribeStream", json!({ "StreamArn": self.arn }))
            .await;
        let shards = described["StreamDescription"]["Shards"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut records = Vec::new();
        for shard in shards {
            let id = shard["ShardId"].as_str().unwrap_or_default().to_string();
            if !places.contains_key(&id) {
                let start = self
                    .call(
                        "GetShardIterator",
                        json!({ "StreamArn": self.arn, "ShardId": id, "ShardIteratorType": "TRIM_HORIZON" }),
                    )
                    .await;
                let iterator = start["ShardIterator"].as_str().unwrap_or_default();
                places.insert(id.clone(), iterator.to_string());
            }
            loop {
                let iterator = places[&id].clone();
                let got = self
                    .call("GetRecords", json!({ "ShardIterator": iterator }))
                    .await;
                if let Some(next) = got["NextShardIterator"].as_str() {
                    places.insert(id.clone(), next.to_string());
                }
                let batch = got["Records"].as_array().cloned().unwrap_or_default();
                if batch.is_empty() {
                    break;
                }
                records.extend(batch);
            }
        }
        let records: Vec<Value> = records
            .into_iter()
            .filter(|r| r["eventName"] == "INSERT")
            .map(|mut r| {
                r["eventSourceARN"] = json!(self.arn);
                r
            })
            .collect();
        (!records.is_empty()).then(|| json!({ "Records": records }))
    }

    /// Indexes what was written since the last call with the handler's own code (for tests
    /// that use the store without the functions). Returns how many records it indexed.
    pub async fn index_with(&self, store: &DynamoStore) -> usize {
        let Some(event) = self.next_event().await else {
            return 0;
        };
        let records = tripline_aws::lambda::stream_records(&event);
        store
            .index(&records)
            .await
            .expect("the stream batch was indexed");
        records.len()
    }

    /// Invokes the step executor with what was written since the last call.
    pub async fn index_through(&self, executor: &Function) -> usize {
        let Some(event) = self.next_event().await else {
            return 0;
        };
        let answer = executor
            .invoke(event)
            .await
            .unwrap_or_else(|e| panic!("the executor failed a stream batch: {e}"));
        answer["indexed"].as_u64().unwrap_or(0) as usize
    }
}
