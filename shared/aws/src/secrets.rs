//! Secrets on AWS: SSM Parameter Store `SecureString` parameters (encrypted with the
//! account's `aws/ssm` KMS key) under the stack's prefix, `{prefix}/{name}`. Standard
//! parameters cost nothing to keep, and standard-throughput reads nothing per call; the
//! functions cache each value (see `tripline_app::secrets`), so a run costs no read per
//! step. Values over 4 KB use the advanced tier (up to 8 KB).
//!
//! The five SSM operations used here are called through SSM's JSON protocol, signed with
//! SigV4 by `aws-sigv4` (already linked by the SDK clients), rather than through
//! `aws-sdk-ssm`: that crate's code for some 150 operations added about 1 MiB to each
//! function that reads secrets.

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use serde_json::{Value, json};
use tripline_app::ports::{SecretInfo, SecretStore, StoreError};
use tripline_core::Timestamp;

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
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
    counter: Option<CallCounter>,
    /// `/tripline/{stack}/secrets`, without a trailing `/`.
    prefix: String,
}

impl SsmSecrets {
    pub fn new(config: &aws_config::SdkConfig, counter: Option<CallCounter>, prefix: &str) -> Self {
        let region = config
            .region()
            .map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
        let endpoint = config
            .endpoint_url()
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://ssm.{region}.amazonaws.com"));
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .no_proxy()
                .build()
                .unwrap_or_default(),
            endpoint,
            region,
            credentials: config.credentials_provider(),
            counter,
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

    /// The SigV4 headers for a POST of `body` with `headers` to `url`.
    async fn sign(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, (String, crate::BoxError)> {
        let Some(provider) = &self.credentials else {
            return Err((
                "no AWS credentials".into(),
                "no credentials provider".into(),
            ));
        };
        let creds = provider.provide_credentials().await.map_err(|e| {
            (
                format!("no AWS credentials: {e}"),
                Box::new(e) as crate::BoxError,
            )
        })?;
        let identity = creds.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ssm")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| (e.to_string(), Box::new(e) as crate::BoxError))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| (e.to_string(), Box::new(e) as crate::BoxError))?;
        let instructions = sign(signable, &params)
            .map_err(|e| (e.to_string(), Box::new(e) as crate::BoxError))?
            .into_parts()
            .0;
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
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
        let signature = match self.sign(&url, &headers, &bytes).await {
            Ok(s) => s,
            Err((said, cause)) => return Err(failed(said, cause)),
        };
        let mut request = self.http.post(&url).body(bytes);
        for (k, v) in headers.iter().copied() {
            request = request.header(k, v);
        }
        for (k, v) in &signature {
            request = request.header(k.as_str(), v.as_str());
        }
        if let Some(c) = &self.counter {
            c.count(&format!("SSM.{operation}"));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(failed(e.to_string(), Box::new(e))),
        };
        let status = response.status();
        let answer: Value = match response.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Err(failed(e.to_string(), Box::new(e))),
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
