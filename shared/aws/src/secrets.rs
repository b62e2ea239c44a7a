//! Secrets on AWS: SSM Parameter Store `SecureString` parameters (encrypted with the
//! account's `aws/ssm` KMS key) under the stack's prefix, `{prefix}/{name}`. Standard
//! parameters cost nothing to keep, and standard-throughput reads nothing per call; the
//! functions cache each value (see `tripline_app::secrets`), so a run costs no read per
//! step. Values over 4 KB use the advanced tier (up to 8 KB).
//!
//! The five SSM operations used here are called through SSM's JSON protocol, signed by
//! hand (`signed.rs`), rather than through `aws-sdk-ssm`: that crate's code for some 150
//! operations added about 1 MiB to each function that reads secrets.

use serde_json::{Value, json};
use tripline_app::ports::{SecretInfo, SecretStore, StoreError};
use tripline_core::Timestamp;

use crate::signed::Signed;
use crate::{AwsError, CallCounter};

/// The largest standard parameter.
const STANDARD_BYTES: usize = 4096;

/// An SSM error: its code (`ParameterNotFound`, …) and message.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
struct SsmError {
    code: String,
    message: String,
}

#[derive(Clone, Debug)]
pub struct SsmSecrets {
    signed: Signed,
    endpoint: String,
    /// `/tripline/{stack}/secrets`, without a trailing `/`.
    prefix: String,
}

impl SsmSecrets {
    pub fn new(config: &aws_config::SdkConfig, counter: Option<CallCounter>, prefix: &str) -> Self {
        let signed = Signed::new(config, counter);
        Self {
            endpoint: signed.endpoint("ssm"),
            signed,
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// A parameter by its full name (the control API's key, which the stack keeps
    /// outside the secrets' prefix).
    pub async fn parameter(&self, full_name: &str) -> Result<Option<String>, StoreError> {
        let body = json!({"Name": full_name, "WithDecryption": true});
        match self.call("GetParameter", body).await {
            Ok(v) => Ok(v["Parameter"]["Value"].as_str().map(str::to_string)),
            Err(e) if is(&e, "ParameterNotFound") => Ok(None),
            Err(e) => Err(unexpected("GetParameter", e)),
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// One SSM operation: `Err(Ok(e))` when SSM answered with an error, `Err(Err(e))`
    /// when it could not be asked.
    async fn call(
        &self,
        operation: &str,
        body: Value,
    ) -> Result<Value, Result<SsmError, StoreError>> {
        let op = format!("SSM {operation}");
        let failed = |said: String, cause: crate::BoxError| {
            Err(StoreError::Unavailable(Box::new(AwsError {
                op: op.clone(),
                said,
                cause,
            })))
        };
        let url = format!("{}/", self.endpoint);
        let bytes = body.to_string().into_bytes();
        let target = format!("AmazonSSM.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let sent = self
            .signed
            .send(
                "ssm",
                &format!("SSM.{operation}"),
                reqwest::Method::POST,
                &url,
                &headers,
                bytes,
            )
            .await;
        let (status, answer) = match sent {
            Ok((status, body)) => (
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            ),
            Err((said, cause)) => return Err(failed(said, cause)),
        };
        if status.is_success() {
            return Ok(answer);
        }
        let code = answer["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| status.as_u16().to_string());
        let message = answer["message"]
            .as_str()
            .or(answer["Message"].as_str())
            .unwrap_or_default()
            .to_string();
        Err(Ok(SsmError { code, message }))
    }
}

/// An SSM error that is not one the caller expects, as a store error.
fn unexpected(operation: &str, e: Result<SsmError, StoreError>) -> StoreError {
    match e {
        Ok(e) => StoreError::Unavailable(Box::new(AwsError {
            op: format!("SSM {operation}"),
            said: e.to_string(),
            cause: Box::new(e),
        })),
        Err(e) => e,
    }
}

fn is(e: &Result<SsmError, StoreError>, code: &str) -> bool {
    matches!(e, Ok(s) if s.code == code)
}

#[async_trait::async_trait]
impl SecretStore for SsmSecrets {
    async fn secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let body = json!({"Name": self.path(name), "WithDecryption": true});
        match self.call("GetParameter", body).await {
            Ok(v) => Ok(v["Parameter"]["Value"].as_str().map(str::to_string)),
            Err(e) if is(&e, "ParameterNotFound") => Ok(None),
            Err(e) => Err(unexpected("GetParameter", e)),
        }
    }

    async fn set_secret(&self, name: &str, value: &str, _at: Timestamp) -> Result<(), StoreError> {
        let tier = if value.len() > STANDARD_BYTES {
            "Advanced"
        } else {
            "Standard"
        };
        let body = json!({
            "Name": self.path(name),
            "Value": value,
            "Type": "SecureString",
            "Tier": tier,
            "Overwrite": true,
            "Description": "A Tripline secret (set with PUT /v1/secrets/{name})",
        });
        self.call("PutParameter", body)
            .await
            .map(|_| ())
            .map_err(|e| unexpected("PutParameter", e))
    }

    async fn create_secret(
        &self,
        name: &str,
        value: &str,
        _at: Timestamp,
    ) -> Result<bool, StoreError> {
        let body = json!({
            "Name": self.path(name),
            "Value": value,
            "Type": "SecureString",
            "Overwrite": false,
        });
        match self.call("PutParameter", body).await {
            Ok(_) => Ok(true),
            Err(e) if is(&e, "ParameterAlreadyExists") => Ok(false),
            Err(e) => Err(unexpected("PutParameter", e)),
        }
    }

    async fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        match self
            .call("DeleteParameter", json!({"Name": self.path(name)}))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is(&e, "ParameterNotFound") => Ok(false),
            Err(e) => Err(unexpected("DeleteParameter", e)),
        }
    }

    /// Names and times only: the listing asks for no decryption.
    async fn secret_names(&self) -> Result<Vec<SecretInfo>, StoreError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        let prefix = format!("{}/", self.prefix);
        loop {
            let mut body =
                json!({"Path": self.prefix, "Recursive": false, "WithDecryption": false});
            if let Some(t) = next.take() {
                body["NextToken"] = json!(t);
            }
            let page = self
                .call("GetParametersByPath", body)
                .await
                .map_err(|e| unexpected("GetParametersByPath", e))?;
            for p in page["Parameters"].as_array().into_iter().flatten() {
                let Some(name) = p["Name"].as_str().and_then(|n| n.strip_prefix(&prefix)) else {
                    continue;
                };
                let set_at = p["LastModifiedDate"]
                    .as_f64()
                    .map_or(Timestamp::from_millis(0), |s| {
                        Timestamp::from_millis((s * 1000.0) as i64)
                    });
                out.push(SecretInfo {
                    name: name.to_string(),
                    set_at,
                });
            }
            match page["NextToken"].as_str() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
