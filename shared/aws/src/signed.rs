//! AWS requests signed with SigV4 by hand (`aws-sigv4`, already linked by the SDK clients)
//! and sent through reqwest: for the few operations of a service whose SDK crate would add
//! more to a function's binary than the operations are worth (SSM's five, MSK's one).

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};

use crate::{BoxError, CallCounter};

/// Why a request got no answer: what to say, and the cause.
pub(crate) type Unsent = (String, BoxError);

#[derive(Clone, Debug)]
pub(crate) struct Signed {
    http: reqwest::Client,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
    counter: Option<CallCounter>,
    endpoint: Option<String>,
}

impl Signed {
    pub(crate) fn new(config: &aws_config::SdkConfig, counter: Option<CallCounter>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .no_proxy()
                .build()
                .unwrap_or_default(),
            region: config
                .region()
                .map_or_else(|| "us-east-1".to_string(), |r| r.to_string()),
            credentials: config.credentials_provider(),
            counter,
            endpoint: config
                .endpoint_url()
                .map(|e| e.trim_end_matches('/').to_string()),
        }
    }

    /// The service's endpoint: the configured one (a test server), else AWS's
    /// `https://{host_prefix}.{region}.amazonaws.com`.
    pub(crate) fn endpoint(&self, host_prefix: &str) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{host_prefix}.{}.amazonaws.com", self.region))
    }

    /// Sends `method url` with `headers` and `body`, signed for `service` (its signing
    /// name); counted as `{counted}` when the bench counts. The status and body of the
    /// answer, whatever the status.
    pub(crate) async fn send(
        &self,
        service: &str,
        counted: &str,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), Unsent> {
        let signature = self
            .sign(service, method.as_str(), url, headers, &body)
            .await?;
        let mut request = self.http.request(method, url).body(body);
        for (k, v) in headers.iter().copied() {
            request = request.header(k, v);
        }
        for (k, v) in &signature {
            request = request.header(k.as_str(), v.as_str());
        }
        if let Some(c) = &self.counter {
            c.count(counted);
        }
        let response = request
            .send()
            .await
            .map_err(|e| (e.to_string(), Box::new(e) as BoxError))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| (e.to_string(), Box::new(e) as BoxError))?;
        Ok((status, bytes.to_vec()))
    }

    /// The SigV4 headers for the request.
    async fn sign(
        &self,
        service: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, Unsent> {
        let Some(provider) = &self.credentials else {
            return Err((
                "no AWS credentials".into(),
                "no credentials provider".into(),
            ));
        };
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| (format!("no AWS credentials: {e}"), Box::new(e) as BoxError))?;
        let identity = creds.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| (e.to_string(), Box::new(e) as BoxError))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| (e.to_string(), Box::new(e) as BoxError))?;
        let instructions = sign(signable, &params)
            .map_err(|e| (e.to_string(), Box::new(e) as BoxError))?
            .into_parts()
            .0;
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}
