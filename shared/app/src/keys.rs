//! Scoped API keys for the control API. Besides the server's own key (`--api-key`, the
//! AWS stack's `ApiKey`, named `main`, scope `admin`), keys are made through the API with
//! a name and a scope, shown once, and kept only as a SHA-256 hash in the secret store
//! (names `_tripline_key_{name}`): a leaked store gives no key. Several keys may hold a
//! scope at once, which is how a key is rotated: make the new one, switch, remove the old.
//!
//! Each scope includes the ones before it: `read` lists and shows; `operate` also starts,
//! cancels and reprocesses runs and edits state and context; `deploy` also changes
//! workflows and secrets (a key that deploys can make a workflow do anything `operate`
//! can); `admin` also manages keys and reads the audit log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tripline_core::Timestamp;

use crate::ports::StoreError;
use crate::secrets::Secrets;

/// What a key may do; each scope includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Operate,
    Deploy,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Scope::Read, Scope::Operate, Scope::Deploy, Scope::Admin]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Who made a control request: a key's name and scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
}

/// The name the audit log gives the server's own key.
pub const MAIN_KEY: &str = "main";
/// The name the audit log gives a loopback request on a server without a key.
pub const LOCAL: &str = "local";

const PREFIX: &str = "_tripline_key_";

/// A key as listed: never its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub name: String,
    pub scope: Scope,
    pub created: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    scope: Scope,
    sha256: String,
    created: Timestamp,
}

/// Why a key could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "`{0}` is not a valid key name: use 1 to 64 letters, digits and `_` (`main` and `local` are the audit log's own)"
    )]
    BadName(String),
    #[error(
        "a key named `{0}` exists: choose another name (to rotate, make a new key, switch to it, then remove the old one)"
    )]
    Exists(String),
    #[error("this server keeps no secrets, so it cannot keep API keys")]
    NoStore,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often an unknown key may make this process read the keys again.
const MISS_INTERVAL: Duration = Duration::from_secs(1);

type Loaded = (Arc<Vec<(String, Stored)>>, Instant);

/// This process's view of the keys: loaded on first use, again when older than the
/// secret cache's bound (AWS: other functions make keys), and on an unknown key at most
/// once a second.
#[derive(Default)]
pub struct ApiKeys {
    loaded: Mutex<Option<Loaded>>,
}

fn digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != MAIN_KEY
        && name != LOCAL
}

impl ApiKeys {
    /// The key `given` names, if any: the server's own (`main`) or a made one.
    pub async fn authenticate(
        &self,
        secrets: &Secrets,
        main: Option<&str>,
        given: &str,
    ) -> Result<Option<Principal>, StoreError> {
        if let Some(main) = main
            && bool::from(given.as_bytes().ct_eq(main.as_bytes()))
        {
            return Ok(Some(Principal {
                name: MAIN_KEY.into(),
                scope: Scope::Admin,
            }));
        }
        if !secrets.keeps_secrets() {
            return Ok(None);
        }
        let hash = digest(given);
        let find = |keys: &[(String, Stored)]| {
            keys.iter()
                .find(|(_, k)| bool::from(k.sha256.as_bytes().ct_eq(hash.as_bytes())))
                .map(|(name, k)| Principal {
                    name: name.clone(),
                    scope: k.scope,
                })
        };
        let ttl = secrets.ttl();
        let cached = self.loaded.lock().ok().and_then(|l| l.clone());
        if let Some((keys, at)) = &cached
            && ttl.is_none_or(|ttl| at.elapsed() < ttl)
        {
            if let Some(p) = find(keys) {
                return Ok(Some(p));
            }
            if at.elapsed() < MISS_INTERVAL {
                return Ok(None);
            }
        }
        let keys = self.load(secrets).await?;
        Ok(find(&keys))
    }

    async fn load(&self, secrets: &Secrets) -> Result<Arc<Vec<(String, Stored)>>, StoreError> {
        let mut keys = Vec::new();
        for (name, value) in secrets.own_with_prefix(PREFIX).await? {
            match serde_json::from_str::<Stored>(&value) {
                Ok(k) => keys.push((name, k)),
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, "an API key record cannot be read; it is ignored")
                }
            }
        }
        let keys = Arc::new(keys);
        if let Ok(mut l) = self.loaded.lock() {
            *l = Some((keys.clone(), Instant::now()));
        }
        Ok(keys)
    }

    /// Every made key, by name.
    pub async fn list(&self, secrets: &Secrets) -> Result<Vec<KeyInfo>, StoreError> {
        let keys = self.load(secrets).await?;
        Ok(keys
            .iter()
            .map(|(name, k)| KeyInfo {
                name: name.clone(),
                scope: k.scope,
                created: k.created,
            })
            .collect())
    }

    /// Makes a key; returns its value, which is never shown again.
    pub async fn create(
        &self,
        secrets: &Secrets,
        name: &str,
        scope: Scope,
        now: Timestamp,
    ) -> Result<String, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::BadName(name.to_string()));
        }
        if !secrets.keeps_secrets() {
            return Err(KeyError::NoStore);
        }
        let key = format!(
            "tl_{}{}",
            crate::tokens::new_token(),
            crate::tokens::new_token()
        );
        let stored = Stored {
            scope,
            sha256: digest(&key),
            created: now,
        };
        let value =
            serde_json::to_string(&stored).map_err(|e| StoreError::Unavailable(e.into()))?;
        if !secrets
            .create_own(&format!("{PREFIX}{name}"), &value, now)
            .await?
        {
            return Err(KeyError::Exists(name.to_string()));
        }
        self.forget();
        Ok(key)
    }

    /// Removes a key; false when there was none.
    pub async fn remove(&self, secrets: &Secrets, name: &str) -> Result<bool, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::BadName(name.to_string()));
        }
        let removed = secrets.remove_own(&format!("{PREFIX}{name}")).await?;
        self.forget();
        Ok(removed)
    }

    fn forget(&self) {
        if let Ok(mut l) = self.loaded.lock() {
            *l = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_ones_before_them() {
        assert!(Scope::Admin > Scope::Deploy);
        assert!(Scope::Deploy > Scope::Operate);
        assert!(Scope::Operate > Scope::Read);
        assert_eq!(Scope::parse("operate"), Some(Scope::Operate));
        assert_eq!(Scope::parse("root"), None);
    }

    #[test]
    fn the_audit_logs_own_names_cannot_be_taken() {
        assert!(valid_name("ci_deploy"));
        assert!(!valid_name("main"));
        assert!(!valid_name("local"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
