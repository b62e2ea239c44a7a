//! Secrets on AWS: SSM Parameter Store `SecureString` parameters (encrypted with the
//! account's `aws/ssm` KMS key) under the stack's prefix, `{prefix}/{name}`. Standard
//! parameters cost nothing to keep, and standard-throughput reads nothing per call; the
//! functions cache each value (see `tripline_app::secrets`), so a run costs no read per
//! step. Values over 4 KB use the advanced tier (up to 8 KB).

use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use tripline_app::ports::{SecretInfo, SecretStore, StoreError};
use tripline_core::Timestamp;

use crate::store_error;

/// The largest standard parameter.
const STANDARD_BYTES: usize = 4096;

#[derive(Clone, Debug)]
pub struct SsmSecrets {
    client: aws_sdk_ssm::Client,
    /// `/tripline/{stack}/secrets`, without a trailing `/`.
    prefix: String,
}

impl SsmSecrets {
    pub fn new(client: aws_sdk_ssm::Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

#[async_trait::async_trait]
impl SecretStore for SsmSecrets {
    async fn secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self
            .client
            .get_parameter()
            .name(self.path(name))
            .with_decryption(true)
            .send()
            .await
        {
            Ok(out) => Ok(out.parameter.and_then(|p| p.value)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(store_error("SSM GetParameter", e)),
        }
    }

    async fn set_secret(&self, name: &str, value: &str, _at: Timestamp) -> Result<(), StoreError> {
        let tier = if value.len() > STANDARD_BYTES {
            ParameterTier::Advanced
        } else {
            ParameterTier::Standard
        };
        self.client
            .put_parameter()
            .name(self.path(name))
            .value(value)
            .r#type(ParameterType::SecureString)
            .tier(tier)
            .overwrite(true)
            .description("A Tripline secret (set with PUT /v1/secrets/{name})")
            .send()
            .await
            .map_err(|e| store_error("SSM PutParameter", e))?;
        Ok(())
    }

    async fn create_secret(
        &self,
        name: &str,
        value: &str,
        _at: Timestamp,
    ) -> Result<bool, StoreError> {
        match self
            .client
            .put_parameter()
            .name(self.path(name))
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(false)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_already_exists()) =>
            {
                Ok(false)
            }
            Err(e) => Err(store_error("SSM PutParameter", e)),
        }
    }

    async fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        match self
            .client
            .delete_parameter()
            .name(self.path(name))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(false)
            }
            Err(e) => Err(store_error("SSM DeleteParameter", e)),
        }
    }

    /// Names and times only: the listing asks for no decryption.
    async fn secret_names(&self) -> Result<Vec<SecretInfo>, StoreError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .get_parameters_by_path()
                .path(&self.prefix)
                .recursive(false)
                .with_decryption(false)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| store_error("SSM GetParametersByPath", e))?;
            for p in page.parameters.unwrap_or_default() {
                let Some(name) = p
                    .name
                    .as_deref()
                    .and_then(|n| n.strip_prefix(&format!("{}/", self.prefix)))
                else {
                    continue;
                };
                let set_at = p
                    .last_modified_date
                    .and_then(|d| d.to_millis().ok())
                    .map(Timestamp::from_millis)
                    .unwrap_or(Timestamp::from_millis(0));
                out.push(SecretInfo {
                    name: name.to_string(),
                    set_at,
                });
            }
            match page.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
